//! `/api/cluster`: the same report as `cronlease status --json` ([`crate::ops::status`]),
//! made by the node from the store at most once per poll and served from memory, so any
//! number of open dashboards costs the store no more than one. A request never waits for a
//! refresh while the report it has is recent ([`ClusterView::get`]): the refresh runs in the
//! background and the next poll gets it.
//!
//! The leases, node records and control epoch are not read again: they come from the
//! election's last poll ([`Election::observation`]), which read them anyway (the node records
//! and the epoch every poll, the leases when they may have changed). When that poll could not
//! read the store, or its reads have hung for two leases, the view fails with its error (the
//! page shows its lost-store banner and the last good report). Disabled jobs, which the
//! election does not contest, have their leases read here (one batched read per refresh, only
//! while the file has any).
//!
//! What one refresh reads: the newest [`DASHBOARD_RUNS`] runs only of the jobs whose history
//! may have changed since they were last read: never read, a fire time of theirs passed, one
//! of their cached runs was still going, or their lease record changed (a new term), and every
//! job's when the control epoch moved (a pause, trigger or backfill anywhere: rare,
//! operator-made; a trigger is taken off its job's record once its run is claimed, which moves
//! the epoch again, so the run shows), a job with a request pending every time; and a node's job definitions once per new digest (for drift).
//! So a settled cluster of jobs that fire once a minute costs, with a page open, about one
//! `recent_runs` read per run, and nothing between runs.
//!
//! Each refresh also moves the versions of the job rows that changed
//! ([`crate::ops::row_versions`]), so that a page reads only those; the whole report's JSON is
//! made only when a page asks for it (its first load).
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::config::Config;
use crate::node::election::Election;
use crate::node::jobs::JobTable;
use crate::ops::control::timed;
use crate::ops::row_versions::{RowVersions, Rows};
use crate::ops::status::{self, ClusterStatus, READ_CONCURRENCY};
use crate::store::{Definitions, LeaseRecord, RunRecord, Snapshot, Store, StoreError};

/// How many of each job's newest runs the dashboard shows.
pub const DASHBOARD_RUNS: usize = 20;
/// How many of a job's newest runs an update of its cached history reads.
const NEWEST_RUNS: usize = 3;
/// A report up to this many polls old is served while a refresh runs; an older one (no page
/// asked for a while) is refreshed first.
const SERVE_STALE_FOR: u32 = 3;
/// The longest one refresh may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(10);
/// A run is recorded a little after its fire time (the claim is made ahead, but a slow leader
/// or a failover takes longer): a job whose run of a passed fire time was not there yet is
/// read again, every [`RECORD_RETRY`], until this long after that fire time.
const RECORD_GRACE: chrono::Duration = chrono::Duration::seconds(30);
const RECORD_RETRY: chrono::Duration = chrono::Duration::seconds(2);

/// The node's cached view of the cluster.
pub struct ClusterView {
    store: Arc<dyn Store>,
    /// Its last poll's reads: leases, node records, control epoch.
    election: Arc<Election>,
    /// The settings the report needs besides the jobs (the lease); the jobs come from the
    /// job table at each refresh, so a reload shows at once.
    base: Config,
    jobs: Arc<JobTable>,
    every: Duration,
    served: std::sync::Mutex<Served>,
    state: Arc<Mutex<State>>,
}

/// What requests are answered with.
#[derive(Default)]
struct Served {
    /// The last report and when it was made; `Err`: the last refresh failed (and when).
    last: Option<(Instant, Result<Report, String>)>,
    /// The last good report (shown under an error banner while the store is away).
    good: Option<Report>,
}

/// What a refresh works with: held by the one refresh running.
struct State {
    /// Per job: its newest runs as last read, without their output (the report does not show
    /// it: 1,000 jobs × 20 runs of up to 32 KiB each would be most of a gigabyte).
    runs: HashMap<String, Vec<RunRecord>>,
    /// Per job: when its runs were read, and its lease record as seen then.
    read: HashMap<String, ReadAt>,
    /// Definitions by digest (they never change for a digest).
    definitions: HashMap<String, Arc<Definitions>>,
    /// The control epoch at the last refresh.
    epoch: Option<i64>,
    /// The job rows' versions, moved by each refresh that changed them.
    versions: RowVersions,
}

