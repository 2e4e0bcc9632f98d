//! The scripts' promise: nothing `scripts/demo.sh` or `scripts/emulator.sh` starts outlives
//! them, however they end. Each demo case runs the real script (with the debug binary,
//! `CRONLEASE_BIN`, so no release build) through a pipe into `tee`, as a user would, ends it
//! one way, and then requires every process of that demo to be gone within a deadline:
//!
//! - Ctrl-C on a terminal (a pty: the ^C reaches demo.sh and tee alike, so tee dies at once and
//!   the script's own messages go to a dead pipe);
//! - the terminal closed (the pty hung up: SIGHUP, and the terminal now fails every write);
//! - SIGTERM to the whole pipeline (as a CI runner or `kill -- -PGID` sends it: tee dies too);
//! - SIGTERM to demo.sh alone (tee keeps reading).
//!
//! Which processes are the demo's is decided exactly, never by name: every process whose
//! command line contains the test's own temporary directory (the nodes' `--config`, the
//! emulator's data dir under `TMPDIR`) and every process in a session one of those leads (the
//! nodes and the emulator each run in a session of their own: their watchdogs, job processes,
//! the emulator's java child), plus the session the test started the pipeline in. Only those
//! are ever signalled, by the test's clean-up after a failure.
//!
//! `CRONLEASE_SCRIPTS_DIR` runs the cases against another copy of the project's `scripts/`
//! (a directory with `scripts/demo.sh` and `scripts/emulator.sh`), e.g. an older version.
mod common;

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{emulator_path, free_port, wait_until};

/// Until the demo runs: the emulator's start-up (slow when tests run in parallel) and the
/// nodes' first ticks.
const UP_DEADLINE: Duration = Duration::from_secs(120);
/// From the interrupt until nothing is left: the nodes get up to 15 s after SIGTERM, the
/// emulator's stop up to 20 s; they normally take about 2 s together.
const GONE_DEADLINE: Duration = Duration::from_secs(60);
/// One every-second `say` job: each node logs every tick (running it or sitting out).
const JOBS: &str = r#"[node]
shutdown_grace = "5s"

[[job]]
name = "hello"
schedule = "* * * * * *"
say = "hello from the demo"
"#;

// ---------------------------------------------------------------------------------------------
// Small helpers

/// The directory holding `scripts/` (this project, or `CRONLEASE_SCRIPTS_DIR`).
fn scripts_root() -> PathBuf {
    std::env::var_os("CRONLEASE_SCRIPTS_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `path` as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The last `n` lines of a file (for failure messages).
fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid, sig);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// One live process, from /proc.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    sid: i32,
    cmd: String,
}

/// Every live (non-zombie) process on the machine.
fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 4 || fields[0] == "Z" || fields[0] == "X" {
            continue;
        }
        let Ok(sid) = fields[3].parse() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim_end()
            .to_string();
        out.push(Proc { pid, sid, cmd });
    }
    out
}

/// Finds the processes of one test's scripts (see the module docs) and remembers the
/// sessions they lead, so that their other members are found even once the leader is gone.
struct Tracker {
    /// The test's temporary directory: in the command line of every node and emulator.
    marker: String,
    sessions: BTreeSet<i32>,
}

impl Tracker {
    fn new(marker: &Path, session: i32) -> Tracker {
        Tracker {
            marker: marker.display().to_string(),
            sessions: BTreeSet::from([session]),
        }
    }

    /// The live processes of this test's scripts, never the test process itself.
    fn scan(&mut self) -> Vec<Proc> {
        let all = processes();
        for p in &all {
            if p.pid == p.sid && p.cmd.contains(&self.marker) {
                self.sessions.insert(p.sid);
            }
        }
        let me = std::process::id() as i32;
        all.into_iter()
            .filter(|p| p.pid != me)
            .filter(|p| p.cmd.contains(&self.marker) || self.sessions.contains(&p.sid))
            .collect()
    }

    /// SIGKILL whatever is left (clean-up after a failed test).
    fn kill_all(&mut self) {
        // SIGKILL what is there, again while anything is left (a process forked meanwhile).
        wait_until(Duration::from_secs(1), || {
            let left = self.scan();
            for p in &left {
                signal(p.pid, libc::SIGKILL);
            }
            left.is_empty()
        });
    }
}

