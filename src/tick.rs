//! One tick of one job, on one node: claim it and run it, or sit out.
//!
//! The holder claims the tick in one store transaction that checks the lease is still its own
//! with its term and inserts the run record `{job}@{fire time}`. That is the fencing check: a
//! node that was paused past its lease, or lost it a moment ago, cannot run the tick, and no fire
//! time can be claimed twice. Every other node logs that it is sitting out and who leads.
//!
//! Catch-up: when this node acquires a lease, the job's latest fire time that fell due within
//! one lease time and has no run yet is claimed and run at once, so a failover or a hand-over
//! loses at most the older fire times of the gap (bounded: at most one per acquisition).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Job;
use crate::election::{Election, Leadership};
use crate::history::History;
use crate::metrics::Metrics;
use crate::runner::{self, RunContext};
use crate::store::{Claim, RunRecord, Store};

/// How often recording a finished run is attempted before giving up (logged).
const FINISH_ATTEMPTS: u32 = 5;

/// The last run of a job on this node, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    pub fire_time: String,
    pub term: i64,
    /// `running` until it finishes.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
}

/// What a tick needs besides the job list: the store, the election, bookkeeping.
pub struct TickContext {
    pub node: String,
    pub store: Arc<dyn Store>,
    pub election: Arc<Election>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    /// Catch-up looks back at most this far (the lease time).
    pub lease: Duration,
    pub tracker: TaskTracker,
    /// Cancelled when the node stops taking ticks.
    pub stopping: CancellationToken,
    /// Cancelled when running jobs must be killed (shutdown grace exceeded).
    pub kill: CancellationToken,
}

pub struct Ticks {
    node: String,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    metrics: Arc<Metrics>,
    history: Arc<History>,
    jobs: Arc<Vec<Job>>,
    lease: Duration,
    tracker: TaskTracker,
    stopping: CancellationToken,
    kill: CancellationToken,
    /// Per job, this node's last run.
    last: Mutex<HashMap<usize, LastRun>>,
    /// When this node started taking part.
    started_at: DateTime<Utc>,
    /// Per job, the latest fire time this node has tried to claim as leader.
    claimed: Mutex<HashMap<usize, DateTime<Utc>>>,
}

impl Ticks {
    pub fn new(ctx: TickContext, jobs: Arc<Vec<Job>>) -> Self {
        Ticks {
            node: ctx.node,
            store: ctx.store,
            election: ctx.election,
            metrics: ctx.metrics,
            history: ctx.history,
            jobs,
            lease: ctx.lease,
            tracker: ctx.tracker,
            stopping: ctx.stopping,
            kill: ctx.kill,
            last: Mutex::new(HashMap::new()),
            started_at: Utc::now(),
            claimed: Mutex::new(HashMap::new()),
        }
    }

    /// This node's last run of job `idx`, if it ran one.
    pub fn last_run(&self, idx: usize) -> Option<LastRun> {
        self.last.lock().unwrap().get(&idx).cloned()
    }

