//! The job watchdog: a running job's processes die with their node, even after `kill -9`.
//!
//! Every job runs in a process group of its own (see [`crate::node::runner`]), so a node that is
//! killed with SIGKILL cannot take its jobs with it. At start the node therefore re-executes
//! its own binary (`/proc/self/exe`, so an upgrade in place does not matter) as a hidden
//! subcommand, `cronlease __watchdog`: a small process without a tokio runtime, whose stdin is
//! a pipe from the node and which runs in a process group of its own (a member of neither
//! the node's group nor any job's), so a signal to the node's whole group leaves it alive. The node writes `+PGID` right after it spawned a job's group and `-PGID` once
//! the run is over and the group is gone ([`register`], [`unregister`]). The watchdog keeps
//! the set. When it reads end of file, the node is gone, whatever way it went: the kernel
//! closes the pipe's only write end when the node dies, SIGKILL included. The watchdog then
//! sends SIGKILL to every group still registered, says so in one line on stderr, and exits;
//! with nothing registered it just exits. A graceful stop ([`stop`]) closes the pipe after
//! the jobs are done, so the watchdog exits with nothing to kill and the node reaps it.
//!
//! Details:
//! - The write end is close-on-exec (std creates its pipes so; [`start`] makes sure), so no
//!   job inherits it: a job holding it would keep the watchdog from ever seeing end of file.
//! - The watchdog ignores SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE (a session-wide hangup
//!   or a stray signal must not end it); only end of file ends it.
//! - It answers `ready` before the node relies on it; a binary that does not (or any other
//!   failure to start it) leaves the node running without it, after a warning
//!   (`event="watchdog_unavailable"`): its jobs then behave as before, they outlive a SIGKILL.
//! - Writes never block: the write end is non-blocking, and a line the pipe cannot take now
//!   waits in a small backlog (at most [`MAX_BACKLOG`] bytes) that the next write sends first.
//!   A watchdog that died makes writes fail (EPIPE): one warning (`event="watchdog_lost"`),
//!   then the node runs without it.
//! - No `PR_SET_PDEATHSIG`: it fires when the thread that forked the child exits, not the
//!   process; with SIGKILL it would kill the watchdog before it could clean up, and with a
//!   catchable signal it would only repeat what end of file already says.
//! - The link is process-global (a static, set by [`start`], cleared by [`stop`]) because
//!   there is one watchdog per process, tied to the process's death by the pipe, and runs are
//!   started deep inside the tick machinery; [`register`] and [`unregister`] are no-ops
//!   without it (e.g. in unit tests).
//!
//! Limits: processes that leave their job's process group (`setsid`, daemonizing) escape. If
//! the watchdog dies together with the node (both killed by pid, the OOM killer taking both)
//! nothing is cleaned up. Between a group ending and `-PGID` reaching
//! the watchdog there is a tiny window in which the number could be reused for another
//! group; it matters only if the node dies within that window, since the watchdog acts only
//! at the node's death. Likewise a node killed between spawning a job and writing `+PGID`
//! (microseconds) leaves that job behind.
use std::collections::BTreeSet;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The hidden subcommand that runs the watchdog (`cronlease __watchdog`).
pub const SUBCOMMAND: &str = "__watchdog";
/// The watchdog's one line on stdout once it ignores the signals and reads its input.
const READY: &[u8] = b"ready\n";
/// How long the node waits for [`READY`].
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop waits for the watchdog to exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Bytes of lines kept while the pipe is full (a watchdog that stopped reading).
pub const MAX_BACKLOG: usize = 64 * 1024;

/// The node's side of the watchdog.
struct Link {
    child: Child,
    stdin: ChildStdin,
    /// Lines not yet taken by the pipe.
    backlog: Vec<u8>,
}

static LINK: Mutex<Option<Link>> = Mutex::new(None);
static BACKLOG_WARNED: AtomicBool = AtomicBool::new(false);

