//! jobs.toml → Config.
//!
//! The file is deserialized into raw structs (`#[serde(deny_unknown_fields)]`, every value that
//! is validated later kept as a [`toml::Spanned`]), then validated. Every error, from TOML
//! syntax to a lease shorter than its renew period, becomes [`ConfigError::At`] with the 1-based
//! line and column of the offending key or value. When a file has several problems, the one
//! that comes first in the file is reported.
//!
//! Scheduling policies are per job, with file-wide defaults in an optional `[defaults]` table:
//! a job's own key wins, else the `[defaults]` key, else the built-in default. They live in
//! one table rather than being repeated per job because they are usually a property of the
//! cluster (how much a missed tick matters), not of one command.
//!
//! ```toml
//! [defaults]                  # optional; these are the built-in defaults
//! overlap = "skip"            # previous run still going on this node: skip | allow | replace
//! retries = 0                 # extra attempts after `failed` or `timeout` (0..=100)
//! retry_backoff = "1s"        # before the first retry; doubles per retry, capped at 5m
//! catch_up = "latest"         # on lease acquisition: none | latest | all
//! # starting_deadline = "1m"  # how old a missed fire time may be; default: the lease, and
//! #                           # never from before this node started
//! # timeout = "10m"           # applies to jobs that set none
//! output_limit = "32KiB"      # the tail of a run's output kept with its record (0 .. 256KiB)
//! output_refresh = "10s"      # how often a long run's tail is written while it goes (>= 1s)
//!
//! [[job]]
//! name = "backup"
//! schedule = "0 */5 * * * *"
//! command = ["/usr/local/bin/backup"]
//! retries = 2                 # overrides [defaults]
//! ```
pub mod context;
pub mod cron_mask;
pub mod crontab;
pub mod http_action;
pub mod jitter;
pub mod notify;
pub mod pieces;
pub mod schedule;
pub mod store;
pub mod template;

use store::RawStore;
pub use store::{Backend, StoreConfig};

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::schedule::{parse_timezone, Schedule};

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
    /// A hash of the text this was parsed from ([`text_hash`]): a reload compares the file's
    /// bytes with it, so an edit made while the node was starting is not missed.
    pub source_hash: u64,
    pub store: StoreConfig,
    pub election: ElectionConfig,
    pub node: NodeConfig,
    /// `[[notify]]`: where the jobs' events go ([`notify`]).
    pub notify: Vec<notify::Sink>,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    pub shutdown_grace: Duration,
    /// `clock_skew_warn`: a clock offset from the peers beyond this is logged (`clock_skew`).
    pub clock_skew_warn: Duration,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    /// The job's own `timeout`, else `[defaults] timeout`, else none.
    pub timeout: Option<Duration>,
    pub action: Action,
    pub policy: Policy,
    /// `enabled = false`: the job is declared off: validated, shown, never run nor contested.
    pub enabled: bool,
    /// The `[[notify]]` sinks its events go to (its own `notify`, else `[defaults]`'s).
    pub notify: Vec<String>,
    /// A healthchecks.io-style ping URL: `/start`, then the URL itself or `/fail`.
    pub ping: Option<reqwest::Url>,
    /// What its process runs with: env, working directory, user, limits ([`context`]).
    /// Shared: most jobs have the default one, and it is the largest part of a job (10,000
    /// jobs held 2.7 MB of empty contexts).
    pub context: std::sync::Arc<context::ExecContext>,
}

/// How a job is scheduled beyond its cron expression; see [`crate::node::tick`] for how each is
/// carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub overlap: Overlap,
    /// Extra attempts after a `failed` or `timeout` attempt, under the same claim.
    pub retries: u32,
    /// The wait before the first retry; see [`Policy::backoff`].
    pub retry_backoff: Duration,
    pub catch_up: CatchUp,
    /// How old a missed fire time may be and still be caught up. `None`: the election's lease,
    /// and no fire time from before this node started (a cluster that was down entirely does
    /// not replay its downtime); set explicitly, it is the only bound.
    pub starting_deadline: Option<Duration>,
    /// What a run does when its node loses the job's lease.
    pub on_lease_lost: OnLeaseLost,
    /// Run a lost fire time (its node died while it ran) once more on the new leader.
    pub recover: bool,
    /// Bytes of a run's output (its tail) kept with its record; 0 keeps none.
    pub output_limit: usize,
    /// How often a running run's output tail is written to its record (if it changed).
    pub output_refresh: Duration,
    /// `jitter`: each run starts up to this long after its fire time ([`jitter`]); `None`:
    /// at its fire time.
    pub jitter: Option<Duration>,
}

/// The default `output_limit`: 32 KiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 32 * 1024;
/// The largest `output_limit`: 256 KiB.
pub const MAX_OUTPUT_LIMIT: usize = 256 * 1024;
/// The default `output_refresh`.
pub const DEFAULT_OUTPUT_REFRESH: Duration = Duration::from_secs(10);
/// The shortest `output_refresh`.
pub const MIN_OUTPUT_REFRESH: Duration = Duration::from_secs(1);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            overlap: Overlap::default(),
            retries: 0,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            catch_up: CatchUp::default(),
            starting_deadline: None,
            on_lease_lost: OnLeaseLost::default(),
            recover: false,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            output_refresh: DEFAULT_OUTPUT_REFRESH,
            jitter: None,
        }
    }
}

/// A size as written in jobs.toml: `"32KiB"`, `"8 KiB"`, `"1MiB"`, `"512B"`, `"4096"` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number.parse().map_err(|_| {
        format!("bad size {text:?}: write it like \"32KiB\", \"256KiB\" or \"512B\"")
    })?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "bad size {text:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("bad size {text:?}: too large"))
}

/// What a running run does when its node loses the job's lease (session lapse, fenced claim,
/// another holder seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLeaseLost {
    /// Stop it (SIGTERM to its process group, SIGKILL after a grace): outcome `stopped`. The
    /// default: only the lease holder runs the job, also while a run is going.
    #[default]
    Stop,
    /// Let it finish; the new leader's next tick may run alongside it on another node.
    Continue,
}

