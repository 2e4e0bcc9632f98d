//! The store records as JSON, for the backends that keep JSON documents (the file store's files,
//! ZooKeeper's znodes). They are separate from the store's own types so that the stored format
//! changes only on purpose: fields added later get a `serde(default)` that says what older
//! records meant, and the file store's leases file carries a format version.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{LeaseRecord, NodeRecord, Requests, RunRecord, RunTrigger};

/// The leases file's format version; a newer one is refused rather than misread. The pause
/// fields of [`Lease`] came later without a new version: they are optional, absent when unset,
/// and read as "not paused, never resumed" when absent.
pub(crate) const LEASES_VERSION: u32 = 1;

/// `leases.json`: every job's lease, by job name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LeasesFile {
    pub version: u32,
    pub leases: BTreeMap<String, Lease>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub holder: String,
    pub session: String,
    pub term: i64,
    #[serde(default)]
    pub acquired_at: Option<DateTime<Utc>>,
    /// Absent in records written before pauses existed, and while not paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Absent in records written before pauses existed, and until the first resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<DateTime<Utc>>,
    /// Pending operator requests; absent when there are none (and in older records).
    #[serde(default, skip_serializing_if = "Requests::is_empty")]
    pub requests: Requests,
}

/// A lease's `paused`: who paused the job, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    #[serde(default)]
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub note: String,
}

impl From<&crate::store::Pause> for Pause {
    fn from(p: &crate::store::Pause) -> Self {
        Pause {
            by: p.by.clone(),
            at: p.at,
            note: p.note.clone(),
        }
    }
}

impl From<Pause> for crate::store::Pause {
    fn from(p: Pause) -> Self {
        crate::store::Pause {
            by: p.by,
            at: p.at,
            note: p.note,
        }
    }
}

impl Lease {
    /// A free lease with term 0: what a pause creates for a job that has no lease yet.
    pub fn free() -> Lease {
        Lease {
            holder: String::new(),
            session: String::new(),
            term: 0,
            acquired_at: None,
            paused: None,
            resumed_at: None,
            requests: Requests::default(),
        }
    }

    /// Apply a pause (`Some`) or a resume (`None`) at `now`, as [`crate::store::Store::set_pause`]
    /// says: a pause keeps an earlier one, a resume of a job not paused changes nothing.
    /// Whether the lease changed.
    pub fn set_pause(&mut self, pause: Option<&crate::store::Pause>, now: DateTime<Utc>) -> bool {
        match pause {
            Some(_) if self.paused.is_some() => false,
            Some(p) => {
                self.paused = Some(Pause::from(p));
                true
            }
            None if self.paused.is_none() => false,
            None => {
                self.paused = None;
                self.resumed_at = Some(now);
                true
            }
        }
    }
}

/// `nodes/{id}.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Node {
    pub id: String,
    pub session: String,
    pub heartbeat: i64,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub lease_epoch: i64,
    /// The cronlease version that wrote it; informational, as in Datastore.
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jobs_digest: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

/// A node's job definitions (`defs/{id}.json`, a znode's data, a Redis value).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Definitions {
    pub digest: String,
    pub jobs: BTreeMap<String, String>,
}

impl From<&crate::store::Definitions> for Definitions {
    fn from(d: &crate::store::Definitions) -> Self {
        Definitions {
            digest: d.digest.clone(),
            jobs: d.jobs.clone(),
        }
    }
}

impl From<Definitions> for crate::store::Definitions {
    fn from(d: Definitions) -> Self {
        crate::store::Definitions {
            digest: d.digest,
            jobs: d.jobs,
        }
    }
}

/// `runs/{job}/{unix fire time}.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Run {
    pub job: String,
    pub fire_time: DateTime<Utc>,
    pub node: String,
    pub term: i64,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Absent in records written before retries existed: those made one attempt.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Absent in records written before orphans were closed: nobody's session.
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovery: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<RunTrigger>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_cut: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

