//! `cronlease logs JOB [FIRE_TIME] --follow`: a run in progress, live from the node that runs
//! it.
//!
//! The run's record says which node runs it, and that node's record its `--http` address; the
//! node streams the run's output from `GET /runs/{job}/{fire_time}/output`
//! ([`crate::ops::http`]) until the run ends. Then the outcome is read from the store, where it
//! lands a moment after the stream's end (the node's outcome writer), so it is polled for up to
//! [`END_WAIT`].
//!
//! When the stream cannot be had (the node serves no HTTP, is gone, or the connection breaks
//! off), the store is all there is: without HTTP the stored tail is shown at once (the run is
//! not over: exit 1); a node that cannot be reached or broke off has probably died, and the
//! next leader closes its run as `lost` within about a lease, so the store is polled for that
//! (up to [`lost_wait`]), then what the store kept beyond what was streamed is shown, and the
//! outcome. A stream that stays silent is checked against the store every [`SILENCE_CHECK`]:
//! a node whose host vanished may never close the connection.
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::Config;
use crate::node::output::is_lag_marker;
use crate::ops::control::{timed, ControlError};
use crate::ops::http::{NODE_HEADER, OUTPUT_CUT_HEADER};
use crate::ops::logs::{self, Which};
use crate::store::{self, RunRecord, Store};

/// How long after the node's stream ended its outcome may take to show in the store.
pub const END_WAIT: Duration = Duration::from_secs(30);
/// How long a silent stream goes before the store is asked whether the run is still going.
pub const SILENCE_CHECK: Duration = Duration::from_secs(5);
/// How long the stream may go on once the store says the run ended.
pub(crate) const END_GRACE: Duration = Duration::from_secs(3);
/// Connecting to the node (and its answer's head).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two reads of the run's record while waiting for it to end.
const POLL: Duration = Duration::from_millis(500);

/// How long to wait for the store to close a run whose node seems gone: the next leader does
/// within about `lease + poll` of the death ([`crate::node::orphans`]); three leases, at least
/// 30 s.
pub fn lost_wait(config: &Config) -> Duration {
    (config.election.lease * 3).max(Duration::from_secs(30))
}

