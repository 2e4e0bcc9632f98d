//! A `redis-server` of a test's own: free port on 127.0.0.1, no persistence, its own process
//! group (under the same guard as the emulator: it dies with the test process), killed on
//! drop.
//!
//! ```ignore
//! let redis = RedisServer::start();
//! let url = redis.url();                 // redis://127.0.0.1:PORT
//! ```
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    exited_nowait, poll_for, reap_group, restart_on_port, start_on_free_port, tail, Server,
    Startup, GUARD,
};

/// How long a fresh server may take to answer PING.
pub const REDIS_START_DEADLINE: Duration = Duration::from_secs(20);

/// `redis-server` on PATH, else /usr/bin/redis-server; panics naming scripts/deps.sh if
/// neither exists.
pub fn redis_server_path() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    let path = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    assert!(
        path.is_file(),
        "redis-server not found on PATH nor at /usr/bin/redis-server: run scripts/deps.sh \
         (it installs the Debian package redis-server)"
    );
    path
}

/// A Redis server of this test's own. Dropping it kills it (and its data: nothing is saved).
pub struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    /// Its working directory and `redis.log`; deleted on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Write end of the guard pipe (see tests/common/mod.rs); dropping it kills the group.
    guard: Option<ChildStdin>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            binary: redis_server_path(),
            dir: tempfile::Builder::new()
                .prefix("cronlease-redis-")
                .tempdir()
                .expect("create a temp dir for redis-server"),
            child: None,
            guard: None,
        };
        start_on_free_port(&mut server);
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Everything the server printed so far (all starts).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Startup {
        let log_start = self.log_text().len();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis.log");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD)
            .arg(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.guard = child.stdin.take();
        let pid = child.id() as i32;
        self.child = Some(child);
        // Answering PING for 50 ms while still alive: ours, not another server that had the
        // port (ours would have exited on the clash).
        let mut first_pong: Option<Instant> = None;
        poll_for(REDIS_START_DEADLINE, || {
            if exited_nowait(pid) {
                let log = self.log_text();
                let log = log.get(log_start..).unwrap_or_default();
                return Some(Startup::Died {
                    bind: log.contains("Address already in use"),
                });
            }
            if !ping(self.port) {
                return None;
            }
            let since = *first_pong.get_or_insert_with(Instant::now);
            (since.elapsed() >= Duration::from_millis(50)).then_some(Startup::Ready)
        })
        .unwrap_or(Startup::Timeout)
    }

    /// SIGKILL the group (its leader is not reaped yet), then reap. Idempotent.
    fn reap(&mut self) {
        reap_group(&mut self.child, &mut self.guard);
    }

    /// Kills the server abruptly (an outage). Idempotent.
    pub fn stop(&mut self) {
        self.reap();
    }

    /// Kills the server and starts a new one on the same port: empty (no persistence), as a
    /// Redis without `appendonly` comes back after a crash.
    pub fn restart(&mut self) {
        self.stop();
        restart_on_port(self);
    }
}

impl Server for RedisServer {
    const NAME: &'static str = "redis-server";
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn spawn(&mut self) -> Startup {
        RedisServer::spawn(self)
    }
    fn reap(&mut self) {
        RedisServer::reap(self)
    }
    fn log_tail(&self) -> String {
        tail(&self.log_text(), 30)
    }
}

/// Whether a server on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- redis-server 127.0.0.1:{} log tail ---\n{}",
                self.port,
                tail(&self.log_text(), 20)
            );
        }
        self.reap();
    }
}
