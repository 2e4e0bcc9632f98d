//! `cronlease status`: the operator's at-a-glance view of a cluster, read from the store.
//!
//! One batched [`Store::snapshot`] (every configured job's lease and every node record) and the
//! newest [`RECENT_RUNS`] runs of each job (a bounded number of reads in flight at once), turned
//! into one [`ClusterStatus`]. The same value is printed either as two tables ([`render`]) or as
//! one JSON document (`--json`, [`to_json`]), so both outputs always carry the same data. It
//! writes nothing and needs no running node: with none up, every lease is simply free.
//!
//! A lease's [`LeaseState`]:
//! - `held`: the holder's node record exists, shows the lease's session, and its last
//!   heartbeat is younger than the configured lease;
//! - `free`: no lease record yet, or no holder (released, or never taken);
//! - `dead`: the holder's node record is gone or shows another session (the holder stopped,
//!   died, or restarted); the other nodes take the lease over at their next poll;
//! - `expiring`: the holder's record shows the lease's session but its last heartbeat is older
//!   than the configured lease: the holder is stalled or cut off from the store, and the others
//!   take over once they have watched its heartbeat stand still for a full lease.
//!
//! Wall clocks. Heartbeat ages (`held`/`expiring`, a node's `live`, `heartbeat_age_s`) and
//! `held_for_s` compare the `renewed_at`/`acquired_at` that the *writing* node stamped with its
//! own wall clock against this machine's wall clock. That is for display only, and clock skew
//! between the two machines shows up in it. The election never compares wall clocks: it judges
//! expiry by watching the heartbeat counter change on each observer's monotonic clock (see
//! [`crate::node::election`]), so what `status` shows can differ from what the nodes decide by up to
//! the skew between the clocks.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Serialize, Serializer};

use crate::config::{Config, StoreConfig};
use crate::store::{
    self, Definitions, LeaseRecord, NodeRecord, RunRecord, Snapshot, Store, StoreError,
};

/// How many of each job's newest runs `status` shows.
pub const RECENT_RUNS: usize = 3;
/// How many `recent_runs` reads are in flight at once.
pub const READ_CONCURRENCY: usize = 16;
/// Bound on connecting and on every store call: `status` makes one attempt, no retries.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `status` could not produce a report. The message is one line and names the store.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot connect to the store, {store}: {}", one_line(&.source.to_string()))]
    Connect { store: String, source: StoreError },
    #[error("cannot read the cluster state from the store, {store}: {}", one_line(&.source.to_string()))]
    Read { store: String, source: StoreError },
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// When the report was made (this machine's clock).
    #[serde(serialize_with = "ser_time")]
    pub generated_at: DateTime<Utc>,
    /// The store, as [`Store::describe`] puts it.
    pub store: String,
    /// The configured lease, in seconds.
    pub lease_s: f64,
    /// One per configured job, in config order.
    pub jobs: Vec<JobStatus>,
    /// Every registered node, sorted by id.
    pub nodes: Vec<NodeStatus>,
}

/// How a job's lease looks; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Held,
    Free,
    Dead,
    Expiring,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Held => "held",
            LeaseState::Free => "free",
            LeaseState::Dead => "dead",
            LeaseState::Expiring => "expiring",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub name: String,
    /// The cron expression as written.
    pub schedule: String,
    pub timezone: String,
    /// What it runs: `say`, `command` or `shell`.
    pub action: &'static str,
    pub state: LeaseState,
    /// The lease's holder (node id); `None` when free.
    pub leader: Option<String>,
    /// The lease's fencing term; 0 when the lease was never taken.
    pub term: i64,
    /// When the current holder acquired the lease (its clock); `None` when free.
    #[serde(serialize_with = "ser_opt_time")]
    pub acquired_at: Option<DateTime<Utc>>,
    /// `generated_at - acquired_at`; `None` when free.
    pub held_for_s: Option<f64>,
    /// The first fire time after `generated_at`.
    #[serde(serialize_with = "ser_opt_time")]
    pub next_fire_time: Option<DateTime<Utc>>,
    /// `jitter` in seconds, when the job has one: each run starts up to this long after its
    /// fire time (a run's `started_at` shows when it did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_s: Option<f64>,
    /// With a jitter: when the run of `next_fire_time` starts.
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_start_time: Option<DateTime<Utc>>,
    /// The newest runs, newest first.
    pub runs: Vec<RunStatus>,
    /// When the live nodes run different definitions of the job (or some lack it): every
    /// live node with its definition digest (`None`: it does not have the job). Empty when
    /// they agree.
    pub drift: Vec<DriftVariant>,
    /// Set while the job is paused (`cronlease pause`).
    pub paused: Option<PausedStatus>,
    /// `false`: declared off in the jobs file (`enabled = false`).
    pub enabled: bool,
    /// Runs asked for with `cronlease trigger` that no node has started yet.
    pub triggers: Vec<TriggerStatus>,
    /// The backfill in progress (`cronlease backfill`), if any.
    pub backfill: Option<BackfillStatus>,
}

/// A pending `cronlease trigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerStatus {
    /// The run's fire time (the request's instant, to the millisecond).
    #[serde(serialize_with = "ser_time")]
    pub fire_time: DateTime<Utc>,
    pub by: String,
    #[serde(serialize_with = "ser_time")]
    pub expires_at: DateTime<Utc>,
}

/// A backfill in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillStatus {
    pub by: String,
    #[serde(serialize_with = "ser_time")]
    pub from: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub to: DateTime<Utc>,
    /// Fire times in the range.
    pub total: u32,
    /// Fire times handled so far (run, or found already run).
    pub done: u32,
    /// The newest fire time handled.
    #[serde(serialize_with = "ser_opt_time")]
    pub cursor: Option<DateTime<Utc>>,
}

/// Who paused a job, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PausedStatus {
    pub by: String,
    #[serde(serialize_with = "ser_time")]
    pub since: DateTime<Utc>,
    pub note: String,
}

