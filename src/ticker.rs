//! The tick source: tokio-cron-scheduler wrapped so that none of its limits reach our behaviour.
//!
//! tokio-cron-scheduler 0.15 polls every 500 ms, does not pass the fire time to the job,
//! captures a time zone's UTC offset once (its open DST bugs #87/#107), parses day-of-month and
//! day-of-week with AND instead of cron's OR, and neither stops overlapping runs nor awaits them
//! on shutdown. So it is used for one thing only: a UTC pulse every second (UTC has no DST, so
//! the captured offset is right forever). On each pulse the [`Ticker`] asks every job's
//! [`Schedule`](crate::schedule::Schedule) (croner, in the job's own zone, DST-correct) which
//! fire times fell due since the previous pulse and hands each one, as the scheduled instant, to
//! the callback. A pulse that comes late or twice loses or repeats nothing: fire times are
//! computed from a per-job cursor, not from the pulse. Overlap and shutdown are the caller's.
//!
//! Lateness: a fire time is handed over within one pulse poll (≤ ~500 ms) after it is due.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as PulseJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::schedule::Schedule;

/// More fire times than this due at once (after a long pause) collapse to the latest one.
const MAX_DUE_AT_ONCE: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("tick source: {0}")]
pub struct TickerError(String);

/// Called with (job index, scheduled fire time).
pub type OnTick = Arc<dyn Fn(usize, DateTime<Utc>) + Send + Sync>;

pub struct Ticker {
    scheduler: JobScheduler,
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
        let scheduler = JobScheduler::new().await.map_err(|e| TickerError(e.to_string()))?;
        let pulse = PulseJob::new_async("* * * * * *", move |_id, _lock| {
            // Coalesce: if a pulse is already pending, this one adds nothing.
            let _ = pulse_tx.try_send(());
            Box::pin(async {})
        })
        .map_err(|e| TickerError(e.to_string()))?;
        scheduler.add(pulse).await.map_err(|e| TickerError(e.to_string()))?;
        scheduler.start().await.map_err(|e| TickerError(e.to_string()))?;

        tokio::spawn(async move {
            let mut cursors = Cursors::new(schedules, start);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = pulse_rx.recv() => if p.is_none() { return },
                }
                for (job, fire_time) in cursors.due(Utc::now()) {
                    if cancel.is_cancelled() {
                        return;
                    }
                    on_tick(job, fire_time);
                }
            }
        });
        Ok(Ticker { scheduler })
    }

    /// Stop the pulse.
    pub async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            warn!("stopping the tick source: {e}");
        }
    }
}

/// Per-job cursors: the fire times already handed over end at the cursor.
pub struct Cursors {
    schedules: Vec<Schedule>,
    cursors: Vec<DateTime<Utc>>,
}

impl Cursors {
    pub fn new(schedules: Vec<Schedule>, start: DateTime<Utc>) -> Self {
        let cursors = vec![start; schedules.len()];
        Cursors { schedules, cursors }
    }

    /// Every (job, fire time) with cursor < fire time ≤ now, oldest first per job; advances the
    /// cursors. After a long pause only the latest fire time of a job is returned.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(usize, DateTime<Utc>)> {
        let mut out = Vec::new();
        for (i, schedule) in self.schedules.iter().enumerate() {
            let after = self.cursors[i];
            if now <= after {
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
        let mut c = Cursors::new(vec![every_second, every_ten], at("2026-01-01T00:00:00.200Z"));
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
        let next = c.due(at("2026-01-01T00:00:10.100Z"));
        assert_eq!(next.len(), 7);
        assert!(next.contains(&(1, at("2026-01-01T00:00:10Z"))));
    }

    #[test]
    fn a_long_pause_collapses_to_the_latest_fire_time() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        let mut c = Cursors::new(vec![every_second], at("2026-01-01T00:00:00Z"));
        let due = c.due(at("2026-01-01T01:00:00.5Z"));
        assert_eq!(due, vec![(0, at("2026-01-01T01:00:00Z"))]);
    }
}
