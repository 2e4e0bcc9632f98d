//! One election per job: observe the leases, judge expiry on the local monotonic clock, acquire
//! free or expired leases up to this node's fair share, hand back the excess.
//!
//! All lease timing lives in [`Election::poll_once`]; the store only compares and sets.
//!
//! What a poll reads: every node record (one small query: a handful of entities however many
//! jobs there are), the control epoch (one entity, moved by operators' pauses, resumes and
//! requests), and of the leases only those that may have changed: when some node's
//! `lease_epoch` or session differs from the last read (a node bumps its epoch and writes its
//! record right after every lease change it makes, see [`Session::leases_changed`]) or its
//! record is gone, the leases the copy shows held by that node, free or absent (someone may
//! have taken them), or held under a session that is over; the leases this node itself
//! changed or found changed (an acquisition, a release, a fenced claim). All of them when the
//! control epoch moved (pauses and requests live in the lease records), when a read failed or
//! a claim saw a pause, after a reload changed the job list, and at least every
//! [`full_read_every`] as a safety net. Leases are renewed through the node records, so a lease
//! table that did not change needs no re-reading to judge expiry: with 10,000 jobs a settled
//! follower reads a few entities per poll, and a node's death costs each survivor a read of
//! that node's leases, not of all of them. A copy that is stale anyway is harmless: any action
//! on it is a compare-and-set that fails, which marks those leases for re-reading.
//!
//! How a lease is judged, each poll:
//! - free (no holder), or held under a session that is no longer its holder's current session,
//!   or held by a node whose record is gone: **available** now;
//! - held by a live session: available only once this observer has seen that node's heartbeat
//!   stay unchanged for a full `lease`, measured on this process's monotonic clock from the poll
//!   that first saw the value. Stored wall-clock times are never compared with the local clock,
//!   so clock skew between nodes cannot make two leaders.
//!
//! Taking an available lease is a compare-and-set against exactly what was observed (the lease
//! and its holder's heartbeat), so a holder that renewed meanwhile keeps it, and of two nodes
//! racing for it one wins. The winner's term is the old term + 1: the fencing token every tick
//! claim checks.
//!
//! Spreading: a node takes an available lease only while it holds fewer than its fair share,
//! `ceil(jobs / live nodes)`, unless the lease has stayed available for two polls (then anyone
//! takes it, so one surviving node still leads everything). A node that holds more than its
//! share for two polls releases the excess, up to [`RELEASE_BATCH`] per poll, the leases whose
//! next ticks are furthest away (with 10,000 jobs, one lease per poll would take hours to
//! spread). "Available for two polls" counts both time and completed polls, because with
//! thousands of jobs one poll's acquisitions can take many poll periods.
//!
//! Garbage: a node record whose heartbeat has not changed for [`GC_AFTER_LEASES`] lease times
//! (a node killed without a goodbye) is deleted by whoever sees it first, atomically and only if
//! it still shows what was observed; a node that was merely frozen writes a new record (with a
//! new session) when it wakes.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::seq::SliceRandom;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ElectionConfig;
use crate::node::drift::Drift;
use crate::node::jobs::JobTable;
use crate::node::placement;
use crate::node::session::Session;
use crate::node::walk::{Available, Held, WalkKey, Walked};
use crate::ops::metrics::Metrics;
use crate::ops::sd_notify::Progress;
use crate::store::{
    Acquire, LeaseRecord, NodeRecord, Observed, Pause, Requests, Store, StoreError, StoreResult,
    ACQUIRE_BATCH,
};

/// What this node's last successful poll read: the node records, the leases (the election's
/// copy: re-read only when they may have changed) and the control epoch. The dashboard's view
/// ([`crate::ops::cluster_view`]) is built from it instead of reading them again.
#[derive(Debug, Clone)]
pub struct Observation {
    pub nodes: Arc<HashMap<String, NodeRecord>>,
    pub leases: Arc<HashMap<String, LeaseRecord>>,
    pub control: i64,
}

/// Who leads a job, as this node last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseView {
    /// Empty when free or unknown.
    pub holder: String,
    pub term: i64,
    /// The job is paused (as of the last read of its lease).
    pub paused: Option<Box<Pause>>,
    /// When it was last resumed.
    pub resumed_at: Option<chrono::DateTime<Utc>>,
    /// Pending operator requests (trigger, backfill), as of the last read of its lease.
    pub requests: Requests,
    /// When this node acquired the lease: when the previous holder had acquired it (its
    /// clock), as the lease read before the acquisition said. Fire times a previous holder
    /// already found missed are not counted again ([`crate::node::job_health`]).
    pub previous_acquired_at: Option<chrono::DateTime<Utc>>,
}

/// This node's standing lease on a job, valid while its session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub term: i64,
    pub session: String,
}

/// At most this many batches of acquisitions ([`Store::acquire_many`]) are in flight at once.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// At most this many acquisitions are tried per poll. A poll is also how this node learns what
/// the others did, and its lease changes are announced when it ends: a poll that worked through
/// tens of thousands of leases on one observation would act on an ever staler view. Leases are
/// placed ([`crate::node::placement`]), so nodes do not race for them: a node's whole share of
/// 10,000 jobs fits in one poll.
pub const ACQUIRE_PER_POLL: usize = 5_000;

/// At most this many excess leases are handed back per poll (a few store calls).
pub const RELEASE_BATCH: usize = 500;

/// The leases are re-read at least this often even when no node announced a change (a safety
/// net for edits made outside cronlease); with a longer `lease`, at least once per lease; and
/// once per this much for every 1,000 jobs ([`full_read_every`]).
pub const FULL_READ_EVERY: Duration = Duration::from_secs(60);

/// The extra wait before the next poll after `failures` polls in a row could not read the
/// store: none after one, then doubling from one poll period, at most one `lease`; cut short
/// when a heartbeat gets through after failing ([`Session::recoveries`]). Every node
/// re-reading every lease each second is what kept an overloaded store overloaded: after the
/// Datastore emulator was frozen for 15 s under 100,000 jobs, the five nodes' reads of all
/// leases timed out poll after poll and none of them got a lease back.
pub fn read_backoff(poll: Duration, lease: Duration, failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => poll
            .saturating_mul(1 << (n - 2).min(16))
            .min(lease.saturating_sub(poll)),
    }
}

/// How often the safety-net read of all leases comes with `jobs` jobs: [`FULL_READ_EVERY`] (or
/// `lease`, if longer) per 1,000 jobs, so that it reads about 1,000 leases a minute whatever the
/// size: a cluster of idle jobs costs the store about the same per hour at 10,000 jobs as at
/// 1,000. Changes made through cronlease never wait for it (they are announced).
pub fn full_read_every(lease: Duration, jobs: usize) -> Duration {
    let thousands = jobs.div_ceil(1000).max(1) as u32;
    FULL_READ_EVERY.max(lease) * thousands
}

/// What a job without a lease record looks like: free, never held.
static FREE_LEASE: LeaseRecord = LeaseRecord {
    holder: String::new(),
    session: String::new(),
    term: 0,
    acquired_at: None,
    paused: None,
    resumed_at: None,
    requests: crate::store::Requests {
        triggers: Vec::new(),
        backfill: None,
    },
};

/// A silent node's record is removed after this many lease times without a heartbeat change.
pub const GC_AFTER_LEASES: u32 = 3;

/// Called when this node acquires a job's lease (job index, term).
pub type OnAcquired = Box<dyn Fn(usize, i64) + Send + Sync>;

/// What the election tells the rest of the node. Called without any election lock held.
pub trait LeaseEvents: Send + Sync {
    /// This node acquired job `idx`'s lease with `term`.
    fn acquired(&self, _idx: usize, _term: i64) {}
    /// This node lost job `idx`'s lease held with `term` (session lapse, fenced claim, another
    /// holder seen in the store). Not called for a release this node made.
    fn lost(&self, _idx: usize, _term: i64) {}
    /// Job `idx`, whose lease this node holds as `lead`, has pending operator requests (every
    /// poll while it has: the receiver keeps track of what it already acts on).
    fn requests(&self, _idx: usize, _lead: &Leadership, _requests: &Requests) {}
    /// The election wants to hand `want` of these jobs' leases back (rebalancing; in order of
    /// preference): return those that may go now, at most `want`. Each returned job must take
    /// no new claim until [`LeaseEvents::handed_over`].
    fn hand_over(&self, jobs: Vec<usize>, want: usize) -> Vec<usize> {
        jobs.into_iter().take(want).collect()
    }
    /// The hand-over of these jobs is done (released, or the release failed).
    fn handed_over(&self, _jobs: &[usize]) {}
}

/// [`Election::set_on_acquired`]: a closure as the only event handler.
struct AcquiredOnly(OnAcquired);

impl LeaseEvents for AcquiredOnly {
    fn acquired(&self, idx: usize, term: i64) {
        (self.0)(idx, term)
    }
}

