//! One tick of one job, on one node: claim it and run it, or sit out.
//!
//! The holder claims the tick in one store transaction that checks the lease is still its own
//! with its term and inserts the run record `{job}@{fire time}`. That is the fencing check: a
//! node that was paused past its lease, or lost it a moment ago, cannot run the tick, and no fire
//! time can be claimed twice. Every other node logs that it is sitting out and who leads.
//!
//! Claims are made ahead: the ticker hands each fire time over
//! [`CLAIM_AHEAD`](crate::node::ticker::CLAIM_AHEAD) before its instant, the holder claims it then,
//! waits for the instant and checks once more that it still leads with the claimed term (its
//! session is checked on the local monotonic clock, as for any act of leadership). So the job
//! starts at its instant, not one store round trip later. If the lease was lost in between,
//! the claim stands and the fire time is not run by anyone (`tick_skipped`, reason
//! `lease_lost`): at most once, never twice.
//!
//! After the claim the job's [`Policy`] decides what happens; every rule acts on this node only
//! (a run left behind on a node that lost its lease is out of reach, see the README's limits).
//!
//! - **Overlap**, while the same job's previous run on this node is still going. `skip`
//!   (default): the tick stays claimed, so no other node runs that fire time either, but it is
//!   not run; its record is finished at once with outcome `skipped` (0 attempts) and
//!   `tick_skipped` is logged with reason `overlap` and the running run's fire time. `allow`:
//!   it runs alongside. `replace`: the older run's token is cancelled (its process group gets
//!   SIGTERM, then SIGKILL, as on timeout), the tick waits for it to end (at most
//!   [`REPLACE_WAIT`]), then runs; the older run's outcome is `replaced`, not `killed`, so a
//!   shutdown and a replacement stay apart in records and metrics. A tick never replaces a
//!   *newer* run (a caught-up fire time behind a current one): it is skipped instead. Each run
//!   gets its own child of the node's kill token, registered per job, for this. A run counts
//!   as going until its last attempt ends, retry backoffs included.
//! - **Retries**: an attempt that ends `failed` or `timeout` is started again, at most
//!   `retries` times, `retry_backoff` later, doubling per retry up to
//!   [`RETRY_BACKOFF_CAP`](crate::config::RETRY_BACKOFF_CAP): under the same claim, on this
//!   node, with no new claim. Before each retry (before and after the backoff) the lease must
//!   still be this node's with the claimed term and the node must not be stopping or the run
//!   replaced; otherwise the run ends with the last attempt's outcome (`job_retry_abandoned`).
//!   The record holds the last attempt's outcome and the number of attempts.
//!
//! Catch-up, when this node acquires a job's lease ([`Ticks::caught_up`]), for fire times that
//! fell due while nobody led the job. Which fire times are young enough: younger than the
//! job's `starting_deadline`. Left out, that is the election's lease, and additionally no fire
//! time from before this node started is replayed, so a cluster that was down entirely does
//! not replay its downtime; a job that sets `starting_deadline` (itself or in `[defaults]`)
//! asks for its downtime to be replayed, up to that age, and gets no such cut.
//!
//! - `none`: nothing.
//! - `latest` (default): the newest young-enough fire time, unless it already ran (a newer run
//!   supersedes older misses). One store lookup.
//! - `all`: every young-enough fire time without a run record, oldest first, one after the
//!   other (each waits for the previous to finish), at most [`MAX_CATCH_UP`]: the newest ones
//!   are kept, older ones are dropped and logged (`catch_up_dropped`). Which ran is learnt from
//!   one `recent_runs` read of as many runs as there are candidates ([`CATCH_UP_SCAN`] at
//!   most). A fire time older than the oldest run that read returns is never caught up: its
//!   record may simply have been pruned (`[store] history`); for a job with no runs at all,
//!   fire times from before this node started are not caught up either (the job may not have
//!   existed then).
//!
//! Catch-up runs take the ordinary path: the fenced claim (which refuses a fire time another
//! node already ran, so none runs twice), the overlap policy, retries. Before each one the
//! lease must still be ours with the acquiring term and the node must not be stopping.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::OnLeaseLost;
use crate::config::{CatchUp, Job, Overlap, Policy};
use crate::node::election::{Election, Leadership};
use crate::node::jobs::JobTable;
use crate::node::output::{LiveOutputs, OutputTail};
use crate::node::recorder::Recorder;
use crate::node::runner::{self, Outcome, RunContext, RunResult};
use crate::ops::metrics::Metrics;
use crate::store::{Claim, RunRecord, Store};

/// The most missed fire times one lease acquisition catches up (`catch_up = "all"`).
pub const MAX_CATCH_UP: usize = 10;
/// How many of the newest fire times within the starting deadline `catch_up = "all"` looks at
/// (and so how many runs it reads): bounds the work of a long deadline on a frequent schedule.
pub const CATCH_UP_SCAN: usize = 100;
/// Runs read beyond the candidates by `catch_up = "all"` (see [`Ticks::caught_up`]).
const CATCH_UP_SLACK: usize = 5;
/// How long a replacing tick waits for the run it replaces to end before starting anyway
/// (logged): the runner needs [`runner::TERM_GRACE`] and a little more to end a process group
/// that ignores SIGTERM.
pub const REPLACE_WAIT: Duration = Duration::from_secs(10);
/// How many tried fire times per job this node remembers, so that the pulse and a catch-up
/// that meet on one fire time do not both claim it (the store would refuse the second anyway).
const TRIED_KEEP: usize = 256;

/// The last run of a job on this node, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    pub fire_time: String,
    pub term: i64,
    /// `running` until it finishes.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    /// Attempts so far (retries included).
    pub attempts: u32,
}

/// What a tick needs besides the job list: the store, the election, bookkeeping.
pub struct TickContext {
    pub node: String,
    pub store: Arc<dyn Store>,
    pub election: Arc<Election>,
    pub metrics: Arc<Metrics>,
    /// The election's lease: how far catch-up looks back for a job without a
    /// `starting_deadline`.
    pub lease: Duration,
    pub tracker: TaskTracker,
    /// Cancelled when the node stops taking ticks.
    pub stopping: CancellationToken,
    /// Cancelled when running jobs must be killed (shutdown grace exceeded). Each run gets a
    /// child of it, which `overlap = "replace"` cancels alone.
    pub kill: CancellationToken,
    /// Writes run outcomes, retrying across store outages.
    pub recorder: Arc<Recorder>,
    /// This process's id, written into every claimed run ([`RunRecord::process`]).
    pub process: String,
    /// Told when a run starts (its ping); outcomes reach it through the recorder.
    pub notifier: Arc<crate::notify::Notifier>,
}

pub struct Ticks {
    node: String,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    metrics: Arc<Metrics>,
    jobs: Arc<JobTable>,
    lease: Duration,
    tracker: TaskTracker,
    stopping: CancellationToken,
    kill: CancellationToken,
    /// Per job, this node's last run.
    last: Mutex<HashMap<usize, LastRun>>,
    /// When this node started taking part.
    started_at: DateTime<Utc>,
    /// Per job, the newest fire times this node has tried to claim as leader.
    tried: Mutex<HashMap<usize, BTreeSet<DateTime<Utc>>>>,
    /// Per job, the runs going on this node now (the overlap policy looks here).
    active: Mutex<HashMap<usize, Vec<Active>>>,
    /// The output tails of the runs going on this node, for live readers (HTTP).
    live: LiveOutputs,
    next_run_id: AtomicU64,
    recorder: Arc<Recorder>,
    process: String,
    notifier: Arc<crate::notify::Notifier>,
    /// Claims not yet started, and jobs being handed over (see [`Ticks::hand_over`]).
    handover: Mutex<HandOver>,
}