fn link() -> MutexGuard<'static, Option<Link>> {
    LINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts this node's watchdog. Without one (it cannot be started, or does not answer) the
/// node logs `watchdog_unavailable` and goes on; then returns false.
pub fn start() -> bool {
    let mut slot = link();
    if slot.is_some() {
        return true;
    }
    match spawn() {
        Ok(new) => {
            tracing::debug!(
                event = "watchdog_started",
                pid = new.child.id(),
                "job watchdog started"
            );
            *slot = Some(new);
            true
        }
        Err(e) => {
            tracing::warn!(
                event = "watchdog_unavailable",
                error = %e,
                "cannot start the job watchdog ({e}); running without it: the processes of \
                 running jobs will outlive this node if it is killed with SIGKILL"
            );
            false
        }
    }
}

fn spawn() -> io::Result<Link> {
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "cronlease".into());
    let mut child = Command::new("/proc/self/exe")
        .arg0(arg0)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .current_dir("/")
        // A group of its own: a signal to the node's whole group (a terminal's Ctrl-C,
        // `kill -9 -PGID`) does not reach it, so it outlives the node and cleans up.
        .process_group(0)
        .spawn()?;
    let ready = match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => handshake(stdout, START_TIMEOUT)
            .and_then(|()| close_on_exec_nonblocking(&stdin))
            .map(|()| stdin),
        _ => Err(io::Error::other("no pipe to the watchdog")),
    };
    match ready {
        Ok(stdin) => Ok(Link {
            child,
            stdin,
            backlog: Vec::new(),
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Waits up to `within` for the watchdog's [`READY`] line.
fn handshake(mut out: ChildStdout, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while !got.ends_with(b"\n") && got.len() < 64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {within:?}"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            continue;
        }
        let mut buf = [0u8; 64];
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == READY {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} answered {:?} instead of \"ready\"",
            SUBCOMMAND,
            String::from_utf8_lossy(&got)
        )))
    }
}

/// Makes sure no job inherits the write end, and that writing to it never blocks.
fn close_on_exec_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process owns; flags only.
    unsafe {
        let fdflags = libc::fcntl(fd, libc::F_GETFD);
        if fdflags < 0 || libc::fcntl(fd, libc::F_SETFD, fdflags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Tells the watchdog that process group `pgid` belongs to a running job. A no-op without one.
pub fn register(pgid: i32) {
    send('+', pgid);
}

/// Tells the watchdog that the job of group `pgid` is over. A no-op without one.
pub fn unregister(pgid: i32) {
    send('-', pgid);
}

fn send(op: char, pgid: i32) {
    let mut slot = link();
    let Some(l) = slot.as_mut() else {
        return;
    };
    let line = format!("{op}{pgid}\n");
    if l.backlog.len() + line.len() > MAX_BACKLOG {
        if !BACKLOG_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                event = "watchdog_backlog",
                pid = l.child.id(),
                "the job watchdog stopped reading; process groups are no longer reported to it"
            );
        }
        // Try to make room for the next line anyway.
        let _ = flush(l);
        return;
    }
    l.backlog.extend_from_slice(line.as_bytes());
    if let Err(e) = flush(l) {
        let pid = l.child.id();
        // Reap it if it is gone; it is not waited for otherwise.
        let _ = l.child.try_wait();
        *slot = None;
        tracing::warn!(
            event = "watchdog_lost",
            pid,
            error = %e,
            "the job watchdog is gone ({e}); running without it: the processes of running \
             jobs will outlive this node if it is killed with SIGKILL"
        );
    }
}