/// How many of a peer's heartbeat samples are kept for its clock offset estimate ...
const OFFSET_SAMPLES: usize = 10;
/// ... and how many it takes before the peer counts.
const MIN_OFFSET_SAMPLES: usize = 3;

pub struct Election {
    node: String,
    store: Arc<dyn Store>,
    session: Arc<Session>,
    config: ElectionConfig,
    /// The jobs contested: the table's active ones (it changes on a reload).
    jobs: Arc<JobTable>,
    state: Mutex<State>,
    events: Mutex<Option<Arc<dyn LeaseEvents>>>,
    /// Which nodes know which jobs, and drift reports (none in unit tests).
    drift: Mutex<Option<Arc<Drift>>>,
    metrics: Arc<Metrics>,
    /// Wakes whoever waits for a node's death ([`Election::deaths`]).
    death_seen: tokio::sync::Notify,
    /// `[node] clock_skew_warn` (a reload may change it).
    skew_warn: Mutex<Duration>,
    /// When the last poll ended, whatever the store answered: the poll loop is alive
    /// (systemd's watchdog, [`crate::ops::sd_notify::watchdog_ok`]).
    progress: Progress,
}

#[derive(Default)]
struct State {
    /// Leases this node holds: job -> leadership.
    held: Held,
    /// The last walk over every job's lease, reused while its inputs are unchanged.
    walked: Option<Walked>,
    /// The last seen lease of every job.
    view: HashMap<String, LeaseView>,
    /// Per other node: (session, heartbeat) last seen and when that value was first seen.
    watch: HashMap<String, Watched>,
    /// Per job: since when it has been continuously available.
    /// Per job: since when (and since which poll) it has been continuously available.
    available_since: HashMap<String, (Instant, u64)>,
    /// Successful polls so far. "Available for two polls" counts polls, not only time: with
    /// thousands of jobs one poll's acquisitions take many poll periods.
    polls: u64,
    /// The last poll that saw any lease change holder or term: while leases keep moving, the
    /// other nodes are still taking their shares, and nobody takes leases beyond its own.
    last_change_poll: u64,
    /// When this node first held more than its share, if it still does.
    excess_since: Option<Instant>,
    /// When the first successful poll happened; acquisitions wait one poll after it.
    first_poll: Option<Instant>,
    /// Consecutive failed polls, for log throttling.
    failures: u32,
    /// Leases were lost because the session lapsed, and no session has been valid since:
    /// the node is unhealthy (it cannot renew).
    lapsed_holding: bool,
    /// The leases as last read, and what the node records announced at that read.
    leases: Option<LeaseCache>,
    /// Counts the changes of the copy in `leases` (changed in place, so its address says
    /// nothing): the walk's key ([`WalkKey`]).
    leases_version: u64,
    /// Other nodes that died (record gone, replaced by another process, or heartbeat unchanged
    /// for a lease) as this node saw them: their `running` runs are orphans.
    deaths: u64,
    /// The other nodes judged alive at the last poll: id -> process (or session).
    alive_prev: HashMap<String, String>,
    /// This node's last clock offset estimate (ms) and whether it was reported as skewed.
    offset_ms: Option<i64>,
    skew_reported: bool,
    /// When the last successful poll's read of the node records started (our wall clock).
    last_read_wall: Option<chrono::DateTime<Utc>>,
    /// The last successful poll's reads.
    observed: Option<Observation>,
    /// Why the last poll failed to read the store (`None` after a successful one).
    read_error: Option<String>,
    /// When the reads of the poll under way started (`None` between polls' reads).
    reading_since: Option<Instant>,
    /// The copy in `leases` is known stale as a whole (a pause seen by a claim, a failed
    /// read): re-read all of it at the next poll.
    leases_dirty: bool,
    /// Leases this node changed, tried to change, or found changed (an acquisition, a
    /// release, a fenced claim): re-read at the next poll.
    dirty_jobs: std::collections::HashSet<String>,
    /// Nodes whose sessions were ended for silence ([`Election::end_dead_sessions`]): id ->
    /// session. Their runs are orphans because their heartbeat stopped, not because they
    /// left. At most [`ENDED_KEPT`].
    ended: HashMap<String, String>,
}

/// How many ended sessions are remembered.
const ENDED_KEPT: usize = 256;

struct LeaseCache {
    leases: Arc<HashMap<String, LeaseRecord>>,
    /// The job names read (the table's list at the read: a reload makes a new one).
    names: Arc<Vec<String>>,
    /// The control epoch at the read.
    control: i64,
    /// Per node id at the read: (session, lease_epoch).
    epochs: HashMap<String, (String, i64)>,
    read_at: Instant,
}

struct Watched {
    session: String,
    /// The node's process ([`NodeRecord::process`]; its session in records without one).
    process: String,
    heartbeat: i64,
    since: Instant,
    /// The newest clock offset samples of this node against ours (ms), each an interval
    /// `(low, high)`: a heartbeat first seen by a read is stamped (`renewed_at`, its clock)
    /// after our previous read started and before this read returned (give or take a write's
    /// latency), so its offset lies between `renewed_at - now` and `renewed_at - previous`.
    offsets: std::collections::VecDeque<(i64, i64)>,
}

/// How long a stopping node waits for its peers to take the leases it hands over before it
/// releases what is left: they act at their next poll after its record said so, and their
/// take is a store call (a loaded store or machine: a second more). Past it, a stop with no
/// peer able to take them costs this much.
pub fn handover_wait(poll: Duration) -> Duration {
    poll * 3 + Duration::from_secs(1)
}

/// How one job's lease looks to this node in one poll.
enum Standing {
    Mine,
    Other,
    Available,
}

/// Whether `holder`, which holds `job`'s lease in the session its record shows, is stopping and
/// does not keep `job` ([`NodeRecord::leaving`]): the lease is free to take from it.
fn handed_over(holder: &NodeRecord, job: &str) -> bool {
    holder.leaving && !holder.jobs.iter().any(|j| j == job)
}

impl Election {
    pub fn new(
        session: Arc<Session>,
        store: Arc<dyn Store>,
        config: ElectionConfig,
        jobs: Arc<JobTable>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Election {
            node: session.node().to_string(),
            store,
            session,
            config,
            jobs,
            state: Mutex::new(State::default()),
            events: Mutex::new(None),
            drift: Mutex::new(None),
            metrics,
            death_seen: tokio::sync::Notify::new(),
            skew_warn: Mutex::new(crate::config::DEFAULT_CLOCK_SKEW_WARN),
            progress: Progress::new(),
        }
    }

    /// When the last poll of [`Election::run`] ended (success or store error).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// `[node] clock_skew_warn` (default 1 s).
    pub fn with_skew_warn(self, warn: Duration) -> Self {
        self.set_skew_warn(warn);
        self
    }

    /// Change `[node] clock_skew_warn` (a reload).
    pub fn set_skew_warn(&self, warn: Duration) {
        *self.skew_warn.lock().unwrap() = warn;
    }

    /// How many other nodes this node has seen die so far (see [`State::deaths`]).
    pub fn deaths(&self) -> u64 {
        self.state.lock().unwrap().deaths
    }

    /// Wait until the election sees a node die.
    pub async fn death_seen(&self) {
        self.death_seen.notified().await
    }

    /// Whether this node holds any lease now (as last seen; no lapse check).
    pub fn holds_any(&self) -> bool {
        !self.state.lock().unwrap().held.is_empty()
    }

    /// The slot of job `name` in the job table, if it is (or was) one of ours.
    /// The names of the jobs contested now.
    pub fn job_names(&self) -> Vec<String> {
        self.jobs.active_names().to_vec()
    }

    pub fn job_index(&self, name: &str) -> Option<usize> {
        self.jobs.index(name)
    }