/// How to read the running node: a token (`--http-token-file`, `CRONLEASE_HTTP_TOKEN`) and
/// the CAs trusted besides the system's (`--http-tls-ca`).
#[derive(Clone, Default)]
pub struct Reader {
    pub token: Option<String>,
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// Follow the run of `job` at `at` (default: its newest run): write it to `out` as it goes,
/// and notes on what happens to the stream to `note`. `Ok(true)` when the run ended `ok`.
pub async fn follow(
    config: &Config,
    job: &str,
    at: Option<DateTime<Utc>>,
    reader: &Reader,
    out: &mut dyn Write,
    note: &mut dyn FnMut(&str),
) -> Result<bool, ControlError> {
    let store = logs::open(config, job).await?;
    let store = &*store;
    let which = at.map_or(Which::Last(1), Which::At);
    let Some(run) = logs::runs(store, job, which).await?.pop() else {
        return Err(ControlError::Refused(format!("{job}: no runs yet")));
    };
    if run.outcome != store::RUNNING {
        write(out, &logs::render(&run));
        return Ok(run.outcome == "ok");
    }
    write(out, &format!("{}\n", logs::header(&run)));
    let nodes = timed(store.nodes())
        .await
        .map_err(|source| ControlError::Store {
            store: store.describe(),
            source,
        })?;
    let (seen, wait) = match nodes.get(&run.node).map(|n| n.http.as_deref()) {
        None => {
            note(&format!(
                "node {} is not registered any more (stopped or died): waiting for the store to \
                 close the run",
                run.node
            ));
            (Seen::Nothing, lost_wait(config))
        }
        Some(None) => {
            note(&format!(
                "node {} serves no HTTP (start it with --http ADDR to follow its runs live); \
                 showing the stored tail",
                run.node
            ));
            write(out, &logs::kept(&run));
            return Ok(false);
        }
        Some(Some(addr)) => match stream(store, &run, addr, reader, out, note).await {
            Streamed::Ended(seen) => (seen, END_WAIT),
            Streamed::Broken(seen) => (seen, lost_wait(config)),
        },
    };
    let (last, ended) = ended(store, &run, wait, note).await;
    // After a broken stream (or none), what the store kept beyond what was shown.
    write(out, &unseen(&last, &seen));
    if !ended {
        note(&format!(
            "gave up after {}: the store still says the run is going on {} (see `cronlease \
             logs {job} {}` later)",
            humantime::format_duration(wait),
            last.node,
            crate::node::tick::rfc3339(run.fire_time)
        ));
        return Ok(false);
    }
    write(out, &format!("{}\n", logs::header(&last)));
    Ok(last.outcome == "ok")
}

/// Write and flush; a closed stdout is not worth an error (the exit code still tells).
fn write(out: &mut dyn Write, text: &str) {
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// How much of the run's output was shown from the node's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// None: the stream was not had.
    Nothing,
    /// The run's output up to this byte (counted from its very first byte, cut ones included).
    Upto(u64),
    /// Shown, but how much is not known (this reader fell behind, or the node did not say).
    Unknown,
    /// The stream ended with the run: everything was shown (or a lag marker said what not).
    Complete,
}

/// How a stream from the node ended.
enum Streamed {
    /// With the run.
    Ended(Seen),
    /// Before it: not reached, refused, broken off, or silent while the store says it ended.
    Broken(Seen),
}

/// Read the node's stream of the run's output into `out` until it ends.
async fn stream(
    store: &dyn Store,
    run: &RunRecord,
    addr: &str,
    reader: &Reader,
    out: &mut dyn Write,
    note: &mut dyn FnMut(&str),
) -> Streamed {
    let node = &run.node;
    let url = match crate::ops::http_client::output_url(
        addr,
        &run.job,
        &store::time_key(run.fire_time),
    ) {
        Ok(url) => url,
        Err(why) => {
            note(&format!(
                "node {node}: {why}; waiting for the store to close the run"
            ));
            return Streamed::Broken(Seen::Nothing);
        }
    };
    let client = match crate::ops::http_client::client(CONNECT_TIMEOUT, &reader.extra_roots) {
        Ok(client) => client,
        Err(e) => {
            note(&format!("cannot make an HTTP client: {}", chain(&e)));
            return Streamed::Broken(Seen::Nothing);
        }
    };
    let mut request = client.get(url.clone());
    if let Some(token) = &reader.token {
        request = request.bearer_auth(token);
    }
    let mut response = match tokio::time::timeout(CONNECT_TIMEOUT, request.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            note(&format!(
                "cannot reach node {node} at {url} ({}); waiting for the store to close the run",
                chain(&e)
            ));
            return Streamed::Broken(Seen::Nothing);
        }
        Err(_) => {
            note(&format!(
                "node {node} did not answer at {url} within {CONNECT_TIMEOUT:?}; waiting for \
                 the store to close the run"
            ));
            return Streamed::Broken(Seen::Nothing);
        }
    };
    if !response.status().is_success() {
        let status = response.status();
        let body = tokio::time::timeout(CONNECT_TIMEOUT, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let hint = match (status.as_u16(), &reader.token) {
            (401, None) => " (give a token: --http-token-file or CRONLEASE_HTTP_TOKEN)",
            (401, Some(_)) => " (the node refused the token given: rotated, or another cluster's?)",
            (429, _) => " (too many wrong tokens from this address: try again in a minute)",
            _ => "",
        };
        note(&format!(
            "node {node} answered {status}: {}{hint}; waiting for the run's outcome in the store",
            body.trim()
        ));
        return Streamed::Broken(Seen::Nothing);
    }
    // An address such as 127.0.0.1:9100 in the record of a node on another host leads here to
    // whatever listens on this host's port (a node older than the header does not send it).
    if let Some(other) = response
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| *id != node.as_str())
    {
        note(&format!(
            "{url} is node {other} from this host, not node {node} (its --http address is not \
             reachable from here); waiting for the run's outcome in the store"
        ));
        return Streamed::Broken(Seen::Nothing);
    }
    let cut = response
        .headers()
        .get(OUTPUT_CUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut counted = Counted::new(cut);
    // Rechecked against the store when the stream is silent; once the store says the run
    // ended, the stream has END_GRACE to end too.
    let mut ended_at: Option<Instant> = None;
    loop {
        let wait = match ended_at {
            Some(at) => END_GRACE.saturating_sub(at.elapsed()),
            None => SILENCE_CHECK,
        };
        match tokio::time::timeout(wait, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                let _ = out.write_all(&bytes);
                let _ = out.flush();
                counted.feed(&bytes);
            }
            Ok(Ok(None)) => return Streamed::Ended(Seen::Complete),
            Ok(Err(e)) => {
                note(&format!(
                    "the stream from node {node} broke off ({}): the node may have died; \
                     waiting for the store to close the run",
                    chain(&e)
                ));
                return Streamed::Broken(counted.seen());
            }
            Err(_) if ended_at.is_some() => {
                note(&format!(
                    "the store says the run ended, but node {node}'s stream did not: showing \
                     the stored outcome"
                ));
                return Streamed::Broken(counted.seen());
            }
            Err(_) => {
                let now = timed(store.get_run(&run.job, run.fire_time)).await;
                if let Ok(Some(r)) = now {
                    if r.outcome != store::RUNNING {
                        ended_at = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// An error with its causes (reqwest's own message alone is vague: "error sending request").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The address to connect to for a node's `--http` address: one bound to every interface
/// (`0.0.0.0:9100`) is tried on this host's loopback, the best guess there is.
pub(crate) fn reachable(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(mut a) if a.ip().is_unspecified() => {
            a.set_ip(match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
            a.to_string()
        }
        _ => addr.to_string(),
    }
}

/// Counts the run's output bytes in a stream (markers aside), so that after a break the
/// stored tail can be shown from where the stream stopped.
struct Counted {
    /// Bytes of output before the next byte; `None` once that is not known.
    offset: Option<u64>,
    /// Bytes of the cut marker still to come (not output).
    marker: usize,
    /// The line read so far.
    line: Vec<u8>,
}

impl Counted {
    /// `cut`: the node's [`OUTPUT_CUT_HEADER`]; the body starts with the cut marker if above 0.
    fn new(cut: Option<u64>) -> Counted {
        let marker = match cut {
            Some(n) if n > 0 => crate::node::output::cut_marker(n).len() + 1,
            _ => 0,
        };
        Counted {
            offset: cut,
            marker,
            line: Vec::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        let skip = self.marker.min(bytes.len());
        self.marker -= skip;
        bytes = &bytes[skip..];
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..=i]);
            bytes = &bytes[i + 1..];
            let text = String::from_utf8_lossy(&self.line[..self.line.len() - 1]);
            if is_lag_marker(&text) {
                self.offset = None;
            } else if let Some(offset) = &mut self.offset {
                *offset += self.line.len() as u64;
            }
            self.line.clear();
        }
        self.line.extend_from_slice(bytes);
    }

    fn seen(&self) -> Seen {
        match self.offset {
            Some(offset) => Seen::Upto(offset + self.line.len() as u64),
            None => Seen::Unknown,
        }
    }
}

/// Poll the run's record until it is no longer `running` or `wait` has passed: the newest
/// record read, and whether it ended. Store errors are retried (said once).
async fn ended(
    store: &dyn Store,
    run: &RunRecord,
    wait: Duration,
    note: &mut dyn FnMut(&str),
) -> (RunRecord, bool) {
    let deadline = Instant::now() + wait;
    let mut last = run.clone();
    let mut told = false;
    loop {
        match timed(store.get_run(&run.job, run.fire_time)).await {
            Ok(Some(r)) => {
                let done = r.outcome != store::RUNNING;
                last = r;
                if done {
                    return (last, true);
                }
            }
            Ok(None) => {}
            Err(e) if !told => {
                told = true;
                note(&format!("{}: {e}; trying again", store.describe()));
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return (last, false);
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// What the store kept of the run's output beyond what was shown from the stream.
fn unseen(run: &RunRecord, seen: &Seen) -> String {
    let upto = match seen {
        Seen::Complete => return String::new(),
        Seen::Nothing => return logs::kept(run),
        Seen::Unknown => {
            return format!(
                "[... the stored tail follows; it may repeat lines shown above ...]\n{}",
                logs::kept(run)
            )
        }
        Seen::Upto(upto) => *upto,
    };
    let start = run.output_cut;
    let end = start + run.output.len() as u64;
    let mut text = String::new();
    if upto >= end {
        return text;
    }
    if upto >= start {
        let mut at = (upto - start) as usize;
        while !run.output.is_char_boundary(at) {
            at += 1;
        }
        text.push_str(&run.output[at..]);
    } else {
        text.push_str(&format!(
            "[... {} bytes of output not shown (not kept: output_limit) ...]\n",
            start - upto
        ));
        text.push_str(&run.output);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::output::{cut_marker, lag_marker};

    fn run(output: &str, cut: u64) -> RunRecord {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        RunRecord {
            outcome: "lost".into(),
            output: output.into(),
            output_cut: cut,
            ..RunRecord::claimed("backup", at, "n1", 3, "s", "p")
        }
    }

    #[test]
    fn the_stream_is_counted_in_output_bytes_markers_aside() {
        let mut c = Counted::new(Some(100));
        let marker = format!("{}\n", cut_marker(100));
        let (a, b) = marker.as_bytes().split_at(7);
        c.feed(a);
        c.feed(b);
        assert_eq!(c.seen(), Seen::Upto(100));
        c.feed(b"line 1\nli");
        assert_eq!(c.seen(), Seen::Upto(109));
        c.feed(b"ne 2\n");
        assert_eq!(c.seen(), Seen::Upto(114));
        c.feed(format!("{}\n", lag_marker(4)).as_bytes());
        assert_eq!(c.seen(), Seen::Unknown);
        // No header: not known from the start.
        let mut c = Counted::new(None);
        c.feed(b"x\n");
        assert_eq!(c.seen(), Seen::Unknown);
        let mut c = Counted::new(Some(0));
        c.feed(b"x\n");
        assert_eq!(c.seen(), Seen::Upto(2));
    }

    #[test]
    fn after_a_break_the_stored_tail_is_shown_from_where_the_stream_stopped() {
        // Output so far: 10 bytes cut, then "line 2\nline 3\n" kept (bytes 10..24).
        let r = run("line 2\nline 3\n", 10);
        assert_eq!(unseen(&r, &Seen::Upto(17)), "line 3\n");
        assert_eq!(unseen(&r, &Seen::Upto(20)), "e 3\n");
        assert_eq!(unseen(&r, &Seen::Upto(24)), "");
        assert_eq!(unseen(&r, &Seen::Upto(30)), "");
        assert_eq!(
            unseen(&r, &Seen::Upto(4)),
            "[... 6 bytes of output not shown (not kept: output_limit) ...]\nline 2\nline 3\n"
        );
        assert_eq!(unseen(&r, &Seen::Complete), "");
        assert_eq!(unseen(&r, &Seen::Nothing), logs::kept(&r));
        assert!(unseen(&r, &Seen::Unknown).ends_with("may repeat lines shown above ...]\n[... 10 earlier bytes of output not kept (output_limit) ...]\nline 2\nline 3\n"));
        // Never inside a character.
        let r = run("é\n", 0);
        assert_eq!(unseen(&r, &Seen::Upto(1)), "\n");
    }

    #[test]
    fn an_address_on_every_interface_is_tried_on_loopback() {
        assert_eq!(reachable("0.0.0.0:9100"), "127.0.0.1:9100");
        assert_eq!(reachable("[::]:9100"), "[::1]:9100");
        assert_eq!(reachable("10.0.0.7:9100"), "10.0.0.7:9100");
        assert_eq!(reachable("node-1:9100"), "node-1:9100");
    }
}
