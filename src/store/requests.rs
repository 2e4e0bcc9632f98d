//! Operator requests on a job (`cronlease trigger`, `cronlease backfill`), as the store keeps
//! them: in the job's lease record, so that the claim transaction that already reads the lease
//! for its fence also sees whether the request a run belongs to is still pending.
//!
//! Backends keep [`Requests`] and [`RunTrigger`] as opaque JSON ([`Requests::encode`],
//! [`RunTrigger::encode`]) or embed them in their own JSON records; the rules of a change live
//! here once ([`Requests::apply`]), and every backend applies them in its own atomic
//! read-modify-write.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};

/// How many trigger requests a job may have pending at once.
pub const MAX_PENDING_TRIGGERS: usize = 20;

/// A job's pending operator requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requests {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: it is rare, and every lease in a node's copy of the leases carries a `Requests`.
    pub backfill: Option<Box<BackfillRequest>>,
}

/// `cronlease trigger`: run the job once, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRequest {
    /// The run's fire time: when it was asked for, to the millisecond and never on a whole
    /// second, so that it cannot be one of the job's scheduled fire times (which are whole
    /// seconds). The run record is keyed by it, so the request runs at most once.
    pub fire_time: DateTime<Utc>,
    /// `user@host` of whoever asked.
    pub by: String,
    /// Not run after this instant (`--timeout`): dropped by the leader, or by `--wait`.
    pub expires_at: DateTime<Utc>,
    /// `--overlap allow`: run even while a run of the job is going, whatever its policy.
    #[serde(default)]
    pub allow_overlap: bool,
}

impl TriggerRequest {
    /// The request's id: its fire time's key ([`super::time_key`]).
    pub fn id(&self) -> String {
        super::time_key(self.fire_time)
    }
}

/// `cronlease backfill`: run the job's fire times from `from` to `to` (both included) that no
/// node ran, oldest first, one after another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    /// Unique per request (`b` and the request instant in milliseconds).
    pub id: String,
    pub by: String,
    pub at: DateTime<Utc>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Fire times in the range.
    pub total: u32,
    /// Fire times handled so far, oldest first (run, or found already run).
    #[serde(default)]
    pub done: u32,
    /// The newest fire time handled: a new leader goes on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<DateTime<Utc>>,
}

/// What a run was started by, when not by its schedule: kept in its [`super::RunRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    /// `manual` (`cronlease trigger`) or `backfill`.
    pub kind: String,
    /// `user@host` of whoever asked.
    pub by: String,
    /// The request's id: a claim of this run checks it is still pending.
    pub request: String,
}

/// The trigger kinds.
pub const MANUAL: &str = "manual";
pub const BACKFILL: &str = "backfill";

/// A change to a job's requests ([`super::Store::change_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestChange {
    /// Add a trigger; refused if one with its id is pending or [`MAX_PENDING_TRIGGERS`] are.
    AddTrigger(TriggerRequest),
    /// Start a backfill; refused if the job has one.
    AddBackfill(BackfillRequest),
    /// Remove the request (trigger or backfill) with this id; refused if there is none.
    Remove(String),
    /// Record a backfill's progress; refused if the backfill with this id is gone. The only
    /// change not announced to the nodes (it changes nothing they act on).
    Progress {
        id: String,
        done: u32,
        cursor: Option<DateTime<Utc>>,
    },
}

impl RequestChange {
    /// Whether the change is announced to every node (the control epoch moves with it).
    pub fn announced(&self) -> bool {
        !matches!(self, RequestChange::Progress { .. })
    }
}

