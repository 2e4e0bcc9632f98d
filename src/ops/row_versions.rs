//! Versions of the dashboard's job rows, so that an open page reads only what changed:
//! `/api/cluster?since=V` answers the jobs whose rows changed after version `V` and the names
//! of the jobs removed since, instead of the whole report (1.5 MB at 1,000 jobs, every poll).
//!
//! A row's version moves only when what the page shows of it moves: the report's fields except
//! `held_for_s`, which grows every poll (the page works it out from `acquired_at`), plus the
//! job's position in the file (the page keeps the file's order). Versions count the refreshes
//! that changed something, so nothing changing means the same version and an empty answer.
//!
//! A version names this process start (`{start}-{n}`): a page that kept one across a restart
//! of the node, or that is older than the removals this keeps track of, gets the whole report.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;

use crate::ops::status::{ClusterStatus, JobStatus};

/// Removed jobs remembered; a page whose version is older than the oldest forgotten one gets
/// the whole report.
const REMOVALS_KEPT: usize = 4096;

/// One job's row as last served: its version, what it showed, and its JSON (made once per
/// change, shared by every page that asks).
struct Row {
    version: u64,
    position: usize,
    shown: JobStatus,
    json: Bytes,
}

/// The rows' versions, updated at each refresh of the view.
pub struct RowVersions {
    /// This process start's mark, the first part of every version it gives out.
    start: String,
    /// The newest version.
    current: u64,
    rows: HashMap<String, Row>,
    /// Jobs removed, with the version that removed them, oldest first (shared with the rows
    /// served, copied only when one is removed while those are still out).
    removed: Arc<VecDeque<(u64, String)>>,
    /// Versions at or below this may have missed a removal that is no longer kept.
    floor: u64,
}

/// The rows as of one refresh: what a `since` answer is made from.
pub struct Rows {
    start: String,
    current: u64,
    floor: u64,
    /// In the report's (the file's) order.
    rows: Vec<(u64, Bytes)>,
    removed: Arc<VecDeque<(u64, String)>>,
}

/// What a page's `since` asks of a set of rows.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// Everything: no version, another process start's, a malformed one, or one too old.
    Full,
    /// The rows changed after this version.
    After(u64),
}

impl RowVersions {
    /// Versions of a process started now (`start` tells its versions from another start's).
    pub fn new(start: String) -> Self {
        RowVersions {
            start,
            current: 0,
            rows: HashMap::new(),
            removed: Arc::default(),
            floor: 0,
        }
    }

    /// Compares `status`'s jobs with the rows last seen, gives the changed ones a new version
    /// and makes their JSON; returns the rows as of now.
    pub fn update(&mut self, status: &ClusterStatus) -> Arc<Rows> {
        let next = self.current + 1;
        let mut changed = false;
        let mut rows = Vec::with_capacity(status.jobs.len());
        for (position, job) in status.jobs.iter().enumerate() {
            let same = self
                .rows
                .get(&job.name)
                .is_some_and(|r| r.position == position && same_row(&r.shown, job));
            if !same {
                let mut shown = job.clone();
                shown.held_for_s = None;
                let json = row_json(&shown, position);
                self.rows.insert(
                    job.name.clone(),
                    Row {
                        version: next,
                        position,
                        shown,
                        json,
                    },
                );
                changed = true;
            }
            let r = &self.rows[&job.name];
            rows.push((r.version, r.json.clone()));
        }
        if self.rows.len() > status.jobs.len() {
            let names: std::collections::HashSet<&str> =
                status.jobs.iter().map(|j| j.name.as_str()).collect();
            let gone: Vec<String> = self
                .rows
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect();
            let removed = Arc::make_mut(&mut self.removed);
            for name in gone {
                self.rows.remove(&name);
                removed.push_back((next, name));
                changed = true;
            }
            while removed.len() > REMOVALS_KEPT {
                if let Some((v, _)) = removed.pop_front() {
                    self.floor = v;
                }
            }
        }
        if changed {
            self.current = next;
        }
        Arc::new(Rows {
            start: self.start.clone(),
            current: self.current,
            floor: self.floor,
            rows,
            removed: self.removed.clone(),
        })
    }
}

