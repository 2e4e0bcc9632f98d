//! The storage seam: one small trait, storage only.
//!
//! Timing lives in [`crate::node::session`] and [`crate::node::election`]; a store never judges whether a
//! lease has expired. It offers atomic compare-and-set on leases, a tick claim that succeeds
//! once, the node records that carry heartbeats, and batched reads. Every backend must pass the
//! contract suite in `tests/store_contract.rs`.
//!
//! Records:
//! - [`NodeRecord`]: one per live node process, keyed by node id. Its `session` is fresh for
//!   every process start (and every lapse of the node's renew deadline); its `heartbeat` counter
//!   is bumped by one write per renew period. A lease lives exactly as long as its holder's
//!   session: observers watch the heartbeat change on their own monotonic clock.
//! - [`LeaseRecord`]: one per job. `holder` empty means free. `term` is the fencing token: it
//!   grows by one on every acquisition and never goes back.
//! - [`Definitions`]: one per node, the digests of the job definitions it runs (see
//!   [`crate::node::drift`]); deleted with the node record.
//! - [`RunRecord`]: one per executed tick, keyed `{job}@{fire time}` ([`time_key`]: unix
//!   seconds, with milliseconds for a manual run). Inserting it is the claim; a second insert
//!   for the same fire time fails.
//! - The control epoch: one counter per namespace, bumped with every change an operator makes
//!   (pause, resume, trigger and backfill requests). Nodes read it every poll and re-read the
//!   leases, where those changes live ([`Requests`]), only when it moved.
//!
//! Backends: [`datastore`] (Google Cloud Datastore, or its emulator: nodes on many hosts),
//! [`file`] (a directory shared by the processes of one host), `redis`, `zookeeper` and
//! `postgres` (cargo features, on by default); what they all decide alike is in [`rules`]. Which one a config means is
//! decided by [`resolve`], from the config and the environment.
pub mod datastore;
pub mod file;
mod json_records;
pub mod metered;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
pub mod postgres_tls;
#[cfg(feature = "redis")]
pub mod redis;
pub mod requests;
pub mod rules;
#[cfg(test)]
pub mod testing;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Backend, StoreConfig};

pub use requests::{
    BackfillRequest, RequestChange, Requests, RunTrigger, TriggerRequest, BACKFILL, MANUAL,
    MAX_PENDING_TRIGGERS,
};

/// What a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time; the call may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered but refused: bad configuration, permissions, a malformed record.
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A node's session record, written by the node itself once per renew period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRecord {
    pub id: String,
    /// Fresh per process start and per lapsed renew deadline.
    pub session: String,
    /// Bumped on every renewal; observers only ever compare it for change.
    pub heartbeat: i64,
    /// Informational only: never compared with another node's clock.
    pub started_at: DateTime<Utc>,
    /// Informational only, for `cronlease status`: this node's wall clock at the write.
    pub renewed_at: DateTime<Utc>,
    /// The jobs this node believes it leads (informational), or, once it is `leaving`, the
    /// jobs it keeps until their runs end.
    pub jobs: Vec<String>,
    /// Informational: the node's HTTP address (`--http`), if it serves one.
    pub http: Option<String>,
    /// Bumped by the node after every change it made to a lease (acquired, released), and
    /// written at once. Observers re-read the leases only when some node's `lease_epoch` or
    /// session changed ([`crate::node::election`]); records written before it existed read as 0.
    pub lease_epoch: i64,
    /// Fresh per process start and kept across session lapses: a run record claimed by this
    /// process stays alive while this value is in the node's record (see [`RunRecord::process`]).
    /// Empty in records written before it existed.
    pub process: String,
    /// Informational: this node's estimate of its wall clock's offset from its peers', in
    /// milliseconds (positive: ahead). `None` until it has peers to compare with.
    pub clock_offset_ms: Option<i64>,
    /// The digest of the job definitions this node runs ([`Definitions::digest`]); peers read
    /// its [`Definitions`] only when this differs from theirs. Empty in records written before
    /// it existed (such a node is taken to know every job).
    pub jobs_digest: String,
    /// The node is stopping: it takes no more leases, peers place nothing on it
    /// ([`crate::node::placement`]), and its leases of jobs not in `jobs` (those with no run
    /// going on it) are free for peers to take from it as they stand, at their next poll,
    /// without waiting for it to release them. `jobs` only shrinks from then on, so a peer
    /// reading an older leaving record never takes a lease the node still keeps. False in
    /// records written before it existed.
    pub leaving: bool,
}