impl Requests {
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty() && self.backfill.is_none()
    }

    /// Whether a request with this id is pending.
    pub fn has(&self, id: &str) -> bool {
        self.triggers.iter().any(|t| t.id() == id)
            || self.backfill.as_ref().is_some_and(|b| b.id == id)
    }

    /// Apply `change`; false (and nothing changed) if it is refused.
    pub fn apply(&mut self, change: &RequestChange) -> bool {
        match change {
            RequestChange::AddTrigger(t) => {
                if self.has(&t.id()) || self.triggers.len() >= MAX_PENDING_TRIGGERS {
                    return false;
                }
                self.triggers.push(t.clone());
                self.triggers.sort_by_key(|t| t.fire_time);
                true
            }
            RequestChange::AddBackfill(b) => {
                if self.backfill.is_some() {
                    return false;
                }
                self.backfill = Some(Box::new(b.clone()));
                true
            }
            RequestChange::Remove(id) => {
                let before = self.triggers.len();
                self.triggers.retain(|t| t.id() != *id);
                if self.triggers.len() != before {
                    return true;
                }
                if self.backfill.as_ref().is_some_and(|b| b.id == *id) {
                    self.backfill = None;
                    return true;
                }
                false
            }
            RequestChange::Progress { id, done, cursor } => match &mut self.backfill {
                Some(b) if b.id == *id => {
                    b.done = *done;
                    b.cursor = *cursor;
                    true
                }
                _ => false,
            },
        }
    }

    /// As JSON, for backends that keep it as one opaque value; empty text for no requests.
    pub fn encode(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        serde_json::to_string(self).expect("requests serialize")
    }

    /// Read what [`Requests::encode`] wrote (empty text: none).
    pub fn decode(text: &str) -> StoreResult<Requests> {
        if text.trim().is_empty() {
            return Ok(Requests::default());
        }
        serde_json::from_str(text)
            .map_err(|e| StoreError::Other(format!("malformed requests in a lease record: {e}")))
    }
}

impl RunTrigger {
    /// As JSON, for backends that keep it as one opaque value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a trigger serializes")
    }

    /// Read what [`RunTrigger::encode`] wrote; empty text: `None`.
    pub fn decode(text: &str) -> StoreResult<Option<RunTrigger>> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Other(format!("malformed trigger in a run record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn trigger(ms: i64) -> TriggerRequest {
        TriggerRequest {
            fire_time: Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap(),
            by: "ops@h".into(),
            expires_at: Utc.timestamp_opt(1_800_003_600, 0).unwrap(),
            allow_overlap: false,
        }
    }

    fn backfill(id: &str) -> BackfillRequest {
        BackfillRequest {
            id: id.into(),
            by: "ops@h".into(),
            at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            from: Utc.timestamp_opt(1_799_990_000, 0).unwrap(),
            to: Utc.timestamp_opt(1_799_999_000, 0).unwrap(),
            total: 10,
            done: 0,
            cursor: None,
        }
    }

    #[test]
    fn changes_follow_the_rules() {
        let mut r = Requests::default();
        assert!(r.apply(&RequestChange::AddTrigger(trigger(250))));
        assert!(
            !r.apply(&RequestChange::AddTrigger(trigger(250))),
            "same id"
        );
        assert!(r.has("1800000000.250"));
        assert!(r.apply(&RequestChange::AddBackfill(backfill("b1"))));
        assert!(
            !r.apply(&RequestChange::AddBackfill(backfill("b2"))),
            "one at a time"
        );
        let progress = RequestChange::Progress {
            id: "b1".into(),
            done: 3,
            cursor: Some(Utc.timestamp_opt(1_799_990_300, 0).unwrap()),
        };
        assert!(!progress.announced());
        assert!(r.apply(&progress));
        assert_eq!(r.backfill.as_ref().unwrap().done, 3);
        let stale = RequestChange::Progress {
            id: "b0".into(),
            done: 4,
            cursor: None,
        };
        assert!(!r.apply(&stale));
        let back = Requests::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert!(r.apply(&RequestChange::Remove("1800000000.250".into())));
        assert!(r.apply(&RequestChange::Remove("b1".into())));
        assert!(!r.apply(&RequestChange::Remove("b1".into())));
        assert!(r.is_empty());
        assert_eq!(r.encode(), "");
        assert_eq!(Requests::decode("").unwrap(), Requests::default());
        for i in 0..MAX_PENDING_TRIGGERS as i64 {
            assert!(r.apply(&RequestChange::AddTrigger(trigger(i + 1))));
        }
        assert!(!r.apply(&RequestChange::AddTrigger(trigger(999))), "full");
    }
}