impl State {
    fn new() -> Self {
        State {
            runs: HashMap::new(),
            read: HashMap::new(),
            definitions: HashMap::new(),
            epoch: None,
            // A mark of this start: a page's version from before a restart is not ours.
            versions: RowVersions::new(uuid::Uuid::new_v4().simple().to_string()[..12].into()),
        }
    }
}

/// When a job's runs were read, and its lease record as seen then.
struct ReadAt {
    at: DateTime<Utc>,
    lease: Option<LeaseRecord>,
}

/// A report as served: made once per refresh; its whole JSON made once too, and only when a
/// page asks for all of it (an open page asks for the rows changed since its last poll, and
/// the JSON of 1,000 jobs is over a megabyte).
#[derive(Clone)]
pub struct Report {
    pub status: Arc<ClusterStatus>,
    /// The job rows with their versions, for `?since=` ([`crate::ops::row_versions`]).
    pub rows: Arc<Rows>,
    json: Arc<OnceLock<Result<Bytes, String>>>,
}

impl Report {
    fn new(status: ClusterStatus, rows: Arc<Rows>) -> Self {
        Report {
            status: Arc::new(status),
            rows,
            json: Arc::default(),
        }
    }

    /// The whole report's JSON (as `cronlease status --json` prints it), made at the first ask.
    pub fn json(&self) -> Result<Bytes, String> {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&*self.status)
                    .map(Bytes::from)
                    .map_err(|e| format!("cannot encode the report: {e}"))
            })
            .clone()
    }
}

