//! What a job's process runs with, as a crontab line and a systemd unit say it: `env`,
//! `env_file`, `working_dir`, `user`, `group`, `limits` and `nice`, per `[[job]]` and in
//! `[defaults]` (a job's own value wins; `env` and `limits` merge key by key).
//!
//! ```toml
//! [[job]]
//! name = "report"
//! schedule = "0 6 * * *"
//! command = ["/srv/app/bin/report"]
//! env = { APP_ENV = "prod", API_TOKEN = "${REPORT_TOKEN}" }  # ${VAR}: the node's environment
//! env_file = "/etc/cronlease/report.env"   # KEY=value lines, read at every run
//! working_dir = "/srv/app"
//! user = "app"                             # and group = "app"; only a node run as root
//! limits = { nofile = 1024, processes = 64, memory = "512MiB", cpu = "60s", core = 0 }
//! nice = 10
//! ```
//!
//! Everything here is checked at load with file:line:col: key names, the users and groups
//! (looked up in this host's user database), the limits' ranges. What can only be known at run
//! time (the env file's contents, the working directory) ends that run `failed` with the
//! reason ([`crate::node::exec`]). The `say` action starts no process; these keys are refused
//! with it.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

pub use super::template::{expand, is_env_name, variables};

/// Environment variables cronlease sets for every run; a job cannot set them itself.
pub const RESERVED_PREFIX: &str = "CRONLEASE_";
/// Largest `nofile` (Linux's default `fs.nr_open`).
pub const MAX_NOFILE: i64 = 1 << 20;
/// Largest `processes` (Linux's largest `kernel.pid_max`).
pub const MAX_PROCESSES: i64 = 1 << 22;
/// Smallest `memory`: below this not even a shell starts.
pub const MIN_MEMORY: u64 = 16 * 1024 * 1024;
/// Largest `memory` and `core`.
pub const MAX_BYTES: u64 = 1 << 50;

/// The execution context of a job's process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecContext {
    /// `env`, sorted by name: values are templates, `${VAR}` read from the node's environment
    /// when the run starts (a node that lacks one refuses to start: [`ExecContext::unset_vars`]).
    pub env: Vec<(String, String)>,
    /// `env_file`: read at every run, so a rotated secret needs no restart.
    pub env_file: Option<PathBuf>,
    pub working_dir: Option<PathBuf>,
    /// `user` and/or `group`, resolved at load.
    pub identity: Option<Identity>,
    pub limits: Limits,
    /// `nice`, -20..=19.
    pub nice: Option<i32>,
}

/// Who a job's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user as written (`user`), when one was given: its name sets USER and LOGNAME and
    /// finds its supplementary groups.
    pub user: Option<User>,
    pub gid: u32,
    /// `group` as written, for `check` and the digest.
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// As written: a name or a number.
    pub spec: String,
    pub uid: u32,
    /// From the user database; `None` for a number with no entry there.
    pub name: Option<String>,
    pub home: Option<PathBuf>,
}

/// `limits`: setrlimit in the child before exec; `None` keeps the node's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub nofile: Option<u64>,
    pub processes: Option<u64>,
    /// RLIMIT_AS, bytes.
    pub memory: Option<u64>,
    /// RLIMIT_CPU, whole seconds (a fraction rounds up).
    pub cpu: Option<u64>,
    /// RLIMIT_CORE, bytes.
    pub core: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// `nofile=1024 memory=512MiB cpu=60s`, in a fixed order (for `check` and the digest).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.nofile {
            parts.push(format!("nofile={n}"));
        }
        if let Some(n) = self.processes {
            parts.push(format!("processes={n}"));
        }
        if let Some(n) = self.memory {
            parts.push(format!("memory={}", bytes(n)));
        }
        if let Some(n) = self.cpu {
            parts.push(format!("cpu={n}s"));
        }
        if let Some(n) = self.core {
            parts.push(format!("core={}", bytes(n)));
        }
        parts.join(" ")
    }

    /// Each of `self`'s limits, else `defaults`'s.
    fn or(self, defaults: Limits) -> Limits {
        Limits {
            nofile: self.nofile.or(defaults.nofile),
            processes: self.processes.or(defaults.processes),
            memory: self.memory.or(defaults.memory),
            cpu: self.cpu.or(defaults.cpu),
            core: self.core.or(defaults.core),
        }
    }
}