/// One node's definition of a job, in [`JobStatus::drift`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftVariant {
    pub node: String,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    #[serde(serialize_with = "ser_time")]
    pub fire_time: DateTime<Utc>,
    pub node: String,
    pub term: i64,
    /// `running`, `ok`, `failed`, `timeout`, `killed`, `replaced`, `stopped`, `skipped` or
    /// `lost` (README: run states).
    pub outcome: String,
    /// Why it was `skipped`, `lost` or `stopped`, or why it `failed` (or timed out) without
    /// an exit code: it could not start (env file, working directory), or a signal ended it.
    pub reason: Option<String>,
    /// It re-ran a lost run (`recover = true`).
    pub recovery: bool,
    /// `manual` (`cronlease trigger`) or `backfill`; `None` for a scheduled run.
    pub trigger: Option<String>,
    /// Who asked for it (with `trigger`).
    pub triggered_by: Option<String>,
    pub exit_code: Option<i32>,
    #[serde(serialize_with = "ser_time")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_time")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at - started_at`, once finished.
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub session: String,
    #[serde(serialize_with = "ser_time")]
    pub started_at: DateTime<Utc>,
    /// The node's `renewed_at`: its wall clock at its last heartbeat write.
    #[serde(serialize_with = "ser_time")]
    pub last_heartbeat_at: DateTime<Utc>,
    /// `generated_at - last_heartbeat_at` (negative if that node's clock is ahead of ours).
    pub heartbeat_age_s: f64,
    /// `heartbeat_age_s` is below the configured lease.
    pub live: bool,
    /// The jobs whose lease this node holds in its current session, sorted.
    pub jobs_held: Vec<String>,
    /// The node's HTTP address, if it serves one.
    pub http: Option<String>,
    /// The node's own estimate of its wall clock's offset from its peers (ms; positive:
    /// ahead), if it has peers.
    pub clock_offset_ms: Option<i64>,
    /// The digest of the job definitions the node runs (`None`: not published).
    pub jobs_digest: Option<String>,
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// RFC 3339 in UTC with a `Z`; fractional seconds only when there are any.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// RFC 3339 in UTC to the second, for the tables.
fn rfc3339_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `b - a` in seconds (fractional, may be negative).
fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// Collapse any line breaks and runs of white space, so an error stays on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a heartbeat stamped `renewed_at` is recent at `now`: younger than `lease`.
fn heartbeat_recent(renewed_at: DateTime<Utc>, now: DateTime<Utc>, lease: Duration) -> bool {
    secs_between(renewed_at, now) < lease.as_secs_f64()
}

/// The state of one lease, given every node record; see the module docs.
pub fn classify(
    lease: Option<&LeaseRecord>,
    nodes: &HashMap<String, NodeRecord>,
    now: DateTime<Utc>,
    lease_duration: Duration,
) -> LeaseState {
    let Some(lease) = lease.filter(|l| !l.is_free()) else {
        return LeaseState::Free;
    };
    match nodes.get(&lease.holder) {
        Some(node) if node.session == lease.session => {
            if heartbeat_recent(node.renewed_at, now, lease_duration) {
                LeaseState::Held
            } else {
                LeaseState::Expiring
            }
        }
        _ => LeaseState::Dead,
    }
}

/// The report from what was read: pure, no store needed. `runs` holds each job's newest runs
/// (any order; sorted newest first here); a job missing from it has none.
pub fn build(
    config: &Config,
    store: String,
    snapshot: &Snapshot,
    runs: &HashMap<String, Vec<RunRecord>>,
    definitions: &HashMap<String, Arc<Definitions>>,
    now: DateTime<Utc>,
) -> ClusterStatus {
    build_keeping(config, store, snapshot, runs, definitions, now, RECENT_RUNS)
}