    /// A scheduled fire time of job `idx` fell due.
    pub fn fire(self: &Arc<Self>, idx: usize, fire_time: DateTime<Utc>) {
        if self.stopping.is_cancelled() {
            return;
        }
        let job = &self.jobs[idx];
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

    /// This node just acquired job `idx`'s lease: run the latest missed fire time, if any.
    pub fn caught_up(self: &Arc<Self>, idx: usize, term: i64) {
        let job = &self.jobs[idx];
        let now = Utc::now();
        let Some(latest) = job.schedule.latest_at_or_before(now) else {
            return;
        };
        let age = now
            .signed_duration_since(latest)
            .to_std()
            .unwrap_or_default();
        // Not a fire time from before this node started: a cluster that was down entirely does
        // not replay its downtime.
        if age >= self.lease || latest < self.started_at || self.stopping.is_cancelled() {
            return;
        }
        let Some(lead) = self.election.leading(&job.name).filter(|l| l.term == term) else {
            return;
        };
        let this = self.clone();
        let name = job.name.clone();
        self.tracker.spawn(async move {
            // Only if nobody ran it: the claim would say so too, but quietly is better here.
            match this.store.run_exists(&name, latest).await {
                Ok(false) => this.claim_and_run(idx, latest, lead),
                Ok(true) => {}
                Err(e) => warn!(event = "store_error", job = %name, "catch-up check failed: {e}"),
            }
        });
    }

    fn claim_and_run(self: &Arc<Self>, idx: usize, fire_time: DateTime<Utc>, lead: Leadership) {
        {
            let mut claimed = self.claimed.lock().unwrap();
            if claimed.get(&idx).is_some_and(|t| *t >= fire_time) {
                return; // already tried (the pulse and a catch-up can meet)
            }
            claimed.insert(idx, fire_time);
        }
        let this = self.clone();
        self.tracker
            .spawn(async move { this.tick(idx, fire_time, lead).await });
    }

    async fn tick(&self, idx: usize, fire_time: DateTime<Utc>, lead: Leadership) {
        let job = &self.jobs[idx];
        let mut run = RunRecord {
            job: job.name.clone(),
            fire_time,
            node: self.node.clone(),
            term: lead.term,
            started_at: Utc::now(),
            finished_at: None,
            outcome: "running".to_string(),
            exit_code: None,
        };
        let fire = rfc3339(fire_time);
        match self.store.claim(&run, &lead.session).await {
            Ok(Claim::Won) => {}
            Ok(Claim::AlreadyRun) => {
                self.metrics.tick_sat_out(&job.name);
                info!(event = "sitting_out", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, holder = %self.node, reason = "already_run",
                    "sitting out: this fire time already ran");
                return;
            }
            Ok(Claim::Fenced) => {
                self.metrics.tick_sat_out(&job.name);
                self.election
                    .lost(&job.name, lead.term, "a tick claim was fenced");
                info!(event = "sitting_out", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, reason = "fenced",
                    "sitting out: the lease is no longer ours with term {}", lead.term);
                return;
            }
            Err(e) => {
                warn!(event = "tick_skipped", job = %job.name, node = %self.node, fire_time = %fire,
                    term = lead.term, "cannot claim the tick, not running it: {e}");
                return;
            }
        }
        let lateness_ms = Utc::now()
            .signed_duration_since(fire_time)
            .num_milliseconds();
        self.metrics
            .tick_run(&job.name, Duration::from_millis(lateness_ms.max(0) as u64));
        self.set_last(idx, &run, None);
        info!(event = "tick_run", job = %job.name, node = %self.node, fire_time = %fire,
            term = lead.term, lateness_ms, "running tick");
        let ctx = RunContext {
            node: self.node.clone(),
            fire_time,
            term: lead.term,
        };
        let started = std::time::Instant::now();
        let result = runner::run(job, &ctx, self.kill.clone()).await;
        let took = started.elapsed();
        let duration_ms = took.as_millis() as u64;
        run.finished_at = Some(Utc::now());
        run.outcome = result.outcome.as_str().to_string();
        run.exit_code = result.exit_code;
        self.metrics
            .job_finished(&job.name, result.outcome.as_str(), took);
        self.set_last(idx, &run, Some(duration_ms));
        match result.exit_code {
            Some(code) => info!(event = "job_finished", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, outcome = result.outcome.as_str(),
                exit_code = code, duration_ms, "finished: {}", result.outcome.as_str()),
            None => info!(event = "job_finished", job = %job.name, node = %self.node,
                fire_time = %fire, term = lead.term, outcome = result.outcome.as_str(),
                duration_ms, "finished: {}", result.outcome.as_str()),
        }
        for attempt in 1..=FINISH_ATTEMPTS {
            match self.store.finish(&run).await {
                Ok(()) => {
                    self.history.recorded(&job.name);
                    break;
                }
                Err(e) if attempt == FINISH_ATTEMPTS => {
                    warn!(event = "store_error", job = %job.name, fire_time = %fire,
                        "cannot record the run's outcome: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await,
            }
        }
    }
}

impl Ticks {
    fn set_last(&self, idx: usize, run: &RunRecord, duration_ms: Option<u64>) {
        let last = LastRun {
            fire_time: rfc3339(run.fire_time),
            term: run.term,
            outcome: run.outcome.clone(),
            exit_code: run.exit_code,
            duration_ms,
        };
        self.last.lock().unwrap().insert(idx, last);
    }
}

/// RFC 3339 in UTC with a `Z`, seconds precision (fire times are whole seconds).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