/// A rebalancing hand-over must never release a lease whose tick is claimed and not yet
/// started: the claim would stand and nobody would run that fire time.
#[derive(Default)]
struct HandOver {
    /// Per job, claims made (or being made) whose run has not started yet.
    pending: HashMap<usize, usize>,
    /// Jobs whose lease is being handed back: no new claims.
    handing: HashSet<usize>,
}

/// One claim in [`HandOver::pending`]; dropping it (the run started, or the tick gave up)
/// takes it out.
struct PendingClaim<'a> {
    ticks: &'a Ticks,
    idx: usize,
}

impl Drop for PendingClaim<'_> {
    fn drop(&mut self) {
        let mut h = self.ticks.handover.lock().unwrap();
        if let Some(n) = h.pending.get_mut(&self.idx) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                h.pending.remove(&self.idx);
            }
        }
    }
}

/// A run going on this node, as the overlap policy sees it.
struct Active {
    id: u64,
    fire_time: DateTime<Utc>,
    term: i64,
    /// Set before `cancel` when the node lost the lease and the job's `on_lease_lost` is stop.
    stopped: Arc<AtomicBool>,
    /// The run's own token, a child of the node's kill token: cancelling it stops the run.
    cancel: CancellationToken,
    /// Set before `cancel` when a newer run replaces this one.
    replaced: Arc<AtomicBool>,
    /// Cancelled when the run has ended (its process group is gone).
    done: CancellationToken,
}

/// A run's entry in [`Ticks::active`]; dropping it (the run ended, or its task was dropped)
/// removes the entry and wakes a tick waiting to replace it.
struct Slot<'a> {
    ticks: &'a Ticks,
    idx: usize,
    id: u64,
    cancel: CancellationToken,
    replaced: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    done: CancellationToken,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(runs) = self.ticks.active.lock().unwrap().get_mut(&self.idx) {
            runs.retain(|r| r.id != self.id);
        }
        self.done.cancel();
    }
}

/// How a run meets a run of the same job that is going on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapMode {
    /// The job's `overlap` policy (scheduled ticks, triggers).
    Policy,
    /// Alongside, whatever the policy (`cronlease trigger --overlap allow`).
    Allow,
    /// Wait until nothing of the job is going, then start under the policy (backfills: an
    /// operator asked for that fire time; it is not skipped behind a scheduled run).
    Queue,
}

impl OverlapMode {
    fn overlap(self) -> Option<Overlap> {
        match self {
            OverlapMode::Allow => Some(Overlap::Allow),
            OverlapMode::Policy | OverlapMode::Queue => None,
        }
    }
}

/// Why [`Ticks::start_requested`] did not start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotClaimed {
    /// The store refused the claim (`Won` never appears here).
    Claim(Claim),
    /// The store did not answer; the claim is resolved later ([`crate::node::recorder`]).
    Store(String),
    /// The node takes no claim for this job now (stopping, handing the lease over).
    Busy(&'static str),
}

/// What the overlap policy decided for a claimed tick.
enum Start<'a> {
    /// Run it; first wait for these runs (fire time, ended) to end: they were told to stop.
    Run(Slot<'a>, Vec<(DateTime<Utc>, CancellationToken)>),
    /// Do not run it: the run of this fire time is going (`newer`: and it is newer than this
    /// tick, which `replace` does not replace).
    Skip { running: DateTime<Utc>, newer: bool },
}

impl Ticks {
    pub fn new(ctx: TickContext, jobs: Arc<JobTable>) -> Self {
        Ticks {
            node: ctx.node,
            store: ctx.store,
            election: ctx.election,
            metrics: ctx.metrics,
            jobs,
            lease: ctx.lease,
            tracker: ctx.tracker,
            stopping: ctx.stopping,
            kill: ctx.kill,
            last: Mutex::new(HashMap::new()),
            started_at: Utc::now(),
            tried: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            live: LiveOutputs::default(),
            next_run_id: AtomicU64::new(1),
            recorder: ctx.recorder,
            process: ctx.process,
            notifier: ctx.notifier,
            handover: Mutex::new(HandOver::default()),
        }
    }

    /// Where this node's events go ([`crate::notify`]).
    pub fn notifier(&self) -> &Arc<crate::notify::Notifier> {
        &self.notifier
    }

    /// The job at `idx`.
    pub fn job(&self, idx: usize) -> Arc<Job> {
        self.jobs.get(idx)
    }

    /// Since when this node has known job `idx` (and had it on): fire times before are not
    /// its to catch up.
    /// When a reload added job `idx` (`None`: it was in the file at start).
    pub(crate) fn added_at(&self, idx: usize) -> Option<DateTime<Utc>> {
        self.jobs.since(idx)
    }

    pub(crate) fn known_since(&self, idx: usize) -> DateTime<Utc> {
        self.jobs
            .since(idx)
            .map_or(self.started_at, |a| a.max(self.started_at))
    }

    /// Job `idx` was removed (or switched off) by a reload: the ticker no longer hands over
    /// its fire times and no claim is made for it ([`Ticks::may_claim`]); its runs going on
    /// here may finish within `grace`, then they are killed. The election hands its lease
    /// back at the first poll that finds it idle ([`crate::node::election`]), so a node that still
    /// has the job takes it over.
    pub async fn retire(&self, idx: usize, grace: Duration) {
        let name = self.jobs.get(idx).name.clone();
        let runs = |ticks: &Ticks| -> Vec<(CancellationToken, CancellationToken)> {
            ticks
                .active
                .lock()
                .unwrap()
                .get(&idx)
                .into_iter()
                .flatten()
                .map(|r| (r.cancel.clone(), r.done.clone()))
                .collect()
        };
        let going = runs(self);
        if !going.is_empty() {
            info!(event = "job_retiring", job = %name, node = %self.node, runs = going.len(),
                "removed from the jobs file: waiting up to {grace:?} for its runs");
            let all_done = async {
                for (_, done) in &going {
                    done.cancelled().await;
                }
            };
            if tokio::time::timeout(grace, all_done).await.is_err() && !self.jobs.is_contested(idx)
            {
                warn!(event = "grace_exceeded", job = %name, node = %self.node,
                    "removed job's runs still going after {grace:?}: killing them");
                for (cancel, _) in &going {
                    cancel.cancel();
                }
                let reaped = async {
                    for (_, done) in &going {
                        done.cancelled().await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), reaped).await;
            }
        }
    }

    /// Whether job `idx` is in the current file and enabled.
    pub fn contested(&self, idx: usize) -> bool {
        self.jobs.is_contested(idx)
    }

    /// Whether a claim may be made for job `idx` now: in the current file, enabled, and the
    /// node not stopping.
    fn may_claim(&self, idx: usize) -> bool {
        !self.stopping.is_cancelled() && self.jobs.is_contested(idx)
    }

