//! The tick source: tokio-cron-scheduler wrapped so that none of its limits reach our behaviour.
//!
//! tokio-cron-scheduler 0.15 polls every 500 ms, does not pass the fire time to the job,
//! captures a time zone's UTC offset once (its open DST bugs #87/#107), parses day-of-month and
//! day-of-week with AND instead of cron's OR, and neither stops overlapping runs nor awaits them
//! on shutdown. So none of its scheduling is trusted. It gives a UTC pulse every second (UTC has
//! no DST, so its captured offset is right forever), which re-reads the wall clock; between
//! pulses the [`Ticker`] also sleeps until the earliest next fire time, so a tick is handed over
//! within a millisecond or two of its instant instead of up to 500 ms late. On each wake it asks
//! every due job's [`Schedule`](crate::config::schedule::Schedule) (croner, in the job's own zone,
//! DST-correct) which fire times fell due since its cursor and hands each one, as the scheduled
//! instant, to the callback. A wake that comes late or twice loses or repeats nothing: fire
//! times are computed from the per-job cursor, not from the wake. A wall-clock step is caught at
//! the next pulse at the latest. Overlap and shutdown are the caller's.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as PulseJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::schedule::Schedule;

/// More fire times than this due at once (after a long pause) collapse to the latest one.
const MAX_DUE_AT_ONCE: usize = 64;
/// Fire times are handed over this long before their instant, so that the leader's claim (a
/// store round trip) is done when the instant comes and the job starts on time; the tick waits
/// for the instant itself ([`crate::node::tick`]).
pub const CLAIM_AHEAD: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest the ticker sleeps without looking at the wall clock again.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(1);
/// Benchmarks only (`scripts/bench.sh`): with this set to 1 the ticker wakes only on
/// tokio-cron-scheduler's pulse, to show what its 500 ms polling alone would cost in lateness.
pub const PULSE_ONLY_ENV: &str = "CRONLEASE_BENCH_PULSE_ONLY";

#[derive(Debug, thiserror::Error)]
#[error("tick source: {0}")]
pub struct TickerError(String);

/// Called with (job index, scheduled fire time).
pub type OnTick = Arc<dyn Fn(usize, DateTime<Utc>) + Send + Sync>;

pub struct Ticker {
    scheduler: JobScheduler,
    /// Schedule changes from a reload, applied by the ticker's task at its next wake.
    updates: tokio::sync::mpsc::UnboundedSender<(usize, Option<Schedule>)>,
}

impl Ticker {
    /// Start pulsing; fire times after `start` are handed to `on_tick` until `cancel` fires.
    pub async fn start(
        schedules: Vec<Schedule>,
        start: DateTime<Utc>,
        on_tick: OnTick,
        cancel: CancellationToken,
    ) -> Result<Ticker, TickerError> {
        let (pulse_tx, mut pulse_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (updates, mut updates_rx) = tokio::sync::mpsc::unbounded_channel();
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| TickerError(e.to_string()))?;
        let pulse = PulseJob::new_async("* * * * * *", move |_id, _lock| {
            // Coalesce: if a pulse is already pending, this one adds nothing.
            let _ = pulse_tx.try_send(());
            Box::pin(async {})
        })
        .map_err(|e| TickerError(e.to_string()))?;
        scheduler
            .add(pulse)
            .await
            .map_err(|e| TickerError(e.to_string()))?;
        scheduler
            .start()
            .await
            .map_err(|e| TickerError(e.to_string()))?;

        let pulse_only = std::env::var(PULSE_ONLY_ENV).is_ok_and(|v| v == "1");
        let ahead = chrono::Duration::from_std(CLAIM_AHEAD).unwrap_or_default();
        tokio::spawn(async move {
            let mut cursors = Cursors::new(schedules, start);
            loop {
                let wait = if pulse_only {
                    std::time::Duration::from_secs(3600)
                } else {
                    cursors
                        .next_due()
                        .map(|t| (t - ahead - Utc::now()).to_std().unwrap_or_default())
                        .unwrap_or(MAX_SLEEP)
                        .min(MAX_SLEEP)
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = pulse_rx.recv() => if p.is_none() { return },
                    u = updates_rx.recv() => match u {
                        Some((job, schedule)) => cursors.set(job, schedule, Utc::now() + ahead),
                        None => return,
                    },
                    _ = tokio::time::sleep(wait) => {}
                }
                for (job, fire_time) in cursors.due(Utc::now() + ahead) {
                    if cancel.is_cancelled() {
                        return;
                    }
                    on_tick(job, fire_time);
                }
            }
        });
        Ok(Ticker { scheduler, updates })
    }

    /// A handle that changes the jobs' schedules (a reload).
    pub fn updates(&self) -> ScheduleUpdates {
        ScheduleUpdates(self.updates.clone())
    }

    /// Stop the pulse.
    pub async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            warn!("stopping the tick source: {e}");
        }
    }
}

/// Changes a running ticker's schedules.
#[derive(Clone)]
pub struct ScheduleUpdates(tokio::sync::mpsc::UnboundedSender<(usize, Option<Schedule>)>);

impl ScheduleUpdates {
    /// Job `idx` (a new slot, or an existing one) now has `schedule` (`None`: removed). A new
    /// or returning job's fire times start after now; a changed one's after its cursor, so
    /// the change takes effect from its next fire time. Applied at the ticker's next wake.
    pub fn set(&self, idx: usize, schedule: Option<Schedule>) {
        let _ = self.0.send((idx, schedule));
    }
}