impl OnLeaseLost {
    pub const NAMES: [(&'static str, OnLeaseLost); 2] = [
        ("stop", OnLeaseLost::Stop),
        ("continue", OnLeaseLost::Continue),
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OnLeaseLost::Stop => "stop",
            OnLeaseLost::Continue => "continue",
        }
    }
}

impl Policy {
    /// The wait before retry `retry` (1 = the first retry, i.e. the second attempt):
    /// `retry_backoff` doubled per further retry, at most [`RETRY_BACKOFF_CAP`] (or
    /// `retry_backoff` itself, when that is longer).
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let cap = RETRY_BACKOFF_CAP.max(self.retry_backoff);
        self.retry_backoff.saturating_mul(1 << doublings).min(cap)
    }
}

/// What a tick does while the same job's previous run on this node is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Claim the tick (so no other node runs it) but do not run it; record it as `skipped`.
    #[default]
    Skip,
    /// Run it alongside.
    Allow,
    /// Stop the older run (its process group, as a timeout does), then run this one.
    Replace,
}

impl Overlap {
    pub const NAMES: [(&'static str, Overlap); 3] = [
        ("skip", Overlap::Skip),
        ("allow", Overlap::Allow),
        ("replace", Overlap::Replace),
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::Replace => "replace",
        }
    }
}

/// Which fire times missed while nobody led a job are run when this node acquires its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    None,
    /// The newest fire time within the starting deadline, unless it already ran.
    #[default]
    Latest,
    /// Every fire time within the starting deadline that has no run, oldest first, at most
    /// [`crate::node::tick::MAX_CATCH_UP`].
    All,
}

impl CatchUp {
    pub const NAMES: [(&'static str, CatchUp); 3] = [
        ("none", CatchUp::None),
        ("latest", CatchUp::Latest),
        ("all", CatchUp::All),
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
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
    /// One HTTP request, made by the leader itself ([`http_action`]). Boxed: it is the
    /// largest variant by far, and every job carries an `Action`.
    Http(Box<http_action::HttpAction>),
}

impl Action {
    /// `say`, `command`, `shell` or `http`: the kind, as `status --json` and the dashboard show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Say { .. } => "say",
            Action::Command { .. } => "command",
            Action::Shell { .. } => "shell",
            Action::Http(_) => "http",
        }
    }
}

/// Largest config file `load` accepts: 100,000 jobs of a few lines each are about 6 MB, and a
/// file past this is a mistake (a log or a binary given as the config), not a jobs file.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest duration accepted anywhere in the file.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Whether `name` can be a job's name: 1 to [`MAX_NAME_CHARS`] letters, digits, '_', '.', '-',
/// and not `.` or `..` (a URL path cannot carry them: `/api/runs/../...` is another path).
pub fn is_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(is_job_name_char)
        && !matches!(name, "." | "..")
}

fn is_job_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Longest job name.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest `repeat`.
pub const MAX_REPEAT: i64 = 10_000;

pub const DEFAULT_NAMESPACE: &str = "cronlease";
/// The PostgreSQL schema of cronlease's tables unless `[store] schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "cronlease";
/// Runs kept per job by default.
pub const DEFAULT_HISTORY: usize = 100;
/// Largest `history`: pruning reads past this many keys per job.
pub const MAX_HISTORY: i64 = 100_000;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
pub const DEFAULT_RENEW: Duration = Duration::from_secs(2);
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `[node] clock_skew_warn`: a node whose clock is this far from its peers' says so.
pub const DEFAULT_CLOCK_SKEW_WARN: Duration = Duration::from_secs(1);
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// Largest `retries`: a job that fails a hundred times in a row needs a person, not a loop.
pub const MAX_RETRIES: i64 = 100;
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts that doubling reaches (unless `retry_backoff` itself
/// is longer): long enough to ride out a restart of a dependency, short enough that the retry
/// still belongs to its tick.
pub const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(5 * 60);

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
            "file is larger than 16 MiB; a jobs file is expected to be far smaller \
             (100,000 jobs are about 6 MB)"
                .into(),
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

/// FNV-1a 64 of a jobs file's bytes: "is it the same file".
pub fn text_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
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
    // The jobs are parsed one at a time (see `pieces`); the rest as one document.
    let pieces = pieces::split(text);
    let raw: RawFile = toml::from_str(&pieces.rest).map_err(|e| {
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
        full: text,
        base: 0,
        errors: Vec::new(),
        gaps: HashMap::new(),
        no_context: Default::default(),
    };
    let config = v.config(file, raw, &pieces.jobs);
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
    defaults: Option<RawDefaults>,
    notify: Option<Vec<Spanned<notify::RawSink>>>,
    job: Option<Spanned<Vec<Spanned<RawJob>>>>,
}

/// One `[[job]]` piece of the file (`pieces`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    job: Vec<Spanned<RawJob>>,
}

/// `[defaults]`: the policy keys of a job, for every job that does not set its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<Spanned<String>>,
    overlap: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    retry_backoff: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    starting_deadline: Option<Spanned<String>>,
    on_lease_lost: Option<Spanned<String>>,
    recover: Option<Spanned<bool>>,
    output_limit: Option<Spanned<String>>,
    output_refresh: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    notify: Option<Spanned<Vec<Spanned<String>>>>,
    env: Option<Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>>,
    env_file: Option<Spanned<String>>,
    working_dir: Option<Spanned<String>>,
    user: Option<Spanned<context::RawId>>,
    group: Option<Spanned<context::RawId>>,
    limits: Option<Spanned<context::RawLimits>>,
    nice: Option<Spanned<i64>>,
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
    clock_skew_warn: Option<Spanned<String>>,
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
    http: Option<Spanned<http_action::RawHttp>>,
    overlap: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    retry_backoff: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    starting_deadline: Option<Spanned<String>>,
    on_lease_lost: Option<Spanned<String>>,
    recover: Option<Spanned<bool>>,
    enabled: Option<Spanned<bool>>,
    output_limit: Option<Spanned<String>>,
    output_refresh: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    notify: Option<Spanned<Vec<Spanned<String>>>>,
    ping: Option<Spanned<String>>,
    env: Option<Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>>,
    env_file: Option<Spanned<String>>,
    working_dir: Option<Spanned<String>>,
    user: Option<Spanned<context::RawId>>,
    group: Option<Spanned<context::RawId>>,
    limits: Option<Spanned<context::RawLimits>>,
    nice: Option<Spanned<i64>>,
}