/// The job definitions a node runs: job name → digest of its definition
/// ([`crate::node::jobs::digest`]), and `digest`, a digest of the whole map. Written by the node when
/// they change (start, reload), before its [`NodeRecord`] shows the new `jobs_digest`; deleted
/// with the node record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Definitions {
    pub digest: String,
    pub jobs: std::collections::BTreeMap<String, String>,
}

/// A job's lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// The holder's node id; empty when free.
    pub holder: String,
    /// The holder's session; the lease dies with it.
    pub session: String,
    /// Fencing token: +1 on every acquisition, never decreases.
    pub term: i64,
    /// Informational only.
    pub acquired_at: Option<DateTime<Utc>>,
    /// Set while an operator has the job paused (`cronlease pause`): no claim is accepted.
    /// Only [`Store::set_pause`] changes it; acquire and release keep it as stored.
    pub paused: Option<Box<Pause>>,
    /// When the job was last resumed: fire times at or before it are never caught up (they
    /// fell in the pause). Only [`Store::set_pause`] changes it.
    pub resumed_at: Option<DateTime<Utc>>,
    /// Pending operator requests (trigger, backfill). Only [`Store::change_request`] changes
    /// them; acquire and release keep them as stored.
    pub requests: Requests,
}

/// Who paused a job, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pause {
    /// `user@host` of whoever ran `cronlease pause`.
    pub by: String,
    pub at: DateTime<Utc>,
    /// Free text from `--note`; may be empty.
    pub note: String,
}

impl LeaseRecord {
    pub fn is_free(&self) -> bool {
        self.holder.is_empty()
    }
}

/// What the store held when an observer looked: the CAS precondition of [`Store::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The lease as seen; `None` if it did not exist.
    pub lease: Option<LeaseRecord>,
    /// The holder's node record as seen (session, heartbeat); `None` if it did not exist or the
    /// lease is free.
    pub holder_node: Option<(String, i64)>,
    /// The holder is stopping and handed this lease over ([`NodeRecord::leaving`]): its record
    /// is not part of the compare (its heartbeat still moves), only the lease is.
    pub handed_over: bool,
}

impl Observed {
    /// The holder observed: empty when the lease was free or absent.
    pub fn holder(&self) -> &str {
        self.lease.as_ref().map_or("", |l| l.holder.as_str())
    }

    /// The holder whose node record the compare looks at: none for a free lease, a holder
    /// observed gone, or one that handed the lease over ([`Observed::still`]). A backend needs
    /// to read only this record.
    pub fn holder_to_check(&self) -> Option<&str> {
        let holder = self.holder();
        (self.holder_node.is_some() && !self.handed_over && !holder.is_empty()).then_some(holder)
    }

    /// The compare of every acquisition, the same on every backend: the stored lease is the
    /// observed one (holder, session, term, pause and resume; `acquired_at` is informational
    /// and the requests are kept as stored, so neither is compared), and the observed holder's
    /// node record still shows the (session, heartbeat) seen (`holder_now`, `None` when the
    /// record is gone; not looked at for a free lease). A holder observed gone
    /// (`holder_node: None`) ended its session for good (a session is never written again
    /// once its record is deleted): a backend may skip reading its record
    /// ([`datastore`] does, so that many transactions taking a dead node's leases do not all
    /// read its record). The same holds for a lease `handed_over` by a leaving holder: a
    /// leaving node's kept jobs only shrink and a new process has a new session, so the lease
    /// compare alone suffices ([`Observed::holder_to_check`]).
    pub fn still(&self, lease_now: Option<&LeaseRecord>, holder_now: Option<(&str, i64)>) -> bool {
        let same_lease = match (lease_now, self.lease.as_ref()) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.holder == b.holder
                    && a.session == b.session
                    && a.term == b.term
                    && a.paused == b.paused
                    && a.resumed_at == b.resumed_at
            }
            _ => false,
        };
        same_lease
            && (self.holder().is_empty()
                || self.handed_over
                || holder_now == self.holder_node.as_ref().map(|(s, h)| (s.as_str(), *h)))
    }
}