/// `512MiB`, `1GiB`, `100B`.
fn bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n % size == 0 {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

impl ExecContext {
    pub fn is_empty(&self) -> bool {
        *self == ExecContext::default()
    }

    /// The `${VAR}`s of `env` that `lookup` does not have, as `KEY uses ${VAR}`.
    pub fn unset_vars(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = Vec::new();
        for (key, template) in &self.env {
            for var in variables(template).unwrap_or_default() {
                if lookup(var).is_none() {
                    out.push(format!("env {key} uses ${{{var}}}"));
                }
            }
        }
        out
    }

    /// `env` with every `${VAR}` replaced from `lookup`; an error names the first one unset.
    pub fn resolved_env(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, String> {
        self.env
            .iter()
            .map(|(key, template)| {
                expand(template, &lookup)
                    .map(|v| (key.clone(), v))
                    .map_err(|var| {
                        format!(
                            "env {key} uses ${{{var}}}, which is not set in this node's environment"
                        )
                    })
            })
            .collect()
    }

    /// The canonical text of everything set (for the job's digest): templates and paths, never
    /// what they resolve to or what the env file holds. Empty when nothing is set, so the
    /// digests of jobs without a context stay what they were.
    pub fn digest_text(&self) -> String {
        let mut text = String::new();
        if !self.env.is_empty() {
            text.push_str(&format!("env={:?}\n", self.env));
        }
        if let Some(f) = &self.env_file {
            text.push_str(&format!("env_file={}\n", f.display()));
        }
        if let Some(d) = &self.working_dir {
            text.push_str(&format!("working_dir={}\n", d.display()));
        }
        if let Some(id) = &self.identity {
            // As written, not the ids this host resolves them to (hosts may differ).
            if let Some(u) = &id.user {
                text.push_str(&format!("user={}\n", u.spec));
            }
            if let Some(g) = &id.group {
                text.push_str(&format!("group={g}\n"));
            }
        }
        if !self.limits.is_empty() {
            text.push_str(&format!("limits={}\n", self.limits.describe()));
        }
        if let Some(n) = self.nice {
            text.push_str(&format!("nice={n}\n"));
        }
        text
    }
}

impl Identity {
    /// `app (uid 1001, gid 1001)`, `uid 5000, group backup (gid 34)`.
    pub fn describe(&self) -> String {
        let group = match &self.group {
            Some(g) if g.parse::<u32>().is_err() => format!("group {g} (gid {})", self.gid),
            _ => format!("gid {}", self.gid),
        };
        match &self.user {
            Some(u) => match &u.name {
                Some(name) => format!("user {name} (uid {}), {group}", u.uid),
                None => format!("uid {}, {group}", u.uid),
            },
            None => group,
        }
    }
}

/// The first job whose `env` names a variable `lookup` lacks, as a message: a node refuses to
/// start (or to reload) without it, as it does for a `[[notify]]` header.
pub fn check_environment(
    jobs: &[super::Job],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    for job in jobs {
        if let super::Action::Http(http) = &job.action {
            if let Err(e) = http.resolved_headers(&lookup) {
                return Err(format!("job {:?}: {e}", job.name));
            }
        }
        if let Some(first) = job.context.unset_vars(&lookup).first() {
            return Err(format!(
                "job {:?}: {first}, which is not set in this node's environment",
                job.name
            ));
        }
    }
    Ok(())
}

/// Parses the text of an env file: `KEY=value` lines; blank lines and `#` comments skipped;
/// `export KEY=value` accepted; a value in matching single or double quotes loses them. An
/// error names the line, never its value (the file holds secrets).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=value", i + 1));
        };
        let key = key.trim();
        if !is_env_name(key) {
            // The text before '=' is not named: a bare secret may hold one.
            return Err(format!(
                "line {}: the part before '=' is not a variable name (letters, digits, '_')",
                i + 1
            ));
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(format!(
                "line {}: {key} is set by cronlease itself and cannot be overridden",
                i + 1
            ));
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// A user or group as written: a name or a number.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawId {
    Number(i64),
    Name(String),
}

/// A size as written: bytes as a number, or text like "512MiB".
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    nofile: Option<Spanned<i64>>,
    processes: Option<Spanned<i64>>,
    memory: Option<Spanned<RawSize>>,
    cpu: Option<Spanned<String>>,
    core: Option<Spanned<RawSize>>,
}