    /// Why a `running` run is an orphan, if it is one: the process that claimed it is no longer
    /// alive by the election's rules. `nodes` must have been read after the run. `None` while
    /// its process lives (its own node writes its outcome, however long the store is away).
    pub fn orphaned(
        &self,
        run: &crate::store::RunRecord,
        nodes: &HashMap<String, NodeRecord>,
    ) -> Option<&'static str> {
        let same_process = |n: &NodeRecord| {
            if run.process.is_empty() || n.process.is_empty() {
                n.session == run.session
            } else {
                n.process == run.process
            }
        };
        if run.node == self.node {
            // This node's own runs: orphans only of an earlier process with our id.
            return (!run.process.is_empty() && run.process != self.session.process())
                .then_some("node_restarted");
        }
        let Some(n) = nodes.get(&run.node) else {
            // Gone because this node ended its silent session to take its leases: it died.
            let ended = self.state.lock().unwrap().ended.get(&run.node).cloned();
            return Some(match ended {
                Some(session) if run.session.is_empty() || run.session == session => {
                    "heartbeat_stopped"
                }
                _ => "node_gone",
            });
        };
        if !same_process(n) {
            return Some("node_restarted");
        }
        let st = self.state.lock().unwrap();
        match st.watch.get(&run.node) {
            Some(w) if w.session == n.session && w.heartbeat == n.heartbeat => {
                (Instant::now().duration_since(w.since) >= self.config.lease)
                    .then_some("heartbeat_stopped")
            }
            // Not watched yet, or it changed since the last poll: it is writing.
            _ => None,
        }
    }

    fn events(&self) -> Option<Arc<dyn LeaseEvents>> {
        self.events.lock().unwrap().clone()
    }

    fn notify_lost(&self, lost: Vec<(String, i64)>) {
        if lost.is_empty() {
            return;
        }
        if let Some(events) = self.events() {
            for (job, term) in lost {
                if let Some(idx) = self.jobs.index(&job) {
                    events.lost(idx, term);
                }
            }
        }
    }

    /// Healthy unless this node held leases when its session lapsed and has not renewed since
    /// (the client-go health-adaptor idea: a leader that cannot renew is unhealthy; a follower
    /// that cannot reach the store harms nobody).
    pub fn healthy(&self) -> bool {
        let current = self.session.current();
        let mut st = self.state.lock().unwrap();
        let lost = drop_stale(&mut st, current.as_deref(), &self.node, &self.metrics);
        if current.is_some() {
            st.lapsed_holding = false;
        }
        let healthy = !st.lapsed_holding;
        drop(st);
        self.notify_lost(lost);
        healthy
    }

    pub fn set_on_acquired(&self, f: OnAcquired) {
        self.set_events(Arc::new(AcquiredOnly(f)));
    }

    /// Count, per job, only the nodes that know it; report drift ([`crate::node::drift`]).
    pub fn set_drift(&self, drift: Arc<Drift>) {
        *self.drift.lock().unwrap() = Some(drift);
    }

    fn drift(&self) -> Option<Arc<Drift>> {
        self.drift.lock().unwrap().clone()
    }

    pub fn set_events(&self, events: Arc<dyn LeaseEvents>) {
        *self.events.lock().unwrap() = Some(events);
    }

    /// This node's leadership of `job`, if it holds the lease under its current, valid session.
    /// Leases of a lapsed session are dropped (and logged as lost) here.
    pub fn leading(&self, job: &str) -> Option<Leadership> {
        let current = self.session.current();
        let mut st = self.state.lock().unwrap();
        let lost = drop_stale(&mut st, current.as_deref(), &self.node, &self.metrics);
        let held = st.held.get(job).cloned();
        drop(st);
        self.notify_lost(lost);
        held
    }

    /// What the last successful poll read; the store's error when the last poll could not
    /// read it (or none has yet).
    pub fn observation(&self) -> Result<Observation, String> {
        let st = self.state.lock().unwrap();
        if let Some(since) = st.reading_since {
            // Every store call has its own timeout; a poll's reads stuck past this are a store
            // that does not answer.
            let stuck = (self.config.lease * 2).max(Duration::from_secs(10));
            if since.elapsed() > stuck {
                return Err(format!(
                    "the store has not answered for {} s",
                    since.elapsed().as_secs()
                ));
            }
        }
        match (&st.read_error, &st.observed) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(o)) => Ok(o.clone()),
            (None, None) => Err("the node has not read the store yet".into()),
        }
    }

    /// Who leads `job` as last seen.
    pub fn view(&self, job: &str) -> LeaseView {
        self.state
            .lock()
            .unwrap()
            .view
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// The jobs this node holds now.
    pub fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.lock().unwrap().held.keys().cloned().collect();
        v.sort();
        v
    }

    /// A claim found `job` paused (`Some`) or not (`None`): update this node's view, and if
    /// that changed it, ask every node to re-read the leases (they learn of the pause or the
    /// resume within a poll, and say so in their logs).
    pub fn saw_pause(&self, job: &str, paused: Option<Pause>) {
        let changed = {
            let mut st = self.state.lock().unwrap();
            let v = st.view.entry(job.to_string()).or_default();
            if v.paused.is_some() == paused.is_some() {
                false
            } else {
                if paused.is_none() {
                    v.resumed_at = Some(Utc::now());
                }
                v.paused = paused.map(Box::new);
                st.leases_dirty = true;
                true
            }
        };
        if changed {
            self.session.leases_changed(self.held());
        }
    }

    /// A fenced claim showed that the lease of `job` with `term` is no longer ours.
    pub fn lost(&self, job: &str, term: i64, why: &str) {
        let mut st = self.state.lock().unwrap();
        st.dirty_jobs.insert(job.to_string());
        if st.held.get(job).is_some_and(|l| l.term == term) {
            st.held.remove(job);
            self.metrics.lease_lost(job);
            self.metrics.not_held(job, st.held.len());
            info!(event = "lease_lost", job, node = %self.node, term, "lease lost: {why}");
            drop(st);
            self.notify_lost(vec![(job.to_string(), term)]);
        }
    }

    /// Poll every `poll` until `cancel` fires. A poll in flight is abandoned at once then: a
    /// graceful stop announces its hand-over ([`Election::release_idle`]) only after this
    /// returns, and a poll stuck on a busy store (at 10,000 jobs, reads and batched
    /// acquisitions of several seconds) held that announcement back for 8–16 s.
    ///
    /// Abandoning is safe at any await: store calls are single conditional writes or
    /// transactions, so each one happened whole or not at all. A lease the store gave this node
    /// but the poll never booked is not in `held`, so no tick is claimed on it; the stopping
    /// node's record does not list it, so peers take it from the leaving node like the idle
    /// ones. A release the store made but the poll never booked leaves the job in `held`
    /// until [`Election::release_all`]; a claim on it fails the fenced check meanwhile.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut interval = tokio::time::interval(self.config.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recoveries = self.session.recoveries();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            recoveries.borrow_and_update();
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.state.lock().unwrap().reading_since = None;
                    return;
                }
                _ = self.poll_once(&cancel) => {}
            }
            self.progress.stamp();
            let failures = self.state.lock().unwrap().failures;
            let backoff = read_backoff(self.config.poll, self.config.lease, failures);
            if !backoff.is_zero() {
                // A heartbeat that gets through after failing (a network cut ends) ends the
                // wait: the view is refreshed at once, not a lease later.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                    _ = recoveries.changed() => {}
                }
            }
        }
    }

    /// One round: read the node records (and the leases if they may have changed), update
    /// observations, acquire and release.
    pub async fn poll_once(&self, cancel: &CancellationToken) {
        let read_started = Utc::now();
        let read_at = Instant::now();
        self.state.lock().unwrap().reading_since = Some(read_at);
        let read = match self.store.nodes().await {
            Ok(nodes) => match self.store.control_epoch().await {
                Ok(control) => self
                    .leases_for(&nodes, control)
                    .await
                    .map(|leases| (nodes, leases, control)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.state.lock().unwrap().reading_since = None;
        let read_ms = read_at.elapsed().as_millis() as u64;
        let (nodes, leases, control) = match read {
            Ok((nodes, leases, control)) => (Arc::new(nodes), leases, control),
            Err(e) => {
                let failures = {
                    let mut st = self.state.lock().unwrap();
                    st.failures += 1;
                    st.read_error = Some(e.to_string());
                    st.failures
                };
                if failures == 1 || failures % 20 == 0 {
                    warn!(event = "store_error", failures, "cannot read leases: {e}");
                }
                // Still make a lapse visible.
                let current = self.session.current();
                let lost = drop_stale(
                    &mut self.state.lock().unwrap(),
                    current.as_deref(),
                    &self.node,
                    &self.metrics,
                );
                self.notify_lost(lost);
                return;
            }
        };
        if let Some(drift) = self.drift() {
            drift.publish().await;
            drift.refresh(&nodes).await;
        }
        let now = Instant::now();
        let current = self.session.current();
        let plan = {
            let mut st = self.state.lock().unwrap();
            st.failures = 0;
            st.read_error = None;
            st.observed = Some(Observation {
                nodes: nodes.clone(),
                leases: leases.clone(),
                control,
            });
            st.polls += 1;
            st.first_poll.get_or_insert(now);
            let mut lost = drop_stale(&mut st, current.as_deref(), &self.node, &self.metrics);
            let mut plan = self.observe(&mut st, &leases, &nodes, current.as_deref(), now);
            st.last_read_wall = Some(read_started);
            lost.append(&mut plan.lost);
            (plan, lost)
        };
        let (plan, lost) = plan;
        self.notify_lost(lost);
        if plan.died {
            self.death_seen.notify_waiters();
        }
        if let Some(offset) = plan.offset_ms {
            self.session.set_clock_offset(Some(offset));
            self.metrics.set_clock_offset(offset as f64 / 1000.0);
        }
        self.session.set_jobs(self.held());
        self.dispatch_requests(&leases);
        let Some(session) = current else { return };
        if cancel.is_cancelled() {
            return;
        }
        // Under the fair share: try candidates until the share is reached (a lost race moves on
        // to the next one). Long-available leases: everyone takes them.
        // Under the share: race the others for free leases (losses expected). Long-available
        // leases: nobody else should want them (any loss means a stale view).
        let mut budget = ACQUIRE_PER_POLL;
        let (mut within_share, mut anyway) = (plan.within_share, plan.anyway);
        let over = self
            .end_dead_sessions(within_share.iter().chain(&anyway))
            .await;
        for (_, observed) in within_share.iter_mut().chain(anyway.iter_mut()) {
            if over.contains(observed.holder()) {
                observed.holder_node = None;
            }
        }
        let won = self
            .acquire_in_batches(
                within_share,
                plan.quota,
                &mut budget,
                true,
                &session,
                cancel,
            )
            .await
            + self
                .acquire_in_batches(anyway, usize::MAX, &mut budget, false, &session, cancel)
                .await;
        let mut changed = won > 0;
        if !plan.release.is_empty() {
            changed |= self
                .release_excess(&plan.release, plan.release_count, &session)
                .await;
        }
        // Leases of jobs a reload removed or switched off go back once they are idle.
        let stale: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .held
            .keys()
            .filter(|j| {
                self.jobs
                    .index(j)
                    .is_none_or(|i| !self.jobs.is_contested(i))
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            changed |= self.release_stale(&stale, &session).await;
        }
        for (id, session, heartbeat) in plan.silent {
            match self.store.delete_node_if(&id, &session, heartbeat).await {
                Ok(true) => info!(event = "node_removed", removed = %id, node = %self.node,
                    "removed the record of node {id}: no heartbeat for {} lease times",
                    GC_AFTER_LEASES),
                Ok(false) => {}
                Err(e) => debug!(removed = %id, "cannot remove a silent node's record: {e}"),
            }
        }
        let held = self.held();
        debug!(event = "poll", node = %self.node, read_ms, won,
            took_ms = read_at.elapsed().as_millis() as u64, "election poll");
        self.metrics.set_held(held.iter());
        if changed {
            self.session.leases_changed(held);
        } else {
            self.session.set_jobs(held);
        }
    }

    /// Hand the pending requests of the jobs this node leads to whoever acts on them.
    fn dispatch_requests(&self, leases: &HashMap<String, LeaseRecord>) {
        let Some(events) = self.events() else { return };
        let pending: Vec<(usize, Leadership, Requests)> = {
            let st = self.state.lock().unwrap();
            st.held
                .iter()
                .filter_map(|(job, lead)| {
                    let rec = leases.get(job).filter(|l| !l.requests.is_empty())?;
                    Some((self.jobs.index(job)?, lead.clone(), rec.requests.clone()))
                })
                .collect()
        };
        for (idx, lead, requests) in pending {
            events.requests(idx, &lead, &requests);
        }
    }

    /// The leases: the copy from the last read unless they may have changed since (see the
    /// module doc), else a fresh batched read. `nodes` must have been read just before: a node
    /// announces a lease change only after it committed, so a read after seeing the
    /// announcement includes the change.
    async fn leases_for(
        &self,
        nodes: &HashMap<String, NodeRecord>,
        control: i64,
    ) -> StoreResult<Arc<HashMap<String, LeaseRecord>>> {
        let started = Instant::now();
        let names = self.jobs.active_names();
        // What to read: the leases to merge into the copy, or `None` for all of them.
        let (partial, dirty) = {
            let mut st = self.state.lock().unwrap();
            let every = full_read_every(self.config.lease, names.len());
            let dirty = std::mem::take(&mut st.dirty_jobs);
            let full = st.leases_dirty
                || st.leases.as_ref().is_none_or(|c| {
                    // A reload that added a job makes a new list: its lease is not in the copy.
                    !Arc::ptr_eq(&c.names, &names)
                        || c.control != control
                        || started.duration_since(c.read_at) >= every
                });
            // Cleared before the read: a change noticed while it is under way marks it again.
            st.leases_dirty = false;
            match &st.leases {
                Some(c) if !full => {
                    let changed = changed_nodes(&self.node, &c.epochs, nodes);
                    if changed.is_empty() && dirty.is_empty() {
                        return Ok(c.leases.clone());
                    }
                    (
                        Some(self.to_reread(&c.leases, &names, &changed, nodes, &dirty)),
                        dirty,
                    )
                }
                _ => (None, dirty),
            }
        };
        let epochs = nodes
            .iter()
            .map(|(id, n)| (id.clone(), (n.session.clone(), n.lease_epoch)))
            .collect();
        let read = match &partial {
            Some(jobs) if jobs.is_empty() => Ok(HashMap::new()),
            Some(jobs) => self.store.leases(jobs).await,
            None => self.store.leases(&names).await,
        };
        let found = match read {
            Ok(found) => found,
            Err(e) => {
                // The copy and what it was read against stay as they were, so the next poll
                // decides the same way: a full read again if this one was (re-marked, as the
                // mark was cleared before it), else the same changed nodes' leases and these
                // jobs. A failed read of a few leases does not become a read of all of them.
                let mut st = self.state.lock().unwrap();
                st.leases_dirty |= partial.is_none();
                st.dirty_jobs.extend(dirty);
                return Err(e);
            }
        };
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let (leases, read_at) = match (partial, st.leases.take()) {
            (Some(jobs), Some(cache)) => {
                // Merged in place: a copy of 100,000 leases is about 30 MB, and a clone for
                // every partial read doubled it. The observation lets go of its reference
                // first (it gets the merged copy back below); a reader holding one (the
                // dashboard building a view) only makes this one merge clone.
                if let Some(o) = st.observed.as_mut() {
                    o.leases = Arc::default();
                }
                let mut leases = cache.leases;
                if merge(Arc::make_mut(&mut leases), jobs, found) {
                    st.leases_version += 1;
                }
                // A partial read keeps the last full read's time: the safety net still comes.
                (leases, cache.read_at)
            }
            (Some(_), None) => {
                // The copy went away during the read (nothing does this today): a part is no
                // view of the leases. Read them all next time.
                st.leases_dirty = true;
                return Err(StoreError::Unavailable(
                    "the leases copy went away during a partial read".into(),
                ));
            }
            (None, _) => {
                st.leases_version += 1;
                (Arc::new(found), started)
            }
        };
        if let Some(o) = st.observed.as_mut() {
            o.leases = leases.clone();
        }
        st.leases = Some(LeaseCache {
            leases: leases.clone(),
            names,
            control,
            epochs,
            read_at,
        });
        Ok(leases)
    }

    /// The leases to read again when `changed` nodes announced something (or `dirty` jobs were
    /// touched by this node): those the copy shows held by a changed node or by a node whose
    /// record is gone or shows another session, free, or absent (some node may have taken
    /// them), and the dirty ones. Leases of live nodes that announced nothing are not read:
    /// nobody takes a live node's lease, and a node judged dead has its record deleted first
    /// ([`Election::end_dead_sessions`]), which counts as a change.
    fn to_reread(
        &self,
        copy: &HashMap<String, LeaseRecord>,
        names: &[String],
        changed: &std::collections::HashSet<&str>,
        nodes: &HashMap<String, NodeRecord>,
        dirty: &std::collections::HashSet<String>,
    ) -> Vec<String> {
        names
            .iter()
            .filter(|job| {
                dirty.contains(*job)
                    || match copy.get(*job) {
                        None => !changed.is_empty(),
                        Some(l) if l.holder.is_empty() => !changed.is_empty(),
                        Some(l) => {
                            changed.contains(l.holder.as_str())
                                || nodes.get(&l.holder).is_none_or(|n| n.session != l.session)
                        }
                    }
            })
            .cloned()
            .collect()
    }

    /// Update observations from a snapshot and decide what to acquire and release.
    fn observe(
        &self,
        st: &mut State,
        leases: &Arc<HashMap<String, LeaseRecord>>,
        nodes: &HashMap<String, NodeRecord>,
        session: Option<&str>,
        now: Instant,
    ) -> Plan {
        // Heartbeat watches: restart the clock whenever (session, heartbeat) changes.
        st.watch.retain(|id, _| nodes.contains_key(id));
        let wall = Utc::now();
        for (id, rec) in nodes {
            if id == &self.node {
                continue;
            }
            let process = if rec.process.is_empty() {
                rec.session.clone()
            } else {
                rec.process.clone()
            };
            let low = (rec.renewed_at - wall).num_milliseconds();
            // Without a previous read, only the low bound is known: a poll period above it.
            let high = st
                .last_read_wall
                .map_or(low + self.config.poll.as_millis() as i64, |prev| {
                    (rec.renewed_at - prev).num_milliseconds()
                });
            match st.watch.get_mut(id) {
                Some(w) if w.session == rec.session && w.heartbeat == rec.heartbeat => {}
                Some(w) if w.process == process => {
                    // A new heartbeat of the same process: first seen now.
                    w.session = rec.session.clone();
                    w.heartbeat = rec.heartbeat;
                    w.since = now;
                    w.offsets.push_back((low, high.max(low)));
                    if w.offsets.len() > OFFSET_SAMPLES {
                        w.offsets.pop_front();
                    }
                }
                _ => {
                    // A node (or process) not seen before: its record may be old, so its
                    // first sample is not one.
                    st.watch.insert(
                        id.clone(),
                        Watched {
                            session: rec.session.clone(),
                            process,
                            heartbeat: rec.heartbeat,
                            since: now,
                            offsets: Default::default(),
                        },
                    );
                }
            }
        }
        let lease_time = self.config.lease;
        let alive = |st: &State, id: &str| {
            st.watch
                .get(id)
                .is_some_and(|w| now.duration_since(w.since) < lease_time)
        };
        let mut lost = Vec::new();
        // Deaths: a node alive at the last poll that is gone, another process, or silent now.
        let alive_now: HashMap<String, String> = st
            .watch
            .iter()
            .filter(|(id, _)| alive(st, id))
            .map(|(id, w)| (id.clone(), w.process.clone()))
            .collect();
        let died = st
            .alive_prev
            .iter()
            .any(|(id, process)| alive_now.get(id) != Some(process));
        if died {
            st.deaths += 1;
        }
        let offset_ms = self.clock_offset(st, &alive_now);
        st.alive_prev = alive_now;
        // A node that is stopping keeps what it holds until it releases it, but takes nothing
        // more: it is no peer for the share or the placement.
        let live_peers: Vec<&String> = nodes
            .iter()
            .filter(|(id, n)| *id != &self.node && !n.leaving && alive(st, id))
            .map(|(id, _)| id)
            .collect();
        let live = live_peers.len() + 1;
        let names = self.jobs.active_names();
        let key = WalkKey::new(st.leases_version, &names, session, &st.held, nodes, |id| {
            alive(st, id)
        });
        // A last walk for other inputs goes before the new one is made: at a start with
        // 100,000 jobs each one's list of available leases is about 30 MB.
        let walked = match st.walked.take().filter(|w| w.key == key) {
            Some(w) => w,
            None => {
                let (available, counts) =
                    self.walk(st, leases, &names, nodes, session, now, &mut lost);
                Walked {
                    key: key.after(&st.held),
                    available,
                    counts,
                }
            }
        };
        let drift = self.drift();
        let share = match &drift {
            Some(d) => {
                d.check(&live_peers);
                d.share(&names, &live_peers)
            }
            None => names.len().div_ceil(live),
        };

        let mut available = walked.available.clone();
        let held_by = walked.counts.clone();
        st.walked = Some(walked);
        let counts: HashMap<&str, usize> =
            held_by.iter().map(|(id, n)| (id.as_str(), *n)).collect();

        let mut plan = Plan {
            lost,
            died,
            offset_ms,
            ..Plan::default()
        };
        let gc_after = lease_time * GC_AFTER_LEASES;
        plan.silent = st
            .watch
            .iter()
            .filter(|(_, w)| now.duration_since(w.since) >= gc_after)
            .map(|(id, w)| (id.clone(), w.session.clone(), w.heartbeat))
            .collect();
        // Wait one poll after the first one, so the nodes starting together see each other.
        // "One poll later" with a tenth of slack: polls are a period apart, but each instant is
        // taken after its read returns, so the second poll can come out a hair short of a full
        // period, which cost a whole extra poll at start-up (2 s instead of 1 by default).
        let settled = st
            .first_poll
            .is_some_and(|t| now.duration_since(t) + self.config.poll / 10 >= self.config.poll);
        if session.is_none() || !settled {
            return plan;
        }
        let patience = self.config.poll * 2;
        // Patience counts from when this node could first have acted, not from start-up.
        let settled_at = st.first_poll.map(|t| t + self.config.poll).unwrap_or(now);
        // Every node places the available leases alike (crate::node::placement) and takes its
        // own part: nodes polling at the same moment do not race for the same leases. With
        // definitions that differ between nodes, the share is drift's and the order random.
        let uniform = drift.as_ref().is_none_or(|d| d.uniform(&live_peers));
        let mut share = share;
        let mut placed = vec![!uniform; available.len()];
        if uniform {
            let live_ids: Vec<&str> = live_peers
                .iter()
                .map(|id| id.as_str())
                .chain([self.node.as_str()])
                .collect();
            let jobs: Vec<&str> = available.iter().map(|(j, _, _)| j.as_str()).collect();
            let p = placement::place(&self.node, &live_ids, &counts, names.len(), &jobs);
            share = p.cap;
            plan.quota = p.mine.len().min(share.saturating_sub(st.held.len()));
            for i in p.mine {
                placed[i] = true;
            }
        } else {
            let mut order: Vec<usize> = (0..available.len()).collect();
            order.shuffle(&mut rand::rng());
            let mut shuffled: Vec<_> = available.into_iter().map(Some).collect();
            available = order
                .into_iter()
                .filter_map(|i| shuffled[i].take())
                .collect();
            plan.quota = share.saturating_sub(st.held.len());
        }
        for ((job, (since, since_poll), observed), placed) in available.into_iter().zip(placed) {
            let long_free = now.duration_since(since.max(settled_at)) >= patience
                && st.polls.saturating_sub(since_poll) >= 2
                && st.polls.saturating_sub(st.last_change_poll) >= 2;
            if long_free {
                plan.anyway.push((job, observed));
            } else if placed {
                plan.within_share.push((job, observed));
            }
        }
        // Hand back the excess after it has lasted two polls.
        if st.held.len() > share {
            let since = *st.excess_since.get_or_insert(now);
            if now.duration_since(since) >= patience {
                let excess = (st.held.len() - share).min(RELEASE_BATCH);
                // Every held job, furthest next tick first: a busy one is passed over.
                plan.release = self.furthest_next_ticks(st.held.keys(), st.held.len());
                plan.release_count = excess;
                st.excess_since = None;
            }
        } else {
            st.excess_since = None;
        }
        plan
    }

    /// Classify every job's lease (see the module doc): the available ones with since when,
    /// and the leases held per live node. Books what it finds in this node's own leases
    /// (`held`, with `lost` the ones another holder took) and views.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        st: &mut State,
        leases: &HashMap<String, LeaseRecord>,
        names: &[String],
        nodes: &HashMap<String, NodeRecord>,
        session: Option<&str>,
        now: Instant,
        lost: &mut Vec<(String, i64)>,
    ) -> (Available, Vec<(String, usize)>) {
        let lease_time = self.config.lease;
        let alive = |st: &State, id: &str| {
            st.watch
                .get(id)
                .is_some_and(|w| now.duration_since(w.since) < lease_time)
        };
        let mut available = Vec::new();
        // Leases held per live node (this one included), for the placement.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for job in names.iter() {
            let lease = leases.get(job);
            // By reference: this loop runs over every job on every poll.
            let rec = lease.unwrap_or(&FREE_LEASE);
            let standing = if rec.holder.is_empty() {
                Standing::Available
            } else if rec.holder == self.node {
                if session == Some(rec.session.as_str()) {
                    Standing::Mine
                } else {
                    Standing::Available // a lease of an earlier session of ours: dead
                }
            } else {
                match nodes.get(&rec.holder) {
                    None => Standing::Available, // holder gone (stopped gracefully)
                    Some(n) if n.session != rec.session => Standing::Available, // holder restarted
                    Some(n) if handed_over(n, job) => Standing::Available, // holder stopping
                    Some(_) if alive(st, &rec.holder) => Standing::Other,
                    Some(_) => Standing::Available, // heartbeat unchanged for a full lease
                }
            };
            let view = st.view.get(job);
            if !view.is_some_and(|v| v.holder == rec.holder && v.term == rec.term) {
                st.last_change_poll = st.polls;
            }
            if !view.is_some_and(|v| {
                v.holder == rec.holder
                    && v.term == rec.term
                    && v.paused == rec.paused
                    && v.resumed_at == rec.resumed_at
                    && v.requests == rec.requests
            }) {
                st.view.insert(
                    job.clone(),
                    LeaseView {
                        holder: rec.holder.clone(),
                        term: rec.term,
                        paused: rec.paused.clone(),
                        resumed_at: rec.resumed_at,
                        requests: rec.requests.clone(),
                        previous_acquired_at: None,
                    },
                );
            }
            match standing {
                Standing::Mine => *counts.entry(self.node.as_str()).or_default() += 1,
                Standing::Other => *counts.entry(rec.holder.as_str()).or_default() += 1,
                Standing::Available => {}
            }
            match standing {
                Standing::Mine => {
                    st.available_since.remove(job);
                    if st.held.get(job).is_none_or(|l| l.term != rec.term) {
                        // Ours in the store but not in memory: an acquire whose answer was lost.
                        self.metrics.lease_acquired(job);
                        info!(event = "lease_acquired", job, node = %self.node, term = rec.term,
                            "lease acquired (found in the store)");
                        st.held.insert(
                            job.clone(),
                            Leadership {
                                term: rec.term,
                                session: rec.session.clone(),
                            },
                        );
                    }
                }
                Standing::Other | Standing::Available => {
                    if let Some(l) = st.held.remove(job) {
                        self.metrics.lease_lost(job);
                        info!(event = "lease_lost", job, node = %self.node, term = l.term,
                            holder = %rec.holder, "lease lost: the store shows another holder");
                        lost.push((job.clone(), l.term));
                    }
                    if matches!(standing, Standing::Available) {
                        let polls = st.polls;
                        let since = *st
                            .available_since
                            .entry(job.clone())
                            .or_insert((now, polls));
                        // A stopping holder's heartbeat still moves: its record is not part
                        // of the compare for the leases it handed over, only the lease is.
                        let handed = nodes
                            .get(&rec.holder)
                            .is_some_and(|n| n.session == rec.session && handed_over(n, job));
                        // The holder's record counts only while it shows the session the
                        // lease was taken under. Showing another one, the holder restarted
                        // (or its session lapsed and it began a new one): sessions are never
                        // taken up again, so that lease's session is over for good, as if the
                        // record were gone. Compared against the new session's heartbeat, the
                        // take failed whenever that heartbeat moved before the commit (after a
                        // store outage at 100,000 jobs: every time, and no lease came back),
                        // and ending "its" session deleted a live node's record.
                        let holder_node = nodes
                            .get(&rec.holder)
                            .filter(|n| {
                                !rec.holder.is_empty() && !handed && n.session == rec.session
                            })
                            .map(|n| (n.session.clone(), n.heartbeat));
                        available.push((
                            job.clone(),
                            since,
                            Observed {
                                lease: lease.cloned(),
                                holder_node,
                                handed_over: handed,
                            },
                        ));
                    } else {
                        st.available_since.remove(job);
                    }
                }
            }
        }
        let counts = counts
            .into_iter()
            .map(|(id, n)| (id.to_string(), n))
            .collect();
        (available, counts)
    }

    /// Before taking the leases of nodes judged dead whose records still show the session
    /// their leases were held under: end those sessions by deleting the records, each only if
    /// it still shows the (session, heartbeat) observed ([`Store::delete_node_if`]; whoever
    /// gets there first). From then on the session can never be renewed (a node that wakes
    /// finds its renew deadline passed and starts a new one), so its leases are taken with no
    /// further look at its record: thousands of compare-and-sets no longer all read one node
    /// record (in one Datastore entity group, where concurrent transactions abort each other).
    /// The holders whose sessions are over (records deleted, by us or another node, or showing
    /// another session).
    async fn end_dead_sessions<'a>(
        &self,
        candidates: impl Iterator<Item = &'a (String, Observed)>,
    ) -> std::collections::HashSet<String> {
        let mut dead: HashMap<String, (String, i64)> = HashMap::new();
        for (_, o) in candidates {
            if let Some((session, heartbeat)) = &o.holder_node {
                dead.insert(o.holder().to_string(), (session.clone(), *heartbeat));
            }
        }
        if dead.is_empty() {
            return Default::default();
        }
        // Sessions ended here or by another node (records gone): their nodes died.
        let mut over = std::collections::HashSet::new();
        let mut gone = Vec::new();
        let mut recheck = Vec::new();
        for (id, (session, heartbeat)) in &dead {
            match self.store.delete_node_if(id, session, *heartbeat).await {
                Ok(true) => {
                    info!(event = "node_removed", removed = %id, node = %self.node,
                        "removed the record of node {id}: no heartbeat for a lease; its leases are free");
                    gone.push(id);
                }
                Ok(false) => recheck.push(id),
                Err(e) => debug!(removed = %id, "cannot remove a dead node's record: {e}"),
            }
        }
        // Changed since: deleted by another node (or it restarted) is as good; a new
        // heartbeat of the same session means it lives, and its leases stay.
        if !recheck.is_empty() {
            if let Ok(nodes) = self.store.nodes().await {
                for id in recheck {
                    match nodes.get(id) {
                        None => gone.push(id),
                        Some(n) if n.session != dead[id].0 => {
                            over.insert(id.clone());
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let mut st = self.state.lock().unwrap();
        if st.ended.len() > ENDED_KEPT {
            st.ended.clear();
        }
        for id in gone {
            st.ended.insert(id.clone(), dead[id].0.clone());
            over.insert(id.clone());
        }
        over
    }

    /// Try `candidates` in order, in batches of [`ACQUIRE_BATCH`] compare-and-sets
    /// ([`Store::acquire_many`]), [`BATCHES_IN_FLIGHT`] at once, until `want` are won or
    /// `budget` attempts are spent: a node taking 2,000 leases makes a handful of store calls.
    /// A round that won nothing, or with `losses_ok` false lost anything, shows the
    /// observation is stale (others took these meanwhile): stop, and act again on the next
    /// poll's fresh read. How many were won.
    async fn acquire_in_batches(
        &self,
        candidates: Vec<(String, Observed)>,
        want: usize,
        budget: &mut usize,
        losses_ok: bool,
        session: &str,
        cancel: &CancellationToken,
    ) -> usize {
        let mut candidates = candidates.into_iter();
        let mut total = 0;
        while total < want && *budget > 0 && !cancel.is_cancelled() {
            let round: Vec<Acquire> = candidates
                .by_ref()
                .take(
                    (want - total)
                        .min(*budget)
                        .min(ACQUIRE_BATCH * BATCHES_IN_FLIGHT),
                )
                .map(|(job, observed)| self.acquisition(job, observed, session))
                .collect();
            if round.is_empty() {
                break;
            }
            let tried = round.len();
            *budget -= tried;
            let calls = round.chunks(ACQUIRE_BATCH).map(|batch| async move {
                let result = self.store.acquire_many(batch).await;
                (batch, result)
            });
            let mut won = 0;
            for (batch, result) in futures::future::join_all(calls).await {
                won += self.acquired(batch, result);
            }
            total += won;
            if won == 0 || (!losses_ok && won < tried) {
                break;
            }
        }
        total
    }

    /// The compare-and-set that takes `job`'s lease for this node's `session` from what was
    /// `observed`: the next term.
    fn acquisition(&self, job: String, observed: Observed, session: &str) -> Acquire {
        let old_term = observed.lease.as_ref().map_or(0, |l| l.term);
        let paused = observed.lease.as_ref().and_then(|l| l.paused.clone());
        let resumed_at = observed.lease.as_ref().and_then(|l| l.resumed_at);
        Acquire {
            job,
            new: LeaseRecord {
                holder: self.node.clone(),
                session: session.to_string(),
                term: old_term + 1,
                acquired_at: Some(Utc::now()),
                // Kept by the store whatever is written here; the same, for this node's view.
                paused,
                resumed_at,
                requests: Default::default(),
            },
            observed,
        }
    }

    /// Book what a batch of acquisitions won; how many.
    fn acquired(&self, batch: &[Acquire], result: StoreResult<Vec<String>>) -> usize {
        // Whatever the answer, the copy of these leases no longer matches the store: ours
        // changed, or somebody else's change made a compare-and-set fail, or the answer was
        // lost. They are read again at the next poll.
        self.state
            .lock()
            .unwrap()
            .dirty_jobs
            .extend(batch.iter().map(|a| a.job.clone()));
        let won: std::collections::HashSet<String> = match result {
            Ok(won) => won.into_iter().collect(),
            Err(e) => {
                warn!(
                    event = "store_error",
                    jobs = batch.len(),
                    "cannot acquire leases: {e}"
                );
                return 0;
            }
        };
        let events = self.events();
        let mut count = 0;
        for a in batch.iter().filter(|a| won.contains(&a.job)) {
            count += 1;
            let job = a.job.as_str();
            let seen = a.observed.lease.as_ref();
            self.metrics.lease_acquired(job);
            {
                let mut st = self.state.lock().unwrap();
                st.held.insert(
                    job.to_string(),
                    Leadership {
                        term: a.new.term,
                        session: a.new.session.clone(),
                    },
                );
                st.available_since.remove(job);
                st.view.insert(
                    job.to_string(),
                    LeaseView {
                        holder: self.node.clone(),
                        term: a.new.term,
                        paused: a.new.paused.clone(),
                        resumed_at: a.new.resumed_at,
                        requests: seen.map(|l| l.requests.clone()).unwrap_or_default(),
                        previous_acquired_at: seen.and_then(|l| l.acquired_at),
                    },
                );
            }
            let from = match a.observed.holder() {
                "" => "free",
                holder => holder,
            };
            info!(event = "lease_acquired", job, node = %self.node, term = a.new.term,
                previous = %from, "lease acquired");
            if let (Some(idx), Some(events)) = (self.jobs.index(job), &events) {
                events.acquired(idx, a.new.term);
            }
        }
        if count > 0 {
            self.metrics
                .set_held(self.state.lock().unwrap().held.keys());
        }
        if count < batch.len() {
            debug!(
                lost = batch.len() - count,
                "leases taken by another node first"
            );
        }
        count
    }

    /// Hand `want` of `jobs` back (rebalancing; in order of preference), in one store call.
    /// True if it was done.
    async fn release_excess(&self, jobs: &[String], want: usize, session: &str) -> bool {
        // Only idle leases go: no claimed tick waiting to start, no run going.
        let events = self.events();
        let may_go = self.idle_of(events.as_deref(), jobs, want);
        let _handed = HandedOver(events.as_deref(), &may_go);
        let names: Vec<String> = may_go
            .iter()
            .map(|&i| self.jobs.get(i).name.clone())
            .collect();
        self.hand_back(
            &names,
            session,
            "rebalance",
            "lease released to spread jobs over the nodes",
            "cannot release leases",
        )
        .await
        .is_some()
    }

    /// Hand back the leases of `jobs`, held by this node but no longer contested (a reload
    /// removed them or switched them off), that are idle: no claim pending, no run going (a
    /// run of a removed job finishes first, within `shutdown_grace`). A busy one, or one whose
    /// release fails, is looked at again at the next poll. True if any was released.
    async fn release_stale(&self, jobs: &[String], session: &str) -> bool {
        let events = self.events();
        let idle = self.idle_of(events.as_deref(), jobs, usize::MAX);
        let _handed = HandedOver(events.as_deref(), &idle);
        // Back in the file meanwhile: kept.
        let names: Vec<String> = idle
            .iter()
            .filter(|&&i| !self.jobs.is_contested(i))
            .map(|&i| self.jobs.get(i).name.clone())
            .collect();
        self.hand_back(
            &names,
            session,
            "removed",
            "lease released: the job is no longer in this node's jobs file (or is off)",
            "cannot release the leases of removed jobs (tried again at the next poll)",
        )
        .await
        .is_some()
    }

    /// At a graceful stop, before running jobs drain: hand over at once every lease whose job
    /// has nothing going on this node (no claimed tick waiting, no run), so the other nodes
    /// take them at their next poll instead of after `shutdown_grace`. The node record says
    /// so (`leaving`, keeping only the busy jobs), and live peers take those leases straight
    /// from this node: at 10,000 jobs a node's 2,000 releases followed by its peers' 2,000
    /// acquisitions took 13 s on the emulator, the acquisitions alone about one. What is
    /// still ours after [`handover_wait`] (no live peer, a store error) is released
    /// here. The busy ones go with [`Election::release_all`] once their runs are done. How
    /// many were handed over or freed.
    pub async fn release_idle(&self) -> usize {
        let Some(session) = self.session.current() else {
            return 0;
        };
        let events = self.events();
        let held = self.held();
        let idle = self.idle_of(events.as_deref(), &held, usize::MAX);
        // No new claim of these until the hand-over ends (peers may take them any moment).
        let _handed = HandedOver(events.as_deref(), &idle);
        let mut names: Vec<String> = idle
            .iter()
            .map(|&i| self.jobs.get(i).name.clone())
            .collect();
        let handing: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        let keeps: Vec<String> = held
            .iter()
            .filter(|j| !handing.contains(j.as_str()))
            .cloned()
            .collect();
        let kept = keeps.len();
        self.session.set_leaving(keeps);
        let peers = !self.state.lock().unwrap().alive_prev.is_empty();
        info!(event = "handing_over", node = %self.node, idle = names.len(), kept, peers,
            "stopping: {} idle lease(s) handed over, {kept} kept until their runs end",
            names.len());
        let mut handed = 0;
        if peers && !names.is_empty() {
            let deadline = Instant::now() + handover_wait(self.config.poll);
            while Instant::now() < deadline && !names.is_empty() {
                tokio::time::sleep(self.config.poll / 2).await;
                let Ok(leases) = self.store.leases(&names).await else {
                    break;
                };
                let taken: Vec<String> = names
                    .iter()
                    .filter(|j| {
                        leases
                            .get(*j)
                            .is_none_or(|l| l.holder != self.node || l.session != session)
                    })
                    .cloned()
                    .collect();
                handed += self.book_taken(&taken);
                names.retain(|j| !taken.contains(j));
            }
        }
        let freed = self
            .hand_back(
                &names,
                &session,
                "shutdown",
                "lease released",
                "cannot release idle leases at stop (tried again after the drain)",
            )
            .await;
        if freed.is_some() {
            self.session.leases_changed(self.held());
        }
        handed + freed.unwrap_or(0)
    }

    /// Book `jobs`, whose leases peers took from this stopping node, as handed over: out of
    /// `held`, logged `lease_released` (reason `shutdown`). How many.
    fn book_taken(&self, jobs: &[String]) -> usize {
        let mut st = self.state.lock().unwrap();
        for job in jobs {
            if let Some(l) = st.held.remove(job) {
                info!(event = "lease_released", job = %job, node = %self.node, term = l.term,
                    reason = "shutdown", "lease handed over: a peer took it from this stopping node");
            }
        }
        self.metrics.set_held(st.held.keys());
        jobs.len()
    }

    /// The slots of at most `want` of `jobs` (in order of preference) that may be handed back
    /// now: those `events` says are idle. Each must take no new claim until the hand-over ends
    /// ([`HandedOver`]).
    fn idle_of(
        &self,
        events: Option<&dyn LeaseEvents>,
        jobs: &[String],
        want: usize,
    ) -> Vec<usize> {
        let indices: Vec<usize> = jobs.iter().filter_map(|j| self.jobs.index(j)).collect();
        match events {
            Some(e) => e.hand_over(indices, want),
            None => indices.into_iter().take(want).collect(),
        }
    }

    /// Release those of `jobs` this node holds, in one store call, and book it: each leaves
    /// `held` (if still held with the term it had), is logged `lease_released` with `reason`
    /// and `message`, and is read again at the next poll. How many the store freed; `None`
    /// when the call failed (logged with `failed`) or nothing was held.
    async fn hand_back(
        &self,
        jobs: &[String],
        session: &str,
        reason: &str,
        message: &str,
        failed: &str,
    ) -> Option<usize> {
        let terms: Vec<(String, i64)> = {
            let st = self.state.lock().unwrap();
            jobs.iter()
                .filter_map(|j| st.held.get(j).map(|l| (j.clone(), l.term)))
                .collect()
        };
        if terms.is_empty() {
            return None;
        }
        let names: Vec<String> = terms.iter().map(|(j, _)| j.clone()).collect();
        let result = self.store.release(&names, &self.node, session).await;
        let mut st = self.state.lock().unwrap();
        st.dirty_jobs.extend(names);
        match result {
            Ok(freed) => {
                for (job, term) in &terms {
                    if st.held.get(job).is_some_and(|h| h.term == *term) {
                        st.held.remove(job);
                    }
                    info!(event = "lease_released", job = %job, node = %self.node, term = *term,
                        reason, "{message}");
                }
                self.metrics.set_held(st.held.keys());
                Some(freed)
            }
            Err(e) => {
                warn!(event = "store_error", "{failed}: {e}");
                None
            }
        }
    }

    /// Release every lease this node holds (graceful stop). Returns how many were freed.
    pub async fn release_all(&self) -> usize {
        let held: Vec<(String, Leadership)> = self.state.lock().unwrap().held.drain();
        if held.is_empty() {
            return 0;
        }
        // Leases of one session are released together; there is only ever one live session.
        let session = held[0].1.session.clone();
        let jobs: Vec<String> = held.iter().map(|(j, _)| j.clone()).collect();
        match self.store.release(&jobs, &self.node, &session).await {
            Ok(n) => {
                for (job, l) in &held {
                    info!(event = "lease_released", job = %job, node = %self.node, term = l.term,
                        reason = "shutdown", "lease released");
                }
                n
            }
            Err(e) => {
                warn!(
                    event = "store_error",
                    "cannot release leases ({e}); they expire with this node's record"
                );
                0
            }
        }
    }

    /// This node's wall-clock offset from its peers (ms, positive: ahead), from their
    /// heartbeats: each peer's estimate is the middle of the intersection of its samples'
    /// intervals (see [`Watched::offsets`]; renewals and polls drift against each other, so
    /// the intersection narrows well below a poll period); ours is minus the median of the
    /// peers'. Logs `clock_skew` once when it passes `[node] clock_skew_warn`, and
    /// `clock_skew_cleared` when it is back under half of that.
    fn clock_offset(&self, st: &mut State, alive: &HashMap<String, String>) -> Option<i64> {
        // Only a lease after this node's first poll (nodes started together have all shown
        // up by then) and once every live peer has a few samples: a node that has heard from
        // one peer of three must not call itself skewed.
        let settled = st
            .first_poll
            .is_some_and(|t| t.elapsed() >= self.config.lease);
        let ready = settled
            && alive.keys().all(|id| {
                st.watch
                    .get(id)
                    .is_some_and(|w| w.offsets.len() >= MIN_OFFSET_SAMPLES)
            });
        if !ready {
            return st.offset_ms;
        }
        let mut peers: Vec<i64> = alive
            .keys()
            .filter_map(|id| st.watch.get(id))
            .filter_map(|w| {
                // The intersection of the samples' intervals (or, if latency made them
                // disagree, the span between the tightest bounds): its middle.
                let low = w.offsets.iter().map(|o| o.0).max()?;
                let high = w.offsets.iter().map(|o| o.1).min()?;
                Some((low + high) / 2)
            })
            .collect();
        if peers.is_empty() {
            return None;
        }
        peers.sort_unstable();
        let n = peers.len();
        let median = if n % 2 == 1 {
            peers[n / 2]
        } else {
            (peers[n / 2 - 1] + peers[n / 2]) / 2
        };
        let offset = -median;
        st.offset_ms = Some(offset);
        let warn_ms = self.skew_warn.lock().unwrap().as_millis() as i64;
        if offset.abs() > warn_ms && !st.skew_reported {
            st.skew_reported = true;
            let secs = offset as f64 / 1000.0;
            let way = if offset > 0 { "ahead of" } else { "behind" };
            warn!(event = "clock_skew", node = %self.node, offset_ms = offset, peers = n,
                "this node's clock is {:.1} s {way} its peers' (median of {n}): fire times are \
                 wall-clock instants, so the jobs it leads run that much {}; fix its time \
                 sync (NTP)", secs.abs(), if offset > 0 { "early" } else { "late" });
        } else if offset.abs() <= warn_ms / 2 && st.skew_reported {
            st.skew_reported = false;
            info!(event = "clock_skew_cleared", node = %self.node, offset_ms = offset,
                "this node's clock agrees with its peers' again");
        }
        Some(offset)
    }

    /// The `n` held jobs whose next fire times are furthest away.
    fn furthest_next_ticks<'a>(
        &self,
        held: impl Iterator<Item = &'a String>,
        n: usize,
    ) -> Vec<String> {
        let now = Utc::now();
        let mut by_next: Vec<_> = held
            .filter_map(|name| {
                let job = self.jobs.get(self.jobs.index(name)?);
                Some((job.schedule.next_after(now), name.clone()))
            })
            .collect();
        by_next.sort_by_key(|(next, _)| std::cmp::Reverse(*next));
        by_next.into_iter().take(n).map(|(_, name)| name).collect()
    }

    /// The poll period (for callers that wait on the election).
    pub fn poll_period(&self) -> Duration {
        self.config.poll
    }

    /// The lease: how long a silent node takes to be judged dead.
    pub fn lease(&self) -> Duration {
        self.config.lease
    }
}

/// Ends a hand-over when dropped (after the release and its bookkeeping).
struct HandedOver<'a>(Option<&'a dyn LeaseEvents>, &'a [usize]);

impl Drop for HandedOver<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.0 {
            e.handed_over(self.1);
        }
    }
}

#[derive(Default)]
struct Plan {
    /// How many more leases this node may take before it reaches its fair share.
    quota: usize,
    /// Available leases, in random order, taken while under the share.
    within_share: Vec<(String, Observed)>,
    /// Leases available for two polls or more: taken regardless of the share.
    anyway: Vec<(String, Observed)>,
    /// Leases that may be handed back, most preferred first ...
    release: Vec<String>,
    /// ... and how many of them: the excess over the fair share.
    release_count: usize,
    /// Other nodes silent for [`GC_AFTER_LEASES`] lease times: (id, session, heartbeat).
    silent: Vec<(String, String, i64)>,
    /// Leases this poll found held by someone else: (job, our term).
    lost: Vec<(String, i64)>,
    /// A node alive at the last poll is dead now.
    died: bool,
    /// This node's clock offset estimate, if there are peers to compare with.
    offset_ms: Option<i64>,
}

/// Puts the re-read `jobs` into the leases `copy`: each one as `found`, or gone if it was not
/// found. Whether anything changed.
fn merge(
    copy: &mut HashMap<String, LeaseRecord>,
    jobs: Vec<String>,
    mut found: HashMap<String, LeaseRecord>,
) -> bool {
    let mut changed = false;
    for job in jobs {
        match found.remove(&job) {
            Some(lease) => {
                if copy.get(&job) != Some(&lease) {
                    copy.insert(job, lease);
                    changed = true;
                }
            }
            None => changed |= copy.remove(&job).is_some(),
        }
    }
    changed
}

/// The other nodes whose (session, lease epoch) differ from `seen` (the last read's), or that
/// appeared or are gone. This node's own changes are tracked job by job instead.
fn changed_nodes<'a>(
    me: &str,
    seen: &'a HashMap<String, (String, i64)>,
    nodes: &'a HashMap<String, NodeRecord>,
) -> std::collections::HashSet<&'a str> {
    let mut changed: std::collections::HashSet<&str> = nodes
        .iter()
        .filter(|(id, n)| {
            *id != me
                && seen
                    .get(*id)
                    .is_none_or(|(s, e)| *s != n.session || *e != n.lease_epoch)
        })
        .map(|(id, _)| id.as_str())
        .collect();
    changed.extend(
        seen.keys()
            .filter(|id| *id != me && !nodes.contains_key(*id))
            .map(String::as_str),
    );
    changed
}

