//! jobs.toml → Config.
//!
//! The file is deserialized into raw structs (`#[serde(deny_unknown_fields)]`, every value that
//! is validated later kept as a [`toml::Spanned`]), then validated. Every error, from TOML
//! syntax to a lease shorter than its renew period, becomes [`ConfigError::At`] with the 1-based
//! line and column of the offending key or value. When a file has several problems, the one
//! that comes first in the file is reported.
use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::schedule::{parse_timezone, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub store: StoreConfig,
    pub election: ElectionConfig,
    pub node: NodeConfig,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Datastore,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    pub project: Option<String>,
    pub namespace: String,
    /// How many runs per job the store keeps (newest first); older ones are deleted in the
    /// background.
    pub history: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ElectionConfig {
    pub lease: Duration,
    pub renew: Duration,
    pub poll: Duration,
}

impl ElectionConfig {
    /// How long a leader keeps acting after its last successful renewal started:
    /// halfway between `renew` and `lease`.
    pub fn renew_deadline(&self) -> Duration {
        (self.lease + self.renew) / 2
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    pub timeout: Option<Duration>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Say {
        text: String,
        repeat: u32,
        pause: Duration,
    },
    Command {
        argv: Vec<String>,
    },
    Shell {
        script: String,
    },
}

/// Largest config file `load` accepts.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Longest duration accepted anywhere in the file.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest job name.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest `repeat`.
pub const MAX_REPEAT: i64 = 10_000;

pub const DEFAULT_NAMESPACE: &str = "cronlease";
/// Runs kept per job by default.
pub const DEFAULT_HISTORY: usize = 100;
/// Largest `history`: pruning reads past this many keys per job.
pub const MAX_HISTORY: i64 = 100_000;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
pub const DEFAULT_RENEW: Duration = Duration::from_secs(2);
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let io = |message: String| ConfigError::Io {
        file: file.clone(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
    if meta.is_dir() {
        return Err(io("it is a directory, not a file".into()));
    }
    let f = std::fs::File::open(path).map_err(|e| io(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io(
            "file is larger than 1 MiB; a jobs file is expected to be small".into(),
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse(&file, &text),
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let good = std::str::from_utf8(good).unwrap_or_default();
            let (line, column) = position(good, good.len());
            Err(ConfigError::At {
                file,
                line,
                column,
                message: "not valid UTF-8 (a TOML file must be UTF-8 text)".into(),
            })
        }
    }
}

pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let at = |offset: usize, message: String| {
        let (line, column) = position(text, offset);
        ConfigError::At {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim().to_string();
        if message.contains("expected a sequence")
            && text.get(span.clone()).is_some_and(|s| s.contains("job"))
        {
            message.push_str(" (jobs are an array of tables: write [[job]], not [job])");
        }
        at(span.start, message)
    })?;
    let mut v = Validator {
        text,
        errors: Vec::new(),
    };
    let config = v.config(file, raw);
    // Report the problem that comes first in the file.
    match v.errors.into_iter().min_by_key(|(offset, _)| *offset) {
        Some((offset, message)) => Err(at(offset, message)),
        // Every path that yields no config records an error; this is only a safety net.
        None => config.ok_or_else(|| at(0, "invalid configuration".into())),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    store: Option<RawStore>,
    election: Option<RawElection>,
    node: Option<RawNode>,
    job: Option<Spanned<Vec<Spanned<RawJob>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    history: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElection {
    lease: Option<Spanned<String>>,
    renew: Option<Spanned<String>>,
    poll: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    schedule: Spanned<String>,
    timezone: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    say: Option<Spanned<String>>,
    repeat: Option<Spanned<i64>>,
    pause: Option<Spanned<String>>,
    command: Option<Spanned<Vec<Spanned<String>>>>,
    shell: Option<Spanned<String>>,
}

struct Validator<'a> {
    text: &'a str,
    /// (byte offset, message)
    errors: Vec<(usize, String)>,
}

impl Validator<'_> {
    fn error(&mut self, offset: usize, message: String) {
        self.errors.push((offset, message));
    }

    /// Byte offset of `key` written before the value at `value`, on the same line; the value's
    /// own offset when the key cannot be found (it always can for `key = value`).
    fn key_offset(&self, value: &Range<usize>, key: &str) -> usize {
        let start = value.start.min(self.text.len());
        let Some(before) = self.text.get(..start) else {
            return start;
        };
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        before[line_start..]
            .rfind(key)
            .map_or(start, |i| line_start + i)
    }

    /// A humantime duration at most [`MAX_DURATION`]; `None` (error recorded) otherwise.
    fn duration(&mut self, raw: &Spanned<String>, what: &str) -> Option<Duration> {
        let s = raw.get_ref();
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    raw.span().start,
                    format!(
                        "{what} {s:?} is too long (at most {})",
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    raw.span().start,
                    format!(
                        "{what}: bad duration {s:?} ({e}); write it like \"10s\", \"250ms\" or \"1m30s\""
                    ),
                );
                None
            }
        }
    }

    /// An optional duration with a default; also `None` when it was given but invalid.
    fn duration_or(
        &mut self,
        raw: &Option<Spanned<String>>,
        what: &str,
        default: Duration,
    ) -> Option<Duration> {
        match raw {
            Some(raw) => self.duration(raw, what),
            None => Some(default),
        }
    }

    fn nonzero(&mut self, raw: &Option<Spanned<String>>, value: Option<Duration>, what: &str) {
        if let (Some(raw), Some(d)) = (raw, value) {
            if d.is_zero() {
                self.error(raw.span().start, format!("{what} must be longer than zero"));
            }
        }
    }

    fn config(&mut self, file: &str, raw: RawFile) -> Option<Config> {
        let store = self.store(raw.store);
        let election = self.election(raw.election);
        let node = self.node(raw.node);
        let jobs = self.jobs(raw.job);
        Some(Config {
            source: PathBuf::from(file),
            store: store?,
            election: election?,
            node: node?,
            jobs: jobs?,
        })
    }

    fn store(&mut self, raw: Option<RawStore>) -> Option<StoreConfig> {
        let Some(raw) = raw else {
            return Some(StoreConfig {
                backend: Backend::Datastore,
                project: None,
                namespace: DEFAULT_NAMESPACE.into(),
                history: DEFAULT_HISTORY,
            });
        };
        let mut ok = true;
        let backend = match &raw.backend {
            None => Backend::Datastore,
            Some(b) if b.get_ref() == "datastore" => Backend::Datastore,
            Some(b) => {
                self.error(
                    b.span().start,
                    format!(
                        "unknown store backend {:?}: the only backend is \"datastore\"",
                        b.get_ref()
                    ),
                );
                ok = false;
                Backend::Datastore
            }
        };
        if let Some(p) = &raw.project {
            if p.get_ref().trim().is_empty() {
                self.error(
                    p.span().start,
                    "project must not be empty (leave it out to use DATASTORE_PROJECT_ID or GOOGLE_CLOUD_PROJECT)".into(),
                );
                ok = false;
            }
        }
        let namespace = match &raw.namespace {
            None => DEFAULT_NAMESPACE.to_string(),
            Some(ns) => {
                let s = ns.get_ref();
                let problem = if s.is_empty() {
                    Some("must not be empty")
                } else if s.chars().count() > 100 {
                    Some("must be at most 100 characters")
                } else if !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    Some("may only contain letters, digits, '_', '.' and '-'")
                } else if s.starts_with("__") {
                    Some("must not start with \"__\" (reserved by Datastore)")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.error(ns.span().start, format!("namespace {s:?} {problem}"));
                    ok = false;
                }
                s.clone()
            }
        };
        let history = match &raw.history {
            None => DEFAULT_HISTORY,
            Some(h) => {
                let n = *h.get_ref();
                if !(1..=MAX_HISTORY).contains(&n) {
                    self.error(
                        h.span().start,
                        format!("history must be between 1 and {MAX_HISTORY}, got {n}"),
                    );
                    ok = false;
                }
                n.clamp(1, MAX_HISTORY) as usize
            }
        };
        ok.then(|| StoreConfig {
            backend,
            project: raw.project.map(|p| p.into_inner()),
            namespace,
            history,
        })
    }

    fn election(&mut self, raw: Option<RawElection>) -> Option<ElectionConfig> {
        let Some(raw) = raw else {
            return Some(ElectionConfig {
                lease: DEFAULT_LEASE,
                renew: DEFAULT_RENEW,
                poll: DEFAULT_POLL,
            });
        };
        let lease = self.duration_or(&raw.lease, "lease", DEFAULT_LEASE);
        let renew = self.duration_or(&raw.renew, "renew", DEFAULT_RENEW);
        let poll = self.duration_or(&raw.poll, "poll", DEFAULT_POLL);
        self.nonzero(&raw.lease, lease, "lease");
        self.nonzero(&raw.renew, renew, "renew");
        self.nonzero(&raw.poll, poll, "poll");
        let (lease, renew, poll) = (lease?, renew?, poll?);
        if lease.is_zero() || renew.is_zero() || poll.is_zero() {
            return None;
        }
        let fmt = humantime::format_duration;
        // Point at whichever of the two the user wrote (the later one if both).
        let blame = |a: &Option<Spanned<String>>, b: &Option<Spanned<String>>| {
            [a, b]
                .into_iter()
                .flatten()
                .map(|s| s.span().start)
                .max()
                .unwrap_or(0)
        };
        let mut ok = true;
        if lease <= renew {
            let offset = blame(&raw.lease, &raw.renew);
            self.error(
                offset,
                format!(
                    "lease ({}) must be longer than renew ({})",
                    fmt(lease),
                    fmt(renew)
                ),
            );
            ok = false;
        }
        if poll >= lease {
            let offset = blame(&raw.poll, &raw.lease);
            self.error(
                offset,
                format!(
                    "poll ({}) must be shorter than lease ({})",
                    fmt(poll),
                    fmt(lease)
                ),
            );
            ok = false;
        }
        ok.then_some(ElectionConfig { lease, renew, poll })
    }

    fn node(&mut self, raw: Option<RawNode>) -> Option<NodeConfig> {
        let grace = match raw {
            Some(raw) => self.duration_or(
                &raw.shutdown_grace,
                "shutdown_grace",
                DEFAULT_SHUTDOWN_GRACE,
            )?,
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        Some(NodeConfig {
            shutdown_grace: grace,
        })
    }

    fn jobs(&mut self, raw: Option<Spanned<Vec<Spanned<RawJob>>>>) -> Option<Vec<Job>> {
        let Some(raw) = raw else {
            self.error(
                0,
                "no jobs: add at least one [[job]] table with a name, a schedule and an action"
                    .into(),
            );
            return None;
        };
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            self.error(
                span.start,
                "no jobs: add at least one [[job]] table with a name, a schedule and an action"
                    .into(),
            );
            return None;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut jobs = Vec::new();
        let mut ok = true;
        for job in raw {
            let job = job.into_inner();
            let name = job.name.get_ref();
            let name_at = job.name.span();
            if let Some(&first) = seen.get(name.as_str()) {
                let (line, _) = position(self.text, first);
                self.error(
                    name_at.start,
                    format!("duplicate job name {name:?} (first defined on line {line})"),
                );
                ok = false;
            } else {
                seen.insert(name.clone(), name_at.start);
            }
            match self.job(job) {
                Some(job) => jobs.push(job),
                None => ok = false,
            }
        }
        ok.then_some(jobs)
    }

    fn job(&mut self, raw: RawJob) -> Option<Job> {
        let errors_before = self.errors.len();
        let name = raw.name.get_ref().clone();
        let name_at = raw.name.span().start;
        if name.is_empty() {
            self.error(name_at, "job name must not be empty".into());
        } else if name.chars().count() > MAX_NAME_CHARS {
            self.error(
                name_at,
                format!("job name {name:?} is longer than {MAX_NAME_CHARS} characters"),
            );
        } else if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            self.error(
                name_at,
                format!(
                    "job name {name:?} contains {bad:?}: only letters, digits, '_', '.' and '-' are allowed"
                ),
            );
        }

        // The schedule and its time zone.
        let tz = match &raw.timezone {
            None => Some(chrono_tz::Tz::UTC),
            Some(tz) => match parse_timezone(tz.get_ref()) {
                Ok(tz) => Some(tz),
                Err(e) => {
                    self.error(
                        tz.span().start,
                        format!("{e} (use an IANA name like \"Europe/Berlin\" or \"UTC\")"),
                    );
                    None
                }
            },
        };
        let schedule = match Schedule::new(raw.schedule.get_ref(), tz.unwrap_or_default()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(raw.schedule.span().start, e.to_string());
                None
            }
        };

        let timeout = match &raw.timeout {
            None => None,
            Some(t) => match self.duration(t, "timeout") {
                Some(d) if d.is_zero() => {
                    self.error(
                        t.span().start,
                        "timeout must be longer than zero (leave it out for no limit)".into(),
                    );
                    None
                }
                d => d,
            },
        };

        // Exactly one action.
        let mut actions: Vec<(usize, &str)> = Vec::new();
        if let Some(s) = &raw.say {
            actions.push((self.key_offset(&s.span(), "say"), "say"));
        }
        if let Some(c) = &raw.command {
            actions.push((self.key_offset(&c.span(), "command"), "command"));
        }
        if let Some(s) = &raw.shell {
            actions.push((self.key_offset(&s.span(), "shell"), "shell"));
        }
        actions.sort();
        match actions.as_slice() {
            [] => self.error(
                name_at,
                format!("job {name:?} has no action: give one of say, command or shell"),
            ),
            [(_, first), (at, second), ..] => self.error(
                *at,
                format!(
                    "job {name:?} has more than one action ({first} and {second}): give exactly one of say, command or shell"
                ),
            ),
            [_] => {}
        }
        if raw.say.is_none() {
            if let Some(r) = &raw.repeat {
                let at = self.key_offset(&r.span(), "repeat");
                self.error(at, "repeat is only allowed with say".into());
            }
            if let Some(p) = &raw.pause {
                let at = self.key_offset(&p.span(), "pause");
                self.error(at, "pause is only allowed with say".into());
            }
        }

        let action = if let Some(say) = &raw.say {
            let repeat = match &raw.repeat {
                None => 1,
                Some(r) => {
                    let n = *r.get_ref();
                    if (1..=MAX_REPEAT).contains(&n) {
                        n as u32
                    } else {
                        self.error(
                            r.span().start,
                            format!("repeat must be between 1 and {MAX_REPEAT}, got {n}"),
                        );
                        1
                    }
                }
            };
            let pause = match &raw.pause {
                None => DEFAULT_PAUSE,
                Some(p) => self.duration(p, "pause").unwrap_or(DEFAULT_PAUSE),
            };
            Some(Action::Say {
                text: say.get_ref().clone(),
                repeat,
                pause,
            })
        } else if let Some(cmd) = &raw.command {
            let argv = cmd.get_ref();
            match argv.first() {
                None => self.error(
                    cmd.span().start,
                    "command must not be empty: give the program and its arguments, like [\"/bin/echo\", \"hi\"]".into(),
                ),
                Some(program) if program.get_ref().is_empty() => self.error(
                    program.span().start,
                    "the program (first element of command) must not be empty".into(),
                ),
                Some(_) => {}
            }
            Some(Action::Command {
                argv: argv.iter().map(|a| a.get_ref().clone()).collect(),
            })
        } else if let Some(shell) = &raw.shell {
            if shell.get_ref().trim().is_empty() {
                self.error(shell.span().start, "shell must not be empty".into());
            }
            Some(Action::Shell {
                script: shell.get_ref().clone(),
            })
        } else {
            None
        };

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Job {
            name,
            schedule: schedule?,
            timeout,
            action: action?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of the repository's demo config.
    const DEMO: &str = r#"
[store]                 # optional table
backend = "datastore"   # only "datastore" for now (default)
project = "my-proj"     # optional
namespace = "cronlease" # default "cronlease"
history = 100           # runs kept per job, default 100

[election]              # optional table; defaults lease 10s, renew 2s, poll 1s
lease = "10s"
renew = "2s"
poll = "1s"

[node]                  # optional
shutdown_grace = "10s"  # default 10s

[[job]]                 # at least one job required
name = "go_preacher"
schedule = "*/10 * * * * *"
timezone = "Europe/Berlin"
timeout = "2m"
say = "Go is the best modern programming language"
repeat = 5
pause = "1s"

[[job]]
name = "backup"
schedule = "0 */5 * * * *"
command = ["/usr/bin/env", "sh", "-c", "echo backing up"]
timeout = "2m"

[[job]]
name = "hello.sh"
schedule = "30 2 * * *"
shell = "echo hi"
"#;

    /// Parse `text`, expect an error; return (line, column, message).
    fn err(text: &str) -> (usize, usize, String) {
        match parse("jobs.toml", text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(ConfigError::At {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, "jobs.toml");
                (line, column, message)
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }

    fn assert_err(text: &str, line: usize, needle: &str) {
        let (l, c, m) = err(text);
        assert_eq!(l, line, "line of {m:?} in:\n{text}");
        assert!(c >= 1);
        assert!(m.contains(needle), "{m:?} does not contain {needle:?}");
    }

    const JOB: &str = "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"hi\"\n";

    #[test]
    fn history_bound() {
        assert_eq!(parse("j", JOB).unwrap().store.history, DEFAULT_HISTORY);
        let c = parse("j", &format!("[store]\nhistory = 7\n{JOB}")).unwrap();
        assert_eq!(c.store.history, 7);
        assert_err(
            &format!("[store]\nhistory = 0\n{JOB}"),
            2,
            "history must be between 1",
        );
        assert_err(
            &format!("[store]\nhistory = \"5\"\n{JOB}"),
            2,
            "expected i64",
        );
    }

    #[test]
    fn demo_config() {
        let c = parse("jobs.toml", DEMO).unwrap();
        assert_eq!(c.source, PathBuf::from("jobs.toml"));
        assert_eq!(c.store.backend, Backend::Datastore);
        assert_eq!(c.store.project.as_deref(), Some("my-proj"));
        assert_eq!(c.store.namespace, "cronlease");
        assert_eq!(c.election.lease, Duration::from_secs(10));
        assert_eq!(c.election.renew, Duration::from_secs(2));
        assert_eq!(c.election.poll, Duration::from_secs(1));
        assert_eq!(c.election.renew_deadline(), Duration::from_secs(6));
        assert_eq!(c.node.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.jobs.len(), 3);
        let j = &c.jobs[0];
        assert_eq!(j.name, "go_preacher");
        assert_eq!(j.schedule.expr, "*/10 * * * * *");
        assert_eq!(j.schedule.tz, chrono_tz::Europe::Berlin);
        assert_eq!(j.timeout, Some(Duration::from_secs(120)));
        match &j.action {
            Action::Say {
                text,
                repeat,
                pause,
            } => {
                assert_eq!(text, "Go is the best modern programming language");
                assert_eq!(*repeat, 5);
                assert_eq!(*pause, Duration::from_secs(1));
            }
            a => panic!("{a:?}"),
        }
        match &c.jobs[1].action {
            Action::Command { argv } => {
                assert_eq!(argv, &["/usr/bin/env", "sh", "-c", "echo backing up"])
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(c.jobs[1].schedule.tz, chrono_tz::UTC);
        match &c.jobs[2].action {
            Action::Shell { script } => assert_eq!(script, "echo hi"),
            a => panic!("{a:?}"),
        }
        assert_eq!(c.jobs[2].timeout, None);
    }

    #[test]
    fn defaults() {
        let c = parse("j.toml", JOB).unwrap();
        assert_eq!(c.store.namespace, "cronlease");
        assert_eq!(c.store.project, None);
        assert_eq!(c.election.lease, DEFAULT_LEASE);
        assert_eq!(c.election.renew, DEFAULT_RENEW);
        assert_eq!(c.election.poll, DEFAULT_POLL);
        assert_eq!(c.node.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        match &c.jobs[0].action {
            Action::Say { repeat, pause, .. } => {
                assert_eq!(*repeat, 1);
                assert_eq!(*pause, DEFAULT_PAUSE);
            }
            a => panic!("{a:?}"),
        }
        let c = parse(
            "j.toml",
            &format!("[election]\nlease = \"1m30s\"\nrenew = \"250ms\"\n{JOB}"),
        )
        .unwrap();
        assert_eq!(c.election.lease, Duration::from_secs(90));
        assert_eq!(c.election.renew, Duration::from_millis(250));
    }

    #[test]
    fn display_format() {
        let e = parse("jobs.toml", "[[job]]\nname = 5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "jobs.toml:2:8: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn toml_errors() {
        assert_err("this is not toml\n", 1, "");
        assert_err("[[job]\nname = \"a\"\n", 1, "");
        assert_err(&format!("{JOB}bogus = 1\n"), 5, "unknown field `bogus`");
        assert_err(
            &format!("[store]\nbackend = \"datastore\"\nfoo = 1\n{JOB}"),
            3,
            "unknown field `foo`",
        );
        assert_err(&format!("{JOB}[other]\n"), 5, "unknown field `other`");
        assert_err(&format!("{JOB}repeat = \"5\"\n"), 5, "expected i64");
        assert_err(&format!("{JOB}repeat = 99999999999999999999\n"), 5, "");
        assert_err(
            "[[job]]\nname = \"a\"\nsay = \"x\"\n",
            1,
            "missing field `schedule`",
        );
        assert_err("[job]\nname = \"a\"\n", 1, "[[job]]");
        assert_err(
            &format!("\n\n{JOB}[[job]]\nname = [1]\n"),
            8,
            "expected a string",
        );
    }

    #[test]
    fn no_jobs() {
        assert_eq!(err("").0, 1);
        assert_err("[store]\nnamespace = \"x\"\n", 1, "no jobs");
        assert_err("\n\njob = []\n", 3, "no jobs");
    }

    #[test]
    fn election_errors() {
        assert_err(
            &format!("[election]\nlease = \"2s\"\nrenew = \"2s\"\n{JOB}"),
            3,
            "lease (2s) must be longer than renew (2s)",
        );
        assert_err(
            &format!("[election]\nrenew = \"20s\"\n{JOB}"),
            2,
            "lease (10s) must be longer than renew (20s)",
        );
        assert_err(
            &format!("[election]\nlease = \"0s\"\n{JOB}"),
            2,
            "lease must be longer than zero",
        );
        assert_err(
            &format!("[election]\nrenew = \"0ms\"\n{JOB}"),
            2,
            "renew must be longer than zero",
        );
        assert_err(
            &format!("[election]\n\npoll = \"0s\"\n{JOB}"),
            3,
            "poll must be longer than zero",
        );
        assert_err(
            &format!("[election]\nlease = \"5s\"\nrenew = \"1s\"\npoll = \"5s\"\n{JOB}"),
            4,
            "poll (5s) must be shorter than lease (5s)",
        );
        assert_err(
            &format!("[election]\nlease = \"ten\"\n{JOB}"),
            2,
            "lease: bad duration \"ten\"",
        );
        assert_err(
            &format!("[election]\nlease = \"10\"\n{JOB}"),
            2,
            "bad duration",
        );
        assert_err(
            &format!("[election]\nlease = \"400days\"\n{JOB}"),
            2,
            "too long",
        );
        assert_err(
            &format!("[node]\nshutdown_grace = \"soon\"\n{JOB}"),
            2,
            "shutdown_grace",
        );
        let c = parse("j.toml", &format!("[node]\nshutdown_grace = \"0s\"\n{JOB}")).unwrap();
        assert_eq!(c.node.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn store_errors() {
        assert_err(
            &format!("[store]\nbackend = \"file\"\n{JOB}"),
            2,
            "unknown store backend \"file\"",
        );
        assert_err(
            &format!("[store]\nproject = \"\"\n{JOB}"),
            2,
            "project must not be empty",
        );
        assert_err(
            &format!("[store]\nnamespace = \"a b\"\n{JOB}"),
            2,
            "namespace",
        );
        assert_err(&format!("[store]\nnamespace = \"\"\n{JOB}"), 2, "namespace");
    }

    #[test]
    fn action_errors() {
        let (l, c, m) = err("[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\n");
        assert_eq!((l, c), (2, 8));
        assert!(m.contains("has no action"), "{m}");
        // the second action's key, in file order
        let (l, c, m) = err(&format!("{JOB}  shell = \"echo\"\n"));
        assert_eq!((l, c), (5, 3));
        assert!(m.contains("more than one action (say and shell)"), "{m}");
        assert_err(
            "[[job]]\nname = \"a\"\nshell = \"x\"\nschedule = \"* * * * *\"\ncommand = [\"x\"]\nsay = \"y\"\n",
            5,
            "(shell and command)",
        );
        assert_err(
            "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nshell = \"x\"\nrepeat = 3\n",
            5,
            "repeat is only allowed with say",
        );
        assert_err(
            "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"x\"]\n\npause = \"1s\"\n",
            6,
            "pause is only allowed with say",
        );
        assert_err(
            &format!("{JOB}repeat = 0\n"),
            5,
            "repeat must be between 1 and 10000, got 0",
        );
        assert_err(&format!("{JOB}repeat = 10001\n"), 5, "got 10001");
        assert_err(&format!("{JOB}repeat = -3\n"), 5, "got -3");
        assert_err(&format!("{JOB}pause = \"x\"\n"), 5, "pause: bad duration");
        assert_err(
            "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = []\n",
            4,
            "command must not be empty",
        );
        let (l, c, m) =
            err("[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"\", \"x\"]\n");
        assert_eq!((l, c), (4, 12));
        assert!(m.contains("program"), "{m}");
        assert_err(
            "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nshell = \"  \"\n",
            4,
            "shell must not be empty",
        );
        assert_err(
            &format!("{JOB}timeout = \"0s\"\n"),
            5,
            "timeout must be longer than zero",
        );
        assert_err(
            &format!("{JOB}timeout = \"forever\"\n"),
            5,
            "timeout: bad duration",
        );
    }

    #[test]
    fn name_errors() {
        let two = format!("{JOB}\n[[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"x\"\n\n[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"x\"\n");
        let (l, c, m) = err(&two);
        assert_eq!((l, c), (12, 8));
        assert_eq!(m, "duplicate job name \"a\" (first defined on line 2)");
        assert_err(
            "[[job]]\nname = \"\"\nschedule = \"* * * * *\"\nsay = \"x\"\n",
            2,
            "must not be empty",
        );
        assert_err(
            "[[job]]\nname = \"a b\"\nschedule = \"* * * * *\"\nsay = \"x\"\n",
            2,
            "contains ' '",
        );
        assert_err(
            "[[job]]\nname = \"a@b\"\nschedule = \"* * * * *\"\nsay = \"x\"\n",
            2,
            "contains '@'",
        );
        let long = "x".repeat(101);
        assert_err(
            &format!("[[job]]\nname = \"{long}\"\nschedule = \"* * * * *\"\nsay = \"x\"\n"),
            2,
            "longer than 100",
        );
        let ok = "x".repeat(100);
        assert!(parse(
            "j",
            &format!("[[job]]\nname = \"{ok}\"\nschedule = \"* * * * *\"\nsay = \"x\"\n")
        )
        .is_ok());
    }

    #[test]
    fn schedule_errors() {
        let (l, c, m) = err("[[job]]\nname = \"a\"\nschedule = \"61 * * * * *\"\nsay = \"x\"\n");
        assert_eq!((l, c), (3, 12));
        assert!(
            m.starts_with("bad cron expression \"61 * * * * *\": "),
            "{m}"
        );
        assert_err(
            "[[job]]\nname = \"a\"\nschedule = \"0 0 0 1 1 * 2030\"\nsay = \"x\"\n",
            3,
            "year",
        );
        let (l, c, m) = err("[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\ntimezone = \"Mars/Base\"\nsay = \"x\"\n");
        assert_eq!((l, c), (4, 12));
        assert!(m.starts_with("unknown time zone \"Mars/Base\""), "{m}");
    }

    #[test]
    fn first_error_in_file_wins() {
        let text = "[[job]]\nname = \"a b\"\nschedule = \"bad\"\nsay = \"x\"\n\n[election]\nlease = \"1s\"\n";
        assert_eq!(err(text).0, 2);
    }

    #[test]
    fn columns_count_characters() {
        let (l, c, _) = err("[[job]]\nsay = \"äöü\"; name = 5\n");
        assert_eq!(l, 2);
        assert!(c > 1);
        assert_eq!(position("äb\ncd", 3), (1, 3));
        assert_eq!(position("äb\ncd", 5), (2, 2));
        assert_eq!(position("ab", 99), (1, 3));
    }

    #[test]
    fn load_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e}");
        assert!(e.to_string().contains("directory"), "{e}");
        let e = load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e}");

        let big = dir.path().join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let e = load(&big).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");

        let bin = dir.path().join("bin.toml");
        std::fs::write(&bin, b"[[job]]\nname = \"\xff\"\n").unwrap();
        let e = load(&bin).unwrap_err();
        assert!(e.to_string().contains(":2:9: not valid UTF-8"), "{e}");

        let good = dir.path().join("jobs.toml");
        std::fs::write(&good, DEMO).unwrap();
        let c = load(&good).unwrap();
        assert_eq!(c.source, good);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[job]]\nname = 1\n").unwrap();
        let e = load(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:8: invalid type: integer `1`, expected a string",
                bad.display()
            )
        );
    }

    #[test]
    fn random_inputs_do_not_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pieces = [
            "[[job]]\n",
            "[job]\n",
            "[store]\n",
            "[election]\n",
            "[node]\n",
            "name = \"a\"\n",
            "name = \"a\"\n",
            "schedule = \"*/10 * * * * *\"\n",
            "schedule = \"x\"\n",
            "timezone = \"Europe/Berlin\"\n",
            "timezone = \"\"\n",
            "say = \"hi\"\n",
            "repeat = 5\n",
            "repeat = -1\n",
            "pause = \"1s\"\n",
            "command = [\"a\"]\n",
            "command = []\n",
            "shell = \"x\"\n",
            "lease = \"2s\"\n",
            "renew = \"2s\"\n",
            "poll = \"0s\"\n",
            "timeout = \"99999999999h\"\n",
            "shutdown_grace = \"1s\"\n",
            "backend = \"datastore\"\n",
            "namespace = \"__x\"\n",
            "= = =\n",
            "\"\n",
            "[\n",
            "x = {\n",
            "é\n",
            "\u{0}",
            "# comment\n",
            "job = 5\n",
        ];
        let base = DEMO.as_bytes();
        for i in 0..600 {
            let text = if i % 2 == 0 {
                // a sequence of plausible lines
                let n = 1 + next() % 12;
                (0..n)
                    .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                    .collect::<String>()
            } else {
                // the demo with bytes flipped, deleted or duplicated
                let mut b = base.to_vec();
                for _ in 0..(1 + next() % 6) {
                    let at = (next() % b.len() as u64) as usize;
                    match next() % 3 {
                        0 => b[at] = (next() % 128) as u8,
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, b[at]),
                    }
                }
                String::from_utf8_lossy(&b).into_owned()
            };
            match parse("fuzz.toml", &text) {
                Ok(c) => assert!(!c.jobs.is_empty()),
                Err(ConfigError::At { line, column, .. }) => {
                    assert!(line >= 1 && column >= 1);
                    assert!(line <= text.lines().count().max(1) + 1);
                }
                Err(e) => panic!("parse returned {e}"),
            }
        }
    }
}