/// Whether a row shows the same as it did (`held_for_s` aside: `shown` has none).
fn same_row(shown: &JobStatus, job: &JobStatus) -> bool {
    // Every field named, none with `..`: a field added to the report must be placed here (or
    // left out, as `held_for_s` is) before this compiles, so a change of it is never missed.
    let JobStatus {
        name,
        schedule,
        timezone,
        action,
        state,
        leader,
        term,
        acquired_at,
        held_for_s: _,
        next_fire_time,
        jitter_s,
        next_start_time,
        runs,
        drift,
        paused,
        enabled,
        triggers,
        backfill,
    } = job;
    shown.name == *name
        && shown.schedule == *schedule
        && shown.timezone == *timezone
        && shown.action == *action
        && shown.state == *state
        && shown.leader == *leader
        && shown.term == *term
        && shown.acquired_at == *acquired_at
        && shown.next_fire_time == *next_fire_time
        && shown.jitter_s == *jitter_s
        && shown.next_start_time == *next_start_time
        && shown.runs == *runs
        && shown.drift == *drift
        && shown.paused == *paused
        && shown.enabled == *enabled
        && shown.triggers == *triggers
        && shown.backfill == *backfill
}

/// A row's JSON: the job's report fields without `held_for_s`, with its `position`.
fn row_json(job: &JobStatus, position: usize) -> Bytes {
    let mut value = serde_json::to_value(job).unwrap_or_else(|e| {
        // A report of strings, numbers and times always encodes; should it not, the page
        // still gets the row's name (and shows it without its data) rather than nothing.
        serde_json::json!({ "name": job.name, "error": e.to_string() })
    });
    if let Some(fields) = value.as_object_mut() {
        fields.remove("held_for_s");
        fields.insert("position".into(), position.into());
    }
    serde_json::to_vec(&value).unwrap_or_default().into()
}

impl Rows {
    /// This process start's mark.
    pub fn start(&self) -> &str {
        &self.start
    }

    /// The version of these rows, as a page sends it back.
    pub fn version(&self) -> String {
        format!("{}-{}", self.start, self.current)
    }

    /// What a page that has the rows as of `since` needs.
    pub fn since(&self, since: Option<&str>) -> Since {
        let Some((start, n)) = since.and_then(|s| s.rsplit_once('-')) else {
            return Since::Full;
        };
        match n.parse::<u64>() {
            Ok(n) if start == self.start && n >= self.floor && n <= self.current => Since::After(n),
            _ => Since::Full,
        }
    }

    /// The JSON of the rows changed after version `after`, as one array.
    pub fn changed_json(&self, after: u64) -> Vec<u8> {
        let mut out = vec![b'['];
        for (v, json) in &self.rows {
            if *v > after {
                if out.len() > 1 {
                    out.push(b',');
                }
                out.extend_from_slice(json);
            }
        }
        out.push(b']');
        out
    }

