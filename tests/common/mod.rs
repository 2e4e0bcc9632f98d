//! The integration-test harness shared by every file in `tests/`: a real Datastore emulator on a
//! free port, real `cronlease` processes, and polling helpers with deadlines. Tests that must
//! hold for every store take a [`Backend`] (an emulator, or a directory for the file store)
//! and start their nodes with [`Node::spawn_on`].
//!
//! ```ignore
//! mod common;
//! use common::{wait_until, write_config, Emulator, Node};
//!
//! let emu = Emulator::start();                       // own port, own temp dir, own process group
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = write_config(dir.path(), "[[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\n");
//! let node = Node::spawn(&emu, &cfg, "node-a");      // `cronlease run --log-format json`
//! let ev = node.wait_for(Duration::from_secs(10), |e| e["event"] == "tick_run");
//! assert!(ev.is_some(), "{}", node.output_text());
//! ```
//!
//! Process hygiene. Emulators and nodes run in their own process groups (so a signal meant for
//! one never reaches the test runner, and stopping one stops its children too). Being in their
//! own group, they would not get the Ctrl-C of `cargo test`, nor die when nextest kills a test
//! that timed out. So each is started under a tiny `sh` guard: the guard forks a watcher that
//! blocks reading a pipe whose only writer is this test process, then `exec`s the real program
//! (same pid, so signals reach it directly). When the test process ends for any reason, even
//! SIGKILL, the pipe closes and the watcher kills the whole group. Normal teardown (`stop`,
//! `Drop`) kills the group itself.
//!
//! Environment: `CRONLEASE_EMULATOR` overrides the emulator launcher path;
//! `CRONLEASE_TEST_RUST_LOG` is passed to nodes as `RUST_LOG` (otherwise `RUST_LOG` is removed
//! so the events the tests read are always logged).
#![allow(dead_code)]

pub mod browser;
pub mod hook;
pub mod pgbouncer;
pub mod postgres_server;
pub mod proxy;
pub mod redis_server;
pub mod shared_emulator;
pub mod test_ca;
pub mod zookeeper_server;

/// The emulator's index flags: the composite indexes of the repository's `index.yaml`, and
/// no others. `--require_indexes` fails a query that needs an index the file lacks, as real
/// Datastore does, so the tests check that file. Without it the emulator also "recommends"
/// indexes from its whole query history on every commit, under one lock: thousands of
/// distinct queries (a history read per job at a failover of 10,000 jobs, or a long test run
/// on the shared emulator) made each commit take seconds. Nothing is written to the file.
pub fn index_flags() -> [String; 3] {
    [
        "--require_indexes".to_string(),
        "--store_index_configuration_on_disk=false".to_string(),
        format!("--index_file={}/index.yaml", env!("CARGO_MANIFEST_DIR")),
    ]
}
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default location of the emulator launcher (Google Cloud SDK from the Debian/apt packages).
pub const DEFAULT_EMULATOR: &str =
    "/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator";
/// The project id every test uses.
pub const PROJECT_ID: &str = "cronlease-test";
/// How long an emulator may take to answer its health check.
pub const EMULATOR_START_DEADLINE: Duration = Duration::from_secs(60);
/// Poll interval of every wait in this module.
const POLL: Duration = Duration::from_millis(20);

/// `sh -c GUARD PROGRAM ARGS...`: start a watcher that kills the whole process group (`kill -9
/// 0`) when the guard pipe on stdin reaches end of file, then become PROGRAM (same pid) with
/// stdin from /dev/null.
const GUARD: &str =
    r#"exec 3<&0; ( read -r _ <&3; kill -9 0 ) </dev/null & exec "$0" "$@" </dev/null 3<&-"#;

// ---------------------------------------------------------------------------------------------
// Small helpers

/// A port that was free a moment ago on 127.0.0.1 (bind port 0 and read what the kernel chose).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` every ~20 ms until it returns true (→ true) or `timeout` passes (→ false, after
/// one last try at the deadline).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Writes `body` to `dir/jobs.toml` and returns its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Whether the child `pid` has exited, without reaping it (so its pid, which is also its
/// process group id, stays reserved and `killpg` cannot hit a stranger).
fn exited_nowait(pid: i32) -> bool {
    // SAFETY: waitid only writes into `info`, which is zeroed and large enough.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // r < 0: not our child any more (already reaped): treat as exited.
        r < 0 || info.si_pid() != 0
    }
}