/// [`build`], keeping each job's newest `keep` runs (the dashboard shows more).
pub fn build_keeping(
    config: &Config,
    store: String,
    snapshot: &Snapshot,
    runs: &HashMap<String, Vec<RunRecord>>,
    definitions: &HashMap<String, Arc<Definitions>>,
    now: DateTime<Utc>,
    keep: usize,
) -> ClusterStatus {
    let lease_duration = config.election.lease;
    // Drift among the live nodes whose definitions are known (by their digest).
    let mut known: Vec<(String, Arc<Definitions>)> = snapshot
        .nodes
        .values()
        .filter(|n| heartbeat_recent(n.renewed_at, now, lease_duration))
        .filter_map(|n| Some((n.id.clone(), definitions.get(&n.jobs_digest)?.clone())))
        .collect();
    known.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
    let drift = crate::node::drift::disagreements(&known, names.iter());
    let jobs = config
        .jobs
        .iter()
        .map(|job| {
            let lease = snapshot.leases.get(&job.name);
            let state = classify(lease, &snapshot.nodes, now, lease_duration);
            let held = lease.filter(|l| !l.is_free());
            let acquired_at = held.and_then(|l| l.acquired_at);
            let mut job_runs: Vec<RunStatus> = runs
                .get(&job.name)
                .map(|rs| rs.iter().map(run_status).collect())
                .unwrap_or_default();
            job_runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
            job_runs.truncate(keep);
            JobStatus {
                name: job.name.clone(),
                schedule: job.schedule.expr.clone(),
                timezone: job.schedule.tz.name().to_string(),
                action: job.action.kind(),
                state,
                leader: held.map(|l| l.holder.clone()),
                term: lease.map_or(0, |l| l.term),
                acquired_at,
                held_for_s: acquired_at.map(|t| secs_between(t, now)),
                next_fire_time: job.schedule.next_after(now),
                jitter_s: job.policy.jitter.map(|j| j.as_secs_f64()),
                next_start_time: job.policy.jitter.and_then(|_| {
                    let next = job.schedule.next_after(now)?;
                    let delay = crate::node::tick::start_delay(job, next);
                    Some(next + chrono::Duration::from_std(delay).unwrap_or_default())
                }),
                runs: job_runs,
                paused: lease.and_then(|l| l.paused.as_ref()).map(|p| PausedStatus {
                    by: p.by.clone(),
                    since: p.at,
                    note: p.note.clone(),
                }),
                enabled: job.enabled,
                triggers: lease
                    .map(|l| {
                        l.requests
                            .triggers
                            .iter()
                            .map(|t| TriggerStatus {
                                fire_time: t.fire_time,
                                by: t.by.clone(),
                                expires_at: t.expires_at,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                backfill: lease.and_then(|l| l.requests.backfill.as_ref()).map(|b| {
                    BackfillStatus {
                        by: b.by.clone(),
                        from: b.from,
                        to: b.to,
                        total: b.total,
                        done: b.done,
                        cursor: b.cursor,
                    }
                }),
                drift: drift
                    .get(&job.name)
                    .into_iter()
                    .flatten()
                    .map(|(node, digest)| DriftVariant {
                        node: node.clone(),
                        digest: digest.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut nodes: Vec<NodeStatus> = snapshot
        .nodes
        .values()
        .map(|n| {
            let mut jobs_held: Vec<String> = config
                .jobs
                .iter()
                .filter(|j| {
                    snapshot
                        .leases
                        .get(&j.name)
                        .is_some_and(|l| l.holder == n.id && l.session == n.session)
                })
                .map(|j| j.name.clone())
                .collect();
            jobs_held.sort();
            NodeStatus {
                id: n.id.clone(),
                session: n.session.clone(),
                started_at: n.started_at,
                last_heartbeat_at: n.renewed_at,
                heartbeat_age_s: secs_between(n.renewed_at, now),
                live: heartbeat_recent(n.renewed_at, now, lease_duration),
                jobs_held,
                http: n.http.clone(),
                clock_offset_ms: n.clock_offset_ms,
                jobs_digest: Some(n.jobs_digest.clone()).filter(|d| !d.is_empty()),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    ClusterStatus {
        generated_at: now,
        store,
        lease_s: lease_duration.as_secs_f64(),
        jobs,
        nodes,
    }
}

pub(crate) fn run_status(r: &RunRecord) -> RunStatus {
    RunStatus {
        fire_time: r.fire_time,
        node: r.node.clone(),
        term: r.term,
        outcome: r.outcome.clone(),
        reason: r.reason.clone(),
        recovery: r.recovery,
        trigger: r.trigger.as_ref().map(|t| t.kind.clone()),
        triggered_by: r.trigger.as_ref().map(|t| t.by.clone()),
        exit_code: r.exit_code,
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_ms: r.finished_at.map(|f| (f - r.started_at).num_milliseconds()),
    }
}

/// Read everything the report needs from `store`: one snapshot and each job's newest runs,
/// at most [`READ_CONCURRENCY`] reads in flight.
pub async fn gather(
    store: &dyn Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<ClusterStatus, StoreError> {
    let names: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
    let snapshot = store.snapshot(&names);
    let runs = futures::stream::iter(names.iter())
        .map(|name| async move {
            store
                .recent_runs(name, RECENT_RUNS)
                .await
                .map(|runs| (name.clone(), runs))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect::<HashMap<String, Vec<RunRecord>>>();
    let (snapshot, runs) = futures::try_join!(snapshot, runs)?;
    // One read of definitions per distinct digest among the nodes (none in a cluster that
    // runs one file: one).
    let mut definitions = HashMap::new();
    for n in snapshot.nodes.values() {
        if n.jobs_digest.is_empty() || definitions.contains_key(&n.jobs_digest) {
            continue;
        }
        if let Some(d) = store.definitions(&n.id).await? {
            if d.digest == n.jobs_digest {
                definitions.insert(d.digest.clone(), Arc::new(d));
            }
        }
    }
    Ok(build(
        config,
        store.describe(),
        &snapshot,
        &runs,
        &definitions,
        now,
    ))
}

/// How the configured store will be reached, for errors before a connection exists.
pub fn describe_config(config: &StoreConfig) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match store::resolve(config) {
        store::Resolved::File { dir, .. } => format!("file store at {}", dir.display()),
        store::Resolved::Redis { url } => {
            format!(
                "redis at {} (namespace {})",
                store::redact_url(&url),
                config.namespace
            )
        }
        store::Resolved::Postgres { url, schema } => format!(
            "postgres at {} (schema {schema}, namespace {})",
            store::redact_url(&url),
            config.namespace
        ),
        store::Resolved::ZooKeeper { hosts } => {
            format!("zookeeper at {hosts} (namespace {})", config.namespace)
        }
        store::Resolved::Datastore => {
            let project = config
                .project
                .clone()
                .or_else(|| env("DATASTORE_PROJECT_ID"))
                .or_else(|| env("GOOGLE_CLOUD_PROJECT"));
            let project = project.map_or(String::new(), |p| format!("project {p}, "));
            match env("DATASTORE_EMULATOR_HOST") {
                Some(host) => format!(
                    "datastore emulator at {} ({project}namespace {})",
                    host.trim(),
                    config.namespace
                ),
                None => format!("datastore ({project}namespace {})", config.namespace),
            }
        }
    }
}

/// Connect (one attempt) and gather, every call bounded by [`STORE_TIMEOUT`].
pub async fn fetch(config: &Config) -> Result<ClusterStatus, StatusError> {
    let store = store::connect(&config.store, STORE_TIMEOUT)
        .await
        .map_err(|source| StatusError::Connect {
            store: describe_config(&config.store),
            source,
        })?;
    gather(store.as_ref(), config, Utc::now())
        .await
        .map_err(|source| StatusError::Read {
            store: store.describe(),
            source,
        })
}

/// The report as one pretty-printed JSON document (with a final newline).
pub fn to_json(status: &ClusterStatus) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(status).map(|mut s| {
        s.push('\n');
        s
    })
}

// ---------------------------------------------------------------------------------------------
// Human output

/// Seconds, compact: `0.4s`, `12s`, `4m12s`, `3h04m`, `2d03h`.
fn fmt_secs(s: f64) -> String {
    if s < 0.0 {
        return format!("-{}", fmt_secs(-s));
    }
    if s < 10.0 {
        return format!("{s:.1}s");
    }
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The configured lease as written in a config: `3s`, `1s 500ms`.
fn fmt_lease(s: f64) -> String {
    match Duration::try_from_secs_f64(s) {
        Ok(d) => {
            humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
        }
        Err(_) => fmt_secs(s),
    }
}

/// A run's duration: `250ms` below a second, else as [`fmt_secs`].
fn fmt_ms(ms: i64) -> String {
    if (0..1000).contains(&ms) {
        format!("{ms}ms")
    } else {
        fmt_secs(ms as f64 / 1000.0)
    }
}

/// `0.4s ago`, or `0.3s ahead` when the writer's clock is ahead of ours.
fn fmt_age(s: f64) -> String {
    if s < 0.0 {
        format!("{} ahead", fmt_secs(-s))
    } else {
        format!("{} ago", fmt_secs(s))
    }
}

/// The STATE cell: anything but `held` is in capitals with a marker, to stand out.
fn state_cell(state: LeaseState) -> &'static str {
    match state {
        LeaseState::Held => "held",
        LeaseState::Free => "FREE",
        LeaseState::Dead => "DEAD !",
        LeaseState::Expiring => "EXPIRING !",
    }
}

/// One line of legend per state that needs explaining.
fn state_legend(state: LeaseState) -> Option<&'static str> {
    match state {
        LeaseState::Held => None,
        LeaseState::Free => Some(
            "FREE: nobody holds the lease (never taken, or released); a live node takes it at \
             its next poll",
        ),
        LeaseState::Dead => Some(
            "DEAD: the holder's session is gone (it stopped, died or restarted); another node \
             takes the lease at its next poll",
        ),
        LeaseState::Expiring => Some(
            "EXPIRING: the holder has not renewed for longer than the lease (its clock vs. \
             ours); others take over once they see its heartbeat stand still for a full lease",
        ),
    }
}

/// Left- or right-aligned columns, two spaces apart, no trailing blanks.
struct Table {
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str], right: &[bool]) -> Table {
        Table {
            right: right.to_vec(),
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The formatted lines, header first.
    fn lines(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (c, cell) in row.iter().enumerate() {
                    if c > 0 {
                        line.push_str("  ");
                    }
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    if self.right.get(c).copied().unwrap_or(false) {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    } else {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }
}

/// The outcome cell of a run: `ok`, `running`, `failed (exit 3)`, `timeout`,
/// `lost (node_gone)`, `skipped (overlap)`; a recovery says so.
fn outcome_cell(run: &RunStatus) -> String {
    let mut cell = match (&run.exit_code, &run.reason) {
        (Some(code), _) if *code != 0 && run.outcome != "ok" => {
            format!("{} (exit {code})", run.outcome)
        }
        (_, Some(reason)) if run.outcome != "ok" && !run.recovery => {
            format!("{} ({reason})", run.outcome)
        }
        _ => run.outcome.clone(),
    };
    if run.recovery {
        cell.push_str(" [recovery]");
    }
    if let Some(kind) = &run.trigger {
        let by = run.triggered_by.as_deref().unwrap_or("?");
        cell.push_str(&format!(" [{kind} by {by}]"));
    }
    cell
}

/// A clock offset for the nodes table: `+60.2s`, `-0.3s`, `-` when unknown.
fn fmt_offset(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("{:+.1}s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

/// The report as two tables (jobs with their last runs underneath, then nodes) and a legend.
pub fn render(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cronlease status at {}: {}, lease {}",
        rfc3339_secs(status.generated_at),
        status.store,
        fmt_lease(status.lease_s)
    );
    out.push('\n');

    // Jobs, each followed by its runs (columns shared by every job's runs).
    let mut jobs = Table::new(
        &[
            "JOB",
            "STATE",
            "LEADER",
            "TERM",
            "HELD FOR",
            "NEXT FIRE (UTC)",
        ],
        &[false, false, false, true, false, false],
    );
    for job in &status.jobs {
        jobs.push(vec![
            job.name.clone(),
            state_cell(job.state).to_string(),
            job.leader.clone().unwrap_or_else(|| "-".into()),
            job.term.to_string(),
            job.held_for_s.map_or_else(|| "-".into(), fmt_secs),
            job.next_fire_time
                .map_or_else(|| "never".into(), rfc3339_secs),
        ]);
    }
    let mut runs = Table::new(&[], &[false, false, false, true, false]);
    runs.rows.clear();
    for job in &status.jobs {
        for run in &job.runs {
            runs.push(vec![
                if run.fire_time.timestamp_subsec_millis() == 0 {
                    rfc3339_secs(run.fire_time)
                } else {
                    crate::node::tick::rfc3339(run.fire_time)
                },
                run.node.clone(),
                outcome_cell(run),
                run.duration_ms.map_or_else(|| "-".into(), fmt_ms),
                format!("term {}", run.term),
            ]);
        }
    }
    let job_lines = jobs.lines();
    let mut run_lines = runs.lines().into_iter();
    let _ = writeln!(out, "{}", job_lines[0]);
    for (job, line) in status.jobs.iter().zip(&job_lines[1..]) {
        let _ = writeln!(out, "{line}");
        if !job.enabled {
            let _ = writeln!(
                out,
                "    DISABLED in the jobs file (enabled = false): never run"
            );
        }
        if let Some(p) = &job.paused {
            let note = if p.note.is_empty() {
                String::new()
            } else {
                format!(": {}", p.note)
            };
            let _ = writeln!(
                out,
                "    PAUSED since {} by {}{note} (cronlease resume {})",
                rfc3339_secs(p.since),
                p.by,
                job.name
            );
        }
        for t in &job.triggers {
            let _ = writeln!(
                out,
                "    TRIGGERED by {} at {}: waiting for the leader (expires {})",
                t.by,
                rfc3339_secs(t.fire_time),
                rfc3339_secs(t.expires_at)
            );
        }
        if let Some(b) = &job.backfill {
            let _ = writeln!(
                out,
                "    BACKFILL {} .. {} by {}: {} of {} done{} (cronlease backfill {} --cancel)",
                rfc3339_secs(b.from),
                rfc3339_secs(b.to),
                b.by,
                b.done,
                b.total,
                b.cursor
                    .map(|c| format!(", up to {}", rfc3339_secs(c)))
                    .unwrap_or_default(),
                job.name
            );
        }
        if !job.drift.is_empty() {
            let variants: Vec<crate::node::drift::Variant> = job
                .drift
                .iter()
                .map(|v| (v.node.clone(), v.digest.clone()))
                .collect();
            let _ = writeln!(
                out,
                "    DRIFT ! the nodes run different definitions: {}",
                crate::node::drift::describe(&variants)
            );
        }
        if job.runs.is_empty() {
            let _ = writeln!(out, "    (no runs yet)");
        }
        for _ in &job.runs {
            if let Some(run) = run_lines.next() {
                let _ = writeln!(out, "    {run}");
            }
        }
    }
    if status.jobs.is_empty() {
        let _ = writeln!(out, "(no jobs configured)");
    }
    out.push('\n');

    // Nodes.
    if status.nodes.is_empty() {
        let _ = writeln!(
            out,
            "No node is registered: no `cronlease run` is up (or none has reached the store)."
        );
    } else {
        let mut nodes = Table::new(
            &["NODE", "STARTED", "LAST HEARTBEAT", "CLOCK", "HTTP", "JOBS"],
            &[false, false, false, true, false, false],
        );
        for node in &status.nodes {
            let mut heartbeat = fmt_age(node.heartbeat_age_s);
            if !node.live {
                heartbeat.push_str("  STALE !");
            }
            nodes.push(vec![
                node.id.clone(),
                rfc3339_secs(node.started_at),
                heartbeat,
                fmt_offset(node.clock_offset_ms),
                node.http.clone().unwrap_or_else(|| "-".into()),
                if node.jobs_held.is_empty() {
                    "-".into()
                } else {
                    format!("{} ({})", node.jobs_held.len(), node.jobs_held.join(", "))
                },
            ]);
        }
        for line in nodes.lines() {
            let _ = writeln!(out, "{line}");
        }
    }

    // Legend for whatever needs attention.
    let mut legend: Vec<&str> = Vec::new();
    for state in [LeaseState::Dead, LeaseState::Expiring, LeaseState::Free] {
        if status.jobs.iter().any(|j| j.state == state) {
            legend.extend(state_legend(state));
        }
    }
    if status.nodes.iter().any(|n| !n.live) {
        legend.push("STALE: no heartbeat for longer than the lease (its clock vs. ours)");
    }
    if !legend.is_empty() {
        out.push('\n');
        for l in legend {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use crate::store::{Claim, StoreResult};

    const CONFIG: &str = r#"
[election]
lease = "10s"
renew = "2s"
poll = "1s"

[[job]]
name = "go_preacher"
schedule = "*/10 * * * * *"
timezone = "Europe/Berlin"
say = "Go is the best modern programming language"

[[job]]
name = "backup"
schedule = "0 */5 * * * *"
command = ["true"]

[[job]]
name = "nightly"
schedule = "30 2 * * *"
shell = "true"

[[job]]
name = "reports"
schedule = "0 0 * * * *"
shell = "true"
"#;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        t("2026-11-22T10:00:12.400Z")
    }

    fn node(id: &str, session: &str, renewed_at: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            session: session.into(),
            heartbeat: 7,
            started_at: t("2026-11-22T09:55:58Z"),
            renewed_at: t(renewed_at),
            jobs: Vec::new(),
            http: None,
            lease_epoch: 0,
            ..Default::default()
        }
    }

    fn lease(holder: &str, session: &str, term: i64, acquired: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            session: session.into(),
            term,
            acquired_at: Some(t(acquired)),
            ..LeaseRecord::default()
        }
    }

    fn run(
        job: &str,
        fire: &str,
        node: &str,
        term: i64,
        outcome: &str,
        ms: Option<i64>,
    ) -> RunRecord {
        let started = t(fire) + chrono::Duration::milliseconds(3);
        RunRecord {
            job: job.into(),
            fire_time: t(fire),
            node: node.into(),
            term,
            started_at: started,
            finished_at: ms.map(|ms| started + chrono::Duration::milliseconds(ms)),
            outcome: outcome.into(),
            exit_code: match outcome {
                "ok" => Some(0),
                "failed" => Some(3),
                _ => None,
            },
            attempts: 1,
            ..Default::default()
        }
    }

    /// zippy leads go_preacher; backup's holder restarted (dead); nightly was never taken
    /// (free); reports is held by a node whose heartbeat stalled (expiring).
    fn sample() -> (Config, Snapshot, HashMap<String, Vec<RunRecord>>) {
        let config = crate::config::parse("jobs.toml", CONFIG).unwrap();
        let mut snapshot = Snapshot::default();
        let mut zippy = node("zippy-battle-9585", "s1", "2026-11-22T10:00:12Z");
        zippy.http = Some("127.0.0.1:9101".into());
        zippy.clock_offset_ms = Some(120);
        snapshot.nodes.insert(zippy.id.clone(), zippy);
        snapshot.nodes.insert(
            "quiet-otter-0412".into(),
            node("quiet-otter-0412", "s3-new", "2026-11-22T10:00:11.900Z"),
        );
        let mut stuck = node("stuck-moose-0001", "s4", "2026-11-22T09:59:50Z");
        stuck.clock_offset_ms = Some(-61_500);
        snapshot.nodes.insert(stuck.id.clone(), stuck);
        snapshot.leases.insert(
            "go_preacher".into(),
            lease("zippy-battle-9585", "s1", 3, "2026-11-22T09:56:00Z"),
        );
        snapshot.leases.insert(
            "backup".into(),
            lease("quiet-otter-0412", "s3-old", 5, "2026-11-22T09:00:00Z"),
        );
        snapshot.leases.insert(
            "reports".into(),
            lease("stuck-moose-0001", "s4", 1, "2026-11-22T08:00:00Z"),
        );
        let mut runs = HashMap::new();
        runs.insert(
            "go_preacher".to_string(),
            vec![
                // Out of order on purpose: build sorts newest first.
                run(
                    "go_preacher",
                    "2026-11-22T09:59:50Z",
                    "zippy-battle-9585",
                    3,
                    "ok",
                    Some(5012),
                ),
                run(
                    "go_preacher",
                    "2026-11-22T10:00:10Z",
                    "zippy-battle-9585",
                    3,
                    "running",
                    None,
                ),
                run(
                    "go_preacher",
                    "2026-11-22T10:00:00Z",
                    "zippy-battle-9585",
                    3,
                    "failed",
                    Some(250),
                ),
            ],
        );
        let mut lost = run(
            "backup",
            "2026-11-22T09:50:00Z",
            "quiet-otter-0412",
            4,
            "lost",
            Some(9_000),
        );
        lost.reason = Some("node_restarted".into());
        runs.insert(
            "backup".to_string(),
            vec![
                run(
                    "backup",
                    "2026-11-22T09:55:00Z",
                    "quiet-otter-0412",
                    5,
                    "timeout",
                    Some(120_000),
                ),
                lost,
            ],
        );
        (config, snapshot, runs)
    }

    fn sample_status() -> ClusterStatus {
        let (config, snapshot, runs) = sample();
        build(
            &config,
            "datastore emulator at http://127.0.0.1:8081 (project p, namespace cronlease)".into(),
            &snapshot,
            &runs,
            &HashMap::new(),
            now(),
        )
    }

    #[test]
    fn classify_covers_every_state() {
        let lease_d = Duration::from_secs(10);
        let mut nodes = HashMap::new();
        nodes.insert("a".to_string(), node("a", "s1", "2026-11-22T10:00:05Z"));
        let n = now();
        // No record, or no holder.
        assert_eq!(classify(None, &nodes, n, lease_d), LeaseState::Free);
        let released = LeaseRecord {
            term: 4,
            ..LeaseRecord::default()
        };
        assert_eq!(
            classify(Some(&released), &nodes, n, lease_d),
            LeaseState::Free
        );
        // Held by a live session.
        let l = lease("a", "s1", 4, "2026-11-22T10:00:00Z");
        assert_eq!(classify(Some(&l), &nodes, n, lease_d), LeaseState::Held);
        // The holder restarted: another session.
        let old = lease("a", "s0", 4, "2026-11-22T10:00:00Z");
        assert_eq!(classify(Some(&old), &nodes, n, lease_d), LeaseState::Dead);
        // The holder's record is gone.
        let gone = lease("b", "s1", 4, "2026-11-22T10:00:00Z");
        assert_eq!(classify(Some(&gone), &nodes, n, lease_d), LeaseState::Dead);
        // Same session, heartbeat older than the lease (7.4 s old against a 5 s lease).
        assert_eq!(
            classify(Some(&l), &nodes, n, Duration::from_secs(5)),
            LeaseState::Expiring
        );
        // Exactly one lease old is no longer recent.
        assert_eq!(
            classify(Some(&l), &nodes, n, Duration::from_millis(7400)),
            LeaseState::Expiring
        );
        assert_eq!(
            classify(Some(&l), &nodes, n, Duration::from_millis(7401)),
            LeaseState::Held
        );
        // A writer whose clock is ahead of ours: negative age, still recent.
        nodes.insert("a".to_string(), node("a", "s1", "2026-11-22T10:00:13Z"));
        assert_eq!(classify(Some(&l), &nodes, n, lease_d), LeaseState::Held);
    }

    #[test]
    fn build_fills_jobs_and_nodes() {
        let s = sample_status();
        assert_eq!(s.lease_s, 10.0);
        let names: Vec<&str> = s.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["go_preacher", "backup", "nightly", "reports"]);
        let states: Vec<LeaseState> = s.jobs.iter().map(|j| j.state).collect();
        assert_eq!(
            states,
            [
                LeaseState::Held,
                LeaseState::Dead,
                LeaseState::Free,
                LeaseState::Expiring
            ]
        );
        let go = &s.jobs[0];
        assert_eq!(go.leader.as_deref(), Some("zippy-battle-9585"));
        assert_eq!(go.term, 3);
        assert_eq!(go.timezone, "Europe/Berlin");
        assert_eq!(go.schedule, "*/10 * * * * *");
        assert_eq!(go.held_for_s, Some(252.4));
        assert_eq!(go.next_fire_time, Some(t("2026-11-22T10:00:20Z")));
        let fires: Vec<DateTime<Utc>> = go.runs.iter().map(|r| r.fire_time).collect();
        assert_eq!(
            fires,
            [
                t("2026-11-22T10:00:10Z"),
                t("2026-11-22T10:00:00Z"),
                t("2026-11-22T09:59:50Z")
            ]
        );
        assert_eq!(go.runs[0].duration_ms, None);
        assert_eq!(go.runs[2].duration_ms, Some(5012));
        let nightly = &s.jobs[2];
        assert_eq!((nightly.leader.as_deref(), nightly.term), (None, 0));
        assert_eq!((nightly.acquired_at, nightly.held_for_s), (None, None));
        assert!(nightly.runs.is_empty());

        let ids: Vec<&str> = s.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["quiet-otter-0412", "stuck-moose-0001", "zippy-battle-9585"]
        );
        // quiet-otter restarted: backup's lease names its old session, so it holds nothing.
        assert!(s.nodes[0].jobs_held.is_empty());
        assert!(s.nodes[0].live);
        assert_eq!(s.nodes[1].jobs_held, ["reports"]);
        assert!(!s.nodes[1].live);
        assert_eq!(s.nodes[1].heartbeat_age_s, 22.4);
        assert_eq!(s.nodes[2].jobs_held, ["go_preacher"]);
        assert_eq!(s.nodes[2].http.as_deref(), Some("127.0.0.1:9101"));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let s = sample_status();
        let v: serde_json::Value = serde_json::from_str(&to_json(&s).unwrap()).unwrap();
        assert_eq!(v["generated_at"], "2026-11-22T10:00:12.400Z");
        assert_eq!(v["lease_s"], 10.0);
        assert!(v["store"].as_str().unwrap().contains("127.0.0.1:8081"));
        let go = &v["jobs"][0];
        assert_eq!(go["state"], "held");
        assert_eq!(go["leader"], "zippy-battle-9585");
        assert_eq!(go["term"], 3);
        assert_eq!(go["acquired_at"], "2026-11-22T09:56:00Z");
        assert_eq!(go["next_fire_time"], "2026-11-22T10:00:20Z");
        assert_eq!(go["runs"][0]["outcome"], "running");
        assert_eq!(go["runs"][0]["finished_at"], serde_json::Value::Null);
        assert_eq!(go["runs"][1]["exit_code"], 3);
        assert_eq!(go["runs"][2]["duration_ms"], 5012);
        assert_eq!(go["runs"][2]["started_at"], "2026-11-22T09:59:50.003Z");
        assert_eq!(v["jobs"][1]["state"], "dead");
        assert_eq!(v["jobs"][2]["state"], "free");
        assert_eq!(v["jobs"][2]["leader"], serde_json::Value::Null);
        assert_eq!(v["jobs"][3]["state"], "expiring");
        let zippy = &v["nodes"][2];
        assert_eq!(zippy["last_heartbeat_at"], "2026-11-22T10:00:12Z");
        assert_eq!(zippy["live"], true);
        assert_eq!(zippy["jobs_held"][0], "go_preacher");
        assert_eq!(zippy["http"], "127.0.0.1:9101");
        assert_eq!(v["nodes"][0]["http"], serde_json::Value::Null);
    }

    #[test]
    fn render_lines_up_and_marks_what_needs_attention() {
        let out = render(&sample_status());
        let expected = "\
cronlease status at 2026-11-22T10:00:12Z: datastore emulator at http://127.0.0.1:8081 (project p, namespace cronlease), lease 10s

JOB          STATE       LEADER             TERM  HELD FOR  NEXT FIRE (UTC)
go_preacher  held        zippy-battle-9585     3  4m12s     2026-11-22T10:00:20Z
    2026-11-22T10:00:10Z  zippy-battle-9585  running                    -  term 3
    2026-11-22T10:00:00Z  zippy-battle-9585  failed (exit 3)        250ms  term 3
    2026-11-22T09:59:50Z  zippy-battle-9585  ok                      5.0s  term 3
backup       DEAD !      quiet-otter-0412      5  1h00m     2026-11-22T10:05:00Z
    2026-11-22T09:55:00Z  quiet-otter-0412   timeout                2m00s  term 5
    2026-11-22T09:50:00Z  quiet-otter-0412   lost (node_restarted)   9.0s  term 4
nightly      FREE        -                     0  -         2026-11-23T02:30:00Z
    (no runs yet)
reports      EXPIRING !  stuck-moose-0001      1  2h00m     2026-11-22T11:00:00Z
    (no runs yet)

NODE               STARTED               LAST HEARTBEAT     CLOCK  HTTP            JOBS
quiet-otter-0412   2026-11-22T09:55:58Z  0.5s ago               -  -               -
stuck-moose-0001   2026-11-22T09:55:58Z  22s ago  STALE !  -61.5s  -               1 (reports)
zippy-battle-9585  2026-11-22T09:55:58Z  0.4s ago           +0.1s  127.0.0.1:9101  1 (go_preacher)

DEAD: the holder's session is gone (it stopped, died or restarted); another node takes the lease at its next poll
EXPIRING: the holder has not renewed for longer than the lease (its clock vs. ours); others take over once they see its heartbeat stand still for a full lease
FREE: nobody holds the lease (never taken, or released); a live node takes it at its next poll
STALE: no heartbeat for longer than the lease (its clock vs. ours)
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn drift_between_live_nodes_is_marked_under_the_job() {
        let (config, mut snapshot, runs) = sample();
        let names: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
        let defs = |backup: Option<&str>| {
            let mut jobs: std::collections::BTreeMap<String, String> = names
                .iter()
                .map(|n| (n.clone(), "same".to_string()))
                .collect();
            match backup {
                Some(d) => jobs.insert("backup".into(), d.into()),
                None => jobs.remove("backup"),
            };
            Arc::new(Definitions {
                digest: format!("{backup:?}"),
                jobs,
            })
        };
        let (one, two) = (defs(Some("d1")), defs(None));
        let mut definitions = HashMap::new();
        for (id, d) in [("zippy-battle-9585", &one), ("quiet-otter-0412", &two)] {
            snapshot.nodes.get_mut(id).unwrap().jobs_digest = d.digest.clone();
            definitions.insert(d.digest.clone(), d.clone());
        }
        let s = build(
            &config,
            "store".into(),
            &snapshot,
            &runs,
            &definitions,
            now(),
        );
        let backup = s.jobs.iter().find(|j| j.name == "backup").unwrap();
        assert_eq!(
            backup.drift,
            vec![
                DriftVariant {
                    node: "quiet-otter-0412".into(),
                    digest: None
                },
                DriftVariant {
                    node: "zippy-battle-9585".into(),
                    digest: Some("d1".into())
                },
            ]
        );
        assert!(s
            .jobs
            .iter()
            .filter(|j| j.name != "backup")
            .all(|j| j.drift.is_empty()));
        let out = render(&s);
        assert!(
            out.contains(
                "    DRIFT ! the nodes run different definitions: \
                 quiet-otter-0412=absent, zippy-battle-9585=d1\n"
            ),
            "{out}"
        );
        assert_eq!(
            s.nodes
                .iter()
                .find(|n| n.id == "zippy-battle-9585")
                .unwrap()
                .jobs_digest,
            Some(one.digest.clone())
        );
    }

    #[test]
    fn render_without_nodes_says_so() {
        let config = crate::config::parse("jobs.toml", CONFIG).unwrap();
        let s = build(
            &config,
            "store".into(),
            &Snapshot::default(),
            &HashMap::new(),
            &HashMap::new(),
            now(),
        );
        assert!(s.jobs.iter().all(|j| j.state == LeaseState::Free));
        let out = render(&s);
        assert!(out.contains("\nNo node is registered"), "{out}");
        assert!(!out.contains("NODE "), "{out}");
        assert!(!out.contains("DEAD"), "{out}");
        assert_eq!(out.matches("(no runs yet)").count(), 4, "{out}");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(fmt_secs(0.0), "0.0s");
        assert_eq!(fmt_secs(0.44), "0.4s");
        assert_eq!(fmt_secs(9.96), "10.0s");
        assert_eq!(fmt_secs(59.9), "59s");
        assert_eq!(fmt_secs(252.4), "4m12s");
        assert_eq!(fmt_secs(3_600.0 * 3.0 + 240.0), "3h04m");
        assert_eq!(fmt_secs(86_400.0 * 2.0 + 3_600.0 * 3.0), "2d03h");
        assert_eq!(fmt_secs(-1.5), "-1.5s");
        assert_eq!(fmt_ms(0), "0ms");
        assert_eq!(fmt_ms(999), "999ms");
        assert_eq!(fmt_ms(1000), "1.0s");
        assert_eq!(fmt_lease(3.0), "3s");
        assert_eq!(fmt_lease(1.5), "1s 500ms");
        assert_eq!(fmt_age(0.4), "0.4s ago");
        assert_eq!(fmt_age(-0.3), "0.3s ahead");
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }

    /// A store that only answers the two reads `gather` makes.
    struct Fake {
        snapshot: Snapshot,
        runs: HashMap<String, Vec<RunRecord>>,
        asked: Mutex<Vec<(String, usize)>>,
        fail_runs: bool,
    }

    #[async_trait]
    impl Store for Fake {
        fn describe(&self) -> String {
            "fake store".into()
        }
        async fn put_node(&self, _: &NodeRecord) -> StoreResult<()> {
            unreachable!("status writes nothing")
        }
        async fn delete_node(&self, _: &str) -> StoreResult<()> {
            unreachable!("status writes nothing")
        }
        async fn delete_node_if(&self, _: &str, _: &str, _: i64) -> StoreResult<bool> {
            unreachable!("status writes nothing")
        }
        async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
            Ok(self.snapshot.nodes.clone())
        }
        async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
            let mut l = self.snapshot.leases.clone();
            l.retain(|k, _| jobs.contains(k));
            Ok(l)
        }
        async fn acquire_many(&self, _: &[crate::store::Acquire]) -> StoreResult<Vec<String>> {
            unreachable!("status writes nothing")
        }
        async fn release(&self, _: &[String], _: &str, _: &str) -> StoreResult<usize> {
            unreachable!("status writes nothing")
        }
        async fn claim(&self, _: &RunRecord, _: &str) -> StoreResult<Claim> {
            unreachable!("status writes nothing")
        }
        async fn finish(&self, _: &RunRecord) -> StoreResult<bool> {
            unreachable!("status writes nothing")
        }
        async fn get_run(&self, _: &str, _: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
            unreachable!("status does not ask")
        }
        async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
            unreachable!("status does not ask")
        }
        async fn put_definitions(&self, _: &str, _: &crate::store::Definitions) -> StoreResult<()> {
            unreachable!("status does not write")
        }
        async fn definitions(&self, _: &str) -> StoreResult<Option<crate::store::Definitions>> {
            Ok(None)
        }
        async fn set_pause(&self, _: &str, _: Option<&crate::store::Pause>) -> StoreResult<bool> {
            unreachable!("status does not write")
        }
        async fn change_request(
            &self,
            _: &str,
            _: &crate::store::RequestChange,
        ) -> StoreResult<bool> {
            unreachable!("status does not write")
        }
        async fn control_epoch(&self) -> StoreResult<i64> {
            unreachable!("status does not write")
        }
        async fn pruned_until(&self, _: &str) -> StoreResult<Option<DateTime<Utc>>> {
            unreachable!("status does not write")
        }
        async fn close_orphan(
            &self,
            _: &RunRecord,
            _: &str,
            _: &crate::store::Fence,
        ) -> StoreResult<Claim> {
            unreachable!("status writes nothing")
        }
        async fn runs(&self, _: &str) -> StoreResult<Vec<RunRecord>> {
            unreachable!("status reads only the newest runs")
        }
        async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
            self.asked.lock().unwrap().push((job.to_string(), limit));
            if self.fail_runs && job == "nightly" {
                return Err(StoreError::Unavailable("no answer".into()));
            }
            let mut runs = self.runs.get(job).cloned().unwrap_or_default();
            runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
            runs.truncate(limit);
            Ok(runs)
        }
        async fn prune_runs(&self, _: &str, _: usize) -> StoreResult<usize> {
            unreachable!("status writes nothing")
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn gather_reads_every_job_once_and_builds_the_same_report() {
        let (config, snapshot, runs) = sample();
        let fake = Fake {
            snapshot: snapshot.clone(),
            runs: runs.clone(),
            asked: Mutex::new(Vec::new()),
            fail_runs: false,
        };
        let got = block_on(gather(&fake, &config, now())).unwrap();
        let mut asked = fake.asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(
            asked,
            [
                ("backup".to_string(), RECENT_RUNS),
                ("go_preacher".to_string(), RECENT_RUNS),
                ("nightly".to_string(), RECENT_RUNS),
                ("reports".to_string(), RECENT_RUNS)
            ]
        );
        assert_eq!(
            got,
            build(
                &config,
                "fake store".into(),
                &snapshot,
                &runs,
                &HashMap::new(),
                now()
            )
        );
    }

    #[test]
    fn gather_fails_on_a_failed_read() {
        let (config, snapshot, runs) = sample();
        let fake = Fake {
            snapshot,
            runs,
            asked: Mutex::new(Vec::new()),
            fail_runs: true,
        };
        let err = block_on(gather(&fake, &config, now())).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }

    #[test]
    fn errors_name_the_store_on_one_line() {
        let e = StatusError::Read {
            store: "datastore emulator at http://127.0.0.1:9 (project p, namespace n)".into(),
            source: StoreError::Unavailable("Unavailable: tcp connect error:\n  refused".into()),
        };
        assert_eq!(
            e.to_string(),
            "cannot read the cluster state from the store, datastore emulator at \
             http://127.0.0.1:9 (project p, namespace n): store unavailable: Unavailable: tcp \
             connect error: refused"
        );
    }
}
