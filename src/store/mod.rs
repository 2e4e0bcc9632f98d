//! The storage seam: one small trait, storage only.
//!
//! Timing lives in [`crate::session`] and [`crate::election`]; a store never judges whether a
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
//! - [`RunRecord`]: one per executed tick, keyed `{job}@{unix fire time}`. Inserting it is the
//!   claim; a second insert for the same fire time fails.
pub mod datastore;
pub mod metered;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Backend, StoreConfig};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Informational: the jobs this node believes it leads.
    pub jobs: Vec<String>,
    /// Informational: the node's HTTP address (`--http`), if it serves one.
    pub http: Option<String>,
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
}

/// One tick's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub job: String,
    pub fire_time: DateTime<Utc>,
    pub node: String,
    pub term: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running` until finished, then `ok`, `failed`, `timeout` or `killed`.
    pub outcome: String,
    pub exit_code: Option<i32>,
}

impl RunRecord {
    /// The run's key: `{job}@{unix seconds of the fire time}`.
    pub fn key(job: &str, fire_time: DateTime<Utc>) -> String {
        format!("{job}@{}", fire_time.timestamp())
    }
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
/// - [`snapshot`](Store::snapshot) reads the given leases and all node records in a bounded
///   number of calls that does not grow one-per-job (batches).
/// - [`acquire`](Store::acquire) is an atomic compare-and-set: it writes `new` only if the
///   lease and its holder's node record are still exactly as `observed`; concurrent acquirers of
///   the same lease from the same observation: exactly one wins.
/// - [`claim`](Store::claim) atomically checks that the lease is held by `node` with `session`
///   and `term` and inserts the run record; for one fire time it succeeds at most once, ever.
/// - [`release`](Store::release) frees, atomically per lease, the given leases still held by
///   `node` with `session`; it never touches a lease somebody else holds.
#[async_trait]
pub trait Store: Send + Sync {
    /// A short name for logs: "datastore (emulator at 127.0.0.1:8081)".
    fn describe(&self) -> String;
    /// Write (create or overwrite) this node's own record.
    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()>;
    /// Delete this node's record (graceful stop).
    async fn delete_node(&self, id: &str) -> StoreResult<()>;
    /// Delete another node's record, atomically, only if it still shows exactly `session` and
    /// `heartbeat` (garbage collection of a node that died without a goodbye). `Ok(true)` if
    /// it was deleted.
    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool>;
    /// Read the given jobs' leases and every node record.
    async fn snapshot(&self, jobs: &[String]) -> StoreResult<Snapshot>;
    /// Compare-and-set of a lease; `Ok(true)` if `new` was written.
    async fn acquire(&self, job: &str, observed: &Observed, new: &LeaseRecord)
        -> StoreResult<bool>;
    /// Free the given leases if still held by `node` in `session`; returns how many were freed.
    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize>;
    /// Claim a tick: insert `run` if the lease of `run.job` is held by `run.node` in `session`
    /// with `run.term`.
    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim>;
    /// Record a claimed run's outcome (overwrites the run record).
    async fn finish(&self, run: &RunRecord) -> StoreResult<()>;
    /// Whether a run exists for this job and fire time.
    async fn run_exists(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<bool>;
    /// All run records of a job, oldest first (tests and tools; not on any hot path).
    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>>;
    /// The newest `limit` runs of a job, newest first, in one bounded read.
    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>>;
    /// Delete a job's runs older than its newest `keep`; returns how many were deleted. Its
    /// cost is bounded by `keep` plus the number deleted, not by the whole history.
    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize>;
}

/// Build the configured store; every call to it is bounded by `timeout`.
pub async fn connect(config: &StoreConfig, timeout: Duration) -> StoreResult<Arc<dyn Store>> {
    match config.backend {
        Backend::Datastore => Ok(Arc::new(
            datastore::DatastoreStore::connect_with_timeout(config, timeout).await?,
        )),
    }
}
