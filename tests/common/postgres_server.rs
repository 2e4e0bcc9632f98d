//! A PostgreSQL server of a test's own: a cluster made by `initdb` in a temp dir, run as the
//! `postgres` user (initdb and postgres refuse root), on a free port on 127.0.0.1, with fsync
//! and full page writes off, in its own process group under the same guard as the emulator (it
//! dies with the test process), killed on drop. Its data directory stays across
//! [`PostgresServer::restart`], as a real server's does. Commits stay synchronous: a commit is
//! in the kernel's page cache before the server answers, so a crash of the server (not of the
//! machine) loses no acknowledged write, as with a durable server.
//!
//! ```ignore
//! let pg = PostgresServer::start();
//! let url = pg.url();              // postgres://postgres@127.0.0.1:PORT/postgres
//! ```
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{
    exited_nowait, poll_for, reap_group, restart_on_port, start_on_free_port, tail, Server,
    Startup, GUARD,
};

/// How long a fresh server may take to accept connections.
pub const POSTGRES_START_DEADLINE: Duration = Duration::from_secs(30);

/// The newest PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`); panics naming
/// scripts/deps.sh when there are none.
pub fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin: run scripts/deps.sh (it \
             installs the Debian package postgresql)"
        )
    })
}

/// A PostgreSQL server of this test's own. Dropping it kills it and deletes its data.
pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    /// The cluster (`data/`), the socket directory and `postgres.log`; owned by `postgres`.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Write end of the guard pipe (see tests/common/mod.rs); dropping it kills the group.
    guard: Option<ChildStdin>,
}

impl PostgresServer {
    /// Makes a cluster, starts it on a free port and waits until it accepts connections.
    pub fn start() -> PostgresServer {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("cronlease-postgres-")
            .tempdir()
            .expect("create a temp dir for postgres");
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PostgresServer {
            port: 0,
            bin,
            dir,
            child: None,
            guard: None,
        };
        start_on_free_port(&mut server);
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Everything the server logged so far (all starts).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `sql` through `psql` as the superuser; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// [`PostgresServer::psql`], with its error (psql's stderr) for a statement that failed.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            // TLS when the server offers it (after `require_tls`), plain otherwise.
            .env("PGSSLMODE", "prefer")
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A login role `user` whose password the server checks (`scram-sha-256` for it alone,
    /// ahead of the cluster's `trust` lines); the configuration is reloaded.
    pub fn add_password_user(&self, user: &str, password: &str) {
        self.psql(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"));
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let line = format!("host all {user} 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, line + &old).expect("write pg_hba.conf");
        self.psql("SELECT pg_reload_conf()");
    }

    /// Turn TLS on with a certificate for `localhost` only, signed by a CA of the test's own,
    /// and refuse plain connections; the CA's file (PEM), for `sslrootcert`.
    pub fn require_tls(&self) -> PathBuf {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = super::test_ca::TestCa::new(&dir, "pg");
        ca.issue("server", "DNS:localhost");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("run chown");
        assert!(chown.success());
        let d = dir.display();
        self.psql("ALTER SYSTEM SET ssl = on");
        self.psql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{d}/server.crt'"
        ));
        self.psql(&format!("ALTER SYSTEM SET ssl_key_file = '{d}/server.key'"));
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        // psql (over TCP, `PGSSLMODE=prefer`) goes on working; plain connections are refused.
        std::fs::write(&hba, format!("hostnossl all all all reject\n{old}")).unwrap();
        self.psql("SELECT pg_reload_conf()");
        ca.cert()
    }

    fn spawn(&mut self) -> Startup {
        let log_start = self.log_text().len();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open postgres.log");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD)
            .arg("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "fsync=off", "-c", "synchronous_commit=on"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.guard = child.stdin.take();
        let pid = child.id() as i32;
        self.child = Some(child);
        poll_for(POSTGRES_START_DEADLINE, || {
            if exited_nowait(pid) {
                let log = self.log_text();
                let log = log.get(log_start..).unwrap_or_default();
                return Some(Startup::Died {
                    bind: log.contains("Address already in use")
                        || log.contains("could not create any TCP/IP sockets"),
                });
            }
            self.ready().then_some(Startup::Ready)
        })
        .unwrap_or(Startup::Timeout)
    }

    /// Whether the server accepts connections (`pg_isready`).
    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGKILL the group (its leader is not reaped yet), then reap. Idempotent.
    fn reap(&mut self) {
        // The postmaster is runuser's child: reaped by init once the group is killed, not by
        // this process. Until then its pid still shows, and a new server refuses the data
        // directory whose pid file names it ("lock file already exists"): wait it out.
        let postmaster = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        reap_group(&mut self.child, &mut self.guard);
        if let Some(pid) = postmaster {
            let gone = super::wait_until(Duration::from_secs(10), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            assert!(gone, "postmaster {pid} outlived its killed group");
        }
    }

    /// Kills the server abruptly (an outage). Idempotent.
    pub fn stop(&mut self) {
        self.reap();
    }

    /// Kills the server and starts it again on the same port with the same data: a crash and
    /// restart, which recovers every committed write.
    pub fn restart(&mut self) {
        self.stop();
        restart_on_port(self);
    }
}

/// The data directory must belong to the user the server runs as.
fn chown_to_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown postgres {}", dir.display());
}

impl Server for PostgresServer {
    const NAME: &'static str = "postgres";
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn spawn(&mut self) -> Startup {
        PostgresServer::spawn(self)
    }
    fn reap(&mut self) {
        PostgresServer::reap(self)
    }
    fn log_tail(&self) -> String {
        tail(&self.log_text(), 30)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- postgres 127.0.0.1:{} log tail ---\n{}",
                self.port,
                tail(&self.log_text(), 20)
            );
        }
        self.reap();
    }
}