/// The context keys as written in `[defaults]` or in one `[[job]]`.
pub(super) struct RawContext<'r> {
    pub env: &'r Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub env_file: &'r Option<Spanned<String>>,
    pub working_dir: &'r Option<Spanned<String>>,
    pub user: &'r Option<Spanned<RawId>>,
    pub group: &'r Option<Spanned<RawId>>,
    pub limits: &'r Option<Spanned<RawLimits>>,
    pub nice: &'r Option<Spanned<i64>>,
}

impl RawContext<'_> {
    /// The first key given, with its offset (to refuse them on a `say` job).
    pub fn first_given(&self) -> Option<(&'static str, usize)> {
        let spans = [
            ("env", self.env.as_ref().map(|s| s.span().start)),
            ("env_file", self.env_file.as_ref().map(|s| s.span().start)),
            (
                "working_dir",
                self.working_dir.as_ref().map(|s| s.span().start),
            ),
            ("user", self.user.as_ref().map(|s| s.span().start)),
            ("group", self.group.as_ref().map(|s| s.span().start)),
            ("limits", self.limits.as_ref().map(|s| s.span().start)),
            ("nice", self.nice.as_ref().map(|s| s.span().start)),
        ];
        spans
            .into_iter()
            .filter_map(|(k, at)| at.map(|at| (k, at)))
            .min_by_key(|(_, at)| *at)
    }
}

/// Validated context keys of one table; `None` where not given.
#[derive(Debug, Clone, Default)]
pub(super) struct ContextKeys {
    env: BTreeMap<String, String>,
    env_file: Option<PathBuf>,
    working_dir: Option<PathBuf>,
    user: Option<User>,
    /// (as written, gid)
    group: Option<(String, u32)>,
    limits: Limits,
    nice: Option<i32>,
}

/// Who may switch users: a node run as root (or one asking for its own uid).
pub trait Privilege {
    fn euid(&self) -> u32;
    fn egid(&self) -> u32;
}

/// This process's effective uid.
pub struct ThisProcess;

impl Privilege for ThisProcess {
    fn euid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }
    fn egid(&self) -> u32 {
        nix::unistd::getegid().as_raw()
    }
}

