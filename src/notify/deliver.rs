//! One queue and one worker per destination (a `[[notify]]` sink, or one job's ping URL):
//! deliveries go out in order, each retried with backoff until it is delivered or its
//! `retry_for` has passed.
//!
//! The queue is bounded ([`QUEUE`]) and filled with `try_send`: a full queue drops the new
//! delivery (counted `dropped`, logged), so a sink that is down never holds up a tick, a
//! claim or the outcome writer. Backoff starts at [`FIRST_BACKOFF`] and doubles up to
//! [`MAX_BACKOFF`], so a sink that comes back is used again within half a minute.
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ops::metrics::Metrics;

/// Deliveries waiting per destination.
pub const QUEUE: usize = 1000;
/// The wait after a first failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most of a run's output a ping carries (healthchecks.io keeps the first 100 kB).
pub const PING_BODY_LIMIT: usize = 100_000;
/// The most of a command sink's stderr quoted in the log when it fails.
const STDERR_QUOTE: usize = 500;

/// Where a worker delivers.
#[derive(Debug, Clone)]
pub enum Destination {
    Webhook {
        url: reqwest::Url,
        headers: Vec<(String, String)>,
    },
    Command {
        argv: Vec<String>,
    },
    /// A healthchecks.io-style ping URL (the job's `ping`).
    Ping,
}

/// One thing to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// For the logs: the job.
    pub job: String,
    /// For the logs: the event (`failed`, ...) or the ping (`start`, `success`, `fail`).
    pub what: String,
    pub request: Request,
    /// When it was queued: it is given up `retry_for` after that.
    pub queued: Instant,
}

/// The request itself.
#[derive(Debug, Clone)]
pub enum Request {
    /// A sink's event: the JSON body (webhook) or stdin (command).
    Event(String),
    /// A ping: `GET url` without a body, else `POST url` with it.
    Ping {
        url: reqwest::Url,
        body: Option<String>,
    },
}

/// Why one attempt did not deliver.
enum Failed {
    /// Worth another try (no answer, 5xx, 429, a command that failed).
    Retry(String),
    /// The other side refused it for good (4xx): trying again would not help.
    Refused(String),
}

/// A destination's worker: its name for metrics and logs, what it sends to, and its limits.
pub struct Worker {
    pub sink: String,
    pub destination: Destination,
    pub timeout: Duration,
    pub retry_for: Duration,
    pub client: reqwest::Client,
    pub metrics: std::sync::Arc<Metrics>,
    pub node: String,
}

impl Worker {
    /// A worker and the sender of its queue; run it with [`Worker::run`].
    pub fn queue() -> (mpsc::Sender<Delivery>, mpsc::Receiver<Delivery>) {
        mpsc::channel(QUEUE)
    }

    /// Deliver what comes until every sender is gone and the queue is empty; `kill` ends it
    /// at once (what is left is counted `dropped`).
    pub async fn run(self, mut rx: mpsc::Receiver<Delivery>, kill: CancellationToken) {
        loop {
            let next = tokio::select! {
                d = rx.recv() => d,
                _ = kill.cancelled() => None,
            };
            let Some(delivery) = next else { break };
            if !self.deliver(&delivery, &kill).await {
                self.metrics.notification(&self.sink, "dropped");
                break;
            }
        }
        // Stopped with deliveries still queued.
        rx.close();
        let mut left = 0;
        while rx.try_recv().is_ok() {
            left += 1;
            self.metrics.notification(&self.sink, "dropped");
        }
        if left > 0 {
            warn!(event = "notify_dropped", sink = %self.sink, node = %self.node, left,
                "stopping: {left} notification(s) to {} not sent", self.sink);
        }
    }

