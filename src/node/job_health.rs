//! What a job's alerts need, learnt when this node takes its lease: the store's history seeds
//! `cronlease_job_last_run_timestamp_seconds` and `cronlease_job_last_success_timestamp_seconds`
//! (so a failover does not reset them), and the fire times that passed with nobody running
//! them are counted in `cronlease_ticks_missed_total`, whether catch-up runs them or not.
//!
//! Counted once in the cluster: the window is the fire times after the newest scheduled run of
//! an earlier holder, after the previous holder's acquisition (it counted what was missed
//! before it), after the last resume (a pause's fire times are not missed, they were not
//! wanted), and after a reload added the job; up to now. A job with no run at all counts from
//! when this node knew it. One `recent_runs` read per acquisition, retried while the lease is
//! held. Limit: a fire time that falls between a holder's acquisition and the moment it counts
//! (a store round trip) can be counted by it and again by the next holder.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::schedule::Schedule;
use crate::node::election::Election;
use crate::node::tick::{rfc3339, Ticks};
use crate::ops::metrics::Metrics;
use crate::store::{RunRecord, Store};

/// Runs read per acquisition: enough to find the newest `ok` run of a job that fails often.
const HISTORY_READ: usize = 20;
/// How long after taking a lease its history is read.
const READ_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
/// Tries of that read (1, 2, 4 s apart) while this node still holds the lease.
const READ_TRIES: u32 = 4;
/// The most missed fire times counted at one acquisition (an every-second job down for days
/// would otherwise walk its whole outage).
pub const MAX_COUNTED: usize = 100_000;

pub struct JobHealth {
    node: String,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    ticks: Arc<Ticks>,
    metrics: Arc<Metrics>,
    /// The acquisitions whose history is still to be read, in order, and whether the task
    /// that reads them runs. A queue and one task, not a task each: a failover hands a node
    /// thousands of leases, and thousands of tasks waiting their turn held about 400 bytes
    /// each for the minute the reads take.
    queue: std::sync::Mutex<Queue>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    /// (slot, term, when its read is due).
    waiting: std::collections::VecDeque<(usize, i64, Instant)>,
    reading: bool,
}