/// Validates the context keys of one table; errors go to `error(offset, message)`.
pub(super) fn keys(
    raw: &RawContext<'_>,
    privilege: &dyn Privilege,
    error: &mut dyn FnMut(usize, String),
) -> ContextKeys {
    let mut out = ContextKeys::default();
    if let Some(env) = raw.env {
        for (key, value) in env.get_ref() {
            let name = key.get_ref();
            if !is_env_name(name) {
                error(
                    key.span().start,
                    format!("env: {name:?} is not a variable name (letters, digits, '_', not starting with a digit)"),
                );
            } else if name.starts_with(RESERVED_PREFIX) {
                error(
                    key.span().start,
                    format!(
                        "env: {name} is set by cronlease itself (CRONLEASE_JOB, CRONLEASE_NODE, \
                         CRONLEASE_FIRE_TIME, CRONLEASE_TERM) and a job cannot override it"
                    ),
                );
            } else if let Err(e) = variables(value.get_ref()) {
                error(value.span().start, format!("env {name}: {e}"));
            } else if value.get_ref().contains('\0') {
                error(
                    value.span().start,
                    format!("env {name}: a value cannot hold a NUL byte"),
                );
            } else {
                out.env.insert(name.clone(), value.get_ref().clone());
            }
        }
    }
    out.env_file = absolute_path(raw.env_file, "env_file", error);
    out.working_dir = absolute_path(raw.working_dir, "working_dir", error);
    if let Some(user) = raw.user {
        out.user = lookup_user(user, error);
    }
    if let Some(group) = raw.group {
        out.group = lookup_group(group, error);
    }
    let switches = out.user.as_ref().is_some_and(|u| u.uid != privilege.euid())
        || out
            .group
            .as_ref()
            .is_some_and(|(_, gid)| *gid != privilege.egid());
    if switches && privilege.euid() != 0 {
        let (key, at) = match (raw.user, raw.group) {
            (Some(u), _) => ("user", u.span().start),
            (None, Some(g)) => ("group", g.span().start),
            _ => ("user", 0),
        };
        error(
            at,
            format!(
                "{key} needs a node run as root: this process runs as uid {}, which cannot \
                 switch a job to another user or group (run the node as root, or leave {key} out)",
                privilege.euid()
            ),
        );
    }
    if let Some(limits) = raw.limits {
        out.limits = self::limits(limits.get_ref(), error);
    }
    if let Some(nice) = raw.nice {
        let n = *nice.get_ref();
        if (-20..=19).contains(&n) {
            if n < 0 && privilege.euid() != 0 {
                error(
                    nice.span().start,
                    format!("nice {n} needs a node run as root (only root may raise a priority)"),
                );
            }
            out.nice = Some(n as i32);
        } else {
            error(
                nice.span().start,
                format!("nice must be between -20 and 19, got {n}"),
            );
        }
    }
    out
}

/// The job's context: its own keys over `[defaults]`'s (env and limits key by key).
pub(super) fn merge(
    own: ContextKeys,
    defaults: &ContextKeys,
    user_at: usize,
    error: &mut dyn FnMut(usize, String),
) -> ExecContext {
    let mut env = defaults.env.clone();
    env.extend(own.env);
    let user = own.user.or_else(|| defaults.user.clone());
    let group = own.group.or_else(|| defaults.group.clone());
    let identity = match (user, group) {
        (None, None) => None,
        (user, Some((spec, gid))) => Some(Identity {
            user,
            gid,
            group: Some(spec),
        }),
        (Some(user), None) => match primary_gid(&user) {
            Some(gid) => Some(Identity {
                user: Some(user),
                gid,
                group: None,
            }),
            None => {
                error(
                    user_at,
                    format!(
                        "user {} has no entry in this host's user database, so it has no \
                         group: give group as well",
                        user.spec
                    ),
                );
                None
            }
        },
    };
    ExecContext {
        env: env.into_iter().collect(),
        env_file: own.env_file.or_else(|| defaults.env_file.clone()),
        working_dir: own.working_dir.or_else(|| defaults.working_dir.clone()),
        identity,
        limits: own.limits.or(defaults.limits),
        nice: own.nice.or(defaults.nice),
    }
}