fn listing(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("  pid {} (session {}): {}", p.pid, p.sid, p.cmd))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// A terminal (pty) for the pipeline

enum TermCmd {
    Write(Vec<u8>),
    HangUp,
}

/// The master side of a pty whose slave is the controlling terminal of the pipeline's
/// session. A thread drains it (so nothing blocks writing to the terminal), keeps what it
/// read, and writes or hangs up on request.
struct Terminal {
    tx: Sender<TermCmd>,
    output: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

/// Opens a pty: (master, slave).
fn open_pty() -> (File, File) {
    // SAFETY: plain libc calls; each fd is checked and then owned by exactly one File.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master_file = File::from_raw_fd(master);
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(
            libc::ptsname_r(master, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let slave = libc::open(
            CStr::from_ptr(name.as_ptr()).as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            slave >= 0,
            "open the pty slave: {}",
            std::io::Error::last_os_error()
        );
        (master_file, File::from_raw_fd(slave))
    }
}

impl Terminal {
    fn start(mut master: File) -> Terminal {
        let (tx, rx): (Sender<TermCmd>, Receiver<TermCmd>) = mpsc::channel();
        let output = Arc::new(Mutex::new(Vec::new()));
        let out = output.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut eof = false;
            loop {
                match rx.try_recv() {
                    Ok(TermCmd::Write(bytes)) => {
                        let _ = master.write_all(&bytes);
                        continue;
                    }
                    // Closing the master hangs the terminal up.
                    Ok(TermCmd::HangUp) | Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => {}
                }
                if eof {
                    // Every slave fd is closed: nothing more to read, only commands to wait for.
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(TermCmd::Write(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(TermCmd::HangUp) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    continue;
                }
                let mut fds = libc::pollfd {
                    fd: master.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut fds, 1, 20) };
                if ready > 0 {
                    match master.read(&mut buf) {
                        Ok(n) if n > 0 => out.lock().unwrap().extend_from_slice(&buf[..n]),
                        // EIO once no process has the slave open.
                        _ => eof = true,
                    }
                }
            }
        });
        Terminal {
            tx,
            output,
            thread: Some(thread),
        }
    }

    /// Types `bytes` on the terminal (b"\x03" is Ctrl-C).
    fn type_bytes(&self, bytes: &[u8]) {
        let _ = self.tx.send(TermCmd::Write(bytes.to_vec()));
    }

    /// Closes the terminal (as closing a terminal window does).
    fn hang_up(&mut self) {
        let _ = self.tx.send(TermCmd::HangUp);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).to_string()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.hang_up();
    }
}

// ---------------------------------------------------------------------------------------------
// The demo

/// How the pipeline is attached: to a terminal of its own, or to no terminal at all.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Attach {
    Terminal,
    NoTerminal,
}

/// How the test ends the demo.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ending {
    /// ^C typed on the terminal: SIGINT to demo.sh and tee at once.
    CtrlC,
    /// The terminal closed: SIGHUP, and writes to the terminal fail from then on.
    HangUp,
    /// SIGTERM to every process of the pipeline (bash -c, demo.sh, tee).
    TermPipeline,
    /// SIGTERM to demo.sh only.
    TermDemoOnly,
}

/// `bash -c PIPELINE` in a session of its own, running `scripts/demo.sh` on a small jobs
/// file in a temporary directory.
struct Demo {
    dir: tempfile::TempDir,
    log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
    terminal: Option<Terminal>,
    tracker: Tracker,
    /// Every demo process seen while it ran (for the failure message).
    seen: Vec<Proc>,
}