/// At most this many leases go in one [`Store::acquire_many`]: Datastore commits at most 500
/// mutations in one transaction, and every backend keeps the same bound.
pub const ACQUIRE_BATCH: usize = 500;

/// One compare-and-set of [`Store::acquire_many`]: take `job`'s lease as `new` if it is still
/// as `observed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    pub job: String,
    pub observed: Observed,
    pub new: LeaseRecord,
}

impl Acquire {
    /// What is written: `new` with the pause, the resume and the requests as stored (they are
    /// not the acquirer's to change).
    pub fn record(&self, stored: Option<&LeaseRecord>) -> LeaseRecord {
        LeaseRecord {
            paused: stored.and_then(|l| l.paused.clone()),
            resumed_at: stored.and_then(|l| l.resumed_at),
            requests: stored.map(|l| l.requests.clone()).unwrap_or_default(),
            ..self.new.clone()
        }
    }
}

/// One tick's record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunRecord {
    pub job: String,
    pub fire_time: DateTime<Utc>,
    pub node: String,
    pub term: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running` until finished, then `ok`, `failed`, `timeout`, `killed`, `replaced` (stopped
    /// for a newer run), `stopped` (its node lost the lease, `on_lease_lost = "stop"`),
    /// `skipped` (claimed, not run: see `reason`) or `lost` (its node died while it ran).
    pub outcome: String,
    pub exit_code: Option<i32>,
    /// Attempts made under this claim (retries included); the outcome is the last one's. 0 for
    /// `skipped`; records written before the field existed read as 1.
    pub attempts: u32,
    /// The session that claimed it (empty in records written before it existed).
    pub session: String,
    /// The claiming node's process ([`NodeRecord::process`]): a `running` record whose process
    /// is no longer in its node's record (or whose node stopped heartbeating) is an orphan.
    pub process: String,
    /// Why a run is `skipped`, `lost` or `stopped` (`overlap`, `lease_lost`,
    /// `claim_unconfirmed`, `node_gone`, ...), or why it `failed` (or timed out) without an
    /// exit code (it could not start: env file, working directory; a signal ended it); `None`
    /// otherwise.
    pub reason: Option<String>,
    /// This record is the re-run of a lost run (`recover = true`); a recovery that is lost in
    /// turn is closed, never recovered again.
    pub recovery: bool,
    /// What started it when not its schedule (`cronlease trigger`, `cronlease backfill`); its
    /// claim requires the request to be pending in the job's lease record and is not refused
    /// while the job is paused. `None` in records written before it existed.
    pub trigger: Option<RunTrigger>,
    /// The tail of what the run printed (stdout and stderr lines in the order seen), at most
    /// the job's `output_limit`; empty when it printed nothing (or in older records).
    pub output: String,
    /// Bytes of output dropped before `output` (0: `output` is all of it).
    pub output_cut: u64,
}

/// A write allowed only to a job's current leader: the job's lease must be held by `node` in
/// `session` with `term`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub session: String,
    pub term: i64,
}

/// What `RunRecord::outcome` says while a run is going.
pub const RUNNING: &str = "running";

impl RunRecord {
    /// A new `running` record of `job` at `fire_time`, claimed now by `node` under `session`
    /// with `term`, in process `process`: what a claim inserts.
    pub fn claimed(
        job: &str,
        fire_time: DateTime<Utc>,
        node: &str,
        term: i64,
        session: &str,
        process: &str,
    ) -> RunRecord {
        RunRecord {
            job: job.into(),
            fire_time,
            node: node.into(),
            term,
            started_at: Utc::now(),
            finished_at: None,
            outcome: RUNNING.into(),
            exit_code: None,
            attempts: 1,
            session: session.into(),
            process: process.into(),
            reason: None,
            recovery: false,
            trigger: None,
            output: String::new(),
            output_cut: 0,
        }
    }

    /// This claimed run, closed as `skipped` for `reason` now (no attempt made).
    pub fn skipped(self, reason: &str) -> RunRecord {
        RunRecord {
            outcome: "skipped".into(),
            reason: Some(reason.into()),
            attempts: 0,
            finished_at: Some(Utc::now()),
            ..self
        }
    }

    /// The run's key: `{job}@{time_key(fire time)}`.
    pub fn key(job: &str, fire_time: DateTime<Utc>) -> String {
        format!("{job}@{}", time_key(fire_time))
    }
}

/// A fire time as it appears in keys and names: unix seconds (`1800000000`), and for a fire
/// time that is not a whole second (a manual run's) its milliseconds too (`1800000000.250`).
/// Finer precision is dropped. Names of whole seconds are what they were before manual runs.
pub fn time_key(t: DateTime<Utc>) -> String {
    let ms = t.timestamp_subsec_millis();
    if ms == 0 {
        t.timestamp().to_string()
    } else {
        format!("{}.{ms:03}", t.timestamp())
    }
}

/// Read a [`time_key`] back; `None` for any other spelling (`1800000000.000`, `+1800000000`),
/// which no lookup would ever find.
pub fn parse_time_key(text: &str) -> Option<DateTime<Utc>> {
    let (secs, ms) = match text.split_once('.') {
        Some((s, ms)) if ms.len() == 3 => (s, ms.parse::<u32>().ok()?),
        Some(_) => return None,
        None => (text, 0),
    };
    let t = DateTime::from_timestamp(secs.parse().ok()?, ms * 1_000_000)?;
    (time_key(t) == text).then_some(t)
}

/// The result of a tick claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The run record was inserted: this node owns the tick.
    Won,
    /// Somebody already inserted a run for this fire time.
    AlreadyRun,
    /// The lease is no longer ours with this term (or a concurrent change aborted the claim).
    Fenced,
    /// The fire time is at or before the newest one pruned from the job's history: whether it
    /// ran can no longer be told, so it is never claimed (a node whose clock is behind cannot
    /// run history again).
    TooOld,
    /// The job is paused ([`LeaseRecord::paused`]): nothing is claimed until it is resumed.
    Paused,
    /// The run belongs to a request ([`RunRecord::trigger`]) that is no longer pending:
    /// cancelled, expired, or done.
    Withdrawn,
}

impl Claim {
    pub fn as_str(&self) -> &'static str {
        match self {
            Claim::Won => "won",
            Claim::AlreadyRun => "already_run",
            Claim::Fenced => "fenced",
            Claim::TooOld => "too_old",
            Claim::Paused => "paused",
            Claim::Withdrawn => "withdrawn",
        }
    }
}

/// Everything a poll needs, read in batches.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Leases by job name; a job with no record yet is absent.
    pub leases: HashMap<String, LeaseRecord>,
    /// Every registered node by id.
    pub nodes: HashMap<String, NodeRecord>,
}

/// The storage operations the election and the tick logic use.
///
/// Guarantees every backend gives:
/// - [`put_node`](Store::put_node) is a plain overwrite of the caller's own record (one write).
/// - [`nodes`](Store::nodes) reads every node record, and [`leases`](Store::leases) the given
///   leases, each in a bounded number of calls that does not grow one-per-job (batches).
/// - [`acquire`](Store::acquire) is an atomic compare-and-set: it writes `new` only if the
///   lease and its holder's node record are still exactly as `observed`; concurrent acquirers of
///   the same lease from the same observation: exactly one wins.
/// - [`claim`](Store::claim) atomically checks that the lease is held by `node` with `session`
///   and `term`, that the fire time is newer than the job's pruned watermark, and inserts the
///   run record; for one fire time it succeeds at most once, ever, pruning included.
/// - [`finish`](Store::finish) and [`close_orphan`](Store::close_orphan) are conditional writes
///   of a `running` record: a run is closed once.
/// - [`release`](Store::release) frees, atomically per lease, the given leases still held by
///   `node` with `session`; it never touches a lease somebody else holds.
#[async_trait]
pub trait Store: Send + Sync {
    /// A short name for logs: "datastore (emulator at 127.0.0.1:8081)".
    fn describe(&self) -> String;
    /// Write (create or overwrite) this node's own record.
    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()>;
    /// Delete this node's record (graceful stop), and its [`Definitions`].
    async fn delete_node(&self, id: &str) -> StoreResult<()>;
    /// Delete another node's record, atomically, only if it still shows exactly `session` and
    /// `heartbeat` (garbage collection of a node that died without a goodbye), and its
    /// [`Definitions`]. `Ok(true)` if it was deleted.
    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool>;
    /// Write (create or overwrite) node `node`'s job definitions.
    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()>;
    /// Node `node`'s job definitions, if it wrote any (and its record was not deleted since).
    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>>;
    /// Read every node record, by id.
    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>>;
    /// Read the given jobs' leases, by job; a job with no record yet is absent.
    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>>;
    /// Every node record, then the given leases. Nodes first: a node writes its record (with a
    /// bumped `lease_epoch`) only after its lease change committed, so leases read after a
    /// record are at least as new as that record says.
    async fn snapshot(&self, jobs: &[String]) -> StoreResult<Snapshot> {
        let nodes = self.nodes().await?;
        let leases = self.leases(jobs).await?;
        Ok(Snapshot { leases, nodes })
    }
    /// Compare-and-set of a lease; `Ok(true)` if `new` was written. `new`'s `paused` and
    /// `resumed_at` are ignored: the stored ones are kept. A batch of one
    /// ([`Store::acquire_many`]).
    async fn acquire(
        &self,
        job: &str,
        observed: &Observed,
        new: &LeaseRecord,
    ) -> StoreResult<bool> {
        let one = Acquire {
            job: job.to_string(),
            observed: observed.clone(),
            new: new.clone(),
        };
        Ok(!self
            .acquire_many(std::slice::from_ref(&one))
            .await?
            .is_empty())
    }
    /// Many compare-and-sets of leases in one atomic step (at most [`ACQUIRE_BATCH`], distinct
    /// jobs): each lease is written ([`Acquire::record`]) only if it and its holder's node
    /// record are still as observed ([`Observed::still`]); those that changed are left as they
    /// are. What matched is written all together or not at all: an error (or a concurrent
    /// change the backend could not order, retried a few times) writes nothing. Terms are
    /// per lease: each acquisition's term is its own job's old term + 1, and a claim checks
    /// only its own job's lease. Returns the jobs written. With thousands of jobs this is what
    /// makes taking a dead node's leases one store call per 500 instead of one per lease.
    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>>;
    /// Free the given leases if still held by `node` in `session`; returns how many were freed.
    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize>;
    /// Pause (`Some`) or resume (`None`) a job, atomically, in its lease record, without
    /// touching holder, session or term (a job with no lease record gets a free one). Pausing
    /// a paused job keeps the first pause; resuming sets `resumed_at` to now and clears
    /// `paused`. `Ok(true)` if it changed the record, `Ok(false)` if the job already was
    /// paused (resumed). A change bumps the control epoch in the same atomic write.
    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool>;
    /// Change a job's pending requests ([`Requests::apply`]), atomically, in its lease record,
    /// without touching anything else in it (a job with no lease record gets a free one).
    /// `Ok(false)` if the change was refused: nothing written. A change that is
    /// [`announced`](RequestChange::announced) bumps the control epoch in the same atomic
    /// write.
    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool>;
    /// The control epoch: 0 until the first change; grows by one with every announced change
    /// (pause, resume, request). One small read.
    async fn control_epoch(&self) -> StoreResult<i64>;
    /// The newest fire time pruned from the job's history ([`Store::prune_runs`]), if any: a
    /// fire time at or before it can never be claimed.
    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>>;
    /// Claim a tick: insert `run` if the job is not paused ([`Claim::Paused`] if it is), the
    /// lease of `run.job` is held by `run.node` in `session`
    /// with `run.term` ([`Claim::Fenced`] if not), no record of its fire time exists
    /// ([`Claim::AlreadyRun`]) and the fire time is newer than the newest one pruned from the
    /// job's history ([`Claim::TooOld`]): all checked in the transaction that inserts.
    /// A run with a [`RunRecord::trigger`] is claimed whether the job is paused or not, and
    /// only while its request is pending in the lease record ([`Claim::Withdrawn`] if not;
    /// checked after the fence).
    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim>;
    /// Record a claimed run's outcome: overwrite the record only if it is still `running` under
    /// `run.session` with `run.term` (this claim's own record). `Ok(false)` when it is not
    /// (closed as lost by another node, recovered, pruned, never written): nothing is written.
    /// With `run.outcome` still [`RUNNING`] it is a progress write (the output tail of a long
    /// run): the record is updated under the same condition and stays running (listed by
    /// [`Store::running_runs`]).
    async fn finish(&self, run: &RunRecord) -> StoreResult<bool>;
    /// The run record of this job and fire time, if there is one.
    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>>;
    /// Whether a run exists for this job and fire time.
    async fn run_exists(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<bool> {
        Ok(self.get_run(job, fire_time).await?.is_some())
    }
    /// Every run record that is `running`, across jobs: what orphan detection looks at. Its cost
    /// follows the number of running records, not the history.
    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>>;
    /// Close or take over an orphan: replace the record of `new.job` at `new.fire_time` with
    /// `new`, only if it is still `running` under `orphan_session` ([`Claim::AlreadyRun`] if
    /// not: closed or taken over already) and the lease of `new.job` is held as `fence` says
    /// ([`Claim::Fenced`] if not), in one transaction.
    async fn close_orphan(
        &self,
        new: &RunRecord,
        orphan_session: &str,
        fence: &Fence,
    ) -> StoreResult<Claim>;
    /// All run records of a job, oldest first (tests and tools; not on any hot path).
    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>>;
    /// The newest `limit` runs of a job, newest first, in one bounded read.
    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>>;
    /// Delete a job's runs older than its newest `keep`; returns how many were deleted. Its
    /// cost is bounded by `keep` plus the number deleted, not by the whole history. Before it
    /// deletes, it raises the job's pruned watermark to the newest fire time it deletes (never
    /// lowers it), which every later claim checks.
    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize>;
}

/// The store a config means in this environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Datastore,
    /// The file store in `dir` (namespace included); `default` when it was chosen because no
    /// backend was configured and no Datastore was named.
    File {
        dir: PathBuf,
        default: bool,
    },
    /// A Redis server (`url`).
    Redis {
        url: String,
    },
    /// A ZooKeeper ensemble (`hosts`).
    ZooKeeper {
        hosts: String,
    },
    /// A PostgreSQL database (`url`) and the schema of cronlease's tables in it.
    Postgres {
        url: String,
        schema: String,
    },
}

/// Whether `url` names PostgreSQL (`postgres://` or `postgresql://`): such a url selects the
/// postgres backend as any other selects Redis. Plain text: known without the feature.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`, for logs, errors and `status`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The credentials end at an `@`: the first one for tokio-postgres, the last one before
    // the path for the `url` crate (Redis). A password may hold an unencoded `?`, `/` or `@`:
    // the authority runs to the first `/` or `?` after the first `@`, and the password to its
    // last `@`, so either reading's password is masked whole.
    let end = match rest.find('@') {
        Some(at) => rest[at..].find(['/', '?']).map_or(rest.len(), |i| at + i),
        None => rest.find(['/', '?']).unwrap_or(rest.len()),
    };
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{hosts}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Check a postgres url without connecting (`cronlease check`); the error never shows a
/// password. Without the feature, any url passes here and `connect` says the build lacks it.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "postgres")]
    return postgres::check_url(url);
    #[cfg(not(feature = "postgres"))]
    {
        let _ = url;
        Ok(())
    }
}