    /// The election wants to hand `want` of these jobs back (rebalancing), in order of
    /// preference: the first `want` that are idle on this node may go now, and take no new
    /// claim until [`Ticks::handed_over`]. Idle: no claimed tick waiting to start (it would be
    /// dropped) and no run going (it would overlap the next holder's runs, out of reach of
    /// `on_lease_lost`). The others stay (the election tries again at a later poll). A fire
    /// time that falls due meanwhile is sat out unclaimed, so the next holder's catch-up can
    /// run it.
    pub fn hand_over(&self, jobs: Vec<usize>, want: usize) -> Vec<usize> {
        let mut h = self.handover.lock().unwrap();
        let active = self.active.lock().unwrap();
        let mut ok = Vec::with_capacity(want.min(jobs.len()));
        for idx in jobs {
            if ok.len() == want {
                break;
            }
            let pending = h.pending.get(&idx).copied().unwrap_or(0) > 0;
            let running = active.get(&idx).is_some_and(|runs| !runs.is_empty());
            if !pending && !running {
                h.handing.insert(idx);
                ok.push(idx);
            }
        }
        ok
    }

    /// The hand-over of these jobs is over (released, or the release failed).
    pub fn handed_over(&self, jobs: &[usize]) {
        let mut h = self.handover.lock().unwrap();
        for idx in jobs {
            h.handing.remove(idx);
        }
    }

