//! Runs a job's action, labels its output, enforces the timeout and the node's kill switch.
//!
//! - `say`: logs the text `repeat` times, `pause` apart.
//! - `command` (argv, no shell) and `shell` (`/bin/sh -c script`): a child process in its own
//!   process group, stdin from /dev/null, `CRONLEASE_JOB`, `CRONLEASE_NODE`,
//!   `CRONLEASE_FIRE_TIME` and `CRONLEASE_TERM` added to the environment. Every line it prints
//!   on stdout or stderr becomes one `job_output` event; a line is capped at [`MAX_LINE`] bytes
//!   (the rest of it is dropped), so memory stays bounded whatever the job prints.
//!
//! A run owns its process group. On timeout, or when `kill` is cancelled, the group gets
//! SIGTERM, then SIGKILL if anything in it still lives [`TERM_GRACE`] later. When the main
//! process exits on its own, processes it left behind in the group are ended the same way, so
//! a finished run leaves nothing running. If the run future is dropped, the group gets SIGKILL.
//! From spawn until the run is over the group is registered with the node's
//! [`crate::node::watchdog`], which SIGKILLs it if the node dies (even by SIGKILL) meanwhile.
//! `kill` is the run's own token: a child of the node's kill switch, which a newer tick of the
//! same job also cancels to replace the run (`overlap = "replace"`, see [`crate::node::tick`]).
//!
//! The caller logs `tick_run` / `job_finished` from the returned [`RunResult`]; the runner logs
//! only output, start errors (`job_error`) and termination steps.
use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::context::Limits;
use crate::config::{Action, Job};
use crate::node::exec;
use crate::ops::logging::rfc3339;

/// The longest output line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;
/// How long a process group gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// After the main process exits, how long to wait for its output pipes to close.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How often to look whether a process group is empty while waiting for it.
const GROUP_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Timeout,
    Killed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
        }
    }
}

#[derive(Clone)]
pub struct RunContext {
    pub node: String,
    pub fire_time: DateTime<Utc>,
    pub term: i64,
    /// Where the run's output lines are kept, besides the log ([`crate::node::output`]).
    pub output: Option<std::sync::Arc<crate::node::output::OutputTail>>,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub outcome: Outcome,
    /// The process's exit code; `None` for `say`, a process that could not start, or one that
    /// died by a signal.
    pub exit_code: Option<i32>,
    /// Why it failed when no exit code says it: it could not start (env file, working
    /// directory, the program), or a signal ended it. Never holds a secret.
    pub reason: Option<String>,
}

impl RunResult {
    pub(crate) fn new(outcome: Outcome, exit_code: Option<i32>) -> RunResult {
        RunResult {
            outcome,
            exit_code,
            reason: None,
        }
    }

    pub(crate) fn because(outcome: Outcome, reason: String) -> RunResult {
        RunResult {
            outcome,
            exit_code: None,
            reason: Some(reason),
        }
    }
}

/// Runs `job`'s action for the tick described by `ctx`. Cancelling `kill` stops it (outcome
/// `Killed`); a token already cancelled means the action does not start.
pub async fn run(job: &Job, ctx: &RunContext, kill: CancellationToken) -> RunResult {
    let labels = Labels {
        job: &job.name,
        node: &ctx.node,
        fire_time: rfc3339(ctx.fire_time),
        term: ctx.term,
        tail: ctx.output.as_deref(),
    };
    if kill.is_cancelled() {
        return RunResult::new(Outcome::Killed, None);
    }
    let deadline = job.timeout.map(|t| Instant::now() + t);
    match &job.action {
        Action::Say {
            text,
            repeat,
            pause,
        } => run_say(&labels, text, *repeat, *pause, deadline, job.timeout, &kill).await,
        Action::Command { argv } => match argv.split_first() {
            Some((program, args)) => {
                run_process(&labels, job, program, args, deadline, &kill).await
            }
            None => {
                tracing::error!(
                    event = "job_error",
                    job = labels.job,
                    node = labels.node,
                    fire_time = labels.fire_time.as_str(),
                    term = labels.term,
                    "cannot start: the command is empty"
                );
                RunResult::new(Outcome::Failed, None)
            }
        },
        Action::Shell { script } => {
            let args = ["-c".to_string(), script.clone()];
            run_process(&labels, job, "/bin/sh", &args, deadline, &kill).await
        }
        Action::Http(http) => crate::node::http_run::run(&labels, job, http, deadline, &kill).await,
    }
}