/// Whether this build has the given backend (Redis and ZooKeeper are cargo features, on by
/// default).
pub fn compiled_in(backend: &Backend) -> bool {
    match backend {
        Backend::Redis => cfg!(feature = "redis"),
        Backend::ZooKeeper => cfg!(feature = "zookeeper"),
        Backend::Postgres => cfg!(feature = "postgres"),
        Backend::Auto | Backend::Datastore | Backend::File => true,
    }
}

/// Environment variables that name a Datastore: any of them set (non-empty) makes a config
/// without a `backend` use Datastore.
const DATASTORE_ENV: [&str; 3] = [
    "DATASTORE_EMULATOR_HOST",
    "DATASTORE_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
];

/// Decide the backend: an explicit `backend` (or a `path` / `project`, which imply one) wins;
/// otherwise Datastore if the environment names one, else the embedded file store in the local
/// state directory. Never falls back from an explicit Datastore to files.
pub fn resolve(config: &StoreConfig) -> Resolved {
    resolve_with(config, &|name| std::env::var_os(name))
}

fn resolve_with(config: &StoreConfig, env: &dyn Fn(&str) -> Option<OsString>) -> Resolved {
    let set = |name: &str| env(name).filter(|v| !v.to_string_lossy().trim().is_empty());
    let file = |base: PathBuf, default| {
        let dir = base.join(&config.namespace);
        // Absolute, so that the log line and `status` name the directory unambiguously.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Resolved::File { dir, default }
    };
    match config.backend {
        Backend::Datastore => Resolved::Datastore,
        Backend::Redis => Resolved::Redis {
            url: config.url.clone().unwrap_or_default(),
        },
        Backend::ZooKeeper => Resolved::ZooKeeper {
            hosts: config.hosts.clone().unwrap_or_default(),
        },
        Backend::Postgres => Resolved::Postgres {
            url: config.url.clone().unwrap_or_default(),
            schema: config.schema.clone(),
        },
        Backend::File => match &config.path {
            Some(path) => file(path.clone(), false),
            None => file(state_dir(&set), false),
        },
        Backend::Auto => {
            if config.project.is_some() || DATASTORE_ENV.iter().any(|v| set(v).is_some()) {
                Resolved::Datastore
            } else {
                file(state_dir(&set), true)
            }
        }
    }
}