    /// Register a claim about to be made for job `idx`; `None` while the job is being handed
    /// over (then no claim may be made).
    fn begin_claim(&self, idx: usize) -> Option<PendingClaim<'_>> {
        let mut h = self.handover.lock().unwrap();
        if h.handing.contains(&idx) {
            return None;
        }
        *h.pending.entry(idx).or_insert(0) += 1;
        Some(PendingClaim { ticks: self, idx })
    }

    /// This node lost job `idx`'s lease held with `term`: runs of that term whose job says
    /// `on_lease_lost = "stop"` are stopped (outcome `stopped`).
    pub fn lease_lost(&self, idx: usize, term: i64) {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        // What this node knew of the job's last outcome goes stale while others lead it.
        self.notifier.forget(&job.name);
        if job.policy.on_lease_lost != OnLeaseLost::Stop {
            return;
        }
        let active = self.active.lock().unwrap();
        for run in active.get(&idx).into_iter().flatten() {
            if run.term == term && !run.cancel.is_cancelled() {
                run.stopped.store(true, Ordering::SeqCst);
                run.cancel.cancel();
                warn!(event = "run_stopping", job = %job.name, node = %self.node,
                    fire_time = %rfc3339(run.fire_time), term, reason = "lease_lost",
                    "the lease was lost: stopping the run of {} (on_lease_lost = stop)",
                    rfc3339(run.fire_time));
            }
        }
    }

    /// Run a lost run again: `run` is the recovery record the orphan closer wrote (claimed
    /// under `lead`, fenced, `recovery = true`).
    pub fn run_recovery(self: &Arc<Self>, idx: usize, run: RunRecord, lead: Leadership) {
        if self.stopping.is_cancelled() {
            // Stopping: close it at once rather than leave it `running`.
            let this = self.clone();
            self.tracker
                .spawn(async move { this.recorder.finish(run.skipped("stopping")).await });
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            let fire_time = run.fire_time;
            // Marked tried, so the pulse or a catch-up never claims it on top.
            this.try_mark(idx, fire_time);
            // A pending claim like any other, so that a hand-over waits for it to start.
            let Some(pending) = this.begin_claim(idx) else {
                this.recorder.finish(run.skipped("handing_over")).await;
                return;
            };
            this.run_claimed(idx, run, lead, Some(pending), OverlapMode::Policy)
                .await;
        });
    }

    /// Claim a run an operator asked for (`run.trigger` says which request) and start it in a
    /// task of its own: the fenced claim, then the ordinary path (overlap policy, or `overlap`
    /// when the request overrides it, retries, recording). On success, the receiver gets the
    /// run's outcome when it ends; otherwise why it was not claimed.
    pub async fn start_requested(
        self: &Arc<Self>,
        idx: usize,
        run: RunRecord,
        lead: Leadership,
        mode: OverlapMode,
    ) -> Result<tokio::sync::oneshot::Receiver<String>, NotClaimed> {
        let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        // The claim and the run in one task, so that the pending claim (which a hand-over
        // waits for) lasts until the run has started.
        self.tracker.spawn(async move {
            let answer = this.claim_requested(idx, &run, &lead).await;
            let pending = match answer {
                Ok(pending) => pending,
                Err(why) => {
                    let _ = claimed_tx.send(Err(why));
                    return;
                }
            };
            let _ = claimed_tx.send(Ok(()));
            let outcome = this.run_claimed(idx, run, lead, Some(pending), mode).await;
            let _ = done_tx.send(outcome);
        });
        match claimed_rx.await {
            Ok(Ok(())) => Ok(done_rx),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(NotClaimed::Busy("stopping")),
        }
    }

    async fn claim_requested(
        &self,
        idx: usize,
        run: &RunRecord,
        lead: &Leadership,
    ) -> Result<PendingClaim<'_>, NotClaimed> {
        if !self.may_claim(idx) {
            return Err(NotClaimed::Busy("stopping"));
        }
        let Some(pending) = self.begin_claim(idx) else {
            return Err(NotClaimed::Busy("handing_over"));
        };
        let job = self.jobs.get(idx);
        match self.store.claim(run, &lead.session).await {
            Ok(Claim::Won) => Ok(pending),
            Ok(Claim::Fenced) => {
                drop(pending);
                self.metrics.claim_refused(&job.name, "fenced");
                self.election
                    .lost(&job.name, lead.term, "a requested run's claim was fenced");
                Err(NotClaimed::Claim(Claim::Fenced))
            }
            Ok(other) => {
                self.metrics.claim_refused(&job.name, other.as_str());
                Err(NotClaimed::Claim(other))
            }
            Err(e) => {
                drop(pending);
                self.recorder.unconfirmed(run.clone()).await;
                Err(NotClaimed::Store(e.to_string()))
            }
        }
    }

    /// Run `task` on the node's task tracker (a graceful stop waits for it).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Cancelled when the node starts stopping: background reads give up then instead of
    /// keeping a graceful stop waiting.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Wait until no run of job `idx` is going on this node (or the node stops).
    pub async fn idle(&self, idx: usize) {
        loop {
            let next = self
                .active
                .lock()
                .unwrap()
                .get(&idx)
                .and_then(|runs| runs.first().map(|r| r.done.clone()));
            let Some(done) = next else { return };
            tokio::select! {
                _ = done.cancelled() => {}
                _ = self.stopping.cancelled() => return,
            }
        }
    }

    /// A claim-like write whose answer was lost (a recovery's `close_orphan`): resolve it as an
    /// unconfirmed claim ([`crate::node::recorder`]).
    pub async fn unconfirmed(&self, run: RunRecord) {
        self.recorder.unconfirmed(run).await
    }

    /// The output tail of the run of `job` at `fire_time` if it is going on this node now
    /// (`GET /runs/{job}/{fire_time}/output`).
    pub fn live_output(&self, job: &str, fire_time: DateTime<Utc>) -> Option<Arc<OutputTail>> {
        self.live.get(job, fire_time)
    }

    /// This node's last run of job `idx`, if it ran one.
    pub fn last_run(&self, idx: usize) -> Option<LastRun> {
        self.last.lock().unwrap().get(&idx).cloned()
    }

    /// A scheduled fire time of job `idx` fell due.
    pub fn fire(self: &Arc<Self>, idx: usize, fire_time: DateTime<Utc>) {
        if self.stopping.is_cancelled() || !self.jobs.is_active(idx) {
            return;
        }
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        if !job.enabled {
            return;
        }
        // A jitter moves the whole tick, claim included, to the run's start: whoever leads
        // then claims and runs it ([`crate::config::jitter`]). Every node waits alike.
        let delay = start_delay(job, fire_time);
        if !delay.is_zero() {
            let this = self.clone();
            self.tracker.spawn(async move {
                let at = fire_time + chrono::Duration::from_std(delay).unwrap_or_default();
                let ahead = chrono::Duration::from_std(crate::node::ticker::CLAIM_AHEAD)
                    .unwrap_or_default();
                let wait = (at - ahead - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // The leader at the start instant runs it; a stopping node is not that.
                    _ = this.stopping.cancelled() => return,
                }
                if this.stopping.is_cancelled() || !this.jobs.is_active(idx) {
                    return;
                }
                this.fire_now(idx, fire_time);
            });
            return;
        }
        self.fire_now(idx, fire_time);
    }

    /// [`Ticks::fire`] at the run's start: claim and run it if this node leads, else sit out.
    fn fire_now(self: &Arc<Self>, idx: usize, fire_time: DateTime<Utc>) {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        if !job.enabled {
            return;
        }
        match self.election.leading(&job.name) {
            Some(lead) => self.claim_and_run(idx, fire_time, lead),
            None => {
                let view = self.election.view(&job.name);
                let holder = if view.holder.is_empty() {
                    "nobody"
                } else {
                    view.holder.as_str()
                };
                self.metrics.tick_sat_out(&job.name);
                if let Some(p) = &view.paused {
                    info!(event = "sitting_out", job = %job.name, node = %self.node,
                        fire_time = %rfc3339(fire_time), paused = true, holder,
                        term = view.term, "{}", paused_text(Some(p)));
                    return;
                }
                info!(
                    event = "sitting_out",
                    job = %job.name,
                    node = %self.node,
                    fire_time = %rfc3339(fire_time),
                    holder,
                    term = view.term,
                    "sitting out: {holder} leads (term {})",
                    view.term
                );
            }
        }
    }

    /// This node just acquired job `idx`'s lease with `term`: catch up the missed fire times
    /// its `catch_up` policy asks for (module docs), in a task of their own.
    pub fn caught_up(self: &Arc<Self>, idx: usize, term: i64) {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        if self.stopping.is_cancelled() || !self.jobs.is_active(idx) {
            return;
        }
        let Some(lead) = self.election.leading(&job.name).filter(|l| l.term == term) else {
            return;
        };
        let now = Utc::now();
        // The ticker hands fire times over CLAIM_AHEAD early: one due within that window was
        // handed over (and sat out) before this node led. Claim it now; the tick waits for its
        // instant. `try_mark` keeps it from running twice on this node.
        // With a jitter, what counts is each run's start (fire time + delay): the last fire
        // time may still have its start ahead, and the claim is made only then.
        let ahead =
            chrono::Duration::from_std(crate::node::ticker::CLAIM_AHEAD).unwrap_or_default();
        let last = job.schedule.latest_at_or_before(now);
        for fire_time in last.into_iter().chain(job.schedule.next_after(now)) {
            let start = start_of(job, fire_time);
            if start > now && start <= now + ahead {
                self.claim_and_run(idx, fire_time, lead.clone());
            }
        }
        if job.policy.catch_up == CatchUp::None {
            return;
        }
        let mut after = catch_up_after(&job.policy, now, self.lease, self.known_since(idx));
        // A job added by a reload never catches up fire times from before it was added, not
        // even within an explicit `starting_deadline`: this node did not know it then.
        if let Some(added) = self.jobs.since(idx) {
            after = after.max(added - chrono::Duration::nanoseconds(1));
        }
        // Paused: nothing to catch up; resumed: nothing from the pause (or before it).
        let view = self.election.view(&job.name);
        if view.paused.is_some() {
            return;
        }
        if let Some(resumed) = view.resumed_at {
            after = after.max(resumed);
        }
        let this = self.clone();
        self.tracker
            .spawn(async move { this.catch_up(idx, lead, after, now).await });
    }

    async fn catch_up(
        &self,
        idx: usize,
        lead: Leadership,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        let missed = match job.policy.catch_up {
            CatchUp::None => return,
            CatchUp::Latest => {
                // The latest fire time whose run should have started by now (with a jitter,
                // the one before may be it: the latest's start may still be ahead, and its
                // delayed tick runs it); young enough by its start.
                let latest = job.schedule.latest_at_or_before(now).and_then(|t| {
                    if start_of(job, t) <= now {
                        Some(t)
                    } else {
                        job.schedule
                            .latest_at_or_before(t - chrono::Duration::seconds(1))
                    }
                });
                let Some(latest) = latest.filter(|t| start_of(job, *t) > after) else {
                    return;
                };
                // Only if nobody ran it: the claim would say so too, but quietly is better.
                match self.store.run_exists(&job.name, latest).await {
                    Ok(false) => vec![latest],
                    Ok(true) => return,
                    Err(e) => {
                        warn!(event = "store_error", job = %job.name, node = %self.node,
                            term = lead.term, "catch-up check failed, not catching up: {e}");
                        return;
                    }
                }
            }
            CatchUp::All => match self.missed(idx, &lead, after, now).await {
                Some(missed) => missed,
                None => return,
            },
        };
        for fire_time in missed {
            if self.stopping.is_cancelled() {
                return;
            }
            if !self.still_leading(job, &lead) {
                info!(event = "catch_up_stopped", job = %job.name, node = %self.node,
                    term = lead.term, reason = "lease_lost",
                    "catch-up stopped: the lease is no longer ours with term {}", lead.term);
                return;
            }
            let marked = match job.policy.catch_up {
                // A newer fire time this node already took on (claimed ahead on acquisition,
                // or handed over by the pulse meanwhile) supersedes the latest miss: claiming
                // it now would only get it skipped behind that run, or that run skipped
                // behind it.
                CatchUp::Latest => self.try_mark_newest(idx, fire_time),
                _ => self.try_mark(idx, fire_time),
            };
            if !marked {
                continue; // the pulse got there first
            }
            info!(event = "catch_up", job = %job.name, node = %self.node,
                fire_time = %rfc3339(fire_time), term = lead.term,
                catch_up = job.policy.catch_up.as_str(), "catching up a missed fire time");
            self.tick(idx, fire_time, lead.clone()).await;
        }
    }

    /// `catch_up = "all"`: the young-enough fire times with no run, oldest first, at most
    /// [`MAX_CATCH_UP`] (the newest ones). `None` when the store cannot say (logged).
    async fn missed(
        &self,
        idx: usize,
        lead: &Leadership,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Vec<DateTime<Utc>>> {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        let (candidates, more) = recent_fire_times(job, after, now, CATCH_UP_SCAN);
        if candidates.is_empty() {
            return Some(Vec::new());
        }
        // A few more than the candidates: runs newer than `now` (this node's pulse goes on
        // meanwhile) must not push the oldest candidate's record out of the read.
        let read = candidates.len() + CATCH_UP_SLACK;
        let runs = match self.store.recent_runs(&job.name, read).await {
            Ok(runs) => runs,
            Err(e) => {
                warn!(event = "store_error", job = %job.name, node = %self.node,
                    term = lead.term, "catch-up check failed, not catching up: {e}");
                return None;
            }
        };
        let ran: HashSet<DateTime<Utc>> = runs.iter().map(|r| r.fire_time).collect();
        let floor = runs
            .iter()
            .map(|r| r.fire_time)
            .min()
            .unwrap_or(self.known_since(idx) - chrono::Duration::nanoseconds(1));
        // Newest first.
        // A fire time whose (jittered) start is still ahead is its delayed tick's to run.
        let mut missed: Vec<DateTime<Utc>> = candidates
            .into_iter()
            .filter(|t| *t > floor && !ran.contains(t) && start_of(job, *t) <= now)
            .collect();
        if missed.len() > MAX_CATCH_UP {
            let dropped = &missed[MAX_CATCH_UP..];
            let oldest = rfc3339(*dropped.last().expect("not empty"));
            let newest = rfc3339(dropped[0]);
            warn!(event = "catch_up_dropped", job = %job.name, node = %self.node,
                term = lead.term, missed = missed.len(), dropped = dropped.len(),
                oldest_dropped = %oldest, newest_dropped = %newest,
                "{} missed fire times{}: catching up the newest {MAX_CATCH_UP}, dropping {oldest} .. {newest}",
                missed.len(), if more { " (and maybe older ones)" } else { "" });
            missed.truncate(MAX_CATCH_UP);
        }
        missed.reverse();
        Some(missed)
    }

    fn still_leading(&self, job: &Job, lead: &Leadership) -> bool {
        self.election
            .leading(&job.name)
            .is_some_and(|l| l.term == lead.term)
    }

    /// Remember that this node tries `fire_time` of job `idx`; false if it already did.
    fn try_mark(&self, idx: usize, fire_time: DateTime<Utc>) -> bool {
        let mut tried = self.tried.lock().unwrap();
        let set = tried.entry(idx).or_default();
        if !set.insert(fire_time) {
            return false;
        }
        while set.len() > TRIED_KEEP {
            set.pop_first();
        }
        true
    }

    /// [`Ticks::try_mark`], but also false if this node already tried a fire time of job `idx`
    /// newer than `fire_time` (checked and marked under one lock, so no pulse slips in between).
    fn try_mark_newest(&self, idx: usize, fire_time: DateTime<Utc>) -> bool {
        let mut tried = self.tried.lock().unwrap();
        let set = tried.entry(idx).or_default();
        if set.last().is_some_and(|t| *t > fire_time) || !set.insert(fire_time) {
            return false;
        }
        while set.len() > TRIED_KEEP {
            set.pop_first();
        }
        true
    }

    fn claim_and_run(self: &Arc<Self>, idx: usize, fire_time: DateTime<Utc>, lead: Leadership) {
        if !self.try_mark(idx, fire_time) {
            return; // already tried (the pulse and a catch-up can meet)
        }
        let this = self.clone();
        self.tracker
            .spawn(async move { this.tick(idx, fire_time, lead).await });
    }

    /// The overlap policy's decision for a claimed tick of job `idx`; registers the new run.
    fn start(
        &self,
        idx: usize,
        fire_time: DateTime<Utc>,
        term: i64,
        overlap: Option<Overlap>,
    ) -> Start<'_> {
        let overlap = overlap.unwrap_or(self.jobs.get(idx).policy.overlap);
        let mut active = self.active.lock().unwrap();
        let runs = active.entry(idx).or_default();
        let mut replacing = Vec::new();
        if let Some(newest) = runs.iter().map(|r| r.fire_time).max() {
            match overlap {
                Overlap::Skip => {
                    return Start::Skip {
                        running: newest,
                        newer: newest > fire_time,
                    }
                }
                Overlap::Replace if newest > fire_time => {
                    return Start::Skip {
                        running: newest,
                        newer: true,
                    }
                }
                Overlap::Replace => {
                    for r in runs.iter() {
                        r.replaced.store(true, Ordering::SeqCst);
                        r.cancel.cancel();
                        replacing.push((r.fire_time, r.done.clone()));
                    }
                }
                Overlap::Allow => {}
            }
        }
        let id = self.next_run_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.kill.child_token();
        let replaced = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let done = CancellationToken::new();
        runs.push(Active {
            id,
            fire_time,
            term,
            stopped: stopped.clone(),
            cancel: cancel.clone(),
            replaced: replaced.clone(),
            done: done.clone(),
        });
        Start::Run(
            Slot {
                ticks: self,
                idx,
                id,
                cancel,
                replaced,
                stopped,
                done,
            },
            replacing,
        )
    }

    async fn tick(&self, idx: usize, fire_time: DateTime<Utc>, lead: Leadership) {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        let fire = rfc3339(fire_time);
        if !self.may_claim(idx) {
            return;
        }
        let Some(pending) = self.begin_claim(idx) else {
            self.metrics.tick_sat_out(&job.name);
            info!(event = "sitting_out", job = %job.name, node = %self.node, fire_time = %fire,
                term = lead.term, reason = "handing_over",
                "sitting out: the lease is being handed to another node");
            return;
        };
        let run = RunRecord::claimed(
            &job.name,
            fire_time,
            &self.node,
            lead.term,
            &lead.session,
            &self.process,
        );
        match self.store.claim(&run, &lead.session).await {
            Ok(Claim::Won) => {
                if self.election.view(&job.name).paused.is_some() {
                    // Resumed: tell the others at once.
                    self.election.saw_pause(&job.name, None);
                }
            }
            Ok(Claim::Paused) => {
                self.metrics.tick_sat_out(&job.name);
                self.metrics.claim_refused(&job.name, "paused");
                let known = self.election.view(&job.name).paused;
                info!(event = "tick_paused", job = %job.name, node = %self.node,
                    fire_time = %fire, term = lead.term, "{}", paused_text(known.as_deref()));
                if known.is_none() {
                    self.election.saw_pause(&job.name, Some(Default::default()));
                }
                return;
            }
            Ok(Claim::AlreadyRun | Claim::Withdrawn) => {
                self.metrics.tick_sat_out(&job.name);
                self.metrics.claim_refused(&job.name, "already_run");
                info!(event = "sitting_out", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, holder = %self.node, reason = "already_run",
                    "sitting out: this fire time already ran");
                return;
            }
            Ok(Claim::Fenced) => {
                self.metrics.tick_sat_out(&job.name);
                self.metrics.claim_refused(&job.name, "fenced");
                drop(pending);
                self.election
                    .lost(&job.name, lead.term, "a tick claim was fenced");
                info!(event = "sitting_out", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, reason = "fenced",
                    "sitting out: the lease is no longer ours with term {}", lead.term);
                return;
            }
            Ok(Claim::TooOld) => {
                self.metrics.tick_sat_out(&job.name);
                self.metrics.claim_refused(&job.name, "too_old");
                warn!(event = "tick_skipped", job = %job.name, node = %self.node,
                    fire_time = %fire, term = lead.term, reason = "too_old",
                    "not running {fire}: it is older than the job's pruned history, so whether \
                     it ran cannot be told (is this node's clock behind?)");
                return;
            }
            Err(e) => {
                warn!(event = "tick_skipped", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, reason = "claim_unconfirmed",
                    "cannot claim the tick, not running it: {e}; the claim is checked again \
                     when the store answers");
                drop(pending);
                self.recorder.unconfirmed(run).await;
                return;
            }
        }
        self.run_claimed(idx, run, lead, Some(pending), OverlapMode::Policy)
            .await;
    }

    /// Run a claimed tick (`run` is its `running` record): wait for the fire time, check the
    /// lease, apply the overlap policy, run with retries, queue the outcome.
    async fn run_claimed(
        &self,
        idx: usize,
        mut run: RunRecord,
        lead: Leadership,
        pending: Option<PendingClaim<'_>>,
        mode: OverlapMode,
    ) -> String {
        let job_def = self.jobs.get(idx);
        let job = &*job_def;
        let fire_time = run.fire_time;
        let fire = rfc3339(fire_time);
        // The ticker hands fire times over ahead of their instant (`ticker::CLAIM_AHEAD`), so
        // the claim's round trip is done by now: wait for the instant, then check that this
        // node still leads with the claimed term (its session may have lapsed meanwhile). If
        // not, the claim stands and nobody runs this fire time: at most once. A rebalancing
        // hand-over waits for this (the pending claim), so only a real loss ends up here.
        // A requested run's fire time is its request's instant (another machine's clock): it
        // is never waited for.
        let delay = if run.trigger.is_some() {
            Duration::ZERO
        } else {
            start_delay(job, fire_time)
        };
        let start_at = fire_time + chrono::Duration::from_std(delay).unwrap_or_default();
        let wait = if run.trigger.is_some() {
            None
        } else {
            (start_at - Utc::now()).to_std().ok()
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.kill.cancelled() => {}
            }
        }
        let killed = self.kill.is_cancelled();
        if killed || !self.still_leading(job, &lead) {
            let reason = if killed { "stopping" } else { "lease_lost" };
            warn!(event = "tick_skipped", job = %job.name, node = %self.node, fire_time = %fire,
                term = lead.term, reason,
                "claimed, but {} before the fire time: not running it",
                if killed { "the node is stopping" } else { "the lease was lost" });
            drop(pending);
            self.recorder.finish(run.skipped(reason)).await;
            return "skipped".into();
        }
        // From the planned start: a jitter's delay is not lateness.
        let lateness_ms = Utc::now()
            .signed_duration_since(start_at)
            .num_milliseconds();
        let delay_ms = delay.as_millis() as u64;
        run.started_at = Utc::now();

        // A queued run (a backfill's) waits while a run of the job is going, instead of being
        // skipped behind it.
        let start = loop {
            let start = self.start(idx, fire_time, lead.term, mode.overlap());
            if !(mode == OverlapMode::Queue && matches!(start, Start::Skip { .. })) {
                break start;
            }
            drop(start);
            self.idle(idx).await;
            let killed = self.kill.is_cancelled() || self.stopping.is_cancelled();
            if killed || !self.still_leading(job, &lead) {
                let reason = if killed { "stopping" } else { "lease_lost" };
                drop(pending);
                self.recorder.finish(run.skipped(reason)).await;
                return "skipped".into();
            }
        };
        let slot = match start {
            Start::Run(slot, replacing) => {
                drop(pending);
                // A loss noticed between the check above and this run's registration found
                // no run to stop: look once more now that it is registered.
                if !self.still_leading(job, &lead) && job.policy.on_lease_lost == OnLeaseLost::Stop
                {
                    slot.stopped.store(true, Ordering::SeqCst);
                    slot.cancel.cancel();
                }
                self.wait_replaced(job, &fire, lead.term, &slot, replacing)
                    .await;
                slot
            }
            Start::Skip { running, newer } => {
                drop(pending);
                let running = rfc3339(running);
                self.metrics.job_skipped(&job.name);
                if newer {
                    info!(event = "tick_skipped", job = %job.name, node = %self.node,
                        fire_time = %fire, term = lead.term, reason = "overlap",
                        running_fire_time = %running,
                        "skipped: the newer run of {running} is still going");
                } else {
                    info!(event = "tick_skipped", job = %job.name, node = %self.node,
                        fire_time = %fire, term = lead.term, reason = "overlap",
                        running_fire_time = %running,
                        "skipped: the run of {running} is still going (overlap = skip)");
                }
                self.recorder.finish(run.skipped("overlap")).await;
                return "skipped".into();
            }
        };

        if run.trigger.is_none() {
            // A requested run's "lateness" is how long its request waited: not a tick's.
            self.metrics
                .tick_run(&job.name, Duration::from_millis(lateness_ms.max(0) as u64));
        }
        self.set_last(idx, &run, None);
        match &run.trigger {
            Some(t) => info!(event = "tick_run", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, lateness_ms, recovery = run.recovery,
                trigger = %t.kind, by = %t.by, "running tick ({} by {})", t.kind, t.by),
            None if job.policy.jitter.is_some() => info!(event = "tick_run", job = %job.name,
                node = %self.node, fire_time = %fire, term = lead.term, lateness_ms, delay_ms,
                recovery = run.recovery, "running tick ({delay_ms} ms after its fire time: jitter)"),
            None => info!(event = "tick_run", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, lateness_ms, recovery = run.recovery,
                "running tick"),
        }
        self.notifier.run_started(&run);
        let tail = Arc::new(OutputTail::new(job.policy.output_limit));
        let ctx = RunContext {
            node: self.node.clone(),
            fire_time,
            term: lead.term,
            output: Some(tail.clone()),
        };
        let started = std::time::Instant::now();
        // Live readers find the tail until the run is over (outcome queued) or its task dropped.
        let _live = self.live.register(&job.name, fire_time, &tail);
        // A long run's tail is written while it goes, when it changed, at most once per
        // `output_refresh`: a crash does not lose all of it.
        let refresh = CancellationToken::new();
        if job.policy.output_limit > 0 {
            let (store, tail, refresh, every) = (
                self.store.clone(),
                tail.clone(),
                refresh.clone(),
                job.policy.output_refresh,
            );
            let progress = run.clone();
            self.tracker.spawn(async move {
                let mut seen = tail.version();
                loop {
                    tokio::select! {
                        _ = refresh.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if !tail.changed_since(seen) {
                        continue;
                    }
                    let version = tail.version();
                    let (output, output_cut) = tail.snapshot();
                    let update = RunRecord {
                        output,
                        output_cut,
                        ..progress.clone()
                    };
                    // Best effort: the outcome's write carries the tail anyway. A failed write
                    // is tried again at the next refresh, even if no output came since (a run
                    // that printed once and then waited kept no tail when that one write failed).
                    match store.finish(&update).await {
                        Ok(_) => seen = version,
                        Err(e) => {
                            tracing::debug!(job = %update.job, "cannot write the output tail: {e}")
                        }
                    }
                }
            });
        }
        let (result, attempts) = self.attempts(job, &ctx, &lead, &slot).await;
        refresh.cancel();
        let (output, output_cut) = tail.snapshot();
        run.output = output;
        run.output_cut = output_cut;
        let outcome = if result.outcome == Outcome::Killed && slot.replaced.load(Ordering::SeqCst) {
            "replaced"
        } else if result.outcome == Outcome::Killed && slot.stopped.load(Ordering::SeqCst) {
            "stopped"
        } else {
            result.outcome.as_str()
        };
        let took = started.elapsed();
        let duration_ms = took.as_millis() as u64;
        run.finished_at = Some(Utc::now());
        run.outcome = outcome.to_string();
        if outcome == "stopped" {
            run.reason = Some("lease_lost".into());
        } else if let Some(reason) = &result.reason {
            run.reason = Some(reason.clone());
        }
        run.exit_code = result.exit_code;
        run.attempts = attempts + run.attempts.saturating_sub(1);
        let attempts = run.attempts;
        self.metrics.job_finished(&job.name, outcome, took);
        self.metrics.run_seen(
            &job.name,
            run.started_at,
            (outcome == "ok").then_some(run.finished_at).flatten(),
        );
        self.set_last(idx, &run, Some(duration_ms));
        match result.exit_code {
            Some(code) => info!(event = "job_finished", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, outcome, exit_code = code, attempts,
                duration_ms, "finished: {outcome}"),
            None => info!(event = "job_finished", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, outcome, attempts, duration_ms,
                "finished: {outcome}"),
        }
        // The run is over (its process group is gone): the next tick may start, and a tick
        // waiting to replace it does. After `job_finished`, so that the log shows the order.
        drop(slot);
        // Written by the outcome writer, retried for as long as the node lives.
        self.recorder.finish(run).await;
        outcome.to_string()
    }

    /// `replace`: wait until the runs told to stop have ended, at most [`REPLACE_WAIT`].
    async fn wait_replaced(
        &self,
        job: &Job,
        fire: &str,
        term: i64,
        slot: &Slot<'_>,
        replacing: Vec<(DateTime<Utc>, CancellationToken)>,
    ) {
        if replacing.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        for (old, ended) in replacing {
            let old = rfc3339(old);
            info!(event = "job_replacing", job = %job.name, node = %self.node, fire_time = %fire,
                term, replaced_fire_time = %old,
                "replacing the run of {old}: stopping it (overlap = replace)");
            tokio::select! {
                _ = ended.cancelled() => {}
                // This tick was replaced in turn, or the node kills its jobs.
                _ = slot.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(event = "job_replacing", job = %job.name, node = %self.node,
                        fire_time = %fire, term, replaced_fire_time = %old,
                        "the run of {old} has not ended after {REPLACE_WAIT:?}; starting anyway");
                    return;
                }
            }
        }
    }

    /// Runs the job, again after a `failed` or `timeout` attempt while the policy allows it;
    /// returns the last attempt's result and the number of attempts.
    async fn attempts(
        &self,
        job: &Job,
        ctx: &RunContext,
        lead: &Leadership,
        slot: &Slot<'_>,
    ) -> (RunResult, u32) {
        let policy = &job.policy;
        let fire = rfc3339(ctx.fire_time);
        let mut attempt = 1;
        loop {
            let result = runner::run(job, ctx, slot.cancel.clone()).await;
            let retryable = matches!(result.outcome, Outcome::Failed | Outcome::Timeout);
            if !retryable || attempt > policy.retries {
                return (result, attempt);
            }
            let backoff = policy.backoff(attempt);
            // Checked before the backoff (no point waiting) and after it.
            let mut refused = self.retry_refused(job, lead, slot);
            if refused.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = slot.cancel.cancelled() => {}
                    _ = self.stopping.cancelled() => {}
                }
                refused = self.retry_refused(job, lead, slot);
            }
            let outcome = result.outcome.as_str();
            if let Some(reason) = refused {
                warn!(event = "job_retry_abandoned", job = %job.name, node = %self.node,
                    fire_time = %fire, term = lead.term, reason, attempt, outcome,
                    "not retrying ({reason}): attempt {attempt} ended {outcome}");
                return (result, attempt);
            }
            attempt += 1;
            let of = policy.retries + 1;
            let backoff_ms = backoff.as_millis() as u64;
            self.metrics.job_retry(&job.name);
            info!(event = "job_retry", job = %job.name, node = %self.node, fire_time = %fire,
                term = lead.term, attempt, of, backoff_ms, outcome,
                "attempt {attempt} of {of} after {backoff_ms} ms: the last one ended {outcome}");
        }
    }

    /// Why the next attempt must not start, if it must not.
    fn retry_refused(&self, job: &Job, lead: &Leadership, slot: &Slot<'_>) -> Option<&'static str> {
        if slot.replaced.load(Ordering::SeqCst) {
            Some("replaced")
        } else if slot.cancel.is_cancelled() {
            Some("killed")
        } else if self.stopping.is_cancelled() {
            Some("stopping")
        } else if !self.still_leading(job, lead) {
            Some("lease_lost")
        } else {
            None
        }
    }

    fn set_last(&self, idx: usize, run: &RunRecord, duration_ms: Option<u64>) {
        let last = LastRun {
            fire_time: rfc3339(run.fire_time),
            term: run.term,
            outcome: run.outcome.clone(),
            exit_code: run.exit_code,
            duration_ms,
            attempts: run.attempts,
        };
        self.last.lock().unwrap().insert(idx, last);
    }
}