/// SIGKILL the process group `pgid`. Call only while its leader is not yet reaped.
fn kill_group(pgid: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// SIGKILL a server's process group (its leader is not reaped yet, so the group id is still
/// ours), reap the leader, and close its guard pipe. Idempotent.
fn reap_group(
    child: &mut Option<std::process::Child>,
    guard: &mut Option<std::process::ChildStdin>,
) {
    if let Some(mut c) = child.take() {
        kill_group(c.id() as i32);
        let _ = c.wait();
    }
    *guard = None;
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A tiny HTTP/1.1 client for the emulator's admin endpoints: returns (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    http_with_head(port, method, path, timeout).map(|(status, _, body)| (status, body))
}

/// [`http`], with the answer's status line and headers: (status, head, body).
pub fn http_with_head(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A server that hangs up abruptly after answering (e.g. /shutdown) is fine.
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            let body = &buf[end + 4..];
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = &body[..length.unwrap_or(body.len()).min(body.len())];
                return Ok((status, head, String::from_utf8_lossy(body).to_string()));
            }
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a full HTTP response",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Datastore emulator

/// The emulator launcher: `$CRONLEASE_EMULATOR` or [`DEFAULT_EMULATOR`]; panics with a clear
/// message if it or `java` is missing.
pub fn emulator_path() -> PathBuf {
    let path = std::env::var_os("CRONLEASE_EMULATOR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_EMULATOR));
    assert!(
        path.is_file(),
        "Datastore emulator not found at {} (install google-cloud-cli-datastore-emulator, or set \
         CRONLEASE_EMULATOR to the cloud_datastore_emulator launcher)",
        path.display()
    );
    let java = std::env::var_os("JAVA").unwrap_or_else(|| "java".into());
    let java_ok = Command::new(&java)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        java_ok,
        "{:?} -version failed: the Datastore emulator needs Java 11+ on PATH (or set JAVA)",
        java
    );
    path
}

/// How starting a server process ended.
pub enum Startup {
    Ready,
    /// The process exited; `bind` says whether it was because the port was taken.
    Died {
        bind: bool,
    },
    Timeout,
}

/// A server process of the test's own (emulator, redis-server, ZooKeeper), in its own process
/// group, on a port of its own.
pub trait Server {
    /// For messages: "the Datastore emulator", "redis-server", ...
    const NAME: &'static str;
    fn port(&self) -> u16;
    fn set_port(&mut self, port: u16);
    /// Start the process on its port and wait until it serves, dies or times out.
    fn spawn(&mut self) -> Startup;
    /// SIGKILL its group and reap it. Idempotent.
    fn reap(&mut self);
    /// The end of its log, for failure messages.
    fn log_tail(&self) -> String;
}

fn failed<S: Server>(server: &mut S, how: Startup, doing: &str) -> ! {
    server.reap();
    let why = match how {
        Startup::Died { .. } => "exited",
        _ => "did not become ready in time",
    };
    panic!(
        "{} on port {} {why} during {doing}; log tail:\n{}",
        S::NAME,
        server.port(),
        server.log_tail()
    )
}

/// Start `server` on a free port. Another process may take the port between `free_port()` and
/// the bind: then try another one (five tries).
pub fn start_on_free_port<S: Server>(server: &mut S) {
    for attempt in 1..=5 {
        server.set_port(free_port());
        match server.spawn() {
            Startup::Ready => return,
            Startup::Died { bind: true } if attempt < 5 => server.reap(),
            other => failed(server, other, "start-up"),
        }
    }
}

/// Start `server` again on its port. The old process's sockets may hold the port for a moment:
/// a bind clash is retried for up to 20 s.
pub fn restart_on_port<S: Server>(server: &mut S) {
    let mut last = Startup::Timeout;
    wait_until(Duration::from_secs(20), || {
        last = server.spawn();
        let clash = matches!(last, Startup::Died { bind: true });
        if clash {
            server.reap();
        }
        !clash
    });
    if !matches!(last, Startup::Ready) {
        failed(server, last, "a restart");
    }
}

/// Polls `f` (every ~20 ms, as [`wait_until`]) until it gives an answer or `timeout` passes.
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut out = None;
    wait_until(timeout, || {
        out = f();
        out.is_some()
    });
    out
}

/// [`wait_until`] for async conditions, inside a tokio test.
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// A Datastore emulator for one test: under nextest, a project of its own on the run's shared
/// emulator ([`Emulator::start`]); otherwise, or when the test stops, kills or restarts it, an
/// emulator of its own: free port, temp data dir, own process group ([`Emulator::start_own`]).
/// Dropping an own emulator stops it.
pub struct Emulator {
    pub port: u16,
    /// The Datastore project the test's nodes and clients use.
    project: String,
    /// The shared emulator's log, when this is a project on it (nothing to stop or reap then).
    shared_log: Option<PathBuf>,
    on_disk: bool,
    launcher: PathBuf,
    /// Holds the data dir (`project/`) and `emulator.log`; deleted on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Write end of the guard pipe (see the module docs); dropping it kills the group.
    guard: Option<ChildStdin>,
}

