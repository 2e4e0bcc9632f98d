//! Runs an `http` action ([`crate::config::http_action`]): one request from the leader itself.
//!
//! The request carries `X-Cronlease-Job`, `X-Cronlease-Fire-Time`, `X-Cronlease-Term` and an
//! `Idempotency-Key` of the job and the fire time, the same for every retry of one run, so a
//! receiver can deduplicate. The run is `ok` when the status is one the action expects, else
//! `failed` with the status in the reason; no answer within the action's `timeout` is a
//! `timeout`, as is the job's own `timeout`. Its output (kept and logged like a process's) is the
//! status line and the tail of the response body, at most the job's `output_limit`. A run
//! stopped by a lost lease or the node's shutdown drops the request, which closes its
//! connection. TLS with rustls and the system's roots; one client (a connection pool) per node.
use std::sync::OnceLock;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::http_action::HttpAction;
use crate::config::Job;
use crate::node::runner::{until, Labels, Outcome, RunResult, MAX_LINE};

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // No redirects, as curl without -L: a 3xx is the answer (`expect` can name it), a
        // POST is never replayed as a GET, and the job's headers never go to another host.
        reqwest::Client::builder()
            .user_agent(concat!("cronlease/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// What came back.
struct Answer {
    status: reqwest::StatusCode,
    /// The last `limit` bytes of the body, and how many bytes came before them.
    tail: Vec<u8>,
    cut: u64,
}

pub(crate) async fn run(
    labels: &Labels<'_>,
    job: &Job,
    http: &HttpAction,
    deadline: Option<Instant>,
    kill: &CancellationToken,
) -> RunResult {
    let headers = match http.resolved_headers(|v| std::env::var(v).ok()) {
        Ok(h) => h,
        Err(reason) => return refused(labels, reason),
    };
    let mut request = client()
        .request(http.method.clone(), http.url.clone())
        .timeout(http.timeout)
        .header("X-Cronlease-Job", labels.job)
        .header("X-Cronlease-Fire-Time", labels.fire_time.as_str())
        .header("X-Cronlease-Term", labels.term.to_string())
        .header(
            "Idempotency-Key",
            format!("{}@{}", labels.job, labels.fire_time),
        );
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = &http.body {
        request = request.body(body.clone());
    }
    let limit = job.policy.output_limit;
    let exchange = async move {
        let mut response = request.send().await?;
        let status = response.status();
        let (mut tail, mut cut) = (Vec::new(), 0u64);
        while let Some(chunk) = response.chunk().await? {
            tail.extend_from_slice(&chunk);
            if tail.len() > limit {
                let drop = tail.len() - limit;
                tail.drain(..drop);
                cut += drop as u64;
            }
        }
        Ok::<_, reqwest::Error>(Answer { status, tail, cut })
    };
    let answer = tokio::select! {
        answer = exchange => answer,
        _ = until(deadline) => {
            labels.stopping(Outcome::Timeout, job.timeout);
            return RunResult::because(Outcome::Timeout, "the job's timeout passed during the request".into());
        }
        _ = kill.cancelled() => {
            labels.stopping(Outcome::Killed, None);
            return RunResult::new(Outcome::Killed, None);
        }
    };
    match answer {
        Ok(answer) => {
            let status = answer.status;
            let status_line = format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            );
            labels.output("http", status_line.trim_end(), false);
            body_lines(labels, &answer.tail, answer.cut > 0);
            if http.expect.accepts(status.as_u16()) {
                RunResult::new(Outcome::Ok, None)
            } else {
                RunResult::because(
                    Outcome::Failed,
                    format!(
                        "{} (expected {})",
                        status_line.trim_end(),
                        http.expect.describe()
                    ),
                )
            }
        }
        Err(e) if e.is_timeout() => RunResult::because(
            Outcome::Timeout,
            format!(
                "no answer within {} ({} {})",
                humantime::format_duration(http.timeout),
                http.method,
                http.shown_url()
            ),
        ),
        Err(e) => refused(
            labels,
            format!("{} {}: {}", http.method, http.shown_url(), chain(&e)),
        ),
    }
}

/// The body's lines (a first one cut by the limit dropped), each at most [`MAX_LINE`].
fn body_lines(labels: &Labels<'_>, tail: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(tail);
    let mut lines = text.lines();
    if cut {
        lines.next();
    }
    for line in lines {
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            labels.output("body", &line[..end], true);
        } else {
            labels.output("body", line, false);
        }
    }
}

/// A failed run that never got an answer: logged as `job_error`, the reason in its record.
fn refused(labels: &Labels<'_>, reason: String) -> RunResult {
    labels.failed(
        &reason,
        &format!("request failed: {reason}"),
        reason.clone(),
    )
}

/// An error with its causes ([`crate::notify::deliver::describe`]), without the URL reqwest
/// puts in it (its query may hold a secret).
fn chain(e: &reqwest::Error) -> String {
    let mut text = crate::notify::deliver::describe(e);
    if let Some(at) = text.find(" for url (") {
        let end = text[at..].find(')').map_or(text.len(), |i| at + i + 1);
        text.replace_range(at..end, "");
    }
    text
}