    /// The jobs removed after version `after`.
    pub fn removed_after(&self, after: u64) -> Vec<&str> {
        self.removed
            .iter()
            .filter(|(v, _)| *v > after)
            .map(|(_, n)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::LeaseState;
    use chrono::{DateTime, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(name: &str, held_for: f64) -> JobStatus {
        JobStatus {
            name: name.into(),
            schedule: "0 * * * * *".into(),
            timezone: "UTC".into(),
            action: "say",
            state: LeaseState::Held,
            leader: Some("a".into()),
            term: 1,
            acquired_at: Some(at("2026-12-01T00:00:00Z")),
            held_for_s: Some(held_for),
            next_fire_time: Some(at("2026-12-01T00:01:00Z")),
            jitter_s: None,
            next_start_time: None,
            runs: Vec::new(),
            drift: Vec::new(),
            paused: None,
            enabled: true,
            triggers: Vec::new(),
            backfill: None,
        }
    }

    fn status(jobs: Vec<JobStatus>) -> ClusterStatus {
        ClusterStatus {
            generated_at: at("2026-12-01T00:00:30Z"),
            store: "s".into(),
            lease_s: 10.0,
            jobs,
            nodes: Vec::new(),
        }
    }

    fn names(rows: &Rows, after: u64) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&rows.changed_json(after)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn after(rows: &Rows, since: &str) -> u64 {
        match rows.since(Some(since)) {
            Since::After(n) => n,
            Since::Full => panic!("{since}: full"),
        }
    }

    #[test]
    fn only_rows_that_changed_are_newer_than_a_version() {
        let mut versions = RowVersions::new("s1".into());
        let first = versions.update(&status(vec![job("a", 1.0), job("b", 1.0)]));
        let v1 = first.version();
        assert_eq!(names(&first, 0), ["a", "b"]);
        // Only held_for_s moved: the same version, nothing to send.
        let second = versions.update(&status(vec![job("a", 2.0), job("b", 2.0)]));
        assert_eq!(second.version(), v1);
        assert!(names(&second, after(&second, &v1)).is_empty());
        // b paused: b alone.
        let mut b = job("b", 3.0);
        b.paused = Some(crate::ops::status::PausedStatus {
            by: "me".into(),
            since: at("2026-12-01T00:00:40Z"),
            note: String::new(),
        });
        let third = versions.update(&status(vec![job("a", 3.0), b.clone()]));
        assert_ne!(third.version(), v1);
        assert_eq!(names(&third, after(&third, &v1)), ["b"]);
        assert!(names(&third, after(&third, &third.version())).is_empty());
        // The row's JSON has its position and no held_for_s.
        let row: serde_json::Value = serde_json::from_slice(&third.changed_json(0)).unwrap();
        assert_eq!(row[1]["position"], 1);
        assert!(row[1].get("held_for_s").is_none());
        assert_eq!(row[1]["paused"]["by"], "me");
        // a removed: named as removed since any older version; b moved up a place.
        let v3 = third.version();
        let fourth = versions.update(&status(vec![b]));
        assert_eq!(fourth.removed_after(after(&fourth, &v3)), ["a"]);
        assert_eq!(names(&fourth, after(&fourth, &v3)), ["b"]);
        assert_eq!(fourth.removed_after(after(&fourth, &v1)), ["a"]);
        assert!(fourth
            .removed_after(after(&fourth, &fourth.version()))
            .is_empty());
    }

    #[test]
    fn a_version_of_another_start_or_malformed_asks_for_everything() {
        let mut versions = RowVersions::new("s1".into());
        let rows = versions.update(&status(vec![job("a", 1.0)]));
        for bad in ["s0-1", "s1-x", "s1", "", "s1-99", "-1"] {
            assert_eq!(rows.since(Some(bad)), Since::Full, "{bad}");
        }
        assert_eq!(rows.since(None), Since::Full);
        assert_eq!(rows.since(Some("s1-0")), Since::After(0));
        assert_eq!(rows.since(Some(&rows.version())), Since::After(1));
    }

    #[test]
    fn a_version_older_than_the_removals_kept_asks_for_everything() {
        let mut versions = RowVersions::new("s".into());
        let old = versions.update(&status(vec![job("keep", 0.0)])).version();
        for i in 0..=REMOVALS_KEPT {
            let name = format!("j{i}");
            versions.update(&status(vec![job("keep", 0.0), job(&name, 0.0)]));
            versions.update(&status(vec![job("keep", 0.0)]));
        }
        let rows = versions.update(&status(vec![job("keep", 0.0)]));
        assert_eq!(rows.since(Some(&old)), Since::Full);
        assert!(matches!(rows.since(Some(&rows.version())), Since::After(_)));
    }
}