impl From<&LeaseRecord> for Lease {
    fn from(l: &LeaseRecord) -> Self {
        Lease {
            holder: l.holder.clone(),
            session: l.session.clone(),
            term: l.term,
            acquired_at: l.acquired_at,
            paused: l.paused.as_deref().map(Pause::from),
            resumed_at: l.resumed_at,
            requests: l.requests.clone(),
        }
    }
}

impl From<Lease> for LeaseRecord {
    fn from(l: Lease) -> Self {
        LeaseRecord {
            holder: l.holder,
            session: l.session,
            term: l.term,
            acquired_at: l.acquired_at,
            paused: l.paused.map(|p| Box::new(crate::store::Pause::from(p))),
            resumed_at: l.resumed_at,
            requests: l.requests,
        }
    }
}

impl From<&NodeRecord> for Node {
    fn from(n: &NodeRecord) -> Self {
        Node {
            id: n.id.clone(),
            session: n.session.clone(),
            heartbeat: n.heartbeat,
            started_at: n.started_at,
            renewed_at: n.renewed_at,
            jobs: n.jobs.clone(),
            http: n.http.clone(),
            lease_epoch: n.lease_epoch,
            version: env!("CARGO_PKG_VERSION").to_string(),
            process: n.process.clone(),
            clock_offset_ms: n.clock_offset_ms,
            jobs_digest: n.jobs_digest.clone(),
            leaving: n.leaving,
        }
    }
}

impl From<Node> for NodeRecord {
    fn from(n: Node) -> Self {
        NodeRecord {
            id: n.id,
            session: n.session,
            heartbeat: n.heartbeat,
            started_at: n.started_at,
            renewed_at: n.renewed_at,
            jobs: n.jobs,
            http: n.http,
            lease_epoch: n.lease_epoch,
            process: n.process,
            clock_offset_ms: n.clock_offset_ms,
            jobs_digest: n.jobs_digest,
            leaving: n.leaving,
        }
    }
}

impl From<&RunRecord> for Run {
    fn from(r: &RunRecord) -> Self {
        Run {
            job: r.job.clone(),
            fire_time: r.fire_time,
            node: r.node.clone(),
            term: r.term,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome.clone(),
            exit_code: r.exit_code,
            attempts: r.attempts,
            session: r.session.clone(),
            process: r.process.clone(),
            reason: r.reason.clone(),
            recovery: r.recovery,
            trigger: r.trigger.clone(),
            output: r.output.clone(),
            output_cut: r.output_cut,
        }
    }
}

impl From<Run> for RunRecord {
    fn from(r: Run) -> Self {
        RunRecord {
            job: r.job,
            fire_time: r.fire_time,
            node: r.node,
            term: r.term,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome,
            exit_code: r.exit_code,
            attempts: r.attempts,
            session: r.session,
            process: r.process,
            reason: r.reason,
            recovery: r.recovery,
            trigger: r.trigger,
            output: r.output,
            output_cut: r.output_cut,
        }
    }
}

/// The pruned watermark of a job (file and ZooKeeper stores): the newest fire time deleted
/// from its history; claims at or before it are refused.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Pruned {
    /// Unix seconds (rounded down).
    pub fire_time: i64,
    /// The same instant in unix milliseconds (a manual run's fire time has some); absent in
    /// records written before manual runs existed, which meant whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_time_ms: Option<i64>,
}

impl Pruned {
    /// The watermark at `t` (to the millisecond).
    pub fn at(t: DateTime<Utc>) -> Pruned {
        Pruned {
            fire_time: t.timestamp(),
            fire_time_ms: Some(t.timestamp_millis()),
        }
    }

    /// The watermark's instant.
    pub fn time(&self) -> DateTime<Utc> {
        let ms = self
            .fire_time_ms
            .unwrap_or(self.fire_time.saturating_mul(1000));
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_attempts_reads_as_one_attempt() {
        let old = r#"{"job":"j","fire_time":"2027-01-15T08:00:00Z","node":"a","term":2,
            "started_at":"2027-01-15T08:00:00.1Z","outcome":"ok"}"#;
        let run: RunRecord = serde_json::from_str::<Run>(old).unwrap().into();
        assert_eq!(run.attempts, 1);
        assert_eq!(run.finished_at, None);
        assert_eq!(run.fire_time.timestamp(), 1_800_000_000);
    }