fn primary_gid(user: &User) -> Option<u32> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(user.uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

fn absolute_path(
    raw: &Option<Spanned<String>>,
    key: &str,
    error: &mut dyn FnMut(usize, String),
) -> Option<PathBuf> {
    let raw = raw.as_ref()?;
    let p = raw.get_ref();
    if p.is_empty() || p.contains('\0') || !p.starts_with('/') {
        error(
            raw.span().start,
            format!("{key} must be an absolute path (like \"/srv/app\"), got {p:?}"),
        );
        return None;
    }
    Some(PathBuf::from(p))
}

fn lookup_user(raw: &Spanned<RawId>, error: &mut dyn FnMut(usize, String)) -> Option<User> {
    let at = raw.span().start;
    let (spec, found) = match raw.get_ref() {
        RawId::Number(n) => {
            let Ok(uid) = u32::try_from(*n) else {
                error(at, format!("user id {n} is out of range"));
                return None;
            };
            (
                n.to_string(),
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).map(|u| (uid, u)),
            )
        }
        RawId::Name(name) => match name.parse::<u32>() {
            Ok(uid) => (
                name.clone(),
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).map(|u| (uid, u)),
            ),
            Err(_) => (
                name.clone(),
                nix::unistd::User::from_name(name)
                    .map(|u| (u.as_ref().map_or(0, |u| u.uid.as_raw()), u)),
            ),
        },
    };
    match found {
        Ok((uid, Some(entry))) => Some(User {
            spec,
            uid,
            name: Some(entry.name),
            home: Some(entry.dir),
        }),
        Ok((uid, None)) if spec.parse::<u32>().is_ok() => Some(User {
            spec,
            uid,
            name: None,
            home: None,
        }),
        Ok(_) => {
            error(
                at,
                format!("unknown user {spec:?}: there is no such user on this host"),
            );
            None
        }
        Err(e) => {
            error(at, format!("cannot look up user {spec:?}: {e}"));
            None
        }
    }
}

fn lookup_group(
    raw: &Spanned<RawId>,
    error: &mut dyn FnMut(usize, String),
) -> Option<(String, u32)> {
    let at = raw.span().start;
    let spec = match raw.get_ref() {
        RawId::Number(n) => n.to_string(),
        RawId::Name(name) => name.clone(),
    };
    if let Ok(n) = spec.parse::<i64>() {
        return match u32::try_from(n) {
            Ok(gid) => Some((spec, gid)),
            Err(_) => {
                error(at, format!("group id {n} is out of range"));
                None
            }
        };
    }
    match nix::unistd::Group::from_name(&spec) {
        Ok(Some(g)) => Some((spec, g.gid.as_raw())),
        Ok(None) => {
            error(
                at,
                format!("unknown group {spec:?}: there is no such group on this host"),
            );
            None
        }
        Err(e) => {
            error(at, format!("cannot look up group {spec:?}: {e}"));
            None
        }
    }
}