/// `cached` runs (newest first) with `newest` (the newest few, as just read) in place of the
/// same fire times' and before them, newest first, at most `keep`.
fn merge_newest(cached: Vec<RunRecord>, newest: Vec<RunRecord>, keep: usize) -> Vec<RunRecord> {
    let mut runs = newest;
    let oldest_read = runs.last().map(|r| r.fire_time);
    runs.extend(cached.into_iter().filter(|c| {
        // Older than everything read, or not read back (a newer run pushed it out of the few).
        oldest_read.is_some_and(|t| c.fire_time < t)
    }));
    if oldest_read.is_none() {
        // Nothing read: the job has no runs (its history was removed).
        return runs;
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
    runs.truncate(keep);
    runs
}

/// Whether a fire time of `schedule` passed whose run `c` does not have and may still come: it
/// fell due after the last read (read now), or the last read came after it but did not show its
/// run yet (read again every [`RECORD_RETRY`], until [`RECORD_GRACE`] after the fire time).
/// Once the run is there, the job is not read again until its next fire time. A paused or
/// disabled job makes no runs: the caller does not ask.
fn awaits_run(
    schedule: &crate::config::schedule::Schedule,
    runs: &[RunRecord],
    read_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    // Scheduled runs only: a manual run's fire time is when it was asked for.
    let seen = runs
        .iter()
        .filter(|r| r.trigger.is_none())
        .map(|r| r.fire_time)
        .max();
    let from = seen.map_or(read_at - RECORD_GRACE, |t| t.max(read_at - RECORD_GRACE));
    match schedule.next_after(from) {
        Some(due) if due <= now => read_at < due || now - read_at >= RECORD_RETRY,
        _ => false,
    }
}

/// What `/api/cluster` serves: the report, or the store's error and the last good report.
pub enum View {
    Fresh(Report),
    Failed {
        error: String,
        last_good: Option<Report>,
    },
}

impl ClusterView {
    /// Refreshed at most once per `every` (the election's poll).
    pub fn new(
        store: Arc<dyn Store>,
        election: Arc<Election>,
        base: Config,
        jobs: Arc<JobTable>,
        every: Duration,
    ) -> Self {
        // The jobs come from the table at each refresh: not kept (nor copied every poll) here.
        let mut base = base;
        base.jobs = Vec::new();
        ClusterView {
            store,
            election,
            base,
            jobs,
            every,
            served: Default::default(),
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    /// The report as last made. When it is older than a poll, a refresh starts in the
    /// background (one at a time) and this answers at once with the report it has, so a page's
    /// poll never waits for the store's reads nor for building the report (a request that found
    /// the report a poll old used to wait for both: 170 ms at 1,000 jobs, once 4.1 s). What a
    /// page sees is then at most a poll and a refresh old. Only with no report yet, or one
    /// older than [`SERVE_STALE_FOR`] polls (no page asked for a while), does it wait for the
    /// refresh.
    pub async fn get(self: &Arc<Self>) -> View {
        let age = self.served().last.as_ref().map(|(at, _)| at.elapsed());
        if age.is_none_or(|a| a >= self.every) {
            let running = match self.state.clone().try_lock_owned() {
                Ok(st) => {
                    let me = self.clone();
                    // Not cancelled with the request that started it: the next one gets it.
                    Some(tokio::spawn(async move { me.refresh_into(st).await }))
                }
                Err(_) => None,
            };
            if age.is_none_or(|a| a >= self.every * SERVE_STALE_FOR) {
                match running {
                    Some(task) => {
                        let _ = task.await;
                    }
                    // Another request's refresh: its end is when the lock comes free.
                    None => drop(self.state.lock().await),
                }
            }
        }
        let served = self.served();
        match &served.last {
            Some((_, Ok(r))) => View::Fresh(r.clone()),
            Some((_, Err(e))) => View::Failed {
                error: e.clone(),
                last_good: served.good.clone(),
            },
            None => View::Failed {
                error: "not read yet".into(),
                last_good: None,
            },
        }
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Served> {
        // Held only to copy or replace a report: never across an await, never poisoned by
        // a panic inside; should it be, its data is still whole.
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One refresh, its outcome put where requests read it.
    async fn refresh_into(&self, mut st: OwnedMutexGuard<State>) {
        // One deadline for the whole refresh: a hanging store does not hold every page.
        let made = match tokio::time::timeout(REFRESH_DEADLINE, self.refresh(&mut st)).await {
            Ok(made) => made,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the store did not answer within {REFRESH_DEADLINE:?}"
            ))),
        };
        let mut served = self.served();
        if let Ok(r) = &made {
            served.good = Some(r.clone());
        }
        served.last = Some((Instant::now(), made.map_err(|e| e.to_string())));
    }

    async fn refresh(&self, st: &mut State) -> Result<Report, StoreError> {
        let now = Utc::now();
        let mut config = self.base.clone();
        config.jobs = self
            .jobs
            .active()
            .into_iter()
            .map(|(_, j)| (*j).clone())
            .collect();
        let names: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
        let observed = self
            .election
            .observation()
            .map_err(StoreError::Unavailable)?;
        let mut snapshot = Snapshot {
            leases: (*observed.leases).clone(),
            nodes: (*observed.nodes).clone(),
        };
        // The election reads the leases of the jobs it contests: a disabled job's (whose
        // lease a node with another version of the file may hold, or which keeps its pause)
        // is read here.
        let missing: Vec<String> = config
            .jobs
            .iter()
            .filter(|j| !j.enabled && !snapshot.leases.contains_key(&j.name))
            .map(|j| j.name.clone())
            .collect();
        if !missing.is_empty() {
            snapshot
                .leases
                .extend(timed(self.store.leases(&missing)).await?);
        }
        // A pause, trigger or backfill moves the control epoch; a trigger that ran within one
        // poll leaves the lease record as it was, so the epoch is what tells.
        let epoch = observed.control;
        // Kept only once the refresh succeeded: a failed one must not forget the move.
        let moved = st.epoch != Some(epoch);
        // Which jobs' histories may have changed since they were read.
        // How many of its newest runs to read, per job whose history may have changed: all
        // the page shows when the cache may miss an older one (never read, an operator's
        // request: a backfill records old fire times), else the few newest, merged into the
        // cache (a new run is the newest; a run that ended, or was closed as lost, is among
        // the newest few). Entity reads are what Datastore bills.
        let stale: Vec<(String, usize)> = config
            .jobs
            .iter()
            .filter_map(|job| {
                let lease = snapshot.leases.get(&job.name);
                let (Some(runs), Some(read)) = (st.runs.get(&job.name), st.read.get(&job.name))
                else {
                    return Some((job.name.clone(), DASHBOARD_RUNS));
                };
                // A pending trigger or backfill: its runs come with no fire time of the
                // schedule passing (a backfill's progress moves no epoch).
                if moved || lease.is_some_and(|l| !l.requests.is_empty()) {
                    return Some((job.name.clone(), DASHBOARD_RUNS));
                }
                let changed = runs.iter().any(|r| r.outcome == crate::store::RUNNING)
                    || read.lease.as_ref() != lease
                    || (job.enabled
                        && lease.is_none_or(|l| l.paused.is_none())
                        && awaits_run(&job.schedule, runs, read.at, now));
                changed.then(|| (job.name.clone(), NEWEST_RUNS))
            })
            .collect();
        // Owned names and store handles: the future must not borrow across the stream (the
        // handler future is Send for any lifetime).
        let read: Vec<(String, usize, Vec<RunRecord>)> = futures::stream::iter(stale)
            .map(|(name, limit)| {
                let store = self.store.clone();
                async move {
                    timed(store.recent_runs(&name, limit))
                        .await
                        .map(|runs| (name, limit, runs))
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let keep = DASHBOARD_RUNS.min(self.base.store.history);
        for (name, limit, mut runs) in read {
            for r in &mut runs {
                r.output = String::new();
            }
            let lease = snapshot.leases.get(&name).cloned();
            st.read.insert(name.clone(), ReadAt { at: now, lease });
            let merged = match st.runs.remove(&name) {
                Some(cached) if limit < DASHBOARD_RUNS => merge_newest(cached, runs, keep),
                _ => runs,
            };
            st.runs.insert(name, merged);
        }
        st.runs.retain(|name, _| names.contains(name));
        st.read.retain(|name, _| names.contains(name));
        st.definitions
            .retain(|digest, _| snapshot.nodes.values().any(|n| &n.jobs_digest == digest));
        for n in snapshot.nodes.values() {
            if n.jobs_digest.is_empty() || st.definitions.contains_key(&n.jobs_digest) {
                continue;
            }
            if let Some(d) = timed(self.store.definitions(&n.id)).await? {
                if d.digest == n.jobs_digest {
                    st.definitions.insert(d.digest.clone(), Arc::new(d));
                }
            }
        }
        st.epoch = Some(epoch);
        let store = self.store.describe();
        let st = &mut *st;
        let (status, rows) = off_the_workers(|| {
            let status = status::build_keeping(
                &config,
                store,
                &snapshot,
                &st.runs,
                &st.definitions,
                now,
                DASHBOARD_RUNS,
            );
            let rows = st.versions.update(&status);
            (status, rows)
        });
        Ok(Report::new(status, rows))
    }
}

/// Runs `f`, CPU work of tens of milliseconds (building the report of 1,000 jobs and comparing
/// its rows), without holding up the tasks of the worker thread it runs on: on the node's
/// multi-threaded runtime the worker hands its other tasks (the HTTP answers among them) to
/// another thread meanwhile. Elsewhere (a single-threaded runtime, where that cannot be done)
/// it simply runs.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// `awaits_run` with the cache read at `read_at` holding runs of these fire times.
    fn cached(read_at: &str, runs: &[&str]) -> (Vec<RunRecord>, DateTime<Utc>) {
        let runs = runs
            .iter()
            .map(|t| RunRecord::claimed("j", at(t), "n", 1, "s", "p"))
            .collect();
        (runs, at(read_at))
    }

    fn awaits(s: &Schedule, c: &(Vec<RunRecord>, DateTime<Utc>), now: DateTime<Utc>) -> bool {
        awaits_run(s, &c.0, c.1, now)
    }

    #[test]
    fn the_newest_runs_read_replace_and_extend_the_cached_ones() {
        let run = |t: &str, outcome: &str| RunRecord {
            outcome: outcome.into(),
            ..RunRecord::claimed("j", at(t), "n", 1, "s", "p")
        };
        let fires = |runs: &[RunRecord]| -> Vec<(String, String)> {
            runs.iter()
                .map(|r| (r.fire_time.format("%M").to_string(), r.outcome.clone()))
                .collect()
        };
        let cached = vec![
            run("2026-11-30T00:03:00Z", "running"),
            run("2026-11-30T00:02:00Z", "ok"),
            run("2026-11-30T00:01:00Z", "failed"),
            run("2026-11-30T00:00:00Z", "ok"),
        ];
        // The running one ended and a new one started: read as the newest three.
        let newest = vec![
            run("2026-11-30T00:04:00Z", "running"),
            run("2026-11-30T00:03:00Z", "ok"),
            run("2026-11-30T00:02:00Z", "ok"),
        ];
        let merged = merge_newest(cached.clone(), newest, 20);
        assert_eq!(
            fires(&merged),
            [
                ("04", "running"),
                ("03", "ok"),
                ("02", "ok"),
                ("01", "failed"),
                ("00", "ok")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // At most `keep`, the newest.
        let merged = merge_newest(cached.clone(), vec![run("2026-11-30T00:04:00Z", "ok")], 2);
        assert_eq!(fires(&merged).len(), 2);
        assert_eq!(merged[0].fire_time, at("2026-11-30T00:04:00Z"));
        // A cached run in the range read but not read back is gone.
        let newest = vec![
            run("2026-11-30T00:03:00Z", "ok"),
            run("2026-11-30T00:01:00Z", "failed"),
        ];
        let merged = merge_newest(cached, newest, 20);
        assert_eq!(
            fires(&merged),
            [("03", "ok"), ("01", "failed"), ("00", "ok")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn a_job_is_read_once_its_fire_time_passed_and_again_only_until_its_run_shows() {
        // Once a minute, at :00.
        let every_minute = Schedule::parse("0 * * * * *", "UTC").unwrap();
        let s = &every_minute;
        // Read at :59 with the run of 00:00 there: nothing due until 00:01:00.
        let c = cached("2026-11-30T00:00:59Z", &["2026-11-30T00:00:00Z"]);
        assert!(!awaits(s, &c, at("2026-11-30T00:00:59.900Z")));
        // 00:01:00 fell due after the read: read.
        assert!(awaits(s, &c, at("2026-11-30T00:01:00.100Z")));
        // Read at 00:01:00.2 and its run was there: not again (this was every poll for 30 s).
        let c = cached(
            "2026-11-30T00:01:00.200Z",
            &["2026-11-30T00:01:00Z", "2026-11-30T00:00:00Z"],
        );
        for now in [
            "2026-11-30T00:01:01Z",
            "2026-11-30T00:01:15Z",
            "2026-11-30T00:01:59Z",
        ] {
            assert!(!awaits(s, &c, at(now)), "{now}");
        }
        // Read at 00:01:00.2 and its run was not there yet: again 2 s after that read...
        let c = cached("2026-11-30T00:01:00.200Z", &["2026-11-30T00:00:00Z"]);
        assert!(!awaits(s, &c, at("2026-11-30T00:01:01Z")));
        assert!(awaits(s, &c, at("2026-11-30T00:01:02.300Z")));
        // ... until 30 s after the fire time; a read after that gives up on it.
        let c = cached("2026-11-30T00:01:31Z", &["2026-11-30T00:00:00Z"]);
        assert!(!awaits(s, &c, at("2026-11-30T00:01:45Z")));
        // Never read with no run yet: the fire times before the read do not count beyond 30 s.
        let c = cached("2026-11-30T00:01:40Z", &[]);
        assert!(!awaits(s, &c, at("2026-11-30T00:01:50Z")));
        assert!(awaits(s, &c, at("2026-11-30T00:02:00.001Z")));
    }
}