/// Per-job cursors: the fire times already handed over end at the cursor.
pub struct Cursors {
    /// Per job slot, its schedule (`None`: removed by a reload).
    schedules: Vec<Option<Schedule>>,
    cursors: Vec<DateTime<Utc>>,
    /// Per job, its first fire time after its cursor (cached: croner searches are not free).
    next: Vec<Option<DateTime<Utc>>>,
}

impl Cursors {
    pub fn new(schedules: Vec<Schedule>, start: DateTime<Utc>) -> Self {
        let cursors = vec![start; schedules.len()];
        let next = schedules.iter().map(|s| s.next_after(start)).collect();
        Cursors {
            schedules: schedules.into_iter().map(Some).collect(),
            cursors,
            next,
        }
    }

    /// Give job `idx` a schedule (or none). A job that had none (new, or removed before)
    /// starts at `now`; one that had one keeps its cursor.
    pub fn set(&mut self, idx: usize, schedule: Option<Schedule>, now: DateTime<Utc>) {
        if idx >= self.schedules.len() {
            self.schedules.resize(idx + 1, None);
            self.cursors.resize(idx + 1, now);
            self.next.resize(idx + 1, None);
        }
        if self.schedules[idx].is_none() {
            self.cursors[idx] = now;
        }
        self.next[idx] = schedule
            .as_ref()
            .and_then(|s| s.next_after(self.cursors[idx]));
        self.schedules[idx] = schedule;
    }

    /// The earliest fire time still to hand over.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.next.iter().flatten().min().copied()
    }

    /// Every (job, fire time) with cursor < fire time ≤ now, oldest first per job; advances the
    /// cursors. After a long pause only the latest fire time of a job is returned.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(usize, DateTime<Utc>)> {
        let mut out = Vec::new();
        for (i, schedule) in self.schedules.iter().enumerate() {
            let Some(schedule) = schedule else { continue };
            let after = self.cursors[i];
            if now <= after || self.next[i].is_none_or(|n| n > now) {
                continue;
            }
            let due = schedule.between(after, now, MAX_DUE_AT_ONCE + 1);
            if due.len() > MAX_DUE_AT_ONCE {
                if let Some(latest) = schedule.latest_at_or_before(now) {
                    warn!(
                        job_index = i,
                        "more than {MAX_DUE_AT_ONCE} fire times fell due at once (was the process paused?); \
                         only the latest is handed on"
                    );
                    out.push((i, latest));
                }
            } else {
                out.extend(due.into_iter().map(|t| (i, t)));
            }
            self.cursors[i] = now;
            self.next[i] = schedule.next_after(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hands_over_each_fire_time_once_whatever_the_pulses() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        let every_ten = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        let mut c = Cursors::new(
            vec![every_second, every_ten],
            at("2026-01-01T00:00:00.200Z"),
        );
        // A late pulse covers several seconds; a double pulse adds nothing.
        let first = c.due(at("2026-01-01T00:00:03.700Z"));
        assert_eq!(
            first,
            vec![
                (0, at("2026-01-01T00:00:01Z")),
                (0, at("2026-01-01T00:00:02Z")),
                (0, at("2026-01-01T00:00:03Z")),
            ]
        );
        assert!(c.due(at("2026-01-01T00:00:03.700Z")).is_empty());
        assert_eq!(
            c.next_due(),
            Some(at("2026-01-01T00:00:04Z")),
            "the ticker sleeps until then"
        );
        let next = c.due(at("2026-01-01T00:00:10.100Z"));
        assert_eq!(next.len(), 8);
        assert!(next.contains(&(1, at("2026-01-01T00:00:10Z"))));
    }

    #[test]
    fn schedules_can_be_added_changed_and_removed() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        let every_ten = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        let mut c = Cursors::new(vec![every_second.clone()], at("2026-01-01T00:00:00Z"));
        assert_eq!(c.due(at("2026-01-01T00:00:01.5Z")).len(), 1);
        // Job 0 changes to every ten seconds; job 1 is added at 00:00:05.
        c.set(0, Some(every_ten), at("2026-01-01T00:00:05Z"));
        c.set(2, Some(every_second.clone()), at("2026-01-01T00:00:05Z"));
        assert_eq!(
            c.due(at("2026-01-01T00:00:10.5Z")),
            vec![
                (0, at("2026-01-01T00:00:10Z")),
                (2, at("2026-01-01T00:00:06Z")),
                (2, at("2026-01-01T00:00:07Z")),
                (2, at("2026-01-01T00:00:08Z")),
                (2, at("2026-01-01T00:00:09Z")),
                (2, at("2026-01-01T00:00:10Z")),
            ]
        );
        // Removed: nothing more; back later: from then on, nothing in between.
        c.set(2, None, at("2026-01-01T00:00:11Z"));
        assert_eq!(c.due(at("2026-01-01T00:00:15.5Z")), vec![]);
        c.set(2, Some(every_second), at("2026-01-01T00:00:20Z"));
        assert_eq!(
            c.due(at("2026-01-01T00:00:21.5Z")),
            vec![
                (0, at("2026-01-01T00:00:20Z")),
                (2, at("2026-01-01T00:00:21Z"))
            ]
        );
    }

    #[test]
    fn a_long_pause_collapses_to_the_latest_fire_time() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        let mut c = Cursors::new(vec![every_second], at("2026-01-01T00:00:00Z"));
        let due = c.due(at("2026-01-01T01:00:00.5Z"));
        assert_eq!(due, vec![(0, at("2026-01-01T01:00:00Z"))]);
    }
}