    /// Try `d` until it is delivered or given up (true), or `kill` fires first (false).
    async fn deliver(&self, d: &Delivery, kill: &CancellationToken) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        // Waited in the queue past its time (behind a sink that was down): not sent late.
        if d.queued.elapsed() > self.retry_for {
            self.metrics.notification(&self.sink, "gave_up");
            warn!(event = "notify_gave_up", sink = %self.sink, job = %d.job, node = %self.node,
                what = %d.what, attempt = 0, reason = "retry_for",
                "{} {}: queued for {} longer than retry_for; not sent", d.job, d.what, self.sink);
            return true;
        }
        loop {
            let tried = tokio::select! {
                r = self.attempt(&d.request) => r,
                _ = kill.cancelled() => return false,
            };
            let why = match tried {
                Ok(()) => {
                    self.metrics.notification(&self.sink, "sent");
                    if attempt > 1 {
                        info!(event = "notify_sent", sink = %self.sink, job = %d.job,
                            node = %self.node, what = %d.what, attempt,
                            "{} {} sent to {} at attempt {attempt}", d.job, d.what, self.sink);
                    } else {
                        debug!(event = "notify_sent", sink = %self.sink, job = %d.job,
                            what = %d.what, "sent");
                    }
                    return true;
                }
                Err(Failed::Refused(why)) => {
                    self.metrics.notification(&self.sink, "gave_up");
                    warn!(event = "notify_gave_up", sink = %self.sink, job = %d.job,
                        node = %self.node, what = %d.what, attempt, reason = "refused",
                        "{} {}: {} refused it ({why}); not retrying", d.job, d.what, self.sink);
                    return true;
                }
                Err(Failed::Retry(why)) => why,
            };
            if d.queued.elapsed() + backoff > self.retry_for {
                self.metrics.notification(&self.sink, "gave_up");
                warn!(event = "notify_gave_up", sink = %self.sink, job = %d.job,
                    node = %self.node, what = %d.what, attempt, reason = "retry_for",
                    "{} {}: not delivered to {} within retry_for ({}): {why}", d.job, d.what,
                    self.sink, humantime::format_duration(self.retry_for));
                return true;
            }
            self.metrics.notification(&self.sink, "retried");
            // The first failure of a delivery is worth a warning; the retries of a sink that
            // stays down are not worth one each.
            let retry_in_ms = backoff.as_millis() as u64;
            if attempt == 1 {
                warn!(event = "notify_failed", sink = %self.sink, job = %d.job,
                    node = %self.node, what = %d.what, attempt, retry_in_ms,
                    "{} {}: {} failed ({why}); retrying", d.job, d.what, self.sink);
            } else {
                debug!(event = "notify_failed", sink = %self.sink, job = %d.job,
                    what = %d.what, attempt, retry_in_ms, "{why}");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = kill.cancelled() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt(&self, request: &Request) -> Result<(), Failed> {
        match (&self.destination, request) {
            (Destination::Webhook { url, headers }, Request::Event(body)) => {
                let mut req = self
                    .client
                    .post(url.clone())
                    .timeout(self.timeout)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                for (name, value) in headers {
                    req = req.header(name.as_str(), value.as_str());
                }
                answer(req.send().await)
            }
            (Destination::Command { argv }, Request::Event(body)) => {
                tokio::time::timeout(self.timeout, command(argv, body))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failed::Retry(format!(
                            "the command did not finish within {}",
                            humantime::format_duration(self.timeout)
                        )))
                    })
            }
            (Destination::Ping, Request::Ping { url, body }) => {
                let req = match body {
                    None => self.client.get(url.clone()),
                    Some(body) => self.client.post(url.clone()).body(body.clone()),
                };
                answer(req.timeout(self.timeout).send().await)
            }
            _ => Err(Failed::Refused("a request of the wrong kind".into())),
        }
    }
}

/// An HTTP answer: 2xx delivered; 408, 429 and 5xx (and no answer) worth a retry; other
/// codes refused.
fn answer(sent: reqwest::Result<reqwest::Response>) -> Result<(), Failed> {
    match sent {
        Err(e) => Err(Failed::Retry(describe(&e))),
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let s = r.status();
            let why = format!("HTTP {s}");
            if s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429 {
                Err(Failed::Retry(why))
            } else {
                Err(Failed::Refused(why))
            }
        }
    }
}

/// A reqwest error with its causes (reqwest's own text is only "error sending request").
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Run a command sink with `body` on its stdin: exit 0 is delivered. Killed if dropped (the
/// caller's timeout).
async fn command(argv: &[String], body: &str) -> Result<(), Failed> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failed::Retry(format!("cannot start {}: {e}", argv[0])))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is not a failure.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Failed::Retry(format!("waiting for {}: {e}", argv[0])))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut quote = stderr.trim().to_string();
    if quote.len() > STDERR_QUOTE {
        let mut at = quote.len() - STDERR_QUOTE;
        while !quote.is_char_boundary(at) {
            at += 1;
        }
        quote = format!("...{}", &quote[at..]);
    }
    Err(Failed::Retry(format!(
        "{} ended {}: {quote}",
        argv[0], out.status
    )))
}

/// The end of `text` that fits in [`PING_BODY_LIMIT`] bytes, cut at a character boundary.
pub fn ping_body(text: &str) -> String {
    if text.len() <= PING_BODY_LIMIT {
        return text.to_string();
    }
    let mut at = text.len() - PING_BODY_LIMIT;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    text[at..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_body_keeps_the_end_of_the_output() {
        assert_eq!(ping_body("short"), "short");
        let long = "é".repeat(PING_BODY_LIMIT);
        let body = ping_body(&long);
        assert!(body.len() <= PING_BODY_LIMIT && body.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn a_command_gets_the_event_on_stdin_and_its_exit_status_counts() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let sh = format!("cat > {}", out.display());
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), sh];
        assert!(command(&argv, "{\"event\":\"failed\"}").await.is_ok());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"event\":\"failed\"}"
        );
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "echo nope >&2; exit 3".to_string(),
        ];
        match command(&argv, "{}").await {
            Err(Failed::Retry(why)) => assert!(why.contains("nope"), "{why}"),
            _ => panic!("a failing command is retried"),
        }
        let argv = vec!["/nonexistent/program".to_string()];
        assert!(matches!(command(&argv, "{}").await, Err(Failed::Retry(_))));
    }
}