/// The fields every event of a run carries.
pub(crate) struct Labels<'a> {
    pub(crate) job: &'a str,
    pub(crate) node: &'a str,
    pub(crate) fire_time: String,
    pub(crate) term: i64,
    tail: Option<&'a crate::node::output::OutputTail>,
}

impl Labels<'_> {
    pub(crate) fn output(&self, stream: &str, line: &str, truncated: bool) {
        if let Some(tail) = self.tail {
            tail.push(line);
        }
        if truncated {
            tracing::info!(
                event = "job_output",
                job = self.job,
                node = self.node,
                stream,
                line,
                fire_time = self.fire_time.as_str(),
                term = self.term,
                truncated = true
            );
        } else {
            tracing::info!(
                event = "job_output",
                job = self.job,
                node = self.node,
                stream,
                line,
                fire_time = self.fire_time.as_str(),
                term = self.term
            );
        }
    }

    /// A run that ends `failed` without an exit code: `job_error` logged with `error` and
    /// `message`, `reason` kept in its record.
    pub(crate) fn failed(&self, error: &str, message: &str, reason: String) -> RunResult {
        tracing::error!(
            event = "job_error",
            job = self.job,
            node = self.node,
            fire_time = self.fire_time.as_str(),
            term = self.term,
            error,
            "{message}"
        );
        RunResult::because(Outcome::Failed, reason)
    }

    /// Logs why a run is being stopped.
    pub(crate) fn stopping(&self, why: Outcome, timeout: Option<Duration>) {
        match why {
            Outcome::Timeout => tracing::warn!(
                event = "job_timeout",
                job = self.job,
                node = self.node,
                fire_time = self.fire_time.as_str(),
                term = self.term,
                "timed out after {}; stopping it",
                humanize(timeout.unwrap_or_default())
            ),
            _ => tracing::warn!(
                event = "job_killed",
                job = self.job,
                node = self.node,
                fire_time = self.fire_time.as_str(),
                term = self.term,
                "killed (the node is shutting down, or a newer run replaces it); stopping the job"
            ),
        }
    }
}

fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn run_say(
    labels: &Labels<'_>,
    text: &str,
    repeat: u32,
    pause: Duration,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    kill: &CancellationToken,
) -> RunResult {
    let stop = |why| {
        labels.stopping(why, timeout);
        RunResult::new(why, None)
    };
    for i in 0..repeat {
        if kill.is_cancelled() {
            return stop(Outcome::Killed);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return stop(Outcome::Timeout);
        }
        labels.output("say", text, false);
        if i + 1 < repeat {
            tokio::select! {
                biased;
                _ = kill.cancelled() => return stop(Outcome::Killed),
                _ = until(deadline) => return stop(Outcome::Timeout),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    RunResult::new(Outcome::Ok, None)
}

/// Why the wait for the main process ended.
enum Stop {
    Exited(io::Result<ExitStatus>),
    Stopped(Outcome),
}

async fn run_process(
    labels: &Labels<'_>,
    job: &Job,
    program: &str,
    args: &[String],
    deadline: Option<Instant>,
    kill: &CancellationToken,
) -> RunResult {
    let timeout = job.timeout;
    let prepared = match exec::prepare(&job.context).await {
        Ok(p) => p,
        Err(reason) => {
            return labels.failed(&reason, &format!("cannot start: {reason}"), reason.clone())
        }
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The job's context first: CRONLEASE_* below win over anything it sets.
    exec::apply(&mut cmd, prepared);
    cmd.env("CRONLEASE_JOB", labels.job)
        .env("CRONLEASE_NODE", labels.node)
        .env("CRONLEASE_FIRE_TIME", &labels.fire_time)
        .env("CRONLEASE_TERM", labels.term.to_string())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = io_error_text(&e);
            let reason = format!("cannot start {program:?}: {error}");
            return labels.failed(&error, &reason, reason.clone());
        }
    };
    // With process_group(0) the child leads a new group whose id is its pid.
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        // Unreachable: a freshly spawned, unwaited child has an id.
        let _ = child.wait().await;
        return RunResult::new(Outcome::Failed, None);
    };
    let mut guard = GroupGuard::new(pgid);

    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("stdout and stderr are piped");
    };
    let pumps = async {
        tokio::join!(
            pump(stdout, "stdout", labels),
            pump(stderr, "stderr", labels)
        );
    };
    let mut output = Output {
        pumps: Box::pin(pumps),
        done: false,
    };

    let stop = loop {
        tokio::select! {
            status = child.wait() => break Stop::Exited(status),
            _ = output.pumps.as_mut(), if !output.done => output.done = true,
            _ = until(deadline) => break Stop::Stopped(Outcome::Timeout),
            _ = kill.cancelled() => break Stop::Stopped(Outcome::Killed),
        }
    };

    let result = match stop {
        Stop::Stopped(why) => {
            labels.stopping(why, timeout);
            let status = end_group(pgid, Some(&mut child), &mut output, labels).await;
            output.drain(DRAIN_GRACE).await;
            let code = status.and_then(|s| s.ok()).and_then(|s| s.code());
            RunResult::new(why, code)
        }
        Stop::Exited(status) => {
            output.drain(DRAIN_GRACE).await;
            if group_alive(pgid) {
                tracing::warn!(
                    event = "job_strays",
                    job = labels.job,
                    node = labels.node,
                    fire_time = labels.fire_time.as_str(),
                    term = labels.term,
                    pgid,
                    "the job exited but left processes running in its group; stopping them"
                );
                end_group(pgid, None, &mut output, labels).await;
                output.drain(DRAIN_GRACE).await;
            }
            exited(labels, status, &job.context.limits)
        }
    };
    // Output still open now belongs to processes outside the group: stop reading it.
    guard.armed = false;
    result
}