/// The local state directory: `$STATE_DIRECTORY` (the first of its paths: systemd sets it from
/// the unit's `StateDirectory=`, `/var/lib/cronlease` for the packaged service), else
/// `$XDG_STATE_HOME/cronlease`, else `$HOME/.local/state/cronlease`, else `./.cronlease`.
/// Relative paths in those variables are ignored, as systemd and the XDG spec never set them.
fn state_dir(set: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(dirs) = set("STATE_DIRECTORY") {
        let first = dirs.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(dir) = first.filter(|d| d.is_absolute()) {
            return dir;
        }
    }
    if let Some(xdg) = set("XDG_STATE_HOME").map(PathBuf::from) {
        if xdg.is_absolute() {
            return xdg.join("cronlease");
        }
    }
    match set("HOME") {
        Some(home) => Path::new(&home).join(".local/state/cronlease"),
        None => PathBuf::from(".cronlease"),
    }
}

/// Build the configured store; every call to it is bounded by `timeout`.
pub async fn connect(config: &StoreConfig, timeout: Duration) -> StoreResult<Arc<dyn Store>> {
    match resolve(config) {
        Resolved::Datastore => Ok(Arc::new(
            datastore::DatastoreStore::connect_with_timeout(config, timeout).await?,
        )),
        Resolved::File { dir, .. } => Ok(Arc::new(file::FileStore::open(dir, timeout).await?)),
        #[cfg(feature = "redis")]
        Resolved::Redis { url } => redis::connect(&url, &config.namespace, timeout).await,
        #[cfg(feature = "zookeeper")]
        Resolved::ZooKeeper { hosts } => {
            zookeeper::connect(&hosts, &config.namespace, timeout).await
        }
        #[cfg(feature = "postgres")]
        Resolved::Postgres { url, schema } => {
            postgres::connect(&url, &schema, &config.namespace, timeout).await
        }
        #[allow(unreachable_patterns)]
        other => Err(StoreError::Other(format!(
            "this build of cronlease has no {other:?} store (its cargo feature is off)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node keeps a lease record per job in its copy of the leases, and more while a read
    /// merges: their size is the memory of a node at 10,000 jobs (rare parts are boxed).
    #[test]
    fn a_lease_record_stays_small() {
        let size = std::mem::size_of::<LeaseRecord>();
        eprintln!("LeaseRecord: {size} bytes");
        assert!(size <= 120, "LeaseRecord is {size} bytes");
    }

    fn config(backend: Backend, path: Option<&str>, project: Option<&str>) -> StoreConfig {
        StoreConfig {
            backend,
            path: path.map(PathBuf::from),
            project: project.map(String::from),
            url: None,
            hosts: None,
            schema: "cronlease".into(),
            namespace: "ns".into(),
            history: 10,
        }
    }

    fn resolve_in(config: &StoreConfig, vars: &[(&str, &str)]) -> Resolved {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve_with(config, &|name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn file(dir: &str, default: bool) -> Resolved {
        Resolved::File {
            dir: PathBuf::from(dir),
            default,
        }
    }

    #[test]
    fn time_keys_keep_milliseconds_only_when_there_are_some() {
        let whole = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(time_key(whole), "1800000000");
        assert_eq!(RunRecord::key("j", whole), "j@1800000000");
        let manual = DateTime::from_timestamp(1_800_000_000, 250_999_999).unwrap();
        assert_eq!(time_key(manual), "1800000000.250");
        assert_eq!(
            parse_time_key("1800000000.250"),
            DateTime::from_timestamp(1_800_000_000, 250_000_000)
        );
        assert_eq!(parse_time_key("1800000000"), Some(whole));
        for bad in [
            "",
            "x",
            "1800000000.25",
            "1800000000.",
            "1800000000.2500",
            "1800000000.000",
            "+1800000000",
            "01800000000",
        ] {
            assert_eq!(parse_time_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn auto_uses_datastore_only_when_one_is_named() {
        let auto = config(Backend::Auto, None, None);
        let home = [("HOME", "/home/u")];
        assert_eq!(
            resolve_in(&auto, &home),
            file("/home/u/.local/state/cronlease/ns", true)
        );
        for var in DATASTORE_ENV {
            assert_eq!(
                resolve_in(&auto, &[("HOME", "/home/u"), (var, "x")]),
                Resolved::Datastore,
                "{var}"
            );
            // Set but blank: as good as unset.
            assert_eq!(
                resolve_in(&auto, &[("HOME", "/home/u"), (var, " ")]),
                file("/home/u/.local/state/cronlease/ns", true),
                "{var}"
            );
        }
        let with_project = config(Backend::Auto, None, Some("p"));
        assert_eq!(resolve_in(&with_project, &home), Resolved::Datastore);
    }

    #[test]
    fn state_dir_prefers_xdg_then_home_then_cwd() {
        let auto = config(Backend::Auto, None, None);
        assert_eq!(
            resolve_in(&auto, &[("XDG_STATE_HOME", "/st"), ("HOME", "/home/u")]),
            file("/st/cronlease/ns", true)
        );
        assert_eq!(
            resolve_in(&auto, &[("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")]),
            file("/home/u/.local/state/cronlease/ns", true),
            "a relative XDG_STATE_HOME is ignored"
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_in(&auto, &[]),
            Resolved::File {
                dir: cwd.join(".cronlease/ns"),
                default: true
            }
        );
    }

    #[test]
    fn systemds_state_directory_comes_first() {
        let auto = config(Backend::Auto, None, None);
        let env = [
            ("STATE_DIRECTORY", "/var/lib/cronlease:/var/lib/other"),
            ("XDG_STATE_HOME", "/st"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(resolve_in(&auto, &env), file("/var/lib/cronlease/ns", true));
        assert_eq!(
            resolve_in(&auto, &[("STATE_DIRECTORY", "rel"), ("HOME", "/home/u")]),
            file("/home/u/.local/state/cronlease/ns", true),
            "a relative STATE_DIRECTORY is ignored"
        );
    }

    #[test]
    fn explicit_backends_ignore_the_environment() {
        let ds = config(Backend::Datastore, None, None);
        assert_eq!(resolve_in(&ds, &[("HOME", "/h")]), Resolved::Datastore);
        let at = config(Backend::File, Some("/srv/cl"), None);
        let emu = [("DATASTORE_EMULATOR_HOST", "127.0.0.1:1")];
        assert_eq!(resolve_in(&at, &emu), file("/srv/cl/ns", false));
        let default_dir = config(Backend::File, None, None);
        assert_eq!(
            resolve_in(&default_dir, &[("HOME", "/h"), emu[0]]),
            file("/h/.local/state/cronlease/ns", false)
        );
    }
}