impl Emulator {
    /// A project of its own on the nextest run's shared emulator (one JVM start and JIT
    /// warm-up per run instead of per test: ~10 s of CPU each, which on a 2-core machine
    /// starved the nodes of timing tests that ran alongside); outside nextest, as
    /// [`Emulator::start_own`]. Such a test cannot stop, kill, restart or reset the emulator.
    pub fn start() -> Emulator {
        let Some(shared) = shared_emulator::get() else {
            return Emulator::start_own();
        };
        Emulator {
            port: shared.port(),
            project: shared_emulator::fresh_project(),
            shared_log: Some(shared.log_path()),
            on_disk: false,
            launcher: emulator_path(),
            dir: tempfile::Builder::new()
                .prefix("cronlease-emulator-")
                .tempdir()
                .expect("create a temp dir"),
            child: None,
            guard: None,
        }
    }

    /// In-memory emulator of this test's own (`--store_on_disk=False`, `--consistency=1.0`) on
    /// a free port: for a test that stops, kills, restarts or resets it.
    pub fn start_own() -> Emulator {
        Emulator::launch(false)
    }

    /// Panics unless this emulator is the test's own (see [`Emulator::start_own`]).
    fn own(&self, doing: &str) {
        assert!(
            self.shared_log.is_none(),
            "a test that {doing} the emulator needs one of its own: Emulator::start_own()"
        );
    }

    /// Like [`Emulator::start`] but keeping its data on disk, so that [`Emulator::restart`]
    /// comes back with the same data.
    pub fn start_on_disk() -> Emulator {
        Emulator::launch(true)
    }

    fn launch(on_disk: bool) -> Emulator {
        let launcher = emulator_path();
        let dir = tempfile::Builder::new()
            .prefix("cronlease-emulator-")
            .tempdir()
            .expect("create a temp dir for the emulator");
        let mut emu = Emulator {
            port: 0,
            project: PROJECT_ID.to_string(),
            shared_log: None,
            on_disk,
            launcher,
            dir,
            child: None,
            guard: None,
        };
        let out = emu.log_file();
        let status = Command::new(&emu.launcher)
            .arg("create")
            .arg(emu.data_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out)
            .status()
            .unwrap_or_else(|e| panic!("run {} create: {e}", emu.launcher.display()));
        assert!(
            status.success(),
            "{} create failed ({status}):\n{}",
            emu.launcher.display(),
            tail(&emu.log_text(), 40)
        );
        start_on_free_port(&mut emu);
        emu
    }

