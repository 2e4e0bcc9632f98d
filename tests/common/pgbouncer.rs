//! A PgBouncer of a test's own in front of a [`PostgresServer`], in transaction mode with no
//! support for prepared statements (as PgBouncer before 1.21, and later ones with
//! `max_prepared_statements = 0`): each transaction may run on another server connection, so a
//! client that relies on session state (a named prepared statement, an advisory lock, a `SET`)
//! breaks behind it. Run as the `postgres` user (PgBouncer refuses root), on a free port, in
//! its own process group under the guard, killed on drop.
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use super::postgres_server::PostgresServer;
use super::{
    exited_nowait, poll_for, reap_group, start_on_free_port, tail, Server, Startup, GUARD,
};

pub struct PgBouncer {
    pub port: u16,
    server_port: u16,
    /// Server connections at most (`default_pool_size`).
    pool: u32,
    dir: tempfile::TempDir,
    child: Option<Child>,
    guard: Option<ChildStdin>,
}

impl PgBouncer {
    /// Starts one in front of `server` (its `postgres` database), with `pool` server
    /// connections at most.
    pub fn start(server: &PostgresServer, pool: u32) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("cronlease-pgbouncer-")
            .tempdir()
            .expect("create a temp dir for pgbouncer");
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {}", dir.path().display());
        let mut bouncer = PgBouncer {
            port: 0,
            server_port: server.port,
            pool,
            dir,
            child: None,
            guard: None,
        };
        start_on_free_port(&mut bouncer);
        bouncer
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.log")
    }

    /// Everything it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_ini(&self) -> PathBuf {
        let d = self.dir.path().display();
        let ini = format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={server} dbname=postgres\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/users.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool}\n\
             max_client_conn = 200\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n",
            server = self.server_port,
            port = self.port,
            pool = self.pool,
        );
        let path = self.dir.path().join("pgbouncer.ini");
        std::fs::write(&path, ini).expect("write pgbouncer.ini");
        path
    }

    fn spawn(&mut self) -> Startup {
        let ini = self.write_ini();
        let log_start = self.log_text().len();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD)
            .arg("runuser")
            .args(["-u", "postgres", "--", "/usr/sbin/pgbouncer"])
            .arg(&ini)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start pgbouncer (scripts/deps.sh installs it)");
        self.guard = child.stdin.take();
        let pid = child.id() as i32;
        self.child = Some(child);
        let port = self.port;
        poll_for(Duration::from_secs(15), || {
            if exited_nowait(pid) {
                let log = self.log_text();
                let log = log.get(log_start..).unwrap_or_default();
                return Some(Startup::Died {
                    bind: log.contains("Address already in use"),
                });
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(Startup::Ready)
        })
        .unwrap_or(Startup::Timeout)
    }
}

impl Server for PgBouncer {
    const NAME: &'static str = "pgbouncer";
    fn port(&self) -> u16 {
        self.port
    }
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    fn spawn(&mut self) -> Startup {
        PgBouncer::spawn(self)
    }
    fn reap(&mut self) {
        reap_group(&mut self.child, &mut self.guard);
    }
    fn log_tail(&self) -> String {
        tail(&self.log_text(), 30)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("--- pgbouncer log tail ---\n{}", tail(&self.log_text(), 20));
        }
        reap_group(&mut self.child, &mut self.guard);
    }
}
