//! A standalone ZooKeeper of a test's own, from the Debian package `zookeeper` (its jars in
//! /usr/share/java): free client port on 127.0.0.1, a temp data dir, no admin server, its own
//! process group (under the same guard as the emulator: it dies with the test process), killed
//! on drop. `java -cp /usr/share/java/zookeeper.jar QuorumPeerMain zoo.cfg` runs in the
//! foreground (the jar's manifest names the jars it needs), so no script daemonizes it.
//!
//! ```ignore
//! let zk = ZooKeeperServer::start();
//! let hosts = zk.hosts();                // 127.0.0.1:PORT
//! ```
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{
    exited_nowait, poll_for, reap_group, restart_on_port, start_on_free_port, tail, Server,
    Startup, GUARD,
};

/// The server jar of the Debian package `zookeeper` (libzookeeper-java).
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// How long a fresh server may take to serve sessions (`srvr`).
pub const ZOOKEEPER_START_DEADLINE: Duration = Duration::from_secs(30);

/// The ZooKeeper jar (`$CRONLEASE_ZOOKEEPER_JAR` or [`ZOOKEEPER_JAR`]); panics naming
/// scripts/deps.sh if it is missing.
pub fn zookeeper_jar() -> PathBuf {
    let jar = std::env::var_os("CRONLEASE_ZOOKEEPER_JAR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ZOOKEEPER_JAR));
    assert!(
        jar.is_file(),
        "ZooKeeper not found at {}: run scripts/deps.sh (it installs the Debian package \
         zookeeper), or set CRONLEASE_ZOOKEEPER_JAR",
        jar.display()
    );
    jar
}

/// A ZooKeeper server of this test's own. Dropping it kills it and deletes its data.
pub struct ZooKeeperServer {
    pub port: u16,
    jar: PathBuf,
    /// `zoo.cfg`, `data/` and `zookeeper.log`; deleted on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Write end of the guard pipe (see tests/common/mod.rs); dropping it kills the group.
    guard: Option<ChildStdin>,
}

impl ZooKeeperServer {
    /// Starts a server on a free port and waits until it serves sessions.
    pub fn start() -> ZooKeeperServer {
        let mut server = ZooKeeperServer {
            port: 0,
            jar: zookeeper_jar(),
            dir: tempfile::Builder::new()
                .prefix("cronlease-zookeeper-")
                .tempdir()
                .expect("create a temp dir for ZooKeeper"),
            child: None,
            guard: None,
        };
        start_on_free_port(&mut server);
        server
    }

    /// `127.0.0.1:PORT`, as `[store] hosts` takes it.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Startup {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create the ZooKeeper data dir");
        let cfg = self.dir.path().join("zoo.cfg");
        // tickTime 500 ms: sessions between 1 s and 10 s by default; the store asks for 4 s+,
        // so maxSessionTimeout is raised to let it have what it asks.
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 maxSessionTimeout=40000\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n\
                 maxClientCnxns=0\nforceSync=no\n",
                data.display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the ZooKeeper log");
        let java = std::env::var_os("JAVA").unwrap_or_else(|| "java".into());
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD)
            .arg(&java)
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(self.classpath())
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("dup log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start ZooKeeper ({java:?} -cp ...): {e}"));
        self.guard = child.stdin.take();
        let pid = child.id() as i32;
        self.child = Some(child);
        poll_for(ZOOKEEPER_START_DEADLINE, || {
            if self.serving() {
                return Some(Startup::Ready);
            }
            exited_nowait(pid).then(|| {
                let log = self.log_text();
                Startup::Died {
                    bind: log.contains("Address already in use") || log.contains("BindException"),
                }
            })
        })
        .unwrap_or(Startup::Timeout)
    }

    /// The server jar (its manifest names its dependencies), plus slf4j-simple when installed
    /// so that the log says why a server failed (without it SLF4J logs nothing).
    fn classpath(&self) -> std::ffi::OsString {
        let mut cp = self.jar.clone().into_os_string();
        let simple = std::path::Path::new("/usr/share/java/slf4j-simple.jar");
        if simple.is_file() {
            cp.push(":");
            cp.push(simple);
        }
        cp
    }

    /// The `srvr` four-letter word answers `Zookeeper version: ...` once the server accepts
    /// sessions. (`ruok` is no readiness check: ZooKeeper 3.8 says `imok` as soon as the client
    /// port is bound, ~0.2 s before it serves sessions, longer under load; a client turned away
    /// then retries after 0.1, 0.2, 0.4 ... 6.4 s, past the store's 10 s connect bound.)
    fn serving(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"srvr").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("Zookeeper version:")
    }

    /// Kills the server and starts it again on the same port. With `wipe` its data dir is
    /// emptied first, so it forgets every session and znode: clients of the old server find
    /// their session expired when they reconnect.
    pub fn restart(&mut self, wipe: bool) {
        self.reap();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        }
        restart_on_port(self);
    }
}

impl ZooKeeperServer {
    /// Kills the server abruptly (SIGKILL to its group): a store outage. Idempotent.
    pub fn kill(&mut self) {
        self.reap();
    }

    /// SIGKILL the group (its leader is not reaped yet, so the id is still ours), then reap.
    fn reap(&mut self) {
        reap_group(&mut self.child, &mut self.guard);
    }
}

impl Server for ZooKeeperServer {
    const NAME: &'static str = "ZooKeeper";
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn spawn(&mut self) -> Startup {
        ZooKeeperServer::spawn(self)
    }
    fn reap(&mut self) {
        ZooKeeperServer::reap(self)
    }
    fn log_tail(&self) -> String {
        tail(&self.log_text(), 40)
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- zookeeper {} log tail ---\n{}",
                self.hosts(),
                tail(&self.log_text(), 20)
            );
        }
        self.reap();
    }
}