impl JobHealth {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        election: Arc<Election>,
        ticks: Arc<Ticks>,
        metrics: Arc<Metrics>,
    ) -> Self {
        JobHealth {
            node,
            store,
            election,
            ticks,
            metrics,
            queue: Default::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// This node just took job `idx`'s lease with `term`: learn the job's health, at once
    /// for a job nobody held before (there is nothing to read), else queued behind the other
    /// reads.
    pub fn acquired(self: &Arc<Self>, idx: usize, term: i64) {
        if term == 1 {
            let this = self.clone();
            self.ticks
                .spawn(async move { this.learn(idx, term, Vec::new()).await });
            return;
        }
        let start = {
            let mut queue = self.queue.lock().unwrap();
            queue
                .waiting
                .push_back((idx, term, Instant::now() + READ_DELAY));
            !std::mem::replace(&mut queue.reading, true)
        };
        if start {
            let this = self.clone();
            self.ticks.spawn(async move { this.read_queued().await });
        } else {
            self.wake.notify_one();
        }
    }

    /// Read the queued histories one at a time, each once its delay is over (the
    /// acquisitions and the election's reads of a failover go first), until the node stops.
    /// One at a time: a node that takes 2,000 leases at a failover must not send 2,000
    /// queries at once, which starved the heartbeats and the election's reads behind them
    /// (sessions lapsed and the cluster churned at 10,000 jobs). They are background work: the
    /// metrics they seed and the missed fire times they count can wait.
    async fn read_queued(&self) {
        let stopping = self.ticks.stopping();
        loop {
            let next = self.queue.lock().unwrap().waiting.pop_front();
            let Some((idx, term, due)) = next else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stopping.cancelled() => return,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stopping.cancelled() => return,
            }
            let job = self.ticks.job(idx);
            if let Some(runs) = self.read_history(&job.name, term).await {
                self.learn(idx, term, runs).await;
            }
        }
    }

    /// The job's newest runs, while this node still holds the lease with `term`. `None` when
    /// it gave up.
    async fn read_history(&self, job: &str, term: i64) -> Option<Vec<RunRecord>> {
        let stopping = self.ticks.stopping();
        // Queued behind other acquisitions: the lease may have gone meanwhile.
        if self.election.leading(job).is_none_or(|l| l.term != term) {
            return None;
        }
        let mut tries = 0;
        loop {
            match self.store.recent_runs(job, HISTORY_READ).await {
                Ok(runs) => return Some(runs),
                Err(e) => {
                    tries += 1;
                    let leading = self.election.leading(job).is_some_and(|l| l.term == term);
                    if tries >= READ_TRIES || !leading {
                        warn!(event = "store_error", job = %job, node = %self.node, term,
                            "cannot read the job's history for its metrics (missed ticks not \
                             counted): {e}");
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1 << tries.min(4))) => {}
                        _ = stopping.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Seed the job's metrics from `runs` (its newest; none at term 1: nobody held the lease
    /// before, so nobody ran the job, and a cluster starting with 10,000 jobs reads no
    /// history at all) and count the fire times nobody ran.
    async fn learn(&self, idx: usize, term: i64, runs: Vec<RunRecord>) {
        let job = self.ticks.job(idx);
        let now = Utc::now();
        let view = self.election.view(&job.name);
        seed(&self.metrics, &job.name, &runs);
        self.ticks.notifier().seed(&job.name, &runs);
        if view.paused.is_some() {
            return;
        }
        // Scheduled runs of earlier holders only: this node's own claims (made at once on
        // acquisition, ahead of the next fire time, or catching up) and requested runs do not
        // say what the earlier holders ran.
        let newest = runs
            .iter()
            .filter(|r| r.term < term && r.trigger.is_none())
            .map(|r| r.fire_time)
            .max();
        // With no run at all, nothing says the job existed before this node knew it.
        let known = match newest {
            Some(_) => self.ticks.added_at(idx),
            None => Some(self.ticks.known_since(idx)),
        };
        let floor = [newest, view.previous_acquired_at, view.resumed_at, known]
            .into_iter()
            .flatten()
            .max();
        let Some(floor) = floor.filter(|f| *f < now) else {
            return;
        };
        let missed = missed_between(&job.schedule, floor, now, MAX_COUNTED);
        if let (Some(first), Some(last)) = (missed.first(), missed.last()) {
            let n = missed.len();
            self.metrics.ticks_missed(&job.name, n as u64);
            info!(event = "ticks_missed", job = %job.name, node = %self.node, missed = n,
                since = %rfc3339(floor), "{n} fire time(s) since {} passed with nobody \
                running them", rfc3339(floor));
            self.ticks
                .notifier()
                .missed(&job.name, *first, *last, n, term);
        }
    }
}

/// Raise the last-run and last-success gauges from `runs` (newest first or not).
pub fn seed(metrics: &Metrics, job: &str, runs: &[RunRecord]) {
    let started = runs
        .iter()
        .filter(|r| r.outcome != "skipped")
        .map(|r| r.started_at)
        .max();
    let succeeded = runs
        .iter()
        .filter(|r| r.outcome == "ok")
        .filter_map(|r| r.finished_at)
        .max();
    if let Some(started) = started {
        metrics.run_seen(job, started, succeeded);
    } else if let Some(s) = succeeded {
        metrics.run_seen(job, s, Some(s));
    }
}

/// Fire times of `schedule` strictly after `after` and strictly before `before`, at most
/// `limit`.
pub fn missed_between(
    schedule: &Schedule,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    schedule.between(after, before - chrono::Duration::nanoseconds(1), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn missed_fire_times_are_counted_between_the_bounds() {
        let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
        let after = at("2026-11-29T10:00:00Z");
        // 10:01 .. 10:04 (10:05 is "now": being claimed, not missed).
        assert_eq!(
            missed_between(&every_minute, after, at("2026-11-29T10:05:00Z"), 100).len(),
            4
        );
        assert_eq!(
            missed_between(&every_minute, after, at("2026-11-29T10:05:00Z"), 2).len(),
            2
        );
        assert_eq!(missed_between(&every_minute, after, after, 100).len(), 0);
    }

    #[test]
    fn history_seeds_the_gauges_and_skips_do_not_count_as_runs() {
        let metrics = Metrics::new();
        let run = |fire: &str, outcome: &str| RunRecord {
            outcome: outcome.into(),
            started_at: at(fire),
            finished_at: Some(at(fire) + chrono::Duration::seconds(2)),
            ..RunRecord::claimed("j", at(fire), "n", 1, "s", "p")
        };
        seed(
            &metrics,
            "j",
            &[
                run("2026-11-29T10:03:00Z", "skipped"),
                run("2026-11-29T10:02:00Z", "failed"),
                run("2026-11-29T10:01:00Z", "ok"),
            ],
        );
        let text = metrics.encode();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{job=\"j\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<f64>().unwrap())
        };
        assert_eq!(
            value("cronlease_job_last_run_timestamp_seconds"),
            Some(at("2026-11-29T10:02:00Z").timestamp() as f64)
        );
        assert_eq!(
            value("cronlease_job_last_success_timestamp_seconds"),
            Some(at("2026-11-29T10:01:02Z").timestamp() as f64)
        );
        // Never back: an older success seen later changes nothing.
        metrics.run_seen(
            "j",
            at("2026-11-29T09:00:00Z"),
            Some(at("2026-11-29T09:00:01Z")),
        );
        assert_eq!(
            value("cronlease_job_last_success_timestamp_seconds"),
            Some(at("2026-11-29T10:01:02Z").timestamp() as f64)
        );
    }
}
