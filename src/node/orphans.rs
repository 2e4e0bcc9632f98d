//! Closes the runs of dead nodes: a `running` record whose process is gone is an orphan.
//!
//! A node that dies while a job runs (kill -9, a crash, a host that vanished) leaves the run's
//! record `running`; nothing else would ever finish it. Every node watches for that, for the
//! jobs it leads:
//!
//! - **When.** After the election sees another node die (its record gone, replaced by another
//!   process, or its heartbeat unchanged for a lease: [`Election::deaths`]), after this node
//!   acquires a lease (its previous holder may have died mid-run), at start, and at least every
//!   [`SCAN_EVERY`] as a safety net. A node that has seen nothing scans nothing: a settled
//!   cluster pays one scan a minute per node.
//! - **What.** One read of every `running` record ([`Store::running_runs`]: its cost follows
//!   the number of runs going, not the history), then, if any belongs to a job this node
//!   leads, one read of the node records (after the runs: a node writes its record before it
//!   claims, so a run's claimer is in that read unless it is gone). A run is an orphan when its
//!   process is no longer alive by the election's rules ([`Election::orphaned`]); a node whose
//!   session lapsed but that still heartbeats is alive: it records its own runs.
//! - **How.** [`Store::close_orphan`]: in one transaction, only if the record is still
//!   `running` under the session that claimed it and this node still holds the job's lease
//!   with its term. So an orphan is closed once, by the job's current leader, within about
//!   `lease + poll` of its node's death. Outcome `lost`, reason `node_gone`,
//!   `node_restarted` or `heartbeat_stopped`; logged `run_lost`, counted
//!   `cronlease_runs_lost_total{job}`.
//! - **Recovery** (`recover = true`): instead of `lost`, the record becomes a new `running`
//!   run of this node (its session, term and process, `recovery = true`, one more attempt) in
//!   the same conditional write, and this node runs it at once through the ordinary path
//!   (overlap policy, retries, outcome). A recovery that is lost in turn is closed as `lost`,
//!   never recovered again. The run is logged `run_lost` and `run_recovering` and counted in
//!   both `cronlease_runs_lost_total` and `cronlease_runs_recovered_total`.
//!
//! Limit: a node frozen (SIGSTOP, a paused VM) for longer than a lease is judged dead like a
//! crashed one; its runs are closed (or recovered elsewhere) while its job process may still be
//! going. When it wakes, its session has lapsed: `on_lease_lost = "stop"` stops that process,
//! and its outcome write is refused (`outcome_superseded`), so the record keeps `lost`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::election::{Election, Leadership};
use crate::node::tick::{rfc3339, Ticks};
use crate::ops::metrics::Metrics;
use crate::store::{Claim, Fence, RunRecord, Store, RUNNING};

/// A scan at least this often, whatever happened (a safety net).
pub const SCAN_EVERY: Duration = Duration::from_secs(60);