/// Catch-up considers fire times strictly after this instant (module docs).
fn catch_up_after(
    policy: &Policy,
    now: DateTime<Utc>,
    lease: Duration,
    started_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let minus = |d: Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    match policy.starting_deadline {
        Some(deadline) => minus(deadline),
        // Fire times are whole seconds: "after started_at - 1 ns" keeps one at started_at.
        None => minus(lease).max(started_at - chrono::Duration::nanoseconds(1)),
    }
}

/// A log line's text for a paused job: who paused it, since when, why (when known).
pub fn paused_text(pause: Option<&crate::store::Pause>) -> String {
    match pause {
        Some(p) if !p.by.is_empty() => {
            let note = if p.note.is_empty() {
                String::new()
            } else {
                format!(": {}", p.note)
            };
            format!("paused by {} since {}{note}: not run", p.by, rfc3339(p.at))
        }
        _ => "paused: not run".to_string(),
    }
}

/// The job's fire times `T` with `after < T <= now`, newest first, at most `limit`; and whether
/// older ones within the bound were left out.
fn recent_fire_times(
    job: &Job,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: usize,
) -> (Vec<DateTime<Utc>>, bool) {
    let mut out = Vec::new();
    let mut cur = job.schedule.latest_at_or_before(now);
    while let Some(t) = cur.filter(|t| *t > after) {
        if out.len() == limit {
            return (out, true);
        }
        out.push(t);
        // Fire times are whole seconds: the previous one is at or before t - 1 s.
        cur = job
            .schedule
            .latest_at_or_before(t - chrono::Duration::seconds(1));
    }
    (out, false)
}