impl Demo {
    /// Starts `scripts/demo.sh REDIRECT | tee LOG`; `redirect` is e.g. "2>&1" or "".
    fn start(attach: Attach, redirect: &str) -> Demo {
        let emulator = emulator_path();
        let dir = tempfile::Builder::new()
            .prefix("cronlease-scripts-test-")
            .tempdir()
            .expect("create a temp dir");
        let config = dir.path().join("jobs.toml");
        std::fs::write(&config, JOBS).expect("write the jobs file");
        let log = dir.path().join("demo.log");
        let demo = scripts_root().join("scripts/demo.sh");
        let pipeline = format!(
            "{} {redirect} | tee {} >/dev/null",
            quote(&demo),
            quote(&log)
        );
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&pipeline)
            .current_dir(dir.path())
            .env("CRONLEASE_BIN", env!("CARGO_BIN_EXE_cronlease"))
            .env("CONFIG", &config)
            .env("CRONLEASE_EMULATOR", &emulator)
            .env("EMULATOR_START_TIMEOUT", "90")
            // The emulator's data dir and pid file in our directory: its command line names it.
            .env("TMPDIR", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("DATASTORE_EMULATOR_HOST");
        let terminal = match attach {
            Attach::Terminal => {
                let (master, slave) = open_pty();
                cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
                    .stdout(Stdio::from(slave.try_clone().unwrap()))
                    .stderr(Stdio::from(slave));
                // SAFETY: setsid and ioctl are async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                Some(master)
            }
            Attach::NoTerminal => {
                let out = File::create(dir.path().join("session.log")).unwrap();
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(out.try_clone().unwrap()))
                    .stderr(Stdio::from(out));
                // SAFETY: setsid is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::setsid() < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                None
            }
        };
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start bash -c {pipeline}: {e}"));
        // The slave copies given to the child were closed on spawn (dropped with `cmd`'s
        // Stdio): only the pipeline holds the terminal now.
        drop(cmd);
        let terminal = terminal.map(Terminal::start);
        let tracker = Tracker::new(dir.path(), child.id() as i32);
        Demo {
            dir,
            log,
            child,
            status: None,
            terminal,
            tracker,
            seen: Vec::new(),
        }
    }

    fn config(&self) -> String {
        self.dir.path().join("jobs.toml").display().to_string()
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    /// Distinct node ids in the log's `[hello@NODE]` lines.
    fn nodes_logging(&self) -> BTreeSet<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split("[hello@").nth(1))
            .filter_map(|rest| rest.split(']').next())
            .map(str::to_string)
            .collect()
    }

    /// Waits until the three nodes and the emulator run and all three nodes log through the
    /// pipe; records the demo's processes.
    fn wait_up(&mut self) {
        let config = self.config();
        let up = wait_until(UP_DEADLINE, || {
            if self.exited() {
                return false;
            }
            let procs = self.tracker.scan();
            let nodes = procs
                .iter()
                .filter(|p| p.cmd.contains(" run ") && p.cmd.contains(&config))
                .count();
            let java = procs
                .iter()
                .any(|p| p.cmd.contains("java") && p.cmd.contains("CloudDatastore"));
            if nodes == 3 && java && self.nodes_logging().len() >= 3 {
                self.seen = procs;
                return true;
            }
            false
        }) && !self.exited();
        assert!(
            up,
            "the demo did not come up (3 nodes logging, an emulator) within {UP_DEADLINE:?} \
             (exit status {:?}); processes:\n{}\n{}",
            self.status,
            listing(&self.tracker.scan()),
            self.diagnostics()
        );
    }

    /// demo.sh itself: the process of the pipeline's session running scripts/demo.sh.
    fn demo_pid(&mut self) -> i32 {
        let session = self.child.id() as i32;
        self.tracker
            .scan()
            .into_iter()
            .find(|p| p.sid == session && p.cmd.ends_with("/scripts/demo.sh"))
            .map(|p| p.pid)
            .unwrap_or_else(|| panic!("no demo.sh process in session {session}"))
    }

    fn end(&mut self, ending: Ending) {
        match ending {
            Ending::CtrlC => self.terminal.as_ref().unwrap().type_bytes(b"\x03"),
            Ending::HangUp => self.terminal.as_mut().unwrap().hang_up(),
            Ending::TermPipeline => {
                // SAFETY: plain syscall; the group is our unreaped child's (bash -c's) own.
                unsafe {
                    libc::killpg(self.child.id() as i32, libc::SIGTERM);
                }
            }
            Ending::TermDemoOnly => {
                let pid = self.demo_pid();
                signal(pid, libc::SIGTERM);
            }
        }
    }

    /// Waits until the pipeline has exited and no process of the demo is left.
    fn assert_all_gone(&mut self, ending: Ending) {
        let mut left = Vec::new();
        let gone = wait_until(GONE_DEADLINE, || {
            left = self.tracker.scan();
            self.exited() && left.is_empty()
        });
        assert!(
            gone,
            "{ending:?}: {} process(es) of the demo still running {GONE_DEADLINE:?} later \
             (pipeline exited: {:?}):\n{}\nwhile it ran:\n{}\n{}",
            left.len(),
            self.status,
            listing(&left),
            listing(&self.seen),
            self.diagnostics()
        );
    }

    fn diagnostics(&self) -> String {
        let terminal = self
            .terminal
            .as_ref()
            .map(|t| {
                let text = t.text();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            })
            .unwrap_or_else(|| tail_of(&self.dir.path().join("session.log"), 30));
        format!(
            "--- demo.log (tee), last 30 lines ---\n{}\n--- terminal / session output, last 30 \
             lines ---\n{terminal}",
            tail_of(&self.log, 30)
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // After a failure: end whatever is left of this demo (only its own processes).
        if !self.exited() {
            // SAFETY: plain syscall; the group is our unreaped child's own.
            unsafe {
                libc::killpg(self.child.id() as i32, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        self.tracker.kill_all();
    }
}

fn demo_case(attach: Attach, redirect: &str, ending: Ending) {
    let started = Instant::now();
    let mut demo = Demo::start(attach, redirect);
    demo.wait_up();
    let up = started.elapsed();
    demo.end(ending);
    demo.assert_all_gone(ending);
    eprintln!(
        "{ending:?}: up after {up:?}, all gone {:?} after the interrupt",
        started.elapsed() - up
    );
}

/// The issue's case: Ctrl-C on `scripts/demo.sh 2>&1 | tee demo.log`. tee dies with the
/// Ctrl-C; demo.sh's messages then go to a closed pipe.
#[test]
fn ctrl_c_with_output_through_tee_stops_everything() {
    demo_case(Attach::Terminal, "2>&1", Ending::CtrlC);
}

/// The terminal of `scripts/demo.sh | tee demo.log` is closed: SIGHUP to demo.sh and tee,
/// and every write of demo.sh to its stderr (the terminal) fails from then on.
#[test]
fn closed_terminal_stops_everything() {
    demo_case(Attach::Terminal, "", Ending::HangUp);
}

/// SIGTERM to the whole pipeline (demo.sh and tee), with no terminal.
#[test]
fn sigterm_to_the_pipeline_stops_everything() {
    demo_case(Attach::NoTerminal, "2>&1", Ending::TermPipeline);
}

/// SIGTERM to demo.sh alone while tee keeps reading, with no terminal.
#[test]
fn sigterm_to_demo_alone_stops_everything() {
    demo_case(Attach::NoTerminal, "2>&1", Ending::TermDemoOnly);
}

// ---------------------------------------------------------------------------------------------
// emulator.sh

/// `bash scripts/emulator.sh ARGS` in `dir` (pid file and data dir there).
fn emulator_sh(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(scripts_root().join("scripts/emulator.sh"))
        .args(args)
        .env("CRONLEASE_EMULATOR", emulator_path())
        .env("EMULATOR_START_TIMEOUT", "90")
        .env("TMPDIR", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .stdin(Stdio::null());
    cmd
}

/// The output file `name` in `dir`, for a child's stdout and stderr.
fn output_to(cmd: &mut Command, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    cmd.stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    path
}

/// The emulator processes (launcher and java) started for `port` with data under `dir`.
fn emulator_procs(tracker: &mut Tracker, port: u16) -> Vec<Proc> {
    let flag = format!("--port={port}");
    tracker
        .scan()
        .into_iter()
        .filter(|p| p.cmd.contains(&flag))
        .collect()
}

/// `start` then `stop`: the launcher and its java child are gone when `stop` returns, and so
/// are the pid file and the data dir.
#[test]
fn emulator_start_then_stop_leaves_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("cronlease-scripts-test-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let port_arg = port.to_string();
    let _guard = KillOnDrop(Tracker::new(dir.path(), -1));
    let mut tracker = Tracker::new(dir.path(), -1);

    let mut start = emulator_sh(dir.path(), &["start", &port_arg]);
    let start_log = output_to(&mut start, dir.path(), "start.log");
    let status = start.status().expect("run emulator.sh start");
    let running = emulator_procs(&mut tracker, port);
    assert!(
        status.success(),
        "emulator.sh start failed ({status}):\n{}",
        tail_of(&start_log, 40)
    );
    assert!(
        running.iter().any(|p| p.cmd.contains("java")),
        "no java process for port {port} after start:\n{}",
        listing(&running)
    );
    let pid_file = dir.path().join(format!("cronlease-emulator-{port}.pid"));
    assert!(pid_file.exists(), "{} missing", pid_file.display());

    let mut stop = emulator_sh(dir.path(), &["stop", &port_arg]);
    let stop_log = output_to(&mut stop, dir.path(), "stop.log");
    let status = stop.status().expect("run emulator.sh stop");
    assert!(
        status.success(),
        "emulator.sh stop failed ({status}):\n{}",
        tail_of(&stop_log, 40)
    );
    // `stop` waits until the group is gone: nothing may be left when it returns.
    let left = emulator_procs(&mut tracker, port);
    assert!(
        left.is_empty(),
        "emulator processes left after stop returned:\n{}\nwhile running:\n{}",
        listing(&left),
        listing(&running)
    );
    assert!(!pid_file.exists(), "{} left behind", pid_file.display());
    let data_left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("cronlease-emulator-")
        })
        .map(|e| e.path())
        .collect();
    assert!(data_left.is_empty(), "left behind: {data_left:?}");
}

/// Ctrl-C (SIGINT to the script's process group) while `start` waits for the emulator to
/// answer: the half-started emulator (launcher and java) must be stopped too.
#[test]
fn emulator_start_interrupted_leaves_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("cronlease-scripts-test-")
        .tempdir()
        .unwrap();
    let _guard = KillOnDrop(Tracker::new(dir.path(), -1));
    let mut tracker = Tracker::new(dir.path(), -1);
    // If the emulator becomes healthy before the interrupt lands, `start` succeeds and the
    // case proves nothing: stop it and try again on another port.
    for attempt in 1..=3 {
        let port = free_port();
        let port_arg = port.to_string();
        let mut start = emulator_sh(dir.path(), &["start", &port_arg]);
        let log = output_to(&mut start, dir.path(), &format!("start-{attempt}.log"));
        let mut child = start
            .process_group(0)
            .spawn()
            .expect("start emulator.sh start");
        // Half-way: java runs, but `start` has not seen it healthy yet.
        let java_up = wait_until(UP_DEADLINE, || {
            matches!(child.try_wait(), Ok(Some(_)))
                || emulator_procs(&mut tracker, port)
                    .iter()
                    .any(|p| p.cmd.contains("java"))
        });
        assert!(
            java_up,
            "no java process within {UP_DEADLINE:?}:\n{}",
            tail_of(&log, 40)
        );
        let running = emulator_procs(&mut tracker, port);
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: plain syscall; the group is our unreaped child's own.
            unsafe {
                libc::killpg(child.id() as i32, libc::SIGINT);
            }
        }
        let status = child.wait().expect("wait for emulator.sh start");
        if status.success() {
            let _ = emulator_sh(dir.path(), &["stop", &port_arg]).status();
            assert!(
                attempt < 3,
                "emulator.sh start finished before the interrupt, three times"
            );
            continue;
        }
        let mut left = Vec::new();
        let gone = wait_until(GONE_DEADLINE, || {
            left = emulator_procs(&mut tracker, port);
            left.is_empty()
        });
        assert!(
            gone,
            "interrupted emulator.sh start ({status}) left {} process(es) after \
             {GONE_DEADLINE:?}:\n{}\nwhile starting:\n{}\n--- its output ---\n{}",
            left.len(),
            listing(&left),
            listing(&running),
            tail_of(&log, 40)
        );
        let pid_file = dir.path().join(format!("cronlease-emulator-{port}.pid"));
        assert!(!pid_file.exists(), "{} left behind", pid_file.display());
        return;
    }
}

/// SIGKILLs whatever its tracker finds, on drop (after a failure).
struct KillOnDrop(Tracker);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}
