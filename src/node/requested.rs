//! Runs an operator asked for, on the node that leads the job: `cronlease trigger` (run it
//! now) and `cronlease backfill` (run the fire times of a range that no node ran).
//!
//! The requests live in the job's lease record ([`crate::store::Requests`]); writing one moves
//! the store's control epoch, so every node re-reads the leases at its next poll and the
//! leader hands the job's pending requests here ([`Requested::seen`]). Each one is acted on
//! once per node at a time, and once in the cluster thanks to the claim:
//!
//! - A **trigger**'s run is keyed by the request's own fire time (its instant to the
//!   millisecond, never a scheduled whole second) and claimed under the leader's fence, only
//!   while the request is still pending; then the request is removed. A leader that dies
//!   between the claim and the removal leaves a pending request whose run exists: the next
//!   leader's claim says `AlreadyRun` and it only removes the request. So it runs once, across
//!   failovers. An expired request (`--timeout`) is removed unrun.
//! - A **backfill** walks the job's fire times in its range, oldest first, each through the
//!   ordinary fenced claim keyed by the fire time (so a fire time that ran, or runs meanwhile,
//!   is never run again), one after the other: the next one waits until no run of the job is
//!   going on this node (unless the job's overlap policy is `allow`). Its progress (how many
//!   done, the newest fire time handled) is written back after each one, so a new leader goes
//!   on from there. `--cancel` removes the request; every claim checks it is still pending, so
//!   nothing starts after the cancel committed (a run already going finishes).
//!
//! Both kinds run while the job is paused: an operator asked for them explicitly.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tracing::{info, warn};

use crate::config::Overlap;
use crate::node::election::{Election, Leadership};
use crate::node::tick::{rfc3339, NotClaimed, OverlapMode, Ticks};
use crate::store::{
    BackfillRequest, Claim, RequestChange, Requests, RunRecord, RunTrigger, Store, TriggerRequest,
    BACKFILL, MANUAL,
};

/// Acts on the requests of the jobs this node leads.
pub struct Requested {
    node: String,
    process: String,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    ticks: Arc<Ticks>,
    /// Requests being acted on here: (job index, request id).
    busy: Mutex<HashSet<(usize, String)>>,
}

/// Removes a request from [`Requested::busy`] when its task ends, however it ends.
struct Busy {
    owner: Arc<Requested>,
    key: (usize, String),
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.owner.busy.lock().unwrap().remove(&self.key);
    }
}