/// How long after `fire_time` its run starts: the job's jitter delay, else nothing.
pub fn start_delay(job: &Job, fire_time: DateTime<Utc>) -> Duration {
    match job.policy.jitter {
        Some(j) => crate::config::jitter::bounded_delay(&job.name, &job.schedule, fire_time, j),
        None => Duration::ZERO,
    }
}

/// When the run of `fire_time` starts: the fire time plus [`start_delay`].
pub fn start_of(job: &Job, fire_time: DateTime<Utc>) -> DateTime<Utc> {
    fire_time + chrono::Duration::from_std(start_delay(job, fire_time)).unwrap_or_default()
}

/// RFC 3339 in UTC with a `Z`, seconds precision (fire times are whole seconds; a requested
/// run's fractional seconds are kept).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;
    use crate::config::{Action, ElectionConfig};
    use crate::node::history::History;
    use crate::node::session::Session;

    fn job(expr: &str, overlap: Overlap) -> Job {
        Job {
            name: "j".into(),
            schedule: Schedule::parse(expr, "UTC").unwrap(),
            timeout: None,
            action: Action::Shell {
                script: "true".into(),
            },
            policy: Policy {
                overlap,
                ..Policy::default()
            },
            enabled: true,
            notify: Vec::new(),
            ping: None,
            context: Default::default(),
        }
    }

    fn ticks(jobs: Vec<Job>) -> (Ticks, CancellationToken) {
        let store: Arc<dyn Store> = Arc::new(crate::store::testing::NoStore::down());
        let election = ElectionConfig {
            lease: Duration::from_secs(3),
            renew: Duration::from_millis(500),
            poll: Duration::from_millis(250),
        };
        let jobs = Arc::new(JobTable::new(jobs));
        let metrics = Arc::new(Metrics::new());
        let session = Arc::new(Session::new("n1".into(), store.clone(), election, None));
        let kill = CancellationToken::new();
        let history = Arc::new(History::new(store.clone(), 100, metrics.clone()));
        let (recorder, _worker) =
            Recorder::new("n1".into(), store.clone(), history.clone(), metrics.clone());
        let ticks = Ticks::new(
            TickContext {
                node: "n1".into(),
                store: store.clone(),
                election: Arc::new(Election::new(
                    session,
                    store.clone(),
                    election,
                    jobs.clone(),
                    metrics.clone(),
                )),
                metrics: metrics.clone(),
                lease: election.lease,
                tracker: TaskTracker::new(),
                stopping: CancellationToken::new(),
                kill: kill.clone(),
                recorder,
                process: "p1".into(),
                notifier: crate::notify::Notifier::new(
                    "n1".into(),
                    metrics.clone(),
                    jobs.clone(),
                    None,
                )
                .unwrap(),
            },
            jobs,
        );
        (ticks, kill)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn running(start: Start<'_>) -> (Slot<'_>, Vec<DateTime<Utc>>) {
        match start {
            Start::Run(slot, replacing) => (slot, replacing.into_iter().map(|r| r.0).collect()),
            Start::Skip { running, newer } => panic!("skipped for {running} (newer: {newer})"),
        }
    }

    #[test]
    fn skip_keeps_one_run_at_a_time() {
        let (t, _) = ticks(vec![job("* * * * * *", Overlap::Skip)]);
        let (first, replacing) = running(t.start(0, at(0), 1, None));
        assert!(replacing.is_empty());
        match t.start(0, at(1), 1, None) {
            Start::Skip { running, newer } => {
                assert_eq!(running, at(0));
                assert!(!newer);
            }
            Start::Run(..) => panic!("ran alongside"),
        }
        assert!(!first.cancel.is_cancelled());
        // Once the run ends, the next tick runs.
        drop(first);
        let (_second, _) = running(t.start(0, at(2), 1, None));
    }

    #[test]
    fn allow_runs_alongside_and_jobs_do_not_share_slots() {
        let (t, _) = ticks(vec![
            job("* * * * * *", Overlap::Allow),
            job("* * * * * *", Overlap::Skip),
        ]);
        let (a, _) = running(t.start(0, at(0), 1, None));
        let (b, replacing) = running(t.start(0, at(1), 1, None));
        assert!(replacing.is_empty());
        assert!(!a.cancel.is_cancelled() && !b.cancel.is_cancelled());
        assert_eq!(t.active.lock().unwrap()[&0].len(), 2);
        // The other job's skip policy does not see job 0's runs.
        let (_c, _) = running(t.start(1, at(1), 1, None));
    }

    #[test]
    fn replace_stops_the_older_run_and_never_a_newer_one() {
        let (t, kill) = ticks(vec![job("* * * * * *", Overlap::Replace)]);
        let (old, _) = running(t.start(0, at(0), 1, None));
        let (new, replacing) = running(t.start(0, at(1), 1, None));
        assert_eq!(replacing, [at(0)]);
        assert!(old.cancel.is_cancelled());
        assert!(old.replaced.load(Ordering::SeqCst));
        assert!(!new.cancel.is_cancelled());
        assert!(!new.replaced.load(Ordering::SeqCst));
        // The replacing tick waits on the old run's `done`, cancelled when its slot goes.
        let done = t.active.lock().unwrap()[&0][0].done.clone();
        assert!(!done.is_cancelled());
        drop(old);
        assert!(done.is_cancelled());
        assert_eq!(t.active.lock().unwrap()[&0].len(), 1);
        // A caught-up fire time older than the running one is skipped, not run over it.
        match t.start(0, at(-5), 1, None) {
            Start::Skip { running, newer } => {
                assert_eq!(running, at(1));
                assert!(newer);
            }
            Start::Run(..) => panic!("an older tick replaced a newer run"),
        }
        assert!(!new.cancel.is_cancelled());
        // The node's kill switch reaches every run's own token.
        kill.cancel();
        assert!(new.cancel.is_cancelled());
        assert!(!new.replaced.load(Ordering::SeqCst));
    }

    #[test]
    fn a_fire_time_is_tried_once_and_the_memory_is_bounded() {
        let (t, _) = ticks(vec![job("* * * * * *", Overlap::Skip)]);
        assert!(t.try_mark(0, at(5)));
        assert!(!t.try_mark(0, at(5)));
        // Older fire times (catch-up) are still tried once each.
        assert!(t.try_mark(0, at(3)));
        assert!(!t.try_mark(0, at(3)));
        for i in 0..1000 {
            t.try_mark(0, at(100 + i));
        }
        assert_eq!(t.tried.lock().unwrap()[&0].len(), TRIED_KEEP);
        assert!(!t.try_mark(0, at(1099)));
    }

    #[test]
    fn catch_up_window() {
        let now = at(100) + chrono::Duration::milliseconds(400);
        let lease = Duration::from_secs(3);
        let long_ago = at(0);
        let p = Policy::default();
        // Default: one lease back ...
        assert_eq!(
            catch_up_after(&p, now, lease, long_ago),
            now - chrono::Duration::seconds(3)
        );
        // ... and never before this node started (a fire time at the start itself counts).
        let started = at(99);
        let after = catch_up_after(&p, now, lease, started);
        assert!(after < at(99) && after > at(98));
        // An explicit deadline is the only bound.
        let explicit = Policy {
            starting_deadline: Some(Duration::from_secs(30)),
            ..Policy::default()
        };
        assert_eq!(
            catch_up_after(&explicit, now, lease, started),
            now - chrono::Duration::seconds(30)
        );
        let huge = Policy {
            starting_deadline: Some(crate::config::MAX_DURATION),
            ..Policy::default()
        };
        assert!(catch_up_after(&huge, now, lease, started) < at(-86_400 * 364));
    }

    #[test]
    fn recent_fire_times_are_newest_first_and_bounded() {
        let every_second = job("* * * * * *", Overlap::Skip);
        let now = at(100) + chrono::Duration::milliseconds(400);
        let (t, more) = recent_fire_times(&every_second, at(95), now, 100);
        assert_eq!(t, [at(100), at(99), at(98), at(97), at(96)]);
        assert!(!more);
        let (t, more) = recent_fire_times(&every_second, at(95), now, 3);
        assert_eq!(t, [at(100), at(99), at(98)]);
        assert!(more);
        let (t, more) = recent_fire_times(&every_second, at(95), now, 5);
        assert_eq!(t.len(), 5);
        assert!(!more);
        // 1_800_000_000 is a multiple of ten.
        let every_ten = job("*/10 * * * * *", Overlap::Skip);
        let (t, _) = recent_fire_times(&every_ten, at(75), now, 100);
        assert_eq!(t, [at(100), at(90), at(80)]);
        let (t, more) = recent_fire_times(&every_ten, at(100), now, 100);
        assert!(t.is_empty() && !more);
    }
}