    /// Starts the emulator process on `self.port` and waits until it is healthy.
    fn spawn(&mut self) -> Startup {
        let log_start = self.log_text().len();
        let out = self.log_file();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD)
            .arg(&self.launcher)
            .arg("start")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--store_on_disk={}",
                if self.on_disk { "True" } else { "False" }
            ))
            .arg("--consistency=1.0")
            .args(index_flags())
            .arg(self.data_dir())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.launcher.display()));
        self.guard = child.stdin.take();
        let pid = child.id() as i32;
        self.child = Some(child);

        let mut first_ok: Option<Instant> = None;
        poll_for(EMULATOR_START_DEADLINE, || {
            if exited_nowait(pid) {
                let log = self.log_text();
                let log = log.get(log_start..).unwrap_or_default();
                let bind = log.contains("BindException") || log.contains("Address already in use");
                return Some(Startup::Died { bind });
            }
            let ok = matches!(
                http(self.port, "GET", "/", Duration::from_secs(1)),
                Ok((200, ref body)) if body.trim() == "Ok"
            );
            if ok {
                // Make sure it is *our* emulator answering, not another one that already had
                // the port (ours would then exit with a BindException): ours logs its banner
                // only after binding. Accept without the banner after a while, in case a
                // future emulator version words it differently.
                let log = self.log_text();
                let log = log.get(log_start..).unwrap_or_default();
                let banner = log.contains("now running") || log.contains("health check endpoint");
                let since = *first_ok.get_or_insert_with(Instant::now);
                if (banner || since.elapsed() > Duration::from_secs(3)) && !exited_nowait(pid) {
                    return Some(Startup::Ready);
                }
            }
            None
        })
        .unwrap_or(Startup::Timeout)
    }

    /// "127.0.0.1:PORT", the value of `DATASTORE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client of this emulator's store in `namespace`, to read what the nodes wrote.
    pub async fn store(&self, namespace: &str) -> cronlease::store::datastore::DatastoreStore {
        cronlease::store::datastore::DatastoreStore::connect_emulator(
            &self.host(),
            &self.project,
            namespace,
            // Generous: a 500-entity transaction on a cold emulator takes ~3 s alone and
            // more on a loaded CI machine; tests that need a short timeout set their own.
            Duration::from_secs(30),
        )
        .await
        .expect("connect to the emulator")
    }

    /// The environment a client of this emulator needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATASTORE_EMULATOR_HOST".into(), self.host()),
            ("DATASTORE_PROJECT_ID".into(), self.project.clone()),
        ]
    }

    /// The Datastore project of this test.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The emulator's project directory (made by `cloud_datastore_emulator create`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Everything the emulator printed so far (all starts).
    pub fn log_text(&self) -> String {
        let path = match &self.shared_log {
            Some(shared) => shared.clone(),
            None => self.dir.path().join("emulator.log"),
        };
        std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .unwrap_or_default()
    }

    fn log_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("emulator.log"))
            .expect("open the emulator log")
    }

    /// The pid (= process group id) of the running emulator, if any.
    pub fn pid(&self) -> Option<i32> {
        self.own("reads the pid of");
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGSTOP its whole group: the store hangs (connections open, no answers), as a store
    /// behind a dead network path does. [`Emulator::thaw`] (or a stop) undoes it.
    pub fn freeze(&self) {
        let pid = self.pid().expect("a running emulator");
        // SAFETY: plain syscall on our own unreaped child's group.
        unsafe {
            libc::kill(-pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT the group frozen by [`Emulator::freeze`].
    pub fn thaw(&self) {
        let pid = self.pid().expect("a running emulator");
        // SAFETY: as in freeze.
        unsafe {
            libc::kill(-pid, libc::SIGCONT);
        }
    }

    /// Whether the emulator process is still running.
    pub fn is_running(&self) -> bool {
        if self.shared_log.is_some() {
            return self.healthy();
        }
        self.pid().is_some_and(|pid| !exited_nowait(pid))
    }

    /// Whether `GET /` answers `Ok`.
    pub fn healthy(&self) -> bool {
        matches!(
            http(self.port, "GET", "/", Duration::from_secs(2)),
            Ok((200, ref body)) if body.trim() == "Ok"
        )
    }

    /// Clears all data (`POST /reset`).
    pub fn reset(&self) {
        self.own("resets");
        match http(self.port, "POST", "/reset", Duration::from_secs(10)) {
            Ok((200, _)) => {}
            other => panic!("POST /reset on the emulator at {}: {other:?}", self.host()),
        }
    }

    /// Stops the emulator: `POST /shutdown` (lets an on-disk store write its data), waits up to
    /// 10 s for it to exit, then SIGKILLs its process group and reaps it. Idempotent.
    pub fn stop(&mut self) {
        self.own("stops");
        self.stop_own();
    }

    fn stop_own(&mut self) {
        let Some(pid) = self.child.as_ref().map(|c| c.id() as i32) else {
            return;
        };
        if !exited_nowait(pid) {
            let _ = http(self.port, "POST", "/shutdown", Duration::from_secs(2));
            wait_until(Duration::from_secs(10), || exited_nowait(pid));
        }
        self.reap();
    }

    /// Kills the emulator abruptly (SIGKILL to its group, no shutdown): a store outage. Data not
    /// yet written to disk is lost. Idempotent.
    pub fn kill(&mut self) {
        self.own("kills");
        self.reap();
    }

    /// SIGKILL the group (its leader is not reaped yet, so the id is still ours), then reap.
    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id() as i32);
            let _ = child.wait();
        }
        self.guard = None;
    }

    /// Stops the emulator (if running) and starts it again on the same port and data dir.
    /// With [`Emulator::start_on_disk`] the data survives; in memory it starts empty.
    pub fn restart(&mut self) {
        self.own("restarts");
        self.stop();
        restart_on_port(self);
    }
}

impl Server for Emulator {
    const NAME: &'static str = "the Datastore emulator";
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn spawn(&mut self) -> Startup {
        Emulator::spawn(self)
    }
    fn reap(&mut self) {
        Emulator::reap(self)
    }
    fn log_tail(&self) -> String {
        tail(&self.log_text(), 40)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- emulator {} log tail ---\n{}",
                self.host(),
                tail(&self.log_text(), 20)
            );
        }
        self.stop_own();
    }
}