/// Writes as much of the backlog as the pipe takes now. Err only when the pipe is broken.
fn flush(l: &mut Link) -> io::Result<()> {
    while !l.backlog.is_empty() {
        match l.stdin.write(&l.backlog) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                l.backlog.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Graceful stop, once the node's jobs are done: closes the pipe, so the watchdog exits, and
/// reaps it (waiting up to [`EXIT_WAIT`]). Groups still registered (jobs the node gave up
/// on) get SIGKILL from it.
pub async fn stop() {
    let Some(mut l) = link().take() else {
        return;
    };
    let deadline = Instant::now() + EXIT_WAIT;
    // Lines still waiting (unlikely): deliver them first, so no ended group is killed.
    while !l.backlog.is_empty() && Instant::now() < deadline {
        if flush(&mut l).is_err() {
            break;
        }
        if !l.backlog.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let Link {
        mut child, stdin, ..
    } = l;
    drop(stdin);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                tracing::warn!(
                    event = "watchdog_lingers",
                    pid = child.id(),
                    "the job watchdog did not exit within {EXIT_WAIT:?} of the node's stop"
                );
                return;
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The watchdog process

/// `cronlease __watchdog`: reads `+PGID` / `-PGID` lines on stdin until end of file, then
/// SIGKILLs every group still registered. Returns the exit code.
pub fn serve() -> u8 {
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN, no handler code runs.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    // SAFETY: plain syscall.
    let own_group = unsafe { libc::getpgrp() };
    let node = std::os::unix::process::parent_id();
    {
        let mut out = io::stdout().lock();
        if out.write_all(READY).and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
    let groups = read_groups(io::stdin().lock(), own_group);
    let killed = kill_groups(&groups);
    if !killed.is_empty() {
        eprintln!(
            "cronlease watchdog: node {node} is gone; sent SIGKILL to its running jobs' \
             process groups {killed:?}"
        );
    }
    0
}

/// The groups registered and not unregistered when `input` ends. Groups 0 and 1 and the
/// watchdog's own group are never taken; malformed lines are skipped.
fn read_groups(mut input: impl BufRead, own_group: i32) -> BTreeSet<i32> {
    let mut groups = BTreeSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            // A read error on a pipe means it is unusable: treat it as the node's end.
            Ok(0) | Err(_) => return groups,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if let Some(Ok(pgid)) = text.strip_prefix('+').map(str::parse::<i32>) {
            if pgid > 1 && pgid != own_group {
                groups.insert(pgid);
            }
        } else if let Some(Ok(pgid)) = text.strip_prefix('-').map(str::parse::<i32>) {
            groups.remove(&pgid);
        }
    }
}

/// SIGKILLs each group; returns those that existed.
fn kill_groups(groups: &BTreeSet<i32>) -> Vec<i32> {
    groups
        .iter()
        .copied()
        // SAFETY: plain syscall; `read_groups` never lets 0, 1 or our own group in.
        .filter(|&pgid| unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_add_and_remove_groups() {
        let input = "+100\n+200\n-100\n+300\n+1\n+0\n+-5\n+77\nx12\n+abc\n\u{e9}1\n\n-999\n+400";
        let groups = read_groups(input.as_bytes(), 77);
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), [200, 300, 400]);
    }

    #[test]
    fn registered_groups_are_killed_at_the_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let input = format!("+{pgid}\n");
        // SAFETY: plain syscall.
        let own = unsafe { libc::getpgrp() };
        let groups = read_groups(input.as_bytes(), own);
        assert_eq!(kill_groups(&groups), [pgid]);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: the group is gone, nothing is killed a second time.
        assert_eq!(kill_groups(&groups), Vec::<i32>::new());
    }

    #[test]
    fn without_a_watchdog_registering_is_a_no_op() {
        // Unit tests never start one; these must neither block nor panic.
        register(12345);
        unregister(12345);
    }

    #[test]
    fn a_binary_that_does_not_answer_ready_is_refused() {
        // Here /proc/self/exe is the unit-test binary: `__watchdog` is a test filter to it and
        // it prints a test summary, not `ready`.
        let e = spawn().err().expect("the test binary is no watchdog");
        assert!(e.to_string().contains("instead of \"ready\""), "{e}");
    }
}