/// The context keys of a `[defaults]` or `[[job]]` table.
macro_rules! raw_context {
    ($raw:expr) => {
        context::RawContext {
            env: &$raw.env,
            env_file: &$raw.env_file,
            working_dir: &$raw.working_dir,
            user: &$raw.user,
            group: &$raw.group,
            limits: &$raw.limits,
            nice: &$raw.nice,
        }
    };
}

/// The policy keys as written in `[defaults]` or in one `[[job]]`.
struct PolicyKeys<'r> {
    timeout: &'r Option<Spanned<String>>,
    overlap: &'r Option<Spanned<String>>,
    retries: &'r Option<Spanned<i64>>,
    retry_backoff: &'r Option<Spanned<String>>,
    catch_up: &'r Option<Spanned<String>>,
    starting_deadline: &'r Option<Spanned<String>>,
    on_lease_lost: &'r Option<Spanned<String>>,
    recover: &'r Option<Spanned<bool>>,
    output_limit: &'r Option<Spanned<String>>,
    output_refresh: &'r Option<Spanned<String>>,
    jitter: &'r Option<Spanned<String>>,
}

/// Validated policy keys; `None` where a key was not given (or was invalid, error recorded).
#[derive(Debug, Clone, Default)]
struct Settings {
    timeout: Option<Duration>,
    overlap: Option<Overlap>,
    retries: Option<u32>,
    retry_backoff: Option<Duration>,
    catch_up: Option<CatchUp>,
    starting_deadline: Option<Duration>,
    on_lease_lost: Option<OnLeaseLost>,
    recover: Option<bool>,
    output_limit: Option<usize>,
    output_refresh: Option<Duration>,
    jitter: Option<Duration>,
    /// `[defaults] notify` only.
    notify: Option<Vec<String>>,
    /// `[defaults]`' context keys ([`context`]).
    context: context::ContextKeys,
}

struct Validator<'a> {
    /// The text the spans being validated point into: the whole file, or one job's piece.
    text: &'a str,
    /// The whole file.
    full: &'a str,
    /// Where `text` starts in the file: added to every offset recorded.
    base: usize,
    /// (byte offset, message)
    errors: Vec<(usize, String)>,
    /// Shortest gaps of the schedules jobs with a jitter use, by (expression, zone): many
    /// jobs share one.
    gaps: HashMap<(String, String), Option<Duration>>,
    /// The default execution context, shared by every job that has it.
    no_context: std::sync::Arc<context::ExecContext>,
}