// ---------------------------------------------------------------------------------------------
// The store a test's nodes share

/// What a cluster test runs against: a Datastore emulator of its own, or a directory of its own
/// for the file store. Dropping it stops the emulator or deletes the directory.
pub enum Backend {
    Datastore(Emulator),
    File(tempfile::TempDir),
    Redis(redis_server::RedisServer),
    ZooKeeper(zookeeper_server::ZooKeeperServer),
    Postgres(postgres_server::PostgresServer),
}

impl Backend {
    pub fn datastore() -> Backend {
        Backend::Datastore(Emulator::start())
    }

    pub fn file() -> Backend {
        let dir = tempfile::Builder::new()
            .prefix("cronlease-store-")
            .tempdir()
            .expect("create a temp dir for the file store");
        Backend::File(dir)
    }

    pub fn redis() -> Backend {
        Backend::Redis(redis_server::RedisServer::start())
    }

    pub fn zookeeper() -> Backend {
        Backend::ZooKeeper(zookeeper_server::ZooKeeperServer::start())
    }

    pub fn postgres() -> Backend {
        Backend::Postgres(postgres_server::PostgresServer::start())
    }

    /// What a jobs file needs to use this store, to put before its other tables: nothing for
    /// Datastore (the environment names it), a `[store]` table for the file store.
    pub fn store_table(&self) -> String {
        match self {
            Backend::Datastore(_) => String::new(),
            Backend::File(dir) => {
                let path = toml::Value::String(dir.path().display().to_string());
                format!("[store]\nbackend = \"file\"\npath = {path}\n\n")
            }
            Backend::Redis(server) => {
                format!(
                    "[store]\nbackend = \"redis\"\nurl = \"{}\"\n\n",
                    server.url()
                )
            }
            Backend::ZooKeeper(server) => {
                format!(
                    "[store]\nbackend = \"zookeeper\"\nhosts = \"{}\"\n\n",
                    server.hosts()
                )
            }
            Backend::Postgres(server) => {
                format!("[store]\nurl = \"{}\"\n\n", server.url())
            }
        }
    }

    /// The port a TCP proxy in front of this store forwards to (Datastore and PostgreSQL).
    pub fn upstream_port(&self) -> u16 {
        match self {
            Backend::Datastore(emu) => emu.port,
            Backend::Postgres(pg) => pg.port,
            _ => panic!("no proxy for this store"),
        }
    }

    /// What a node reaching this store through a proxy at `host` (`127.0.0.1:PORT`) needs: its
    /// `[store]` table (with the extra `keys`, whole lines) and its environment.
    pub fn through_proxy(&self, host: &str, keys: &str) -> (String, Vec<(String, String)>) {
        match self {
            Backend::Datastore(_) if keys.is_empty() => (
                String::new(),
                vec![("DATASTORE_EMULATOR_HOST".to_string(), host.to_string())],
            ),
            Backend::Datastore(_) => (
                format!("[store]\n{keys}\n\n"),
                vec![("DATASTORE_EMULATOR_HOST".to_string(), host.to_string())],
            ),
            Backend::Postgres(_) => (
                format!("[store]\nurl = \"postgres://postgres@{host}/postgres\"\n{keys}\n\n"),
                Vec::new(),
            ),
            _ => panic!("no proxy for this store"),
        }
    }

    /// The environment a node needs to reach this store.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Datastore(emu) => emu.env(),
            Backend::File(_) => Vec::new(),
            Backend::Redis(_) => Vec::new(),
            Backend::ZooKeeper(_) => Vec::new(),
            Backend::Postgres(_) => Vec::new(),
        }
    }

    /// The file store's directory as nodes of [`Backend::store_table`] use it (the default
    /// namespace `cronlease` is a subdirectory of `path`); `None` for Datastore.
    pub fn file_store_dir(&self) -> Option<PathBuf> {
        match self {
            Backend::Datastore(_) => None,
            Backend::File(dir) => Some(dir.path().join("cronlease")),
            Backend::Redis(_) => None,
            Backend::ZooKeeper(_) => None,
            Backend::Postgres(_) => None,
        }
    }
}

