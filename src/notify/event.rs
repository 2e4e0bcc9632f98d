//! What a sink receives: one JSON object per event, the same for webhooks (the POST body) and
//! commands (stdin). Every key is always present (`null` when it does not apply), so a receiver
//! can rely on the shape.
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::notify::EventKind;
use crate::node::tick::rfc3339;
use crate::store::{time_key, RunRecord, RunTrigger};

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `failed`, `timeout`, `lost`, `missed`, `recovered` or `stopped`.
    pub event: &'static str,
    /// The same for every delivery of this event, on every retry: `{job}@{fire time}:{event}`.
    /// A receiver that must not act twice drops an id it has seen (a delivery whose answer
    /// was lost is sent again).
    pub id: String,
    pub job: String,
    /// The run's fire time; for `missed`, the first fire time missed.
    pub fire_time: String,
    /// The node that ran it (for `lost`: the node that died; for `missed`: the observer).
    pub node: String,
    /// The node that saw the event and sent it.
    pub observed_by: String,
    pub term: i64,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_seconds: Option<f64>,
    pub attempts: Option<u32>,
    /// Why a run ended so (`lease_lost`, `the node's session expired`, ...).
    pub reason: Option<String>,
    /// A manual run or backfill: who asked.
    pub trigger: Option<RunTrigger>,
    /// The tail of what the run printed (its kept output).
    pub output: Option<String>,
    /// Bytes of output dropped before `output`.
    pub output_cut: Option<u64>,
    /// `missed`: how many fire times passed with nobody running them, and the last of them.
    pub missed: Option<usize>,
    pub missed_until: Option<String>,
    /// When the event was seen.
    pub at: String,
}

impl Event {
    /// The event `kind` of a finished (or lost) run.
    pub fn of_run(kind: EventKind, run: &RunRecord, observed_by: &str) -> Event {
        let duration_seconds = run
            .finished_at
            .map(|f| (f - run.started_at).num_milliseconds().max(0) as f64 / 1000.0);
        Event {
            event: kind.as_str(),
            id: format!("{}@{}:{}", run.job, time_key(run.fire_time), kind.as_str()),
            job: run.job.clone(),
            fire_time: rfc3339(run.fire_time),
            node: run.node.clone(),
            observed_by: observed_by.to_string(),
            term: run.term,
            outcome: Some(run.outcome.clone()),
            exit_code: run.exit_code,
            duration_seconds,
            attempts: Some(run.attempts),
            reason: run.reason.clone(),
            trigger: run.trigger.clone(),
            output: Some(run.output.clone()),
            output_cut: Some(run.output_cut),
            missed: None,
            missed_until: None,
            at: rfc3339(Utc::now()),
        }
    }

    /// `missed`: `count` fire times from `first` to `last` passed with nobody running them.
    pub fn missed(
        job: &str,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        count: usize,
        node: &str,
        term: i64,
    ) -> Event {
        Event {
            event: EventKind::Missed.as_str(),
            id: format!("{job}@{}:missed", time_key(first)),
            job: job.to_string(),
            fire_time: rfc3339(first),
            node: node.to_string(),
            observed_by: node.to_string(),
            term,
            outcome: None,
            exit_code: None,
            duration_seconds: None,
            attempts: None,
            reason: None,
            trigger: None,
            output: None,
            output_cut: None,
            missed: Some(count),
            missed_until: Some(rfc3339(last)),
            at: rfc3339(Utc::now()),
        }
    }

    /// The one-line summary the logs use.
    pub fn summary(&self) -> String {
        match (self.event, self.missed) {
            ("missed", Some(n)) => format!("{}: {n} fire time(s) missed", self.job),
            _ => format!("{} {}: {}", self.job, self.fire_time, self.event),
        }
    }
}