/// The outcome of a main process that exited on its own.
fn exited(labels: &Labels<'_>, status: io::Result<ExitStatus>, limits: &Limits) -> RunResult {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => RunResult::new(Outcome::Ok, Some(0)),
            (Some(code), _) => RunResult::new(Outcome::Failed, Some(code)),
            (None, signal) => {
                let name = signal.map_or_else(|| "unknown signal".to_string(), signal_name);
                tracing::warn!(
                    event = "job_signal",
                    job = labels.job,
                    node = labels.node,
                    fire_time = labels.fire_time.as_str(),
                    term = labels.term,
                    signal = name.as_str(),
                    "the job was killed by {name}"
                );
                // The cpu limit is a time limit: its signal is a timeout.
                let outcome = if name == "SIGXCPU" {
                    Outcome::Timeout
                } else {
                    Outcome::Failed
                };
                RunResult::because(outcome, exec::signal_reason(&name, limits))
            }
        },
        Err(e) => {
            tracing::error!(
                event = "job_error",
                job = labels.job,
                node = labels.node,
                fire_time = labels.fire_time.as_str(),
                term = labels.term,
                error = %e,
                "cannot wait for the job: {e}"
            );
            RunResult::new(Outcome::Failed, None)
        }
    }
}

fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// `No such file or directory`, without Rust's `(os error 2)` suffix.
fn io_error_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Both output pumps of a child, polled alongside whatever the run waits for, so that a child
/// never blocks on a full pipe.
struct Output<'a> {
    pumps: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    done: bool,
}

impl Output<'_> {
    /// Reads until both pipes close, for at most `grace`.
    async fn drain(&mut self, grace: Duration) {
        if !self.done {
            tokio::select! {
                _ = self.pumps.as_mut() => self.done = true,
                _ = tokio::time::sleep(grace) => {}
            }
        }
    }
}

/// Ends process group `pgid`: SIGTERM, then SIGKILL once [`TERM_GRACE`] has passed with a
/// process of the group still alive. Reaps `child` (the group leader) if given and returns its
/// status (`None` without a child). Output keeps being read meanwhile.
async fn end_group(
    pgid: i32,
    mut child: Option<&mut tokio::process::Child>,
    output: &mut Output<'_>,
    labels: &Labels<'_>,
) -> Option<io::Result<ExitStatus>> {
    signal_group(pgid, Signal::SIGTERM);
    let kill_at = Instant::now() + TERM_GRACE;
    let mut status: Option<io::Result<ExitStatus>> = None;
    loop {
        let leader_gone = child.is_none() || status.is_some();
        if leader_gone && !group_alive(pgid) {
            break;
        }
        tokio::select! {
            st = async { child.as_mut().expect("checked").wait().await }, if !leader_gone => {
                status = Some(st);
            }
            _ = output.pumps.as_mut(), if !output.done => output.done = true,
            _ = tokio::time::sleep(GROUP_POLL), if leader_gone => {}
            _ = tokio::time::sleep_until(kill_at) => {
                tracing::warn!(
                    event = "job_sigkill",
                    job = labels.job,
                    node = labels.node,
                    fire_time = labels.fire_time.as_str(),
                    term = labels.term,
                    pgid,
                    "still running {} after SIGTERM; sending SIGKILL",
                    humanize(TERM_GRACE)
                );
                signal_group(pgid, Signal::SIGKILL);
                break;
            }
        }
    }
    match (status, child) {
        (Some(st), _) => Some(st),
        // SIGKILL cannot be caught: the leader goes now.
        (None, Some(child)) => Some(child.wait().await),
        (None, None) => None,
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    // ESRCH (the group is already gone) is fine.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Whether a live (not zombie) process is in group `pgid`. Zombies do not count: orphans are
/// reaped by init, which in some containers never happens.
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid) && !matches!(state, Some("Z" | "X" | "x")) {
            return true;
        }
    }
    false
}

