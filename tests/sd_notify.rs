//! The systemd notify protocol, with the real binary on the file store (lease 3 s, renew
//! 500 ms, poll 250 ms): the test binds the datagram socket systemd would, points
//! `NOTIFY_SOCKET` at it, and reads what the node says from start to stop: `STATUS=` lines,
//! `READY=1` once registered, `WATCHDOG=1` every half of `WATCHDOG_USEC` at most, `RELOADING=1`
//! with `MONOTONIC_USEC` and `READY=1` around a reload (a refused file's reason in `STATUS=`),
//! `STOPPING=1` with `EXTEND_TIMEOUT_USEC` at SIGTERM. Jobs never see systemd's variables, an
//! abstract socket name works, and a socket nobody listens on harms nothing.
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cronlease::ops::sd_notify::monotonic_usec;
use serde_json::Value;

use common::{wait_until, write_config, Backend, Node};

const TIMINGS: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
                       [node]\nshutdown_grace = \"5s\"\n";

/// One datagram the node sent, with when it arrived (both clocks).
#[derive(Debug, Clone)]
struct Message {
    text: String,
    at: Instant,
    wall: DateTime<Utc>,
}

/// The systemd side: a bound datagram socket and a thread that keeps what arrives.
struct Listener {
    got: Arc<Mutex<Vec<Message>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn on(sock: UnixDatagram) -> Listener {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (got, done) = (got.clone(), done.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !done.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        got.lock().unwrap().push(Message {
                            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                            at: Instant::now(),
                            wall: Utc::now(),
                        });
                    }
                }
            })
        };
        Listener {
            got,
            done,
            thread: Some(thread),
        }
    }

    fn messages(&self) -> Vec<Message> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// The first message from index `from` on that `pred` accepts, waiting up to `timeout`.
    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, Message)> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .messages()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| pred(&m.text));
            found.is_some()
        });
        found
    }

    fn all_text(&self) -> String {
        self.messages()
            .iter()
            .map(|m| format!("{:?}", m.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of `NAME=` in a message, if it has that line.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// `cronlease run` on `backend` with `env` added (systemd's variables, or a marker).
fn spawn(backend: &Backend, cfg: &Path, id: &str, env: &[(&str, &str)]) -> Node {
    let args: Vec<String> = [
        "run",
        "--config",
        &cfg.display().to_string(),
        "--node-id",
        id,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut all = backend.env();
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Node::spawn_args(id, &args, &all)
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("ts of {v}: {e}"))
        .with_timezone(&Utc)
}

/// SIGTERM: `STOPPING=1` with an `EXTEND_TIMEOUT_USEC` covering the grace period, then exit 0.
fn stop_and_check(node: &mut Node, listener: &Listener, grace: Duration) {
    let from = listener.count();
    node.signal(libc::SIGTERM);
    let (_, stopping) = listener
        .wait_for(from, Duration::from_secs(10), |t| t.contains("STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1; got:\n{}", listener.all_text()));
    let extend: u128 = field(&stopping.text, "EXTEND_TIMEOUT_USEC")
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC in {:?}", stopping.text))
        .parse()
        .unwrap();
    assert!(
        extend > grace.as_micros(),
        "EXTEND_TIMEOUT_USEC={extend} does not cover the grace of {grace:?}"
    );
    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn the_node_tells_systemd_its_start_watchdog_reloads_and_stop() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let listener = Listener::on(UnixDatagram::bind(&socket).unwrap());
    let body = format!(
        "{}{TIMINGS}\n[[job]]\nname = \"env\"\nschedule = \"* * * * * *\"\ncommand = [\"env\"]\n",
        backend.store_table()
    );
    let cfg = write_config(dir.path(), &body);
    let socket_var = socket.display().to_string();
    let mut node = spawn(
        &backend,
        &cfg,
        "n1",
        &[
            ("NOTIFY_SOCKET", &socket_var),
            ("WATCHDOG_USEC", "400000"),
            ("CRONLEASE_TEST_MARK", "yes"),
        ],
    );

    // 1. STATUS while starting, READY=1 once registered (after `node_started`).
    let (ready_idx, ready) = listener
        .wait_for(0, Duration::from_secs(20), |t| t == "READY=1")
        .unwrap_or_else(|| panic!("no READY=1; got:\n{}", listener.all_text()));
    // Before it: the start's status lines, and the watchdog fed by the start's attempts.
    let before = listener.messages()[..ready_idx].to_vec();
    assert!(
        before.iter().any(|m| m.text.starts_with("STATUS="))
            && before
                .iter()
                .all(|m| m.text.starts_with("STATUS=") || m.text == "WATCHDOG=1"),
        "before READY=1: status lines (at least one) and pings only: {before:?}"
    );
    let started = node
        .wait_for(Duration::from_secs(5), |e| e["event"] == "node_started")
        .expect("node_started is logged");
    assert!(
        ts(&started) <= ready.wall,
        "READY=1 at {} came before node_started at {}",
        ready.wall,
        ts(&started)
    );

    // 2. The watchdog: WATCHDOG_USEC = 400 ms, so a ping every 200 ms at most.
    let window = ready.at + Duration::from_millis(1500);
    let pings_after_ready = || {
        listener
            .messages()
            .iter()
            .skip(ready_idx)
            .filter(|m| m.text == "WATCHDOG=1" && m.at <= window)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(3), || pings_after_ready() >= 3),
        "{} WATCHDOG=1 within 1.5 s of READY=1; got:\n{}",
        pings_after_ready(),
        listener.all_text()
    );

    // 3. What it leads, once it leads it.
    listener
        .wait_for(ready_idx, Duration::from_secs(15), |t| {
            t.starts_with("STATUS=leading 1 of 1 jobs on file store at ")
        })
        .unwrap_or_else(|| panic!("no leading status; got:\n{}", listener.all_text()));

    // 4. The job's environment has none of systemd's variables.
    assert!(
        wait_until(Duration::from_secs(15), || node
            .events_named("job_finished")
            .iter()
            .any(|e| e["job"] == "env")),
        "the env job never finished"
    );
    let lines: Vec<String> = node
        .events_named("job_output")
        .iter()
        .filter(|e| e["job"] == "env")
        .filter_map(|e| e["line"].as_str().map(str::to_string))
        .collect();
    assert!(
        lines.iter().any(|l| l == "CRONLEASE_TEST_MARK=yes"),
        "the job's env output was not seen: {lines:?}"
    );
    let leaked: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("NOTIFY_SOCKET=") || l.starts_with("WATCHDOG_"))
        .collect();
    assert!(leaked.is_empty(), "the job inherited {leaked:?}");

    // 5. SIGHUP: RELOADING=1 with the monotonic time of the reload's start, then READY=1.
    let from = listener.count();
    let t0 = monotonic_usec();
    node.signal(libc::SIGHUP);
    let (reloading_idx, reloading) = listener
        .wait_for(from, Duration::from_secs(10), |t| {
            t.starts_with("RELOADING=1")
        })
        .unwrap_or_else(|| panic!("no RELOADING=1; got:\n{}", listener.all_text()));
    let t1 = monotonic_usec();
    let at: u64 = field(&reloading.text, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {:?}", reloading.text))
        .parse()
        .unwrap();
    assert!(
        (t0..=t1).contains(&at),
        "MONOTONIC_USEC={at} not between {t0} (before SIGHUP) and {t1} (after RELOADING=1)"
    );
    listener
        .wait_for(reloading_idx + 1, Duration::from_secs(10), |t| {
            t == "READY=1"
        })
        .unwrap_or_else(|| panic!("no READY=1 after the reload; got:\n{}", listener.all_text()));

    // 6. A bad file: refused, ready again, the reason (file:line:col) in the status.
    std::fs::write(
        &cfg,
        body.replace("schedule = \"* * * * * *\"", "schedule = \"61 * * * *\""),
    )
    .unwrap();
    let from = listener.count();
    node.signal(libc::SIGHUP);
    let (_, refused) = listener
        .wait_for(from, Duration::from_secs(10), |t| {
            t.starts_with("READY=1\nSTATUS=")
        })
        .unwrap_or_else(|| panic!("no READY=1 with a STATUS; got:\n{}", listener.all_text()));
    let status = field(&refused.text, "STATUS").unwrap();
    let file = cfg.display().to_string();
    let at = status
        .find(&format!("{file}:"))
        .unwrap_or_else(|| panic!("the status does not name {file}: {status:?}"));
    let mut place = status[at + file.len() + 1..].split(':');
    for what in ["line", "column"] {
        let n = place.next().unwrap_or_default();
        assert!(
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()),
            "no {what} in {status:?}"
        );
    }

    // 7. SIGTERM: STOPPING=1 with EXTEND_TIMEOUT_USEC, exit 0.
    stop_and_check(&mut node, &listener, Duration::from_secs(5));
    assert!(
        node.events_named("sd_notify_error").is_empty(),
        "{:?}",
        node.events_named("sd_notify_error")
    );
}

#[test]
fn an_abstract_socket_name_is_used_and_another_process_watchdog_is_not_ours() {
    use std::os::linux::net::SocketAddrExt;
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("cronlease-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = Listener::on(UnixDatagram::bind_addr(&addr).unwrap());
    let body = format!(
        "{}{TIMINGS}\n[[job]]\nname = \"hello\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\n",
        backend.store_table()
    );
    let cfg = write_config(dir.path(), &body);
    let socket_var = format!("@{name}");
    // WATCHDOG_PID 1: these variables were meant for another process.
    let mut node = spawn(
        &backend,
        &cfg,
        "n1",
        &[
            ("NOTIFY_SOCKET", &socket_var),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    listener
        .wait_for(0, Duration::from_secs(20), |t| t == "READY=1")
        .unwrap_or_else(|| panic!("no READY=1; got:\n{}", listener.all_text()));
    listener
        .wait_for(0, Duration::from_secs(15), |t| {
            t.starts_with("STATUS=leading 1 of 1 jobs")
        })
        .unwrap_or_else(|| panic!("no leading status; got:\n{}", listener.all_text()));
    stop_and_check(&mut node, &listener, Duration::from_secs(5));
    // Alive for well over a second with a 400 ms watchdog that was not ours: no ping at all.
    let pings = listener
        .messages()
        .iter()
        .filter(|m| m.text.contains("WATCHDOG=1"))
        .count();
    assert_eq!(pings, 0, "got:\n{}", listener.all_text());
}

#[test]
fn a_socket_nobody_listens_on_harms_nothing() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}{TIMINGS}\n[[job]]\nname = \"hello\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\n",
        backend.store_table()
    );
    let cfg = write_config(dir.path(), &body);
    let socket_var = dir.path().join("nobody.sock").display().to_string();
    let mut node = spawn(
        &backend,
        &cfg,
        "n1",
        &[("NOTIFY_SOCKET", &socket_var), ("WATCHDOG_USEC", "400000")],
    );
    assert!(
        wait_until(Duration::from_secs(20), || node
            .events_named("job_finished")
            .iter()
            .any(|e| e["job"] == "hello")),
        "the job never ran"
    );
    node.signal(libc::SIGTERM);
    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    // The failed sends are logged once, not once per ping.
    let errors = node.events_named("sd_notify_error");
    assert_eq!(errors.len(), 1, "{errors:?}");
}