pub struct Orphans {
    node: String,
    process: String,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    ticks: Arc<Ticks>,
    metrics: Arc<Metrics>,
    poll: Duration,
    /// Bumped on every lease this node acquires.
    acquisitions: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Orphans {
    pub fn new(
        node: String,
        process: String,
        store: Arc<dyn Store>,
        election: Arc<Election>,
        ticks: Arc<Ticks>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let poll = election.poll_period();
        Orphans {
            node,
            process,
            store,
            election,
            ticks,
            metrics,
            poll,
            acquisitions: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// This node acquired a lease: its previous holder may have died mid-run.
    pub fn acquired(&self) {
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Scan whenever something happened (module docs) until `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        // Never scanned: the first scan comes once this node leads something.
        let mut seen = (u64::MAX, u64::MAX);
        let mut last_scan: Option<Instant> = None;
        // The last scan found runs of other processes that were not orphans *yet* (their node
        // was not judged dead then): look again after this, not only at the next death or
        // acquisition (which may never come: a node already judged silent dies no more).
        let mut recheck: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.election.death_seen() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
            if !self.election.holds_any() {
                continue;
            }
            let now = (
                self.election.deaths(),
                self.acquisitions.load(Ordering::Relaxed),
            );
            let due = last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY)
                || recheck.is_some_and(|t| Instant::now() >= t);
            if now == seen && !due {
                continue;
            }
            // A death seen by the election may concern a run whose claim it has not read yet:
            // one poll later the picture is complete (and the lease of a dead holder may be
            // ours by then).
            if now.0 != seen.0 && seen.0 != u64::MAX {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.poll / 2) => {}
                }
            }
            if let Some(undecided) = self.scan().await {
                seen = now;
                last_scan = Some(Instant::now());
                recheck = (undecided > 0).then(|| Instant::now() + self.election.lease());
            }
        }
    }

    /// One scan: how many runs of other processes it found in jobs this node leads that are
    /// not orphans (yet); `None` if the store could not be read or an orphan could not be
    /// closed (tried again at the next wake).
    pub async fn scan(&self) -> Option<usize> {
        let running = match self.store.running_runs().await {
            Ok(r) => r,
            Err(e) => {
                debug!(node = %self.node, "cannot look for orphaned runs: {e}");
                return None;
            }
        };
        let mine: Vec<RunRecord> = running
            .into_iter()
            .filter(|r| r.outcome == RUNNING && self.election.leading(&r.job).is_some())
            .filter(|r| !(r.node == self.node && r.process == self.process))
            .collect();
        if mine.is_empty() {
            return Some(0);
        }
        let nodes = match self.store.nodes().await {
            Ok(n) => n,
            Err(e) => {
                debug!(node = %self.node, "cannot look for orphaned runs: {e}");
                return None;
            }
        };
        let mut ok = true;
        let candidates = mine.len();
        let mut orphans = 0;
        for run in mine {
            if let Some(reason) = self.election.orphaned(&run, &nodes) {
                orphans += 1;
                ok &= self.close(run, reason).await;
            }
        }
        info!(event = "orphan_scan", node = %self.node, candidates, orphans, ok,
            "looked at {candidates} running run(s) of other processes in jobs this node leads: \
             {orphans} orphaned");
        ok.then_some(candidates - orphans)
    }

    /// Close one orphan; false if the store failed (the scan is then repeated).
    async fn close(&self, orphan: RunRecord, reason: &'static str) -> bool {
        let Some(idx) = self.election.job_index(&orphan.job) else {
            return true;
        };
        let Some(lead) = self.election.leading(&orphan.job) else {
            return true;
        };
        // A lost run of a paused job, or of one removed or switched off, is not run again:
        // closed as lost instead.
        let paused = self.election.view(&orphan.job).paused.is_some();
        let may_recover = !paused && self.ticks.contested(idx);
        match self
            .close_as(idx, &orphan, reason, &lead, may_recover)
            .await
        {
            Some(done) => done,
            None => self
                .close_as(idx, &orphan, reason, &lead, false)
                .await
                .unwrap_or(false),
        }
    }

    /// Close `orphan` (or, with `may_recover` and `recover = true`, run it again); `None`
    /// when the store refused the recovery because the job is paused.
    async fn close_as(
        &self,
        idx: usize,
        orphan: &RunRecord,
        reason: &'static str,
        lead: &Leadership,
        may_recover: bool,
    ) -> Option<bool> {
        let job = self.ticks.job(idx);
        let recover = may_recover && job.policy.recover && !orphan.recovery;
        let fire = rfc3339(orphan.fire_time);
        let new = if recover {
            RunRecord {
                attempts: orphan.attempts.max(1) + 1,
                reason: Some(format!("recovery of the run lost on {}", orphan.node)),
                recovery: true,
                trigger: orphan.trigger.clone(),
                ..RunRecord::claimed(
                    &orphan.job,
                    orphan.fire_time,
                    &self.node,
                    lead.term,
                    &lead.session,
                    &self.process,
                )
            }
        } else {
            RunRecord {
                finished_at: Some(Utc::now()),
                outcome: "lost".to_string(),
                reason: Some(reason.to_string()),
                ..orphan.clone()
            }
        };
        let fence = Fence {
            node: self.node.clone(),
            session: lead.session.clone(),
            term: lead.term,
        };
        match self.store.close_orphan(&new, &orphan.session, &fence).await {
            Ok(Claim::Won) => {
                self.metrics.run_lost(&orphan.job);
                let age_ms = (Utc::now() - orphan.started_at).num_milliseconds();
                warn!(event = "run_lost", job = %orphan.job, node = %self.node,
                    fire_time = %fire, term = lead.term, lost_node = %orphan.node,
                    lost_term = orphan.term, reason, recover, age_ms,
                    "the run of {fire} on {} was lost ({reason}): {}", orphan.node,
                    if recover { "running it again (recover = true)" } else { "closed as lost" });
                if recover {
                    self.metrics.run_recovered(&orphan.job);
                    info!(event = "run_recovering", job = %orphan.job, node = %self.node,
                        fire_time = %fire, term = lead.term, attempts = new.attempts,
                        "recovering the lost run of {fire}");
                    self.ticks.run_recovery(idx, new, lead.clone());
                } else {
                    self.ticks.notifier().run_ended(&new);
                }
                Some(true)
            }
            Ok(Claim::Paused) if recover => {
                info!(event = "orphan_paused", job = %orphan.job, node = %self.node,
                    fire_time = %fire, "the job is paused: closing its lost run without running it again");
                None
            }
            Ok(Claim::Fenced) => {
                // Really lost, or a conflicting transaction (Datastore): try again if we
                // still lead with that term.
                let still = self
                    .election
                    .leading(&orphan.job)
                    .is_some_and(|l| l.term == lead.term);
                debug!(job = %orphan.job, node = %self.node, still_leading = still,
                    "orphan not closed: fenced");
                Some(!still)
            }
            Ok(_) => {
                debug!(job = %orphan.job, node = %self.node, fire_time = %fire,
                    "orphan closed by someone else first");
                Some(true)
            }
            Err(e) if recover => {
                // The write may have landed: then the record is ours, running, and nobody
                // runs it. Resolved like a claim whose answer was lost (closed as skipped,
                // claim_unconfirmed, if it landed); the orphan itself is looked at again.
                warn!(event = "store_error", job = %orphan.job, node = %self.node,
                    fire_time = %fire, "cannot recover an orphaned run (checked again): {e}");
                self.ticks.unconfirmed(new).await;
                Some(false)
            }
            Err(e) => {
                // The close may have landed with its answer lost: then the orphan is no longer
                // running and the next scan would not see it, so it is told now.
                let landed = self
                    .store
                    .get_run(&orphan.job, orphan.fire_time)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| crate::node::recorder::same_outcome(&r, &new));
                if landed {
                    self.metrics.run_lost(&orphan.job);
                    warn!(event = "run_lost", job = %orphan.job, node = %self.node,
                        fire_time = %fire, term = lead.term, lost_node = %orphan.node,
                        lost_term = orphan.term, reason, recover,
                        "the run of {fire} on {} was lost ({reason}): closed as lost (the \
                         store's answer was lost, the record says so)", orphan.node);
                    self.ticks.notifier().run_ended(&new);
                    return Some(true);
                }
                warn!(event = "store_error", job = %orphan.job, node = %self.node,
                    fire_time = %fire, "cannot close an orphaned run (tried again later): {e}");
                Some(false)
            }
        }
    }
}