/// A store the tests run nodes against: what a node's environment and jobs file need to reach
/// it, and a client of it to read what the nodes wrote. An [`Emulator`] is one (nothing in the
/// jobs file), and so is every [`Backend`]: tests written against `&impl Target` run on each.
pub trait Target {
    /// The environment a node (or a one-shot command) needs to reach the store.
    fn node_env(&self) -> Vec<(String, String)>;
    /// What a jobs file puts first to use the store (a `[store]` table, or nothing).
    fn store_table(&self) -> String;
    /// [`Target::store_table`] with more `[store]` keys (`extra`, whole lines).
    fn store_table_with(&self, extra: &str) -> String {
        let table = self.store_table();
        let keys = table.trim_end().strip_prefix("[store]").unwrap_or("");
        format!("[store]{keys}\n{}\n\n", extra.trim_end())
    }
    /// A client of the store in `namespace`, opened directly.
    fn open_store(
        &self,
        namespace: &str,
    ) -> impl std::future::Future<Output = Box<dyn cronlease::store::Store>>;
}

impl Target for Emulator {
    fn node_env(&self) -> Vec<(String, String)> {
        self.env()
    }
    fn store_table(&self) -> String {
        String::new()
    }
    async fn open_store(&self, namespace: &str) -> Box<dyn cronlease::store::Store> {
        Box::new(self.store(namespace).await)
    }
}

