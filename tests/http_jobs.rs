//! The `http` action (src/config/http_action.rs, src/node/http_run.rs) through the real binary on
//! a real emulator, against a local HTTP server of this test: jobs that fire once a year, run
//! with `cronlease trigger`.
//!
//! - 2xx: `ok`, the request carries the method, body, a `${VAR}` header, X-Cronlease-Job,
//!   X-Cronlease-Fire-Time, X-Cronlease-Term and Idempotency-Key (job@fire time); the kept
//!   output is the status line and the body.
//! - 500: `failed`, the status in the reason. No answer within the action's timeout: `timeout`.
//! - A retry (`retries = 1`) sends the same Idempotency-Key.
//! - A node that stops (grace over) drops a request in flight: the server sees it cancelled.
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use common::{cli, runs_newest_first as runs, wait_until, write_config, Emulator, Node};
use cronlease::store::RunRecord;

/// One request: (method, path, headers, body).
type Request = (String, String, HashMap<String, String>, String);

/// What the server saw, and the slow requests dropped before their end.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Request>>,
    flaky: AtomicUsize,
    cancelled: AtomicUsize,
}

/// Counts a request that never gets an answer and whose handler was dropped: its client went
/// away.
struct Cancelled(Arc<Seen>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn serve(seen: Arc<Seen>) -> (u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().fallback(
        move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                seen.requests.lock().unwrap().push((
                    method.to_string(),
                    uri.path().to_string(),
                    h,
                    body,
                ));
                match uri.path() {
                    "/ok" => (StatusCode::OK, "hello\nworld\n").into_response(),
                    "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom\n").into_response(),
                    // Not followed: the 302 is the answer.
                    "/moved" => (StatusCode::FOUND, [("location", "/ok")], "").into_response(),
                    "/flaky" if seen.flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                        (StatusCode::SERVICE_UNAVAILABLE, "later\n").into_response()
                    }
                    "/flaky" => (StatusCode::OK, "now\n").into_response(),
                    _ => {
                        // Never answers: only its client going away ends it.
                        let _guard = Cancelled(seen.clone());
                        std::future::pending::<()>().await;
                        (StatusCode::OK, "late\n").into_response()
                    }
                }
            }
        },
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, rt)
}

/// Trigger `job` and wait for its finished record.
fn run_once(emu: &Emulator, cfg: &std::path::Path, job: &str) -> RunRecord {
    let out = cli(emu, cfg, &["trigger", job, "--wait"]);
    assert!(out.code.is_some(), "{}\n{}", out.stdout, out.stderr);
    let mut found = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            found = runs(emu, job);
            found.first().is_some_and(|r| r.finished_at.is_some())
        }),
        "no finished run of {job}: {found:?}"
    );
    found.remove(0)
}

#[test]
fn http_jobs_request_expect_retry_and_cancel() {
    let seen = Arc::new(Seen::default());
    let (port, _rt) = serve(seen.clone());
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\
             [node]\nshutdown_grace = \"1s\"\n\n\
             [[job]]\nname = \"ok\"\nschedule = \"0 0 1 1 *\"\n\
             http = {{ url = \"{}\", method = \"POST\", body = \"ping\", \
             headers = {{ Authorization = \"Bearer ${{HTTP_JOB_TOKEN}}\" }} }}\n\n\
             [[job]]\nname = \"fail\"\nschedule = \"0 0 1 1 *\"\nhttp = {{ url = \"{}\" }}\n\n\
             [[job]]\nname = \"slow\"\nschedule = \"0 0 1 1 *\"\n\
             http = {{ url = \"{}\", timeout = \"1s\" }}\n\n\
             [[job]]\nname = \"flaky\"\nschedule = \"0 0 1 1 *\"\nretries = 1\n\
             retry_backoff = \"100ms\"\nhttp = {{ url = \"{}\" }}\n\n\
             [[job]]\nname = \"hang\"\nschedule = \"0 0 1 1 *\"\n\
             http = {{ url = \"{}\", timeout = \"1m\" }}\n\n\
             [[job]]\nname = \"moved\"\nschedule = \"0 0 1 1 *\"\n\
             http = {{ url = \"{}\", method = \"POST\", expect = \"3xx\" }}\n",
            url("/ok"),
            url("/fail"),
            url("/slow"),
            url("/flaky"),
            url("/hang"),
            url("/moved"),
        ),
    );
    let mut node = Node::spawn_with_env(&emu, &cfg, "n1", &[("HTTP_JOB_TOKEN", "tok-1")]);

    let run = run_once(&emu, &cfg, "ok");
    assert_eq!(run.outcome, "ok", "{run:?}");
    let fire = node
        .events_named("tick_run")
        .into_iter()
        .find(|e| e["job"] == "ok")
        .unwrap()["fire_time"]
        .as_str()
        .unwrap()
        .to_string();
    let requests = seen.requests.lock().unwrap().clone();
    let (method, _, headers, body) = requests.iter().find(|r| r.1 == "/ok").unwrap();
    assert_eq!(method, "POST");
    assert_eq!(body, "ping");
    assert_eq!(headers["authorization"], "Bearer tok-1");
    assert_eq!(headers["x-cronlease-job"], "ok");
    assert_eq!(headers["x-cronlease-fire-time"], fire);
    assert_eq!(headers["x-cronlease-term"], run.term.to_string());
    assert_eq!(headers["idempotency-key"], format!("ok@{fire}"));
    assert!(headers["user-agent"].starts_with("cronlease/"));
    assert_eq!(run.output, "HTTP 200 OK\nhello\nworld\n", "{run:?}");

    let run = run_once(&emu, &cfg, "fail");
    assert_eq!(run.outcome, "failed");
    assert_eq!(
        run.reason.as_deref(),
        Some("HTTP 500 Internal Server Error (expected 2xx)")
    );

    let run = run_once(&emu, &cfg, "slow");
    assert_eq!(run.outcome, "timeout", "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("no answer within 1s"),
        "{run:?}"
    );

    let run = run_once(&emu, &cfg, "flaky");
    assert_eq!((run.outcome.as_str(), run.attempts), ("ok", 2), "{run:?}");
    let keys: Vec<String> = seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.1 == "/flaky")
        .map(|r| r.2["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "a retry must send the same key");

    // A redirect is the answer, not followed (the POST is not replayed as a GET elsewhere).
    let oks = |seen: &Seen| {
        seen.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.1 == "/ok")
            .count()
    };
    let before = oks(&seen);
    let run = run_once(&emu, &cfg, "moved");
    assert_eq!(run.outcome, "ok", "{run:?}");
    assert!(run.output.starts_with("HTTP 302 Found"), "{run:?}");
    assert_eq!(oks(&seen), before, "the redirect was followed");

    // A request in flight when the node stops (grace 1 s, then its runs are killed) is dropped.
    let before = seen.cancelled.load(Ordering::SeqCst);
    let out = cli(&emu, &cfg, &["trigger", "hang"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(wait_until(Duration::from_secs(20), || seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.1 == "/hang")));
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(20)).is_some());
    assert!(
        wait_until(Duration::from_secs(10), || seen
            .cancelled
            .load(Ordering::SeqCst)
            > before),
        "the server never saw the request dropped"
    );
    let hang = runs(&emu, "hang");
    assert_eq!(hang[0].outcome, "killed", "{hang:?}");
}