impl Requested {
    pub fn new(
        node: String,
        process: String,
        store: Arc<dyn Store>,
        election: Arc<Election>,
        ticks: Arc<Ticks>,
    ) -> Self {
        Requested {
            node,
            process,
            store,
            election,
            ticks,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Job `idx`, led by this node as `lead`, has these requests pending: act on those not
    /// already being acted on, each in a task of its own.
    pub fn seen(self: &Arc<Self>, idx: usize, lead: &Leadership, requests: &Requests) {
        for t in &requests.triggers {
            if let Some(busy) = self.take(idx, t.id()) {
                let (this, lead, t) = (self.clone(), lead.clone(), t.clone());
                self.ticks.spawn(async move {
                    this.trigger(idx, lead, t).await;
                    drop(busy);
                });
            }
        }
        if let Some(b) = &requests.backfill {
            if let Some(busy) = self.take(idx, b.id.clone()) {
                let (this, lead, b) = (self.clone(), lead.clone(), b.clone());
                self.ticks.spawn(async move {
                    this.backfill(idx, lead, *b).await;
                    drop(busy);
                });
            }
        }
    }

    fn take(self: &Arc<Self>, idx: usize, id: String) -> Option<Busy> {
        let key = (idx, id);
        if !self.busy.lock().unwrap().insert(key.clone()) {
            return None;
        }
        Some(Busy {
            owner: self.clone(),
            key,
        })
    }

    fn run_record(
        &self,
        job: &str,
        fire_time: chrono::DateTime<Utc>,
        lead: &Leadership,
        trigger: RunTrigger,
    ) -> RunRecord {
        RunRecord {
            trigger: Some(trigger),
            ..RunRecord::claimed(
                job,
                fire_time,
                &self.node,
                lead.term,
                &lead.session,
                &self.process,
            )
        }
    }

    /// Remove a request that is done with (logged if the store refuses: the next leader or
    /// poll finds it again and finds its run).
    async fn remove(&self, job: &str, id: &str) {
        if let Err(e) = self
            .store
            .change_request(job, &RequestChange::Remove(id.to_string()))
            .await
        {
            warn!(event = "store_error", job, node = %self.node, request = id,
                "cannot remove a finished request (it is looked at again): {e}");
        }
    }

    async fn trigger(self: &Arc<Self>, idx: usize, lead: Leadership, t: TriggerRequest) {
        let job = self.ticks.job(idx);
        let id = t.id();
        let fire = rfc3339(t.fire_time);
        if Utc::now() > t.expires_at {
            warn!(event = "trigger_expired", job = %job.name, node = %self.node,
                fire_time = %fire, by = %t.by, term = lead.term,
                "not running the run {} asked for at {fire}: it expired at {}",
                t.by, rfc3339(t.expires_at));
            self.remove(&job.name, &id).await;
            return;
        }
        let run = self.run_record(
            &job.name,
            t.fire_time,
            &lead,
            RunTrigger {
                kind: MANUAL.into(),
                by: t.by.clone(),
                request: id.clone(),
            },
        );
        let mode = if t.allow_overlap {
            OverlapMode::Allow
        } else {
            OverlapMode::Policy
        };
        match self
            .ticks
            .start_requested(idx, run, lead.clone(), mode)
            .await
        {
            Ok(_running) => {
                info!(event = "trigger_claimed", job = %job.name, node = %self.node,
                    fire_time = %fire, by = %t.by, term = lead.term,
                    "running now, as {} asked", t.by);
                self.remove(&job.name, &id).await;
            }
            Err(NotClaimed::Claim(Claim::AlreadyRun)) => self.remove(&job.name, &id).await,
            Err(NotClaimed::Claim(Claim::TooOld)) => {
                warn!(event = "trigger_expired", job = %job.name, node = %self.node,
                    fire_time = %fire, by = %t.by, term = lead.term, reason = "too_old",
                    "not running the run asked for at {fire}: the job's history was pruned past it");
                self.remove(&job.name, &id).await;
            }
            // Withdrawn (cancelled or expired meanwhile), fenced (no longer ours: the next
            // leader acts on it), busy or unanswered (looked at again at the next poll).
            Err(_) => {}
        }
    }

    async fn backfill(self: &Arc<Self>, idx: usize, lead: Leadership, b: BackfillRequest) {
        let job = self.ticks.job(idx);
        let mut done = b.done;
        let mut after = b
            .cursor
            .unwrap_or(b.from - chrono::Duration::nanoseconds(1));
        info!(event = "backfill_started", job = %job.name, node = %self.node, term = lead.term,
            by = %b.by, from = %rfc3339(b.from), to = %rfc3339(b.to), done, total = b.total,
            "backfill of {} .. {} asked by {}: {done} of {} done", rfc3339(b.from),
            rfc3339(b.to), b.by, b.total);
        let trigger = RunTrigger {
            kind: BACKFILL.into(),
            by: b.by.clone(),
            request: b.id.clone(),
        };
        loop {
            // The job as it is now (a reload may have changed its schedule or policy).
            let job = self.ticks.job(idx);
            // Never past this node's now (the range was cut at the asking machine's clock):
            // later fire times run on schedule.
            let end = b.to.min(Utc::now());
            let Some(fire_time) = job.schedule.next_after(after).filter(|t| *t <= end) else {
                break;
            };
            if !self.still_leading(&job.name, &lead) {
                info!(event = "backfill_paused", job = %job.name, node = %self.node,
                    term = lead.term, done, total = b.total,
                    "backfill handed on: the lease is no longer ours ({done} of {} done)",
                    b.total);
                return;
            }
            if job.policy.overlap != Overlap::Allow {
                self.ticks.idle(idx).await;
            }
            let run = self.run_record(&job.name, fire_time, &lead, trigger.clone());
            let fire = rfc3339(fire_time);
            match self
                .ticks
                .start_requested(idx, run, lead.clone(), OverlapMode::Queue)
                .await
            {
                Ok(running) => {
                    info!(event = "backfill_run", job = %job.name, node = %self.node,
                        fire_time = %fire, term = lead.term, done = done + 1, total = b.total,
                        "backfilling {fire} ({} of {})", done + 1, b.total);
                    let _ = running.await;
                }
                Err(NotClaimed::Claim(Claim::AlreadyRun)) => {}
                Err(NotClaimed::Claim(Claim::TooOld)) => {
                    warn!(event = "backfill_skipped", job = %job.name, node = %self.node,
                        fire_time = %fire, term = lead.term, reason = "too_old",
                        "not backfilling {fire}: the job's history was pruned past it");
                }
                Err(NotClaimed::Claim(Claim::Withdrawn)) => {
                    info!(event = "backfill_cancelled", job = %job.name, node = %self.node,
                        term = lead.term, done, total = b.total,
                        "backfill cancelled after {done} of {}", b.total);
                    return;
                }
                Err(why) => {
                    info!(event = "backfill_paused", job = %job.name, node = %self.node,
                        term = lead.term, done, total = b.total, reason = ?why,
                        "backfill interrupted ({why:?}) after {done} of {}: it goes on at a \
                         later poll", b.total);
                    return;
                }
            }
            done += 1;
            after = fire_time;
            let progress = RequestChange::Progress {
                id: b.id.clone(),
                done,
                cursor: Some(fire_time),
            };
            match self.store.change_request(&job.name, &progress).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(event = "backfill_cancelled", job = %job.name, node = %self.node,
                        term = lead.term, done, total = b.total,
                        "backfill cancelled after {done} of {}", b.total);
                    return;
                }
                Err(e) => warn!(event = "store_error", job = %job.name, node = %self.node,
                    "cannot record the backfill's progress: {e}"),
            }
        }
        info!(event = "backfill_done", job = %job.name, node = %self.node, term = lead.term,
            total = b.total, by = %b.by, "backfill of {} .. {} done", rfc3339(b.from),
            rfc3339(b.to));
        self.remove(&job.name, &b.id).await;
    }

    fn still_leading(&self, job: &str, lead: &Leadership) -> bool {
        self.election
            .leading(job)
            .is_some_and(|l| l.term == lead.term)
    }
}