    #[test]
    fn a_lease_without_pause_fields_reads_as_never_paused() {
        let old = r#"{"holder":"a","session":"s","term":3}"#;
        let lease: LeaseRecord = serde_json::from_str::<Lease>(old).unwrap().into();
        assert_eq!(
            (lease.term, &lease.paused, lease.resumed_at),
            (3, &None, None)
        );
        // Not paused, never resumed: written as before (no new fields).
        let json = serde_json::to_string(&Lease::from(&lease)).unwrap();
        assert!(
            !json.contains("paused") && !json.contains("resumed_at"),
            "{json}"
        );
    }

    #[test]
    fn a_lease_round_trips_with_its_pause() {
        let lease = LeaseRecord {
            holder: String::new(),
            session: String::new(),
            term: 0,
            acquired_at: None,
            paused: Some(Box::new(crate::store::Pause {
                by: "ops@host".into(),
                at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
                note: "maintenance".into(),
            })),
            resumed_at: Some(DateTime::from_timestamp(1_799_000_000, 5).unwrap()),
            requests: Requests {
                triggers: vec![crate::store::TriggerRequest {
                    fire_time: DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap(),
                    by: "ops@h".into(),
                    expires_at: DateTime::from_timestamp(1_800_003_600, 0).unwrap(),
                    allow_overlap: true,
                }],
                backfill: None,
            },
        };
        let json = serde_json::to_vec(&Lease::from(&lease)).unwrap();
        let stored = serde_json::from_slice::<Lease>(&json).unwrap();
        assert_eq!(LeaseRecord::from(stored), lease);
    }

    #[test]
    fn pausing_keeps_the_first_pause_and_resuming_stamps_the_time() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        let first = crate::store::Pause {
            by: "a".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            note: String::new(),
        };
        let second = crate::store::Pause {
            by: "b".into(),
            ..first.clone()
        };
        let mut lease = Lease::free();
        assert!(!lease.set_pause(None, now), "not paused: nothing to resume");
        assert!(lease.set_pause(Some(&first), now));
        assert!(!lease.set_pause(Some(&second), now));
        assert_eq!(lease.paused.as_ref().unwrap().by, "a");
        assert_eq!(lease.resumed_at, None);
        assert!(lease.set_pause(None, now));
        assert_eq!(
            (lease.paused.is_none(), lease.resumed_at),
            (true, Some(now))
        );
        assert!(!lease.set_pause(None, now));
    }

    #[test]
    fn a_watermark_keeps_milliseconds_and_reads_old_records_as_seconds() {
        let t = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        assert_eq!(Pruned::at(t).time(), t);
        let old: Pruned = serde_json::from_str(r#"{"fire_time":1800000000}"#).unwrap();
        assert_eq!(
            old.time(),
            DateTime::from_timestamp(1_800_000_000, 0).unwrap()
        );
    }

    #[test]
    fn records_round_trip() {
        let run = RunRecord {
            job: "j".into(),
            fire_time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            node: "a".into(),
            term: 3,
            started_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
            finished_at: Some(DateTime::from_timestamp(1_800_000_001, 5).unwrap()),
            outcome: "failed".into(),
            exit_code: Some(-1),
            attempts: 0,
            session: "s".into(),
            process: "p".into(),
            reason: Some("lease_lost".into()),
            recovery: true,
            trigger: Some(RunTrigger {
                kind: "manual".into(),
                by: "ops@h".into(),
                request: "1800000000.250".into(),
            }),
            output: "line one\nline two\n".into(),
            output_cut: 12,
        };
        let json = serde_json::to_vec(&Run::from(&run)).unwrap();
        let back: RunRecord = serde_json::from_slice::<Run>(&json).unwrap().into();
        assert_eq!(back, run);
    }
}