/// Drop leases held under a session that is not the current one (lapsed), logging each.
fn drop_stale(
    st: &mut State,
    current: Option<&str>,
    node: &str,
    metrics: &Metrics,
) -> Vec<(String, i64)> {
    let mut lost = Vec::new();
    let stale: Vec<String> = st
        .held
        .iter()
        .filter(|(_, l)| Some(l.session.as_str()) != current)
        .map(|(j, _)| j.clone())
        .collect();
    if !stale.is_empty() && current.is_none() {
        st.lapsed_holding = true;
    }
    for job in stale {
        if let Some(l) = st.held.remove(&job) {
            metrics.lease_lost(&job);
            metrics.not_held(&job, st.held.len());
            info!(event = "lease_lost", job = %job, node, term = l.term,
                "lease lost: the session lapsed (no successful heartbeat within the renew deadline)");
            lost.push((job, l.term));
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::NoStore;

    /// A graceful stop announces its hand-over only once [`Election::run`] returns: a poll
    /// stuck on a store that does not answer must not hold it back.
    #[tokio::test]
    async fn a_stop_abandons_the_poll_in_flight() {
        let store: Arc<dyn Store> = Arc::new(NoStore::hung());
        let config = ElectionConfig {
            lease: Duration::from_secs(3),
            renew: Duration::from_millis(500),
            poll: Duration::from_millis(250),
        };
        let session = Arc::new(Session::new("n1".into(), store.clone(), config, None));
        let election = Arc::new(Election::new(
            session,
            store,
            config,
            Arc::new(JobTable::new(Vec::new())),
            Arc::new(Metrics::new()),
        ));
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (election, cancel) = (election.clone(), cancel.clone());
            async move { election.run(cancel).await }
        });
        // The first poll starts at once and waits on the store.
        let deadline = Instant::now() + Duration::from_secs(10);
        while election.state.lock().unwrap().reading_since.is_none() {
            assert!(Instant::now() < deadline, "the first poll never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the election loop still waits for its poll after the stop")
            .unwrap();
        assert!(election.state.lock().unwrap().reading_since.is_none());
    }

    #[test]
    fn a_merge_counts_only_real_changes() {
        let lease = |holder: &str, term| LeaseRecord {
            holder: holder.into(),
            term,
            ..Default::default()
        };
        let mut copy = HashMap::from([
            ("a".to_string(), lease("n1", 1)),
            ("b".into(), lease("n2", 1)),
        ]);
        let read = |pairs: &[(&str, LeaseRecord)]| {
            pairs
                .iter()
                .map(|(j, l)| (j.to_string(), l.clone()))
                .collect::<HashMap<_, _>>()
        };
        // Re-read as it was, and a job with no lease anywhere: no change.
        assert!(!merge(
            &mut copy,
            vec!["a".into(), "c".into()],
            read(&[("a", lease("n1", 1))])
        ));
        // Taken by another node.
        assert!(merge(
            &mut copy,
            vec!["a".into()],
            read(&[("a", lease("n2", 2))])
        ));
        assert_eq!(copy["a"], lease("n2", 2));
        // Gone from the store.
        assert!(merge(&mut copy, vec!["b".into()], HashMap::new()));
        assert!(!copy.contains_key("b"));
        // Leases not re-read are kept as they were.
        assert_eq!(copy.len(), 1);
    }

    #[test]
    fn failed_reads_back_off_to_at_most_a_lease() {
        let (poll, lease) = (Duration::from_secs(1), Duration::from_secs(10));
        let waits: Vec<u64> = (0..8)
            .map(|n| read_backoff(poll, lease, n).as_secs())
            .collect();
        // With the poll period itself: 1, 1, 2, 3, 5, 9, 10, 10 s between reads.
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 9, 9]);
        assert_eq!(read_backoff(poll, lease, u32::MAX), Duration::from_secs(9));
    }
}
