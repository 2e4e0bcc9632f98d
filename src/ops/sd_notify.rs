//! The systemd notify protocol (sd_notify(3)), written in-house: one datagram of
//! `NAME=value` lines to the Unix socket named by `NOTIFY_SOCKET`.
//!
//! Why in-house: the protocol is a single `sendto(2)` of a few bytes; a crate would add a
//! dependency for what std already does (`UnixDatagram`, and `SocketAddrExt` for Linux's
//! abstract names).
//!
//! What the node says, and when (the hooks are in [`crate::node::app`] and
//! [`crate::node::reload`]):
//!
//! * `STATUS=…` while it waits for the store, then what it leads (`leading 3 of 10 jobs on
//!   datastore (project p, namespace n)`), on change;
//! * `READY=1` once, when it has registered with the store (the moment `/readyz` turns 200);
//! * `RELOADING=1` + `MONOTONIC_USEC=…` when a reload starts, `READY=1` when it is done (plus
//!   `STATUS=` with the reason when the new file was refused), as `Type=notify-reload` wants;
//! * `STOPPING=1` + `EXTEND_TIMEOUT_USEC=…` at the first SIGTERM/SIGINT, so that systemd's
//!   stop timeout follows `shutdown_grace` in jobs.toml rather than a unit file's guess;
//! * `WATCHDOG=1` while the node's own loops make progress ([`watchdog_ok`]).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A failed send is logged once
//! (`sd_notify_error`) and never stops the node: systemd's view of a node is a convenience,
//! the node's work is not.
//!
//! The three variables are removed from the environment at start ([`SdNotify::from_env`]) so
//! that jobs, notification commands and the `__watchdog` child do not inherit them: a job that
//! runs `systemd-notify` must not be able to tell systemd that the node is ready or stopping.
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

/// The longest `STATUS=` text sent: systemd reads a datagram of at most a few KiB, and a
/// status line is for `systemctl status`, not for whole error reports.
pub const MAX_STATUS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SdNotifyError {
    #[error("NOTIFY_SOCKET={0:?}: neither an absolute path nor an @abstract name")]
    BadSocket(String),
    #[error("WATCHDOG_USEC={0:?}: not a whole number of microseconds above zero")]
    BadWatchdogUsec(String),
    #[error("WATCHDOG_PID={0:?}: not a process id")]
    BadWatchdogPid(String),
    #[error("sending to NOTIFY_SOCKET {socket}: {source}")]
    Send {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (`@name` in `NOTIFY_SOCKET`), without the `@`.
    Abstract(Vec<u8>),
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Socket::Path(p) => write!(f, "{}", p.display()),
            Socket::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The variables systemd sets for a `Type=notify` service, as found at start.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    pub notify_socket: Option<OsString>,
    pub watchdog_usec: Option<OsString>,
    pub watchdog_pid: Option<OsString>,
}

/// What the environment asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub socket: Option<Socket>,
    /// `WATCHDOG_USEC`, when it is meant for this process and there is a socket to ping.
    pub watchdog: Option<Duration>,
}