fn limits(raw: &RawLimits, error: &mut dyn FnMut(usize, String)) -> Limits {
    let count =
        |v: &Option<Spanned<i64>>, key: &str, max: i64, error: &mut dyn FnMut(usize, String)| {
            let v = v.as_ref()?;
            let n = *v.get_ref();
            if (1..=max).contains(&n) {
                Some(n as u64)
            } else {
                error(
                    v.span().start,
                    format!("limits.{key} must be between 1 and {max}, got {n}"),
                );
                None
            }
        };
    let size = |v: &Option<Spanned<RawSize>>,
                key: &str,
                min: u64,
                error: &mut dyn FnMut(usize, String)| {
        let v = v.as_ref()?;
        let n = match v.get_ref() {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| format!("limits.{key} must not be negative, got {n}"))
            }
            RawSize::Text(t) => super::parse_size(t)
                .map(|n| n as u64)
                .map_err(|e| format!("limits.{key}: {e}")),
        };
        match n {
            Ok(n) if n < min => {
                error(
                    v.span().start,
                    format!(
                        "limits.{key} must be at least {}, got {}",
                        bytes(min),
                        bytes(n)
                    ),
                );
                None
            }
            Ok(n) if n > MAX_BYTES => {
                error(
                    v.span().start,
                    format!("limits.{key} must be at most {}", bytes(MAX_BYTES)),
                );
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                error(v.span().start, e);
                None
            }
        }
    };
    let cpu = raw
        .cpu
        .as_ref()
        .and_then(|c| match humantime::parse_duration(c.get_ref().trim()) {
            Ok(d) if d.is_zero() => {
                error(c.span().start, "limits.cpu must be longer than zero".into());
                None
            }
            Ok(d) if d > super::MAX_DURATION => {
                error(
                    c.span().start,
                    format!("limits.cpu {:?} is too long", c.get_ref()),
                );
                None
            }
            Ok(d) => Some(d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            Err(e) => {
                error(
                    c.span().start,
                    format!(
                        "limits.cpu: bad duration {:?} ({e}); write it like \"60s\" or \"5m\"",
                        c.get_ref()
                    ),
                );
                None
            }
        });
    Limits {
        nofile: count(&raw.nofile, "nofile", MAX_NOFILE, error),
        processes: count(&raw.processes, "processes", MAX_PROCESSES, error),
        memory: size(&raw.memory, "memory", MIN_MEMORY, error),
        cpu,
        core: size(&raw.core, "core", 0, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_and_their_errors_never_show_a_value() {
        let text =
            "# secrets\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nE=\n";
        assert_eq!(
            parse_env_file(text).unwrap(),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "quoted # not a comment"),
                ("D", "x"),
                ("E", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let e = parse_env_file("A=1\nsecret-value-without-key\n").unwrap_err();
        assert_eq!(e, "line 2: not KEY=value");
        assert!(!e.contains("secret"));
        assert!(parse_env_file("CRONLEASE_JOB=x\n")
            .unwrap_err()
            .contains("set by cronlease itself"));
        assert!(parse_env_file("1A=x\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn templates_expand_from_the_environment() {
        let ctx = ExecContext {
            env: vec![
                ("A".into(), "x-${ONE}-${TWO}".into()),
                ("B".into(), "plain".into()),
            ],
            ..ExecContext::default()
        };
        let lookup = |v: &str| (v == "ONE").then(|| "1".to_string());
        assert_eq!(ctx.unset_vars(lookup), ["env A uses ${TWO}"]);
        assert!(ctx.resolved_env(lookup).unwrap_err().contains("${TWO}"));
        let all = |v: &str| Some(v.to_lowercase());
        assert_eq!(
            ctx.resolved_env(all).unwrap(),
            [
                ("A".into(), "x-one-two".into()),
                ("B".into(), "plain".into())
            ]
        );
    }

    const SH: &str = "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nshell = \"true\"\n";

    fn ctx(text: &str) -> ExecContext {
        match crate::config::parse("jobs.toml", text) {
            Ok(c) => (*c.jobs[0].context).clone(),
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    /// The error for `text`, which must point at `line`.
    fn refused(text: &str, line: usize) -> String {
        match crate::config::parse("jobs.toml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(crate::config::ConfigError::At {
                line: l, message, ..
            }) => {
                assert_eq!(l, line, "{message}\n{text}");
                message
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_jobs_keys_win_over_defaults_and_env_and_limits_merge_key_by_key() {
        let c = ctx(&format!(
            "[defaults]\nenv = {{ A = \"d\", B = \"d\" }}\nlimits = {{ nofile = 10, core = 0 }}\n\
             nice = 3\nworking_dir = \"/srv\"\n{SH}env = {{ B = \"j\", C = \"${{X}}\" }}\n\
             limits = {{ nofile = 20, memory = \"1GiB\", cpu = \"1m30s\" }}\nnice = 5\n"
        ));
        assert_eq!(
            c.env,
            [("A", "d"), ("B", "j"), ("C", "${X}")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            c.limits,
            Limits {
                nofile: Some(20),
                memory: Some(1 << 30),
                cpu: Some(90),
                core: Some(0),
                processes: None
            }
        );
        assert_eq!(c.nice, Some(5));
        assert_eq!(c.working_dir, Some(PathBuf::from("/srv")));
        // say starts no process: [defaults]' context does not apply to it.
        let say = crate::config::parse(
            "j",
            "[defaults]\nnice = 3\n[[job]]\nname = \"s\"\nschedule = \"* * * * *\"\nsay = \"x\"\n",
        )
        .unwrap();
        assert!(say.jobs[0].context.is_empty());
    }

    #[test]
    fn users_and_groups_resolve_at_load() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: naming another user needs root");
            return;
        }
        let c = ctx(&format!("{SH}user = \"root\"\n"));
        let id = c.identity.unwrap();
        assert_eq!((id.user.as_ref().unwrap().uid, id.gid), (0, 0));
        assert_eq!(id.user.unwrap().home, Some(PathBuf::from("/root")));
        let c = ctx(&format!("{SH}user = 0\ngroup = \"0\"\n"));
        assert_eq!(c.identity.unwrap().gid, 0);
        assert!(refused(&format!("{SH}user = \"no-such-user-x\"\n"), 5).contains("unknown user"));
        assert!(refused(&format!("{SH}group = \"no-such-group-x\"\n"), 5).contains("unknown group"));
        assert!(refused(&format!("{SH}user = -1\n"), 5).contains("out of range"));
        // A number with no entry needs a group.
        assert!(refused(&format!("{SH}user = 3999999\n"), 5).contains("give group"));
        let c = ctx(&format!("{SH}user = 3999999\ngroup = 3999999\n"));
        assert_eq!(c.identity.unwrap().user.unwrap().name, None);
    }

    struct NotRoot;
    impl Privilege for NotRoot {
        fn euid(&self) -> u32 {
            1000
        }
        fn egid(&self) -> u32 {
            1000
        }
    }

    #[test]
    fn switching_users_needs_root() {
        let mut errors = Vec::new();
        let user = Some(Spanned::new(7..13, RawId::Name("root".into())));
        let nice = Some(Spanned::new(20..22, -5));
        let none = None;
        let raw = RawContext {
            env: &None,
            env_file: &none,
            working_dir: &none,
            user: &user,
            group: &None,
            limits: &None,
            nice: &nice,
        };
        keys(&raw, &NotRoot, &mut |at, m| errors.push((at, m)));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 7);
        assert!(
            errors[0].1.contains("needs a node run as root"),
            "{errors:?}"
        );
        assert!(
            errors[1].1.contains("nice -5 needs a node run as root"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_values_are_refused_where_they_are_written() {
        for (key, needle) in [
            ("env = { CRONLEASE_JOB = \"x\" }", "set by cronlease itself"),
            ("env = { \"1A\" = \"x\" }", "not a variable name"),
            ("env = { A = \"${unclosed\" }", "unclosed"),
            ("env_file = \"relative.env\"", "absolute path"),
            ("working_dir = \"\"", "absolute path"),
            ("limits = { nofile = 0 }", "between 1 and"),
            ("limits = { nofile = 99999999 }", "between 1 and"),
            ("limits = { processes = -1 }", "between 1 and"),
            ("limits = { memory = \"1KiB\" }", "at least 16MiB"),
            ("limits = { memory = -5 }", "must not be negative"),
            ("limits = { memory = \"lots\" }", "bad size"),
            ("limits = { cpu = \"0s\" }", "longer than zero"),
            ("limits = { cpu = \"soon\" }", "bad duration"),
            ("limits = { stack = 1 }", "unknown field"),
            ("nice = 20", "between -20 and 19"),
            ("nice = -21", "between -20 and 19"),
        ] {
            let m = refused(&format!("{SH}{key}\n"), 5);
            assert!(m.contains(needle), "{key}: {m}");
        }
        let m = refused(
            "[[job]]\nname = \"s\"\nschedule = \"* * * * *\"\nsay = \"x\"\nenv = { A = \"1\" }\n",
            5,
        );
        assert!(m.contains("say starts none"), "{m}");
        let m = refused("[defaults]\nnice = 99\n[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nshell = \"x\"\n", 2);
        assert!(m.contains("nice"), "{m}");
    }

    #[test]
    fn limits_describe_themselves() {
        let l = Limits {
            nofile: Some(1024),
            memory: Some(512 << 20),
            cpu: Some(60),
            core: Some(0),
            ..Limits::default()
        };
        assert_eq!(l.describe(), "nofile=1024 memory=512MiB cpu=60s core=0B");
    }
}