impl Validator<'_> {
    fn error(&mut self, offset: usize, message: String) {
        self.errors.push((self.base + offset, message));
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

    /// One of a fixed set of words; the error lists them all.
    fn choice<T: Copy>(
        &mut self,
        raw: &Option<Spanned<String>>,
        what: &str,
        names: &[(&str, T)],
    ) -> Option<T> {
        let raw = raw.as_ref()?;
        let given = raw.get_ref();
        if let Some((_, value)) = names.iter().find(|(name, _)| name == given) {
            return Some(*value);
        }
        let quoted: Vec<String> = names.iter().map(|(name, _)| format!("{name:?}")).collect();
        let allowed = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.error(
            raw.span().start,
            format!("unknown {what} {given:?}: it must be one of {allowed}"),
        );
        None
    }

    /// The policy keys of `[defaults]` or of one job, each validated on its own.
    fn settings(&mut self, keys: PolicyKeys<'_>) -> Settings {
        let timeout = keys
            .timeout
            .as_ref()
            .and_then(|t| match self.duration(t, "timeout") {
                Some(d) if d.is_zero() => {
                    self.error(
                        t.span().start,
                        "timeout must be longer than zero (leave it out for no limit)".into(),
                    );
                    None
                }
                d => d,
            });
        let overlap = self.choice(keys.overlap, "overlap", &Overlap::NAMES);
        let retries = keys.retries.as_ref().and_then(|r| {
            let n = *r.get_ref();
            if (0..=MAX_RETRIES).contains(&n) {
                Some(n as u32)
            } else {
                self.error(
                    r.span().start,
                    format!("retries must be between 0 and {MAX_RETRIES}, got {n}"),
                );
                None
            }
        });
        let retry_backoff = keys
            .retry_backoff
            .as_ref()
            .and_then(|b| self.duration(b, "retry_backoff"));
        let catch_up = self.choice(keys.catch_up, "catch_up", &CatchUp::NAMES);
        let starting_deadline = keys.starting_deadline.as_ref().and_then(|d| {
            match self.duration(d, "starting_deadline") {
                Some(v) if v.is_zero() => {
                    self.error(
                        d.span().start,
                        "starting_deadline must be longer than zero (leave it out for the \
                         election's lease; catch_up = \"none\" turns catch-up off)"
                            .into(),
                    );
                    None
                }
                v => v,
            }
        });
        let on_lease_lost = self.choice(keys.on_lease_lost, "on_lease_lost", &OnLeaseLost::NAMES);
        let output_limit =
            keys.output_limit
                .as_ref()
                .and_then(|raw| match parse_size(raw.get_ref()) {
                    Ok(n) if n <= MAX_OUTPUT_LIMIT => Some(n),
                    Ok(n) => {
                        self.error(
                            raw.span().start,
                            format!(
                            "output_limit {:?} ({n} bytes) is more than the largest, \"256KiB\"",
                            raw.get_ref()
                        ),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(raw.span().start, format!("output_limit: {e}"));
                        None
                    }
                });
        let output_refresh = keys.output_refresh.as_ref().and_then(|raw| {
            match self.duration(raw, "output_refresh") {
                Some(d) if d < MIN_OUTPUT_REFRESH => {
                    self.error(
                        raw.span().start,
                        "output_refresh must be at least 1s (one store write per run per refresh)"
                            .into(),
                    );
                    None
                }
                d => d,
            }
        });
        // "0s" is no jitter; kept as zero until merged, so a job can switch off the one of
        // [defaults].
        let jitter = keys
            .jitter
            .as_ref()
            .and_then(|j| self.duration(j, "jitter"));
        Settings {
            jitter,
            timeout,
            overlap,
            retries,
            retry_backoff,
            catch_up,
            starting_deadline,
            on_lease_lost,
            recover: keys.recover.as_ref().map(|r| *r.get_ref()),
            output_limit,
            output_refresh,
            notify: None,
            context: context::ContextKeys::default(),
        }
    }

    fn defaults(&mut self, raw: Option<&RawDefaults>) -> Settings {
        match raw {
            None => Settings::default(),
            Some(raw) => self.settings(PolicyKeys {
                timeout: &raw.timeout,
                overlap: &raw.overlap,
                retries: &raw.retries,
                retry_backoff: &raw.retry_backoff,
                catch_up: &raw.catch_up,
                starting_deadline: &raw.starting_deadline,
                on_lease_lost: &raw.on_lease_lost,
                recover: &raw.recover,
                output_limit: &raw.output_limit,
                output_refresh: &raw.output_refresh,
                jitter: &raw.jitter,
            }),
        }
    }

    fn config(&mut self, file: &str, raw: RawFile, pieces: &[Range<usize>]) -> Option<Config> {
        let store = self.store(raw.store, file);
        let election = self.election(raw.election);
        let node = self.node(raw.node);
        let mut defaults = self.defaults(raw.defaults.as_ref());
        if let Some(d) = &raw.defaults {
            defaults.context = self.context_keys(&raw_context!(d));
        }
        // Names as written, so that a job naming a sink whose table has an error of its own
        // is not blamed for it.
        let known: Vec<String> = raw
            .notify
            .iter()
            .flatten()
            .map(|s| s.get_ref().name().to_string())
            .collect();
        let sinks = self.sinks(raw.notify);
        defaults.notify = raw
            .defaults
            .as_ref()
            .and_then(|d| self.notify_list(&d.notify, &known));
        let jobs = self.jobs(raw.job, pieces, &defaults, &known);
        Some(Config {
            source: PathBuf::from(file),
            source_hash: text_hash(self.full.as_bytes()),
            store: store?,
            election: election?,
            node: node?,
            notify: sinks?,
            jobs: jobs?,
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
        let Some(raw) = raw else {
            return Some(NodeConfig {
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
                clock_skew_warn: DEFAULT_CLOCK_SKEW_WARN,
            });
        };
        let grace = self.duration_or(
            &raw.shutdown_grace,
            "shutdown_grace",
            DEFAULT_SHUTDOWN_GRACE,
        );
        let skew = self.duration_or(
            &raw.clock_skew_warn,
            "clock_skew_warn",
            DEFAULT_CLOCK_SKEW_WARN,
        );
        Some(NodeConfig {
            shutdown_grace: grace?,
            clock_skew_warn: skew?,
        })
    }

    /// The context keys of one table, validated ([`context::keys`]).
    fn context_keys(&mut self, raw: &context::RawContext<'_>) -> context::ContextKeys {
        let mut errors = Vec::new();
        let keys = context::keys(raw, &context::ThisProcess, &mut |at, m| {
            errors.push((at, m))
        });
        self.errors.extend(errors);
        keys
    }

    fn jobs(
        &mut self,
        inline: Option<Spanned<Vec<Spanned<RawJob>>>>,
        pieces: &[Range<usize>],
        defaults: &Settings,
        sinks: &[String],
    ) -> Option<Vec<Job>> {
        const NO_JOBS: &str =
            "no jobs: add at least one [[job]] table with a name, a schedule and an action";
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut jobs = Vec::with_capacity(pieces.len());
        let mut ok = true;
        match inline {
            // `job = [...]` (or a misplaced `[job]`, reported by the parse before this).
            Some(raw) => {
                if let Some(first) = pieces.first() {
                    self.error(
                        first.start,
                        "duplicate key `job`: jobs are [[job]] tables here and a `job` key \
                         elsewhere in the file"
                            .into(),
                    );
                    return None;
                }
                let span = raw.span();
                let raw = raw.into_inner();
                if raw.is_empty() {
                    self.error(span.start, NO_JOBS.into());
                    return None;
                }
                for job in raw {
                    ok &= self.job_once(job.into_inner(), &mut seen, defaults, sinks, &mut jobs);
                }
            }
            None if pieces.is_empty() => {
                self.error(0, NO_JOBS.into());
                return None;
            }
            None => {
                for range in pieces {
                    let text = &self.full[range.clone()];
                    let piece: RawJobs = match toml::from_str(text) {
                        Ok(piece) => piece,
                        Err(e) => {
                            let at = range.start + e.span().map_or(0, |s| s.start);
                            self.errors.push((at, e.message().trim().to_string()));
                            ok = false;
                            continue;
                        }
                    };
                    // Spans in the piece are offsets into its text.
                    (self.text, self.base) = (text, range.start);
                    for job in piece.job {
                        ok &=
                            self.job_once(job.into_inner(), &mut seen, defaults, sinks, &mut jobs);
                    }
                    (self.text, self.base) = (self.full, 0);
                }
            }
        }
        ok.then_some(jobs)
    }

    /// Validate one job into `jobs`, its name not seen before (`seen`: name → file offset).
    fn job_once(
        &mut self,
        job: RawJob,
        seen: &mut HashMap<String, usize>,
        defaults: &Settings,
        sinks: &[String],
        jobs: &mut Vec<Job>,
    ) -> bool {
        let name = job.name.get_ref();
        let name_at = self.base + job.name.span().start;
        let mut ok = true;
        if let Some(&first) = seen.get(name.as_str()) {
            let (line, _) = position(self.full, first);
            self.errors.push((
                name_at,
                format!("duplicate job name {name:?} (first defined on line {line})"),
            ));
            ok = false;
        } else {
            seen.insert(name.clone(), name_at);
        }
        match self.job(job, defaults, sinks) {
            Some(job) => jobs.push(job),
            None => ok = false,
        }
        ok
    }

    fn job(&mut self, raw: RawJob, defaults: &Settings, sinks: &[String]) -> Option<Job> {
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
        } else if let Some(bad) = name.chars().find(|c| !is_job_name_char(*c)) {
            self.error(
                name_at,
                format!(
                    "job name {name:?} contains {bad:?}: only letters, digits, '_', '.' and '-' are allowed"
                ),
            );
        } else if !is_job_name(&name) {
            self.error(
                name_at,
                format!("job name {name:?} is not allowed: it cannot be a part of a URL path"),
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

        // The policy: the job's own keys, else [defaults], else the built-in defaults.
        let own = self.settings(PolicyKeys {
            timeout: &raw.timeout,
            overlap: &raw.overlap,
            retries: &raw.retries,
            retry_backoff: &raw.retry_backoff,
            catch_up: &raw.catch_up,
            starting_deadline: &raw.starting_deadline,
            on_lease_lost: &raw.on_lease_lost,
            recover: &raw.recover,
            output_limit: &raw.output_limit,
            output_refresh: &raw.output_refresh,
            jitter: &raw.jitter,
        });
        let builtin = Policy::default();
        let timeout = own.timeout.or(defaults.timeout);
        let policy = Policy {
            overlap: own.overlap.or(defaults.overlap).unwrap_or(builtin.overlap),
            retries: own.retries.or(defaults.retries).unwrap_or(builtin.retries),
            retry_backoff: own
                .retry_backoff
                .or(defaults.retry_backoff)
                .unwrap_or(builtin.retry_backoff),
            catch_up: own
                .catch_up
                .or(defaults.catch_up)
                .unwrap_or(builtin.catch_up),
            starting_deadline: own.starting_deadline.or(defaults.starting_deadline),
            on_lease_lost: own
                .on_lease_lost
                .or(defaults.on_lease_lost)
                .unwrap_or(builtin.on_lease_lost),
            recover: own.recover.or(defaults.recover).unwrap_or(builtin.recover),
            output_limit: own
                .output_limit
                .or(defaults.output_limit)
                .unwrap_or(builtin.output_limit),
            output_refresh: own
                .output_refresh
                .or(defaults.output_refresh)
                .unwrap_or(builtin.output_refresh),
            jitter: own.jitter.or(defaults.jitter).filter(|d| !d.is_zero()),
        };
        // A jitter must leave every run before its successor's instant.
        if let (Some(j), Some(schedule)) = (policy.jitter, &schedule) {
            let key = (schedule.expr.clone(), schedule.tz.name().to_string());
            let gap = *self
                .gaps
                .entry(key)
                .or_insert_with(|| jitter::shortest_gap(schedule, chrono::Utc::now()));
            if let Some(gap) = gap {
                if j >= gap {
                    let at = raw
                        .jitter
                        .as_ref()
                        .map_or(raw.schedule.span().start, |r| r.span().start);
                    self.error(
                        at,
                        format!(
                            "jitter {} is not shorter than the shortest gap between this job's \
                             fire times ({}): a run could start after the next one",
                            humantime::format_duration(j),
                            humantime::format_duration(gap)
                        ),
                    );
                }
            }
        }

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
        if let Some(h) = &raw.http {
            actions.push((self.key_offset(&h.span(), "http"), "http"));
        }
        actions.sort();
        match actions.as_slice() {
            [] => self.error(
                name_at,
                format!("job {name:?} has no action: give one of say, command, shell or http"),
            ),
            [(_, first), (at, second), ..] => self.error(
                *at,
                format!(
                    "job {name:?} has more than one action ({first} and {second}): give exactly one of say, command, shell or http"
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
        } else if let Some(http) = &raw.http {
            let mut errors = Vec::new();
            let action = http_action::parse(http.get_ref(), &mut |at, m| errors.push((at, m)));
            self.errors.extend(errors);
            action.map(|h| Action::Http(Box::new(h)))
        } else {
            None
        };

        let notify = self
            .notify_list(&raw.notify, sinks)
            .or_else(|| defaults.notify.clone())
            .unwrap_or_default();
        let ping = self.ping(&raw.ping);

        // What its process runs with; `say` starts none ([defaults]' keys do not apply to it).
        let raw_ctx = raw_context!(raw);
        let context = if raw.say.is_some() || raw.http.is_some() {
            if let Some((key, at)) = raw_ctx.first_given() {
                let at = self.key_offset(&(at..at), key);
                let kind = if raw.say.is_some() { "say" } else { "http" };
                self.error(
                    at,
                    format!("{key} applies to a process (command or shell); {kind} starts none"),
                );
            }
            context::ExecContext::default()
        } else {
            let own = self.context_keys(&raw_ctx);
            let user_at = raw.user.as_ref().map_or(name_at, |u| u.span().start);
            let mut errors = Vec::new();
            let ctx = context::merge(own, &defaults.context, user_at, &mut |at, m| {
                errors.push((at, m))
            });
            self.errors.extend(errors);
            ctx
        };

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Job {
            name,
            schedule: schedule?,
            timeout,
            action: action?,
            policy,
            enabled: raw.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            notify,
            ping,
            context: if context == *self.no_context {
                self.no_context.clone()
            } else {
                std::sync::Arc::new(context)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of the repository's demo config.
    const DEMO: &str = r#"
[store]                 # optional table
backend = "datastore"   # "datastore" | "file"; default: datastore if named, else file
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

    /// Jobs are parsed piece by piece (`pieces`): what the parse and the checks say still
    /// points at the right line of the whole file, whatever comes before.
    #[test]
    fn errors_in_a_later_job_point_at_its_line_in_the_file() {
        let two = format!(
            "[node]\nshutdown_grace = \"1s\"\n\n{JOB}\n{}",
            JOB.replace("\"a\"", "\"b\"")
        );
        assert_eq!(parse("j", &two).unwrap().jobs.len(), 2);
        // A syntax error in the second job (line 13 of the file).
        assert_err(&format!("{two}schedule = \n"), 13, "");
        // A check of the second job.
        assert_err(&format!("{two}bogus = 1\n"), 13, "bogus");
        // The same name twice, the first one's line named.
        assert_err(&format!("{two}{JOB}"), 14, "first defined on line 5");
        // A sub-table belongs to the job above it, and its errors point into it.
        let shell = two.replace("say = \"hi\"\n", "shell = \"true\"\n");
        let env = parse("j", &format!("{shell}[job.env]\nK = \"v\"\n")).unwrap();
        assert_eq!(
            env.jobs[1].context.env,
            [("K".to_string(), "v".to_string())]
        );
        assert_err(&format!("{shell}[job.env]\nK = 1\n"), 14, "");
        assert_err(
            &format!("{two}[job.env]\nK = \"v\"\n"),
            13,
            "say starts none",
        );
    }

    #[test]
    fn jobs_as_tables_and_as_a_key_are_one_key_twice() {
        assert_err(
            &format!("job = [{{ name = \"x\", schedule = \"* * * * *\", say = \"x\" }}]\n{JOB}"),
            2,
            "duplicate key `job`",
        );
        // A `job` key alone still works.
        let inline = "job = [{ name = \"x\", schedule = \"* * * * *\", say = \"x\" }]\n";
        assert_eq!(parse("j", inline).unwrap().jobs[0].name, "x");
        assert_err("job = []\n", 1, "no jobs");
        assert_err("[node]\n", 1, "no jobs");
    }

    #[test]
    fn output_limit_and_refresh() {
        let c = parse("j", JOB).unwrap();
        assert_eq!(c.jobs[0].policy.output_limit, DEFAULT_OUTPUT_LIMIT);
        assert_eq!(c.jobs[0].policy.output_refresh, DEFAULT_OUTPUT_REFRESH);
        let c = parse(
            "j",
            &format!(
                "[defaults]\noutput_limit = \"8KiB\"\noutput_refresh = \"30s\"\n{JOB}\
                 [[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"b\"\n\
                 output_limit = \"256KiB\"\n"
            ),
        )
        .unwrap();
        assert_eq!(c.jobs[0].policy.output_limit, 8 * 1024);
        assert_eq!(c.jobs[0].policy.output_refresh, Duration::from_secs(30));
        assert_eq!(c.jobs[1].policy.output_limit, MAX_OUTPUT_LIMIT);
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512 B"), Ok(512));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_err(
            &format!("{JOB}output_limit = \"300KiB\"\n"),
            5,
            "more than the largest",
        );
        assert_err(
            &format!("{JOB}output_limit = \"32KB\"\n"),
            5,
            "unknown unit \"KB\"",
        );
        assert_err(&format!("{JOB}output_limit = \"lots\"\n"), 5, "bad size");
        assert_err(
            &format!("[defaults]\noutput_refresh = \"100ms\"\n{JOB}"),
            2,
            "output_refresh must be at least 1s",
        );
    }

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
    fn policy_defaults_are_built_in() {
        let c = parse("j.toml", JOB).unwrap();
        let p = &c.jobs[0].policy;
        assert_eq!(*p, Policy::default());
        assert_eq!(p.overlap, Overlap::Skip);
        assert_eq!(p.retries, 0);
        assert_eq!(p.retry_backoff, DEFAULT_RETRY_BACKOFF);
        assert_eq!(p.catch_up, CatchUp::Latest);
        assert_eq!(p.starting_deadline, None);
        assert_eq!(c.jobs[0].timeout, None);
    }

    #[test]
    fn defaults_table_applies_unless_the_job_sets_its_own() {
        let text = format!(
            "[defaults]\noverlap = \"allow\"\nretries = 3\nretry_backoff = \"250ms\"\n\
             catch_up = \"all\"\nstarting_deadline = \"1m\"\ntimeout = \"30s\"\n\
             on_lease_lost = \"continue\"\nrecover = true\n\n{JOB}\n\
             [[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nshell = \"x\"\n\
             overlap = \"replace\"\nretries = 0\nretry_backoff = \"2s\"\ncatch_up = \"none\"\n\
             starting_deadline = \"5s\"\ntimeout = \"1h\"\non_lease_lost = \"stop\"\n\
             recover = false\n"
        );
        let c = parse("j.toml", &text).unwrap();
        let a = &c.jobs[0];
        assert_eq!(
            a.policy,
            Policy {
                overlap: Overlap::Allow,
                retries: 3,
                retry_backoff: Duration::from_millis(250),
                catch_up: CatchUp::All,
                starting_deadline: Some(Duration::from_secs(60)),
                on_lease_lost: OnLeaseLost::Continue,
                recover: true,
                ..Policy::default()
            }
        );
        assert_eq!(a.timeout, Some(Duration::from_secs(30)));
        let b = &c.jobs[1];
        assert_eq!(
            b.policy,
            Policy {
                overlap: Overlap::Replace,
                retries: 0,
                retry_backoff: Duration::from_secs(2),
                catch_up: CatchUp::None,
                starting_deadline: Some(Duration::from_secs(5)),
                on_lease_lost: OnLeaseLost::Stop,
                recover: false,
                ..Policy::default()
            }
        );
        assert_eq!(b.timeout, Some(Duration::from_secs(3600)));

        // Only some keys in [defaults]; the table may come after the jobs.
        let c = parse("j.toml", &format!("{JOB}\n[defaults]\nretries = 2\n")).unwrap();
        let p = &c.jobs[0].policy;
        assert_eq!(p.retries, 2);
        assert_eq!(p.overlap, Overlap::Skip);
        assert_eq!(p.retry_backoff, DEFAULT_RETRY_BACKOFF);
        // An empty [defaults] is fine.
        let c = parse("j.toml", &format!("[defaults]\n{JOB}")).unwrap();
        assert_eq!(c.jobs[0].policy, Policy::default());
        // A job's own key without any [defaults].
        let c = parse("j.toml", &format!("{JOB}overlap = \"allow\"\n")).unwrap();
        assert_eq!(c.jobs[0].policy.overlap, Overlap::Allow);
    }

    #[test]
    fn unknown_policy_values_point_at_the_value_and_list_the_allowed_ones() {
        let (l, c, m) = err(&format!("[defaults]\noverlap = \"queue\"\n{JOB}"));
        assert_eq!((l, c), (2, 11));
        assert_eq!(
            m,
            "unknown overlap \"queue\": it must be one of \"skip\", \"allow\" or \"replace\""
        );
        let (l, c, m) = err(&format!("{JOB}overlap = \"Skip\"\n"));
        assert_eq!((l, c), (5, 11));
        assert!(m.contains("\"skip\", \"allow\" or \"replace\""), "{m}");
        let (l, c, m) = err(&format!("{JOB}catch_up   = \"every\"\n"));
        assert_eq!((l, c), (5, 14));
        assert_eq!(
            m,
            "unknown catch_up \"every\": it must be one of \"none\", \"latest\" or \"all\""
        );
        assert_err(
            &format!("[defaults]\n\ncatch_up = \"\"\n{JOB}"),
            3,
            "unknown catch_up \"\"",
        );
        assert_err(
            &format!("[defaults]\noverlap = 1\n{JOB}"),
            2,
            "expected a string",
        );
        assert_err(
            &format!("[defaults]\nrepeat = 2\n{JOB}"),
            2,
            "unknown field `repeat`",
        );
    }

    #[test]
    fn retries_are_bounded() {
        let c = parse("j", &format!("{JOB}retries = 100\n")).unwrap();
        assert_eq!(c.jobs[0].policy.retries, 100);
        let (l, c, m) = err(&format!("{JOB}retries = 101\n"));
        assert_eq!((l, c), (5, 11));
        assert_eq!(m, "retries must be between 0 and 100, got 101");
        assert_err(
            &format!("[defaults]\nretries = -1\n{JOB}"),
            2,
            "retries must be between 0 and 100, got -1",
        );
        assert_err(&format!("{JOB}retries = \"3\"\n"), 5, "expected i64");
    }

    #[test]
    fn policy_durations_are_checked() {
        let (l, c, m) = err(&format!("{JOB}retry_backoff = \"soon\"\n"));
        assert_eq!((l, c), (5, 17));
        assert!(m.starts_with("retry_backoff: bad duration \"soon\""), "{m}");
        assert_err(
            &format!("[defaults]\nretry_backoff = \"400days\"\n{JOB}"),
            2,
            "too long",
        );
        // Retrying at once is allowed.
        let c = parse("j", &format!("{JOB}retry_backoff = \"0s\"\n")).unwrap();
        assert_eq!(c.jobs[0].policy.retry_backoff, Duration::ZERO);

        let (l, c, m) = err(&format!("{JOB}starting_deadline = \"0s\"\n"));
        assert_eq!((l, c), (5, 21));
        assert!(
            m.starts_with("starting_deadline must be longer than zero"),
            "{m}"
        );
        assert_err(
            &format!("[defaults]\nstarting_deadline = \"0ms\"\n{JOB}"),
            2,
            "starting_deadline must be longer than zero",
        );
        assert_err(
            &format!("[defaults]\nstarting_deadline = \"an hour\"\n{JOB}"),
            2,
            "starting_deadline: bad duration",
        );
        assert_err(
            &format!("[defaults]\ntimeout = \"0s\"\n{JOB}"),
            2,
            "timeout must be longer than zero",
        );
        assert_err(
            &format!("[defaults]\ntimeout = \"x\"\n{JOB}"),
            2,
            "timeout: bad duration",
        );
    }

    #[test]
    fn a_bad_default_is_reported_once_at_the_defaults_table() {
        // Two jobs rely on the bad default: the error names [defaults], not the jobs.
        let text = format!("{JOB}\n[[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"x\"\n\n[defaults]\noverlap = \"never\"\n");
        let (l, _, m) = err(&text);
        assert_eq!(l, 12);
        assert!(m.starts_with("unknown overlap \"never\""), "{m}");
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let p = Policy {
            retry_backoff: Duration::from_secs(10),
            ..Policy::default()
        };
        let waits: Vec<u64> = (1..=7).map(|r| p.backoff(r).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(p.backoff(100), RETRY_BACKOFF_CAP);
        assert_eq!(p.backoff(u32::MAX), RETRY_BACKOFF_CAP);
        // A base longer than the cap is kept, not cut.
        let long = Policy {
            retry_backoff: Duration::from_secs(600),
            ..Policy::default()
        };
        assert_eq!(long.backoff(1), Duration::from_secs(600));
        assert_eq!(long.backoff(5), Duration::from_secs(600));
        let zero = Policy {
            retry_backoff: Duration::ZERO,
            ..Policy::default()
        };
        assert_eq!(zero.backoff(9), Duration::ZERO);
        assert_eq!(Policy::default().backoff(1), Duration::from_secs(1));
        assert_eq!(Policy::default().backoff(2), Duration::from_secs(2));
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
            &format!("[store]\nbackend = \"sqlite\"\n{JOB}"),
            2,
            "unknown store backend \"sqlite\": the backends are \"datastore\", \"file\", \"redis\", \"zookeeper\" and \"postgres\"",
        );
        assert_err(
            &format!("[store]\nbackend = \"datastore\"\npath = \"/x\"\n{JOB}"),
            3,
            "path is a setting of the \"file\" backend",
        );
        assert_err(
            &format!("[store]\nbackend = \"file\"\nproject = \"p\"\n{JOB}"),
            3,
            "project is a setting of the \"datastore\" backend",
        );
        assert_err(
            &format!("[store]\npath = \"/x\"\nproject = \"p\"\n{JOB}"),
            3,
            "project is a setting of the \"datastore\" backend",
        );
        assert_err(&format!("[store]\npath = \" \"\n{JOB}"), 2, "path must be");
        assert_err(
            &format!("[store]\nbackend = \"redis\"\n{JOB}"),
            2,
            "the \"redis\" backend needs url",
        );
        assert_err(
            &format!("[store]\nbackend = \"zookeeper\"\n{JOB}"),
            2,
            "the \"zookeeper\" backend needs hosts",
        );
        assert_err(
            &format!("[store]\nbackend = \"file\"\nurl = \"redis://x\"\n{JOB}"),
            3,
            "url is a setting of the \"redis\" and \"postgres\" backend, not of \"file\"",
        );
        assert_err(
            &format!("[store]\nurl = \"\"\n{JOB}"),
            2,
            "url must not be empty",
        );
        assert_err(
            &format!("[store]\nnamespace = \"..\"\n{JOB}"),
            2,
            "namespace",
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
    fn postgres_store_settings() {
        let store = |text: &str| parse("j.toml", &format!("{text}{JOB}")).unwrap().store;
        // A postgres url alone selects it, as a redis one selects Redis.
        let pg = store("[store]\nurl = \"postgresql://app@db:5432/jobs\"\n");
        assert_eq!(
            (pg.backend, pg.schema.as_str()),
            (Backend::Postgres, "cronlease")
        );
        let named = store(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/j\"\nschema = \"ops_cron\"\n",
        );
        assert_eq!(
            (named.backend, named.schema.as_str()),
            (Backend::Postgres, "ops_cron")
        );
        assert_eq!(
            store("[store]\nurl = \"redis://r:6379\"\n").backend,
            Backend::Redis
        );
        assert_err(
            &format!("[store]\nbackend = \"postgres\"\n{JOB}"),
            2,
            "the \"postgres\" backend needs url, e.g. url = \"postgres://",
        );
        assert_err(
            &format!("[store]\nbackend = \"postgres\"\nurl = \"redis://r\"\n{JOB}"),
            3,
            "the postgres backend needs a postgres:// (or postgresql://) url",
        );
        // A url that does not parse is refused by `check`, at its line, without its password.
        let text =
            format!("[store]\n\nurl = \"postgres://app:hunter2@db/jobs?sslmode=sometimes\"\n{JOB}");
        let e = parse("j.toml", &text).unwrap_err().to_string();
        assert!(e.contains("j.toml:3:") && e.contains("app:***@db"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_err(
            &format!(
                "[store]\nurl = \"postgres://db/j?sslmode=verify-full&sslrootcert=/none/ca.pem\"\n{JOB}"
            ),
            2,
            "sslrootcert /none/ca.pem",
        );
        assert_err(
            &format!("[store]\nurl = \"postgres://db/j\"\nschema = \"Ops-Cron\"\n{JOB}"),
            3,
            "schema \"Ops-Cron\" must be a plain PostgreSQL name",
        );
        assert_err(
            &format!("[store]\nurl = \"redis://r\"\nschema = \"s\"\n{JOB}"),
            3,
            "schema is a setting of the \"postgres\" backend, not of \"redis\"",
        );
    }

    #[test]
    fn store_backends() {
        let store = |text: &str| {
            parse("conf/jobs.toml", &format!("{text}{JOB}"))
                .unwrap()
                .store
        };
        let auto = store("");
        assert_eq!((auto.backend, auto.path), (Backend::Auto, None));
        assert_eq!(store("[store]\nhistory = 3\n").backend, Backend::Auto);
        assert_eq!(
            store("[store]\nproject = \"p\"\n").backend,
            Backend::Datastore
        );
        let ds = store("[store]\nbackend = \"datastore\"\n");
        assert_eq!((ds.backend, ds.path), (Backend::Datastore, None));
        let f = store("[store]\nbackend = \"file\"\n");
        assert_eq!((f.backend, f.path), (Backend::File, None));
        // A path implies the file backend; a relative one is taken from the config's directory.
        let rel = store("[store]\npath = \"state\"\n");
        assert_eq!(rel.backend, Backend::File);
        assert_eq!(rel.path, Some(PathBuf::from("conf/state")));
        let abs = store("[store]\nbackend = \"file\"\npath = \"/var/lib/cl\"\n");
        assert_eq!(abs.path, Some(PathBuf::from("/var/lib/cl")));
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
            "[[job]]\nname = \"..\"\nschedule = \"* * * * *\"\nsay = \"x\"\n",
            2,
            "cannot be a part of a URL path",
        );
        assert!(is_job_name("a.b") && is_job_name("...") && !is_job_name("."));
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
        assert!(e.to_string().contains("larger than 16 MiB"), "{e}");

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
            "[defaults]\n",
            "overlap = \"replace\"\n",
            "overlap = \"x\"\n",
            "retries = 3\n",
            "retries = 1000\n",
            "retry_backoff = \"10s\"\n",
            "catch_up = \"all\"\n",
            "starting_deadline = \"0s\"\n",
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
