//! Cron expression + IANA time zone → fire times. (stub: helper fills in)
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A job's schedule: a cron expression (seconds optional) evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    pub tz: chrono_tz::Tz,
}

impl Schedule {
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let _ = (expr, tz);
        todo!()
    }
    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = t;
        todo!()
    }
    /// The latest fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = t;
        todo!()
    }
}