impl Target for Backend {
    fn node_env(&self) -> Vec<(String, String)> {
        self.env()
    }
    fn store_table(&self) -> String {
        Backend::store_table(self)
    }
    async fn open_store(&self, namespace: &str) -> Box<dyn cronlease::store::Store> {
        let timeout = Duration::from_secs(10);
        match self {
            Backend::Datastore(emu) => Box::new(emu.store(namespace).await),
            Backend::File(dir) => Box::new(
                cronlease::store::file::FileStore::open(dir.path().join(namespace), timeout)
                    .await
                    .expect("open the file store"),
            ),
            Backend::Redis(server) => Box::new(
                cronlease::store::redis::RedisStore::connect(&server.url(), namespace, timeout)
                    .await
                    .expect("connect to redis"),
            ),
            Backend::ZooKeeper(server) => Box::new(
                cronlease::store::zookeeper::ZooKeeperStore::connect(
                    &server.hosts(),
                    namespace,
                    timeout,
                )
                .await
                .expect("connect to zookeeper"),
            ),
            Backend::Postgres(server) => Box::new(
                cronlease::store::postgres::PostgresStore::connect(
                    &server.url(),
                    "cronlease",
                    namespace,
                    timeout,
                )
                .await
                .expect("connect to postgres"),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cronlease nodes

/// One line a node printed on stdout: parsed if it is JSON.
#[derive(Debug, Clone)]
struct Line {
    raw: String,
    json: Option<Value>,
}

/// A `cronlease run` process in its own process group, with its output collected by threads.
/// Dropping it SIGKILLs its group.
pub struct Node {
    pub id: String,
    pub pid: i32,
    child: Child,
    guard: Option<ChildStdin>,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<Line>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout_eof: Arc<AtomicBool>,
    stderr_eof: Arc<AtomicBool>,
}

impl Node {
    /// `cronlease run --config CONFIG --node-id ID --log-format json` against `emu`.
    pub fn spawn(emu: &impl Target, config: &Path, id: &str) -> Node {
        Node::spawn_with_env(emu, config, id, &[])
    }

    /// Like [`Node::spawn`] with extra environment variables (e.g. `LD_PRELOAD`/`FAKETIME`).
    pub fn spawn_with_env(
        emu: &impl Target,
        config: &Path,
        id: &str,
        env: &[(&str, &str)],
    ) -> Node {
        let mut all = emu.node_env();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Node::spawn_run(config, id, &all)
    }

    /// Like [`Node::spawn_with_env`], also serving `--http` on a free port; returns the port.
    pub fn spawn_with_http(
        emu: &impl Target,
        config: &Path,
        id: &str,
        env: &[(&str, &str)],
    ) -> (Node, u16) {
        Node::spawn_with_http_args(emu, config, id, env, &[])
    }

    /// Like [`Node::spawn_with_http`], with more `run` options (`--http-public-read`, TLS...).
    pub fn spawn_with_http_args(
        emu: &impl Target,
        config: &Path,
        id: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (Node, u16) {
        let port = free_port();
        (
            Node::spawn_with_http_on(emu, config, id, env, port, args),
            port,
        )
    }

    /// Like [`Node::spawn_with_http_args`] on a port chosen beforehand (to name it in `args`).
    pub fn spawn_with_http_on(
        emu: &impl Target,
        config: &Path,
        id: &str,
        env: &[(&str, &str)],
        port: u16,
        args: &[&str],
    ) -> Node {
        let mut all = emu.node_env();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut http = vec!["--http".to_string(), format!("127.0.0.1:{port}")];
        http.extend(args.iter().map(|a| a.to_string()));
        Node::spawn_run_with(config, id, &http, &all)
    }

    /// `cronlease run` on `backend`, whose [`Backend::store_table`] `config` starts with.
    pub fn spawn_on(backend: &Backend, config: &Path, id: &str) -> Node {
        Node::spawn_run(config, id, &backend.env())
    }

    /// `cronlease run --config CONFIG --node-id ID --log-format json` with extra environment.
    fn spawn_run(config: &Path, id: &str, all: &[(String, String)]) -> Node {
        Node::spawn_run_with(config, id, &[], all)
    }

    /// [`Node::spawn_run`] with more arguments after those.
    fn spawn_run_with(config: &Path, id: &str, more: &[String], all: &[(String, String)]) -> Node {
        let mut args = vec![
            "run".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--node-id".into(),
            id.into(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend_from_slice(more);
        Node::spawn_args(id, &args, all)
    }

    /// The `cronlease` binary with any arguments and extra environment, in its own group.
    pub fn spawn_args(id: &str, args: &[String], env: &[(String, String)]) -> Node {
        Node::spawn_program(id, env!("CARGO_BIN_EXE_cronlease"), args, env)
    }

    /// Any program (e.g. chromedriver) under the same guard, in its own group.
    pub fn spawn_program(
        id: &str,
        program: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Node {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(GUARD)
            .arg(program)
            .args(args)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(filter) = std::env::var_os("CRONLEASE_TEST_RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} ({id}): {e}"));
        let guard = child.stdin.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_eof = Arc::new(AtomicBool::new(false));
        let stderr_eof = Arc::new(AtomicBool::new(false));
        {
            let (pipe, lines, eof) = (
                child.stdout.take().unwrap(),
                stdout.clone(),
                stdout_eof.clone(),
            );
            thread::spawn(move || {
                read_lines(pipe, |raw| {
                    let json = serde_json::from_str::<Value>(&raw)
                        .ok()
                        .filter(Value::is_object);
                    lines.lock().unwrap().push(Line { raw, json });
                });
                eof.store(true, Ordering::SeqCst);
            });
        }
        {
            let (pipe, lines, eof) = (
                child.stderr.take().unwrap(),
                stderr.clone(),
                stderr_eof.clone(),
            );
            thread::spawn(move || {
                read_lines(pipe, |raw| lines.lock().unwrap().push(raw));
                eof.store(true, Ordering::SeqCst);
            });
        }
        Node {
            id: id.to_string(),
            pid: child.id() as i32,
            child,
            guard,
            status: None,
            stdout,
            stderr,
            stdout_eof,
            stderr_eof,
        }
    }

    /// Every JSON object the node printed on stdout so far, in order.
    pub fn events(&self) -> Vec<Value> {
        let lines = self.stdout.lock().unwrap();
        lines.iter().filter_map(|l| l.json.clone()).collect()
    }

    /// Calls `f` with each JSON event from line `from` on; returns where the next call
    /// starts (for readers that follow a busy node's log without copying all of it).
    pub fn each_event_from(&self, from: usize, mut f: impl FnMut(&Value)) -> usize {
        let lines = self.stdout.lock().unwrap();
        for l in lines.iter().skip(from) {
            if let Some(v) = &l.json {
                f(v);
            }
        }
        lines.len()
    }

    /// The events whose `event` field is `event`.
    pub fn events_named(&self, event: &str) -> Vec<Value> {
        let lines = self.stdout.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.json.as_ref())
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }

    /// Stdout lines that were not JSON objects.
    pub fn raw_lines(&self) -> Vec<String> {
        let lines = self.stdout.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.json.is_none())
            .map(|l| l.raw.clone())
            .collect()
    }

    /// The first event (from the start of the output) matching `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let mut found = None;
        wait_until(timeout, || {
            let lines = self.stdout.lock().unwrap();
            found = lines
                .iter()
                .filter_map(|l| l.json.as_ref())
                .find(|v| pred(v))
                .cloned();
            found.is_some()
        });
        found
    }

    /// Sends `sig` to the node process (not its group). A no-op once it has been reaped.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: plain syscall; the pid is our unreaped child, so it cannot be reused.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    pub fn kill9(&self) {
        self.signal(libc::SIGKILL);
    }

    /// SIGSTOP: freeze the node (as a long GC pause or a suspended VM would).
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: wake a node frozen by [`Node::stop`].
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether the process is still running (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the node to exit; then also waits (briefly) until its output
    /// has been read to the end, so `events()` is complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let exited = {
            let mut status = None;
            wait_until(timeout, || {
                status = self.poll_exit();
                status.is_some()
            });
            status
        };
        if exited.is_some() {
            wait_until(Duration::from_secs(2), || {
                self.stdout_eof.load(Ordering::SeqCst) && self.stderr_eof.load(Ordering::SeqCst)
            });
        }
        exited
    }

    /// Everything the node printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Everything the node printed on stdout so far, as printed.
    pub fn output_text(&self) -> String {
        let lines = self.stdout.lock().unwrap();
        lines
            .iter()
            .map(|l| l.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- node {} stdout (last 60 lines) ---\n{}\n--- node {} stderr ---\n{}",
                self.id,
                tail(&self.output_text(), 60),
                self.id,
                tail(&self.stderr_text(), 30)
            );
        }
        if self.poll_exit().is_none() {
            kill_group(self.pid);
            let _ = self.child.wait();
        }
        // Closing the guard pipe makes the watcher kill whatever is left in the group.
        self.guard = None;
    }
}

/// Calls `f` with each line (lossy UTF-8, without the line ending) until end of file.
fn read_lines(pipe: impl Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                f(String::from_utf8_lossy(&buf).to_string());
            }
        }
    }
}