/// The run's hold on its process group: registered with the node's [`crate::node::watchdog`] from
/// spawn until the run is over (so the group dies with the node, even on SIGKILL), and
/// SIGKILLed if the run is dropped before it finished.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn new(pgid: i32) -> GroupGuard {
        crate::node::watchdog::register(pgid);
        GroupGuard { pgid, armed: true }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
        // The group is gone (or has SIGKILL pending): the watchdog may forget it.
        crate::node::watchdog::unregister(self.pgid);
    }
}

/// Reads `r` line by line and logs each line as a `job_output` event. Lines longer than
/// [`MAX_LINE`] bytes are cut there (the rest is skipped); invalid UTF-8 is replaced; a final
/// line without a newline is logged too.
async fn pump<R: AsyncRead + Unpin>(r: R, stream: &'static str, labels: &Labels<'_>) {
    let mut reader = BufReader::with_capacity(16 * 1024, r);
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(
                    event = "job_error",
                    job = labels.job,
                    node = labels.node,
                    stream,
                    error = %e,
                    "cannot read the job's {stream}: {e}"
                );
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let (chunk, used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE - line.len();
        if chunk.len() > room {
            line.extend_from_slice(&chunk[..room]);
            truncated = true;
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume(used);
        if complete {
            emit(&line, truncated, stream, labels);
            line.clear();
            truncated = false;
        }
    }
    if !line.is_empty() || truncated {
        emit(&line, truncated, stream, labels);
    }
}

fn emit(line: &[u8], truncated: bool, stream: &str, labels: &Labels<'_>) {
    let bytes = if truncated {
        trim_partial_utf8(line)
    } else {
        line.strip_suffix(b"\r").unwrap_or(line)
    };
    labels.output(stream, &String::from_utf8_lossy(bytes), truncated);
}

/// Drops a UTF-8 sequence cut short at the end of `b` (where a long line was truncated).
fn trim_partial_utf8(b: &[u8]) -> &[u8] {
    for back in 1..=b.len().min(4) {
        let i = b.len() - back;
        let c = b[i];
        if c & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let need = match c {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { &b[..i] } else { b };
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    fn job(action: Action, timeout: Option<Duration>) -> Job {
        Job {
            name: "j".into(),
            schedule: Schedule::parse("* * * * * *", "UTC").unwrap(),
            timeout,
            action,
            policy: Default::default(),
            enabled: true,
            notify: Vec::new(),
            ping: None,
            context: Default::default(),
        }
    }

    fn shell(script: &str) -> Action {
        Action::Shell {
            script: script.into(),
        }
    }

    fn ctx() -> RunContext {
        RunContext {
            node: "n1".into(),
            fire_time: "2026-11-22T14:35:00Z".parse().unwrap(),
            term: 42,
            output: None,
        }
    }

    /// Events captured by the test subscriber: fields as text.
    #[derive(Debug, Clone)]
    struct Captured {
        at: Instant,
        message: String,
        fields: HashMap<String, String>,
    }

    impl Captured {
        fn get(&self, k: &str) -> &str {
            self.fields.get(k).map_or("", String::as_str)
        }
    }

    #[derive(Clone, Default)]
    struct Capture {
        events: Arc<Mutex<Vec<Captured>>>,
        /// When set, `job_output` events are only counted, not kept.
        count_only: bool,
        outputs: Arc<AtomicUsize>,
        longest: Arc<AtomicUsize>,
        truncated: Arc<AtomicUsize>,
    }

    struct Fields<'a>(&'a mut HashMap<String, String>);
    impl Visit for Fields<'_> {
        fn record_str(&mut self, f: &Field, v: &str) {
            self.0.insert(f.name().into(), v.into());
        }
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            self.0.insert(f.name().into(), format!("{v:?}"));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = HashMap::new();
            event.record(&mut Fields(&mut fields));
            if fields.get("event").map(String::as_str) == Some("job_output") {
                self.outputs.fetch_add(1, Ordering::Relaxed);
                let len = fields.get("line").map_or(0, String::len);
                self.longest.fetch_max(len, Ordering::Relaxed);
                if fields.contains_key("truncated") {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
                if self.count_only {
                    return;
                }
            }
            let message = fields.remove("message").unwrap_or_default();
            self.events.lock().unwrap().push(Captured {
                at: Instant::now(),
                message,
                fields,
            });
        }
    }

    impl Capture {
        /// Captures events of this thread (tokio tests run on one thread) until the guard drops.
        fn install(&self) -> tracing::subscriber::DefaultGuard {
            tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
        }
        fn events(&self) -> Vec<Captured> {
            self.events.lock().unwrap().clone()
        }
        fn lines(&self) -> Vec<(String, String)> {
            self.events()
                .iter()
                .filter(|e| e.get("event") == "job_output")
                .map(|e| (e.get("stream").to_string(), e.get("line").to_string()))
                .collect()
        }
    }

    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let rest = &stat[stat.rfind(')').unwrap() + 1..];
                !matches!(rest.split_whitespace().next(), Some("Z" | "X"))
            }
            Err(_) => false,
        }
    }

    /// Polls `cond` until it holds; panics at the deadline.
    async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn read_pid(path: &std::path::Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    #[tokio::test]
    async fn exit_codes() {
        let r = run(
            &job(shell("exit 0"), None),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)));
        let r = run(
            &job(shell("exit 3"), None),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, Some(3)));
        let argv = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
        let r = run(
            &job(Action::Command { argv }, None),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, Some(7)));
    }

    #[tokio::test]
    async fn signal_death_is_failed_without_code() {
        let cap = Capture::default();
        let _g = cap.install();
        let r = run(
            &job(shell("kill -USR1 $$"), None),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, None));
        let ev = cap.events();
        let sig = ev.iter().find(|e| e.get("event") == "job_signal").unwrap();
        assert_eq!(sig.get("signal"), "SIGUSR1");
    }

    #[tokio::test]
    async fn environment_and_labelled_output() {
        let cap = Capture::default();
        let _g = cap.install();
        let script = r#"echo "$CRONLEASE_JOB|$CRONLEASE_NODE|$CRONLEASE_FIRE_TIME|$CRONLEASE_TERM"
            echo oops >&2
            printf 'crlf\r\n'
            printf '\377bad\n'
            read x && echo "stdin was not empty"
            printf 'no newline'"#;
        let r = run(&job(shell(script), None), &ctx(), CancellationToken::new()).await;
        assert_eq!(r.outcome, Outcome::Ok);
        let mut lines = cap.lines();
        lines.sort();
        assert_eq!(
            lines,
            [
                ("stderr", "oops"),
                ("stdout", "crlf"),
                ("stdout", "j|n1|2026-11-22T14:35:00Z|42"),
                ("stdout", "no newline"),
                ("stdout", "\u{fffd}bad"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let ev = cap.events();
        let out = ev.iter().find(|e| e.get("event") == "job_output").unwrap();
        assert_eq!(out.get("job"), "j");
        assert_eq!(out.get("node"), "n1");
        assert_eq!(out.get("fire_time"), "2026-11-22T14:35:00Z");
        assert_eq!(out.get("term"), "42");
    }

    #[tokio::test]
    async fn long_lines_are_truncated() {
        let cap = Capture::default();
        let _g = cap.install();
        // A line of 100 000 bytes, then a short one.
        let script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo after";
        let r = run(&job(shell(script), None), &ctx(), CancellationToken::new()).await;
        assert_eq!(r.outcome, Outcome::Ok);
        let lines = cap.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].1, "a".repeat(MAX_LINE));
        assert_eq!(lines[1].1, "after");
        assert_eq!(cap.truncated.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn partial_utf8_is_trimmed() {
        let e = "é".as_bytes(); // c3 a9
        assert_eq!(trim_partial_utf8(&[b'a', e[0]]), b"a");
        assert_eq!(trim_partial_utf8(&[b'a', e[0], e[1]]), [b'a', e[0], e[1]]);
        let smile = "😀".as_bytes();
        assert_eq!(
            trim_partial_utf8(&[b'x', smile[0], smile[1], smile[2]]),
            b"x"
        );
        assert_eq!(trim_partial_utf8(smile), smile);
        assert_eq!(trim_partial_utf8(b""), b"");
    }

    #[tokio::test]
    async fn missing_command_fails_with_a_clear_error() {
        let cap = Capture::default();
        let _g = cap.install();
        let argv = vec!["/no/such/cmd".into(), "x".into()];
        let r = run(
            &job(Action::Command { argv }, None),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, None));
        let ev = cap.events();
        let err = ev.iter().find(|e| e.get("event") == "job_error").unwrap();
        assert_eq!(
            err.message,
            r#"cannot start "/no/such/cmd": No such file or directory"#
        );
        assert_eq!(err.get("job"), "j");
    }

    /// A job name no other test uses, so its processes can be found by their environment.
    fn unique_name(what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("{what}-{}-{n}", std::process::id())
    }

    /// Live processes whose environment has `CRONLEASE_JOB=<name>`: everything a job started.
    fn job_processes(name: &str) -> Vec<u32> {
        let needle = format!("CRONLEASE_JOB={name}\0");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if String::from_utf8_lossy(&env).contains(&needle) && alive(pid) {
                found.push(pid);
            }
        }
        found
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
        let mut j = job(shell(&script), Some(Duration::from_millis(500)));
        j.name = unique_name("timeout");
        let t0 = Instant::now();
        let r = run(&j, &ctx(), CancellationToken::new()).await;
        let took = t0.elapsed();
        assert_eq!(r.outcome, Outcome::Timeout);
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(
            took < TERM_GRACE,
            "SIGTERM should have been enough: {took:?}"
        );
        assert_eq!(job_processes(&j.name), Vec::<u32>::new());
        // Normally the script got as far as starting the background sleep.
        if let Some(pid) = read_pid(&pidfile) {
            assert!(!alive(pid), "background sleep {pid} survived");
        }
    }

    #[tokio::test]
    async fn sigterm_ignored_escalates_to_sigkill() {
        let cap = Capture::default();
        let _g = cap.install();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The pid is written once both the shell and its child ignore SIGTERM.
        let script = format!(
            "trap '' TERM; sleep 30 & echo $! > {}; wait; wait",
            pidfile.display()
        );
        let mut j = job(shell(&script), None);
        j.name = unique_name("sigkill");
        let kill = CancellationToken::new();
        let task = {
            let (j, kill) = (j.clone(), kill.clone());
            tokio::spawn(async move { run(&j, &ctx(), kill).await })
        };
        wait_for("the job to start", Duration::from_secs(10), || {
            read_pid(&pidfile).is_some()
        })
        .await;
        let t0 = Instant::now();
        kill.cancel();
        let r = task.await.unwrap();
        let took = t0.elapsed();
        assert_eq!((r.outcome, r.exit_code), (Outcome::Killed, None));
        assert!(took >= TERM_GRACE, "{took:?}");
        assert!(took < TERM_GRACE * 3, "{took:?}");
        // SIGKILL is delivered at once but a busy machine may take a moment to finish the
        // process off: poll for it, with a deadline.
        let child = read_pid(&pidfile).unwrap();
        wait_for("the ignoring child to die", Duration::from_secs(5), || {
            !alive(child) && job_processes(&j.name).is_empty()
        })
        .await;
        let ev = cap.events();
        assert!(ev.iter().any(|e| e.get("event") == "job_killed"));
        assert!(ev.iter().any(|e| e.get("event") == "job_sigkill"));
    }

    #[tokio::test]
    async fn kill_token_stops_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
        let kill = CancellationToken::new();
        let task = {
            let kill = kill.clone();
            tokio::spawn(async move { run(&job(shell(&script), None), &ctx(), kill).await })
        };
        wait_for("the job to start", Duration::from_secs(10), || {
            read_pid(&pidfile).is_some()
        })
        .await;
        let t0 = Instant::now();
        kill.cancel();
        let r = task.await.unwrap();
        assert_eq!(r.outcome, Outcome::Killed);
        assert!(t0.elapsed() < TERM_GRACE, "{:?}", t0.elapsed());
        assert!(!alive(read_pid(&pidfile).unwrap()));

        // A token cancelled beforehand: nothing starts.
        let r = run(&job(shell("exit 0"), None), &ctx(), kill).await;
        assert_eq!(r.outcome, Outcome::Killed);
    }

    #[tokio::test]
    async fn strays_are_stopped_after_the_job_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}", pidfile.display());
        let t0 = Instant::now();
        let r = run(&job(shell(&script), None), &ctx(), CancellationToken::new()).await;
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(t0.elapsed() < TERM_GRACE, "{:?}", t0.elapsed());
        assert!(!alive(read_pid(&pidfile).unwrap()));
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
        let j = job(shell(&script), None);
        let c = ctx();
        let fut = run(&j, &c, CancellationToken::new());
        tokio::select! {
            _ = fut => panic!("the job should still run"),
            _ = wait_for("the job to start", Duration::from_secs(10), || read_pid(&pidfile).is_some()) => {}
        }
        let pid = read_pid(&pidfile).unwrap();
        wait_for("the group to die", Duration::from_secs(5), || !alive(pid)).await;
    }

    fn vm_rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn fifty_megabytes_of_output_in_bounded_memory() {
        let cap = Capture {
            count_only: true,
            ..Capture::default()
        };
        let _g = cap.install();
        // 100 000 lines of 100 bytes, then one 50 MB line without a newline: buffering that
        // line whole would show as 50+ MB.
        let script = "yes $(printf '%0100d' 0) | head -n 100000; \
                      head -c 50000000 /dev/zero | tr '\\0' x";
        let before = vm_rss_kib();
        let peak = Arc::new(AtomicUsize::new(before));
        let done = CancellationToken::new();
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.is_cancelled() {
                    peak.fetch_max(vm_rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let r = run(&job(shell(script), None), &ctx(), CancellationToken::new()).await;
        done.cancel();
        sampler.join().unwrap();
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(cap.outputs.load(Ordering::Relaxed), 100_001);
        assert_eq!(cap.truncated.load(Ordering::Relaxed), 1);
        assert_eq!(cap.longest.load(Ordering::Relaxed), MAX_LINE);
        let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
        eprintln!("RSS grew by {growth} KiB");
        assert!(growth < 40 * 1024, "RSS grew by {growth} KiB");
    }

    fn say(repeat: u32, pause_ms: u64) -> Action {
        Action::Say {
            text: "Go is the best modern programming language".into(),
            repeat,
            pause: Duration::from_millis(pause_ms),
        }
    }

    #[tokio::test]
    async fn say_repeats_with_pauses_between() {
        let cap = Capture::default();
        let _g = cap.install();
        let t0 = Instant::now();
        let r = run(&job(say(3, 300), None), &ctx(), CancellationToken::new()).await;
        let took = t0.elapsed();
        assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, None));
        let ev = cap.events();
        assert_eq!(ev.len(), 3);
        for e in &ev {
            assert_eq!(e.get("event"), "job_output");
            assert_eq!(e.get("stream"), "say");
            assert_eq!(e.get("line"), "Go is the best modern programming language");
            assert_eq!(e.get("term"), "42");
            assert_eq!(e.get("fire_time"), "2026-11-22T14:35:00Z");
        }
        assert!(ev[1].at - ev[0].at >= Duration::from_millis(300));
        assert!(ev[2].at - ev[1].at >= Duration::from_millis(300));
        // Two pauses, not three: no pause after the last line.
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_millis(880), "{took:?}");
    }

    #[tokio::test]
    async fn say_honours_timeout_and_kill() {
        let cap = Capture::default();
        let _g = cap.install();
        let r = run(
            &job(say(100, 200), Some(Duration::from_millis(500))),
            &ctx(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!(cap.lines().len(), 3);

        let kill = CancellationToken::new();
        let task = {
            let kill = kill.clone();
            tokio::spawn(async move { run(&job(say(100, 50), None), &ctx(), kill).await })
        };
        wait_for("two more lines", Duration::from_secs(10), || {
            cap.lines().len() >= 5
        })
        .await;
        kill.cancel();
        let r = task.await.unwrap();
        assert_eq!(r.outcome, Outcome::Killed);
        assert!(cap.lines().len() < 100);
    }
}