/// Parse the variables for process `pid`. What cannot be used is left off and returned as
/// errors, to be logged; none of them is fatal.
pub fn parse(vars: &EnvVars, pid: u32) -> (Settings, Vec<SdNotifyError>) {
    let mut errors = Vec::new();
    let socket = match vars.notify_socket.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match parse_socket(s) {
            Ok(socket) => Some(socket),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    // Without a socket there is nobody to ping; a WATCHDOG_PID of another process means the
    // variables were inherited from a parent service and the watchdog is not ours.
    let mine = match vars.watchdog_pid.as_deref() {
        None => true,
        Some(p) => match p.to_str().and_then(|p| p.trim().parse::<u32>().ok()) {
            Some(p) => p == pid,
            None => {
                errors.push(SdNotifyError::BadWatchdogPid(p.to_string_lossy().into()));
                false
            }
        },
    };
    let watchdog = match vars.watchdog_usec.as_deref() {
        Some(u) if socket.is_some() && mine => {
            match u.to_str().and_then(|u| u.trim().parse::<u64>().ok()) {
                Some(usec) if usec > 0 => Some(Duration::from_micros(usec)),
                _ => {
                    errors.push(SdNotifyError::BadWatchdogUsec(u.to_string_lossy().into()));
                    None
                }
            }
        }
        _ => None,
    };
    (Settings { socket, watchdog }, errors)
}

fn parse_socket(s: &OsStr) -> Result<Socket, SdNotifyError> {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(b'@') if bytes.len() > 1 => Ok(Socket::Abstract(bytes[1..].to_vec())),
        Some(b'/') => Ok(Socket::Path(PathBuf::from(s))),
        _ => Err(SdNotifyError::BadSocket(s.to_string_lossy().into())),
    }
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd compares `MONOTONIC_USEC` with.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into `ts`, a valid timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        // Cannot happen for CLOCK_MONOTONIC; 0 reads as "long ago" everywhere it is used.
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

// ---------------------------------------------------------------------------------------------
// Messages (pure, so that their exact text is tested)

/// `STATUS=text` on one line (a newline would start another assignment), at most
/// [`MAX_STATUS`] bytes.
pub fn status_message(text: &str) -> String {
    let mut one_line: String = text
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one_line.len() > MAX_STATUS {
        let mut cut = MAX_STATUS - 3;
        while !one_line.is_char_boundary(cut) {
            cut -= 1;
        }
        one_line.truncate(cut);
        one_line.push_str("...");
    }
    format!("STATUS={one_line}")
}

/// A reload starts: systemd (`Type=notify-reload`) matches `MONOTONIC_USEC` against the time
/// it sent SIGHUP, so both go in one datagram.
pub fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// A reload ended: ready again; a refused file also says why in the status.
pub fn reloaded_message(refused: Option<&str>) -> String {
    match refused {
        None => "READY=1".to_string(),
        Some(why) => format!("READY=1\n{}", status_message(&refused_status(why))),
    }
}

/// The status while the last file read was refused.
pub fn refused_status(why: &str) -> String {
    format!("jobs file refused, running the previous one: {why}")
}

/// Stopping: systemd waits `extend` from now (instead of `TimeoutStopSec`) for the node to
/// exit; `status` says what the stop waits for.
pub fn stopping_message(extend: Duration, status: &str) -> String {
    format!(
        "STOPPING=1\nEXTEND_TIMEOUT_USEC={}\n{}",
        extend.as_micros(),
        status_message(status)
    )
}

/// What a running node says about itself: what it leads, where, and what is wrong.
pub fn running_status(
    leading: usize,
    jobs: usize,
    store: &str,
    store_error: Option<&str>,
    refused: Option<&str>,
) -> String {
    let mut text = format!("leading {leading} of {jobs} jobs on {store}");
    if let Some(e) = store_error {
        text.push_str(&format!("; cannot read the store: {e}"));
    }
    if let Some(why) = refused {
        text.push_str(&format!("; {}", refused_status(why)));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Progress of the node's loops, and the watchdog's decision

/// When a loop last finished an iteration (success or store error alike), in milliseconds of
/// `CLOCK_MONOTONIC`: one relaxed atomic store per iteration, read by the watchdog task.
#[derive(Debug)]
pub struct Progress(AtomicU64);

impl Progress {
    /// Stamped now: a loop that has just been set up has not stalled yet.
    pub fn new() -> Progress {
        Progress(AtomicU64::new(monotonic_usec() / 1_000))
    }

    /// One iteration finished.
    pub fn stamp(&self) {
        self.0.store(monotonic_usec() / 1_000, Ordering::Relaxed);
    }

    /// When the last iteration finished (ms of `CLOCK_MONOTONIC`).
    pub fn last_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// One loop as the watchdog sees it.
#[derive(Debug, Clone, Copy)]
pub struct LoopProgress {
    /// When it last finished an iteration ([`Progress::last_ms`]).
    pub last_ms: u64,
    /// The longest one iteration takes when all is well, the wait before it included: its
    /// period plus what a store call may take before it times out. A store that does not
    /// answer makes iterations end with an error at that bound, so it never stalls a loop.
    pub period: Duration,
}

/// Whether to send `WATCHDOG=1` now (`now_ms` on `CLOCK_MONOTONIC`): every loop finished an
/// iteration within `max(watchdog / 2, 3 × its period)`. Progress is a finished iteration, not
/// a successful one: a store outage must never get the node restarted and its running jobs
/// killed; a loop that is stuck (a deadlock, a runtime blocked by a busy thread) must.
pub fn watchdog_ok(now_ms: u64, watchdog: Duration, loops: &[LoopProgress]) -> bool {
    loops.iter().all(|l| {
        let allowed = (watchdog / 2).max(l.period * 3).as_millis() as u64;
        now_ms.saturating_sub(l.last_ms) <= allowed
    })
}

// ---------------------------------------------------------------------------------------------
// The notifier

/// The node's link to systemd: a no-op without `NOTIFY_SOCKET`.
#[derive(Debug, Default)]
pub struct SdNotify {
    settings: Settings,
    /// A send failed and was logged: later failures are not.
    failed: AtomicBool,
    /// Why the last jobs file read was refused, until one is applied (for the status line).
    refused: Mutex<Option<String>>,
}

impl SdNotify {
    /// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` and remove them from this
    /// process's environment, so that no child inherits them (see the module docs). Call it
    /// while the process has one thread: changing the environment races with any other thread
    /// reading it. Logs what it set up, and what it could not use.
    pub fn from_env() -> SdNotify {
        let vars = EnvVars {
            notify_socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog_usec: std::env::var_os("WATCHDOG_USEC"),
            watchdog_pid: std::env::var_os("WATCHDOG_PID"),
        };
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let (settings, errors) = parse(&vars, std::process::id());
        for e in &errors {
            warn!(event = "sd_notify_error", "ignored: {e}");
        }
        if let Some(socket) = &settings.socket {
            let watchdog = settings
                .watchdog
                .map(|w| humantime::format_duration(w).to_string())
                .unwrap_or_else(|| "off".into());
            info!(event = "sd_notify", socket = %socket, watchdog = %watchdog,
                "notifying systemd at {socket} (watchdog {watchdog})");
        }
        SdNotify::new(settings)
    }

    pub fn new(settings: Settings) -> SdNotify {
        SdNotify {
            settings,
            ..SdNotify::default()
        }
    }

    /// Silent: every call a no-op.
    pub fn disabled() -> SdNotify {
        SdNotify::default()
    }

    pub fn enabled(&self) -> bool {
        self.settings.socket.is_some()
    }

    /// `WATCHDOG_USEC`, if systemd watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.settings.watchdog
    }

    /// Send one datagram. Non-blocking: a systemd that does not read its socket must not stall
    /// a runtime thread (the message is then lost, as sd_notify's are).
    pub fn send(&self, message: &str) -> Result<(), SdNotifyError> {
        let Some(socket) = &self.settings.socket else {
            return Ok(());
        };
        let failed = |source| SdNotifyError::Send {
            socket: socket.to_string(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(failed)?;
        sock.set_nonblocking(true).map_err(failed)?;
        let sent = match socket {
            Socket::Path(path) => sock.send_to(message.as_bytes(), path),
            Socket::Abstract(name) => send_abstract(&sock, name, message.as_bytes()),
        };
        sent.map(|_| ()).map_err(failed)
    }

    /// Send, logging the first failure (`sd_notify_error`) and no later one.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                warn!(
                    event = "sd_notify_error",
                    "{e}; later failures are not logged"
                );
            }
        }
    }

    /// Whether a send has failed (and was logged).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn ready(&self) {
        self.notify("READY=1");
    }

    pub fn status(&self, text: &str) {
        self.notify(&status_message(text));
    }

    pub fn watchdog_ping(&self) {
        self.notify("WATCHDOG=1");
    }

    /// A reload starts (the clock read here, at the start).
    pub fn reloading(&self) {
        if self.enabled() {
            self.notify(&reloading_message(monotonic_usec()));
        }
    }

    /// A reload ended; `refused`: why the file was refused (kept for the status line until a
    /// file is applied).
    pub fn reloaded(&self, refused: Option<&str>) {
        *self.refused.lock().unwrap() = refused.map(str::to_string);
        self.notify(&reloaded_message(refused));
    }

    /// Why the last file read was refused, if it was.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().unwrap().clone()
    }

    /// The node is stopping and needs up to `extend` from now.
    pub fn stopping(&self, extend: Duration, status: &str) {
        self.notify(&stopping_message(extend, status));
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(message, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _message: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(socket: Option<&str>, usec: Option<&str>, pid: Option<&str>) -> EnvVars {
        EnvVars {
            notify_socket: socket.map(OsString::from),
            watchdog_usec: usec.map(OsString::from),
            watchdog_pid: pid.map(OsString::from),
        }
    }

    #[test]
    fn no_socket_means_silent_and_no_watchdog() {
        let (s, errors) = parse(&vars(None, Some("400000"), None), 7);
        assert_eq!(s, Settings::default());
        assert!(errors.is_empty());
        let (s, errors) = parse(&vars(Some(""), None, None), 7);
        assert_eq!(s.socket, None);
        assert!(errors.is_empty());
        // Silent: sending is a no-op that succeeds.
        let sd = SdNotify::disabled();
        assert!(!sd.enabled());
        sd.send("READY=1").unwrap();
        sd.ready();
        assert!(!sd.has_failed());
    }

    #[test]
    fn a_path_and_an_abstract_name_are_parsed() {
        let (s, errors) = parse(&vars(Some("/run/systemd/notify"), None, None), 7);
        assert!(errors.is_empty());
        assert_eq!(s.socket, Some(Socket::Path("/run/systemd/notify".into())));
        assert_eq!(s.watchdog, None);
        let (s, _) = parse(&vars(Some("@cronlease-x"), None, None), 7);
        assert_eq!(s.socket, Some(Socket::Abstract(b"cronlease-x".to_vec())));
        assert_eq!(s.socket.unwrap().to_string(), "@cronlease-x");
    }

    #[test]
    fn a_relative_path_or_a_bare_at_is_refused() {
        for bad in ["notify.sock", "@", "vsock:2:1234"] {
            let (s, errors) = parse(&vars(Some(bad), Some("1000000"), None), 7);
            assert_eq!(s, Settings::default(), "{bad}");
            assert!(
                matches!(errors.as_slice(), [SdNotifyError::BadSocket(b)] if b == bad),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_watchdog_is_ours_only_with_our_pid_or_none() {
        let sock = Some("/run/n");
        let (s, errors) = parse(&vars(sock, Some("400000"), None), 7);
        assert_eq!(s.watchdog, Some(Duration::from_millis(400)));
        assert!(errors.is_empty());
        let (s, _) = parse(&vars(sock, Some("400000"), Some("7")), 7);
        assert_eq!(s.watchdog, Some(Duration::from_millis(400)));
        // Another process's watchdog (inherited from a parent service): not ours, no error.
        let (s, errors) = parse(&vars(sock, Some("400000"), Some("8")), 7);
        assert_eq!(s.watchdog, None);
        assert!(errors.is_empty());
        assert_eq!(s.socket, Some(Socket::Path("/run/n".into())));
        let (s, errors) = parse(&vars(sock, Some("400000"), Some("x")), 7);
        assert_eq!(s.watchdog, None);
        assert!(matches!(
            errors.as_slice(),
            [SdNotifyError::BadWatchdogPid(_)]
        ));
    }

    #[test]
    fn a_bad_watchdog_usec_is_ignored_with_an_error() {
        for bad in ["", "0", "-5", "1.5", "400ms"] {
            let (s, errors) = parse(&vars(Some("/run/n"), Some(bad), None), 7);
            assert_eq!(s.watchdog, None, "{bad}");
            assert!(s.socket.is_some());
            assert!(
                matches!(errors.as_slice(), [SdNotifyError::BadWatchdogUsec(b)] if b == bad),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn messages_are_the_protocol_lines() {
        assert_eq!(
            reloading_message(123_456),
            "RELOADING=1\nMONOTONIC_USEC=123456"
        );
        assert_eq!(reloaded_message(None), "READY=1");
        assert_eq!(
            reloaded_message(Some("/etc/jobs.toml:3:9: bad cron expression")),
            "READY=1\nSTATUS=jobs file refused, running the previous one: \
             /etc/jobs.toml:3:9: bad cron expression"
        );
        assert_eq!(
            stopping_message(
                Duration::from_secs(40),
                "stopping: running jobs may finish within 10s"
            ),
            "STOPPING=1\nEXTEND_TIMEOUT_USEC=40000000\n\
             STATUS=stopping: running jobs may finish within 10s"
        );
        assert_eq!(
            running_status(3, 10, "file store at /s", None, None),
            "leading 3 of 10 jobs on file store at /s"
        );
        assert_eq!(
            running_status(0, 1, "redis at r", Some("timed out"), Some("j:1:1: x")),
            "leading 0 of 1 jobs on redis at r; cannot read the store: timed out; \
             jobs file refused, running the previous one: j:1:1: x"
        );
    }

    #[test]
    fn a_status_is_one_line_and_bounded() {
        assert_eq!(status_message(" a\nb\r\nc "), "STATUS=a b  c");
        let long = "é".repeat(MAX_STATUS);
        let m = status_message(&long);
        assert!(m.len() <= "STATUS=".len() + MAX_STATUS, "{}", m.len());
        assert!(m.ends_with("..."));
    }

    #[test]
    fn the_watchdog_needs_every_loop_to_have_finished_an_iteration_lately() {
        let w = Duration::from_secs(20); // allowed: max(10 s, 3 × period)
        let fast = |last_ms| LoopProgress {
            last_ms,
            period: Duration::from_secs(1),
        };
        let slow = |last_ms| LoopProgress {
            last_ms,
            period: Duration::from_secs(5),
        };
        let now = 100_000;
        assert!(watchdog_ok(now, w, &[fast(now - 500), slow(now - 500)]));
        assert!(watchdog_ok(now, w, &[fast(now - 10_000)]));
        assert!(!watchdog_ok(now, w, &[fast(now - 10_001)]));
        // A slow loop is given three of its periods, beyond half the watchdog.
        assert!(watchdog_ok(now, w, &[slow(now - 15_000)]));
        assert!(!watchdog_ok(now, w, &[slow(now - 15_001)]));
        // One stuck loop is enough to stop the pings.
        assert!(!watchdog_ok(now, w, &[fast(now - 100), slow(now - 60_000)]));
        // A stamp from "after now" (read in another order) is fresh, not a wrap-around.
        assert!(watchdog_ok(now, w, &[fast(now + 5)]));
        // No loops: nothing stuck.
        assert!(watchdog_ok(now, w, &[]));
    }

    #[test]
    fn progress_is_stamped_on_the_monotonic_clock() {
        let before = monotonic_usec() / 1_000;
        let p = Progress::new();
        assert!(p.last_ms() >= before);
        std::thread::sleep(Duration::from_millis(5));
        p.stamp();
        assert!(p.last_ms() >= before + 5);
        assert!(p.last_ms() <= monotonic_usec() / 1_000);
    }

    #[test]
    fn messages_arrive_at_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let (settings, _) = parse(
            &vars(Some(path.to_str().unwrap()), Some("400000"), None),
            std::process::id(),
        );
        let sd = SdNotify::new(settings);
        assert_eq!(sd.watchdog(), Some(Duration::from_millis(400)));
        sd.ready();
        sd.reloaded(Some("f:1:2: bad"));
        assert_eq!(sd.refused().as_deref(), Some("f:1:2: bad"));
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = rx.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .starts_with("READY=1\nSTATUS="));
        sd.reloaded(None);
        assert_eq!(sd.refused(), None);
        assert!(!sd.has_failed());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_arrive_at_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cronlease-unit-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let (settings, _) = parse(&vars(Some(&format!("@{name}")), None, None), 1);
        let sd = SdNotify::new(settings);
        let before = monotonic_usec();
        sd.reloading();
        let after = monotonic_usec();
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let usec: u64 = text
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{text:?}"))
            .parse()
            .unwrap();
        assert!((before..=after).contains(&usec), "{before} {usec} {after}");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_logged_once_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.sock");
        let sd = SdNotify::new(Settings {
            socket: Some(Socket::Path(path)),
            watchdog: None,
        });
        assert!(matches!(
            sd.send("READY=1"),
            Err(SdNotifyError::Send { .. })
        ));
        assert!(!sd.has_failed());
        sd.ready();
        sd.watchdog_ping();
        sd.stopping(Duration::from_secs(1), "stopping");
        assert!(sd.has_failed());
    }
}