/// A drill reports what it checked: one JSON line `{"drill": NAME, ...figures}` on stderr
/// (shown with `--nocapture`) and appended to `$CRONLEASE_DRILL_REPORT` when that is set
/// (`scripts/reliability.sh` collects them into docs/RELIABILITY.md).
pub fn report(drill: &str, figures: Value) {
    // The test binary and the test's name (libtest names the test's thread after it), so the
    // report can say how to reproduce it.
    let test = thread::current().name().unwrap_or("").to_string();
    let mut line = serde_json::json!({
        "drill": drill,
        "binary": env!("CARGO_CRATE_NAME"),
        "test": test,
    });
    if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), figures) {
        obj.extend(extra);
    }
    let text = line.to_string();
    eprintln!("DRILL {text}");
    if let Some(path) = std::env::var_os("CRONLEASE_DRILL_REPORT") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", PathBuf::from(&path).display()));
        writeln!(f, "{text}").unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// one-shot commands

/// What a one-shot `cronlease` command printed and how it exited.
/// The runs of `job` in the store of `emu` (namespace `cronlease`), newest fire time first.
pub fn runs_newest_first(emu: &impl Target, job: &str) -> Vec<cronlease::store::RunRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runs = rt.block_on(async {
        let store = emu.open_store("cronlease").await;
        store.runs(job).await.expect("read the runs")
    });
    runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
    runs
}

pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `cronlease ARGS... --config CFG` against the store of `emu`, as user `ops`.
pub fn cli(emu: &impl Target, cfg: &Path, args: &[&str]) -> CliOut {
    let out = Command::new(env!("CARGO_BIN_EXE_cronlease"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .envs(emu.node_env())
        .env("USER", "ops")
        .output()
        .expect("run cronlease");
    CliOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Who leads what, from each node's log: its `lease_acquired`, `lease_lost` and
/// `lease_released` lines, read on from where the last look stopped (nodes with thousands of
/// leases log thousands of lines).
pub struct Holdings {
    held: Vec<std::collections::HashSet<String>>,
    read: Vec<usize>,
}

impl Holdings {
    pub fn new(nodes: usize) -> Self {
        Holdings {
            held: vec![Default::default(); nodes],
            read: vec![0; nodes],
        }
    }

    /// Read what `nodes` (the same nodes, in the same order, every time) logged since.
    pub fn update<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) {
        for (i, node) in nodes.into_iter().enumerate() {
            let held = &mut self.held[i];
            self.read[i] = node.each_event_from(self.read[i], |e| {
                let job = e["job"].as_str().unwrap_or_default();
                match e["event"].as_str().unwrap_or_default() {
                    "lease_acquired" => {
                        held.insert(job.to_string());
                    }
                    "lease_lost" | "lease_released" => {
                        held.remove(job);
                    }
                    _ => {}
                }
            });
        }
    }

    /// How many leases node `node` believes it holds.
    pub fn count(&self, node: usize) -> usize {
        self.held[node].len()
    }

    /// The jobs node `node` believes it leads.
    pub fn jobs(&self, node: usize) -> &std::collections::HashSet<String> {
        &self.held[node]
    }

    /// How many distinct jobs `nodes` lead between them.
    pub fn union(&self, nodes: &[usize]) -> usize {
        let mut all = std::collections::HashSet::new();
        for &i in nodes {
            all.extend(self.held[i].iter());
        }
        all.len()
    }
}
