//! One Datastore emulator for all the tests of a nextest run that need only a project of their
//! own (every test that does not stop, kill, restart or reset its emulator): a JVM start and
//! warm-up per test cost ~10 s of CPU each, which on a 2-core machine starved the nodes of the
//! timing tests that ran alongside. A project per test, not a namespace: the emulator failed
//! concurrent tests' transactions in one project with "too much contention".
//!
//! The first test to ask starts it, under a lock file in the temp dir named after the run
//! (`NEXTEST_RUN_ID`), detached in a session of its own with a watcher that ends its process
//! group once the nextest process (the tests' parent) is gone, so a run that is interrupted
//! leaves nothing behind. Outside nextest (`cargo test`: every test of a binary in one
//! process) there is no run id and [`get`] answers `None`: the caller starts its own.
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{emulator_path, free_port, http, poll_for};

/// A running shared emulator.
pub struct Shared {
    port: u16,
    log: PathBuf,
}

/// A project name no other test of the run uses.
pub fn fresh_project() -> String {
    format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

impl Shared {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the shared emulator logs (all tests' traffic).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
}

fn healthy(port: u16) -> bool {
    matches!(
        http(port, "GET", "/", Duration::from_secs(2)),
        Ok((200, ref body)) if body.trim() == "Ok"
    )
}

/// The run's shared emulator, started if it is not running yet; `None` outside nextest.
pub fn get() -> Option<Shared> {
    let run = std::env::var("NEXTEST_RUN_ID").ok()?;
    let dir = std::env::temp_dir().join(format!("cronlease-shared-emulator-{run}"));
    std::fs::create_dir_all(&dir).expect("create the shared emulator's dir");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .expect("open the shared emulator's lock");
    // Held until this function returns (the file closes): one test starts it, the others wait.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let port_file = dir.join("port");
    if let Some(port) = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        if healthy(port) {
            return Some(Shared {
                port,
                log: dir.join("log"),
            });
        }
    }
    for _ in 0..5 {
        let port = free_port();
        if start(&dir, port) {
            std::fs::write(&port_file, port.to_string()).expect("write the port file");
            return Some(Shared {
                port,
                log: dir.join("log"),
            });
        }
    }
    panic!(
        "the shared emulator did not start; its log: {}",
        dir.join("log").display()
    );
}

/// Start it on `port`, detached; true once it answers (and its log says it bound the port).
fn start(dir: &std::path::Path, port: u16) -> bool {
    let launcher = emulator_path();
    let data: PathBuf = dir.join(format!("data-{port}"));
    let log = dir.join("log");
    let out = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the shared emulator's log")
    };
    let created = Command::new(&launcher)
        .arg("create")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .status()
        .is_ok_and(|s| s.success());
    if !created {
        return false;
    }
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    // `$1`: the launcher; `$2`: the port; `$3`: the data dir; `$4`: the pid to outlive; `$5`:
    // the run's dir, removed at the end; `$6`–`$8`: the index flags (`super::INDEX_FLAGS`).
    let script = r#"
        "$1" start --host=127.0.0.1 --port="$2" --store_on_disk=False --consistency=1.0 \
            "$6" "$7" "$8" "$3" </dev/null &
        while kill -0 "$4" 2>/dev/null; do sleep 1; done
        rm -rf "$5"
        kill -9 0
    "#;
    let parent = std::os::unix::process::parent_id();
    let spawned = Command::new("setsid")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .arg("shared-emulator")
        .arg(&launcher)
        .arg(port.to_string())
        .arg(&data)
        .arg(parent.to_string())
        .arg(dir)
        .args(super::index_flags())
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .spawn();
    if spawned.is_err() {
        return false;
    }
    poll_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ours = text.get(before..).unwrap_or_default();
        if ours.contains("BindException") || ours.contains("Address already in use") {
            return Some(false);
        }
        let banner = ours.contains("now running") || ours.contains("health check endpoint");
        (banner && healthy(port)).then_some(true)
    })
    .unwrap_or(false)
}
