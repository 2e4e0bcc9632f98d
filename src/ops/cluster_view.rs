//! `/api/cluster`: the same report as `cronlease status --json` ([`crate::ops::status`]),
//! made by the node from the store at most once per poll and served from memory, so any
//! number of open dashboards costs the store no more than one.
//!
//! What one refresh reads: one snapshot (every lease and node record, as a poll does), and the
//! newest [`DASHBOARD_RUNS`] runs only of the jobs whose history may have changed since they
//! were last read: never read, a fire time of theirs passed, one of their cached runs was
//! still going, or their lease record changed (a new term), and every job's when the control
//! epoch moved (a pause, trigger or backfill anywhere: rare, operator-made).
//! So a settled cluster of jobs that fire once a minute costs, with a page open, one snapshot
//! per poll and about one `recent_runs` read per run.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Config;
use crate::node::jobs::JobTable;
use crate::ops::control::timed;
use crate::ops::status::{self, ClusterStatus, READ_CONCURRENCY};
use crate::store::{Definitions, LeaseRecord, RunRecord, Store, StoreError};

/// How many of each job's newest runs the dashboard shows.
pub const DASHBOARD_RUNS: usize = 20;
/// The longest one refresh may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(10);
/// A run is recorded a little after its fire time (the claim is made ahead, but a slow leader
/// or a failover takes longer): a job's history is read again until this long after its last
/// fire time.
const RECORD_GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// The node's cached view of the cluster.
pub struct ClusterView {
    store: Arc<dyn Store>,
    /// The settings the report needs besides the jobs (the lease); the jobs come from the
    /// job table at each refresh, so a reload shows at once.
    base: Config,
    jobs: Arc<JobTable>,
    every: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last report and when it was made; `Err`: the last refresh failed (and when).
    last: Option<(Instant, Result<Arc<ClusterStatus>, String>)>,
    /// The last good report (shown under an error banner while the store is away).
    good: Option<Arc<ClusterStatus>>,
    /// Per job: its newest runs as last read.
    runs: HashMap<String, Cached>,
    /// Definitions by digest (they never change for a digest).
    definitions: HashMap<String, Arc<Definitions>>,
    /// The control epoch at the last refresh.
    epoch: Option<i64>,
}

/// A job's newest runs, when they were read, and its lease record as seen then.
struct Cached {
    runs: Vec<RunRecord>,
    read_at: DateTime<Utc>,
    lease: Option<LeaseRecord>,
}

/// What `/api/cluster` serves: the report, or the store's error and the last good report.
pub enum View {
    Fresh(Arc<ClusterStatus>),
    Failed {
        error: String,
        last_good: Option<Arc<ClusterStatus>>,
    },
}

impl ClusterView {
    /// Refreshed at most once per `every` (the election's poll).
    pub fn new(store: Arc<dyn Store>, base: Config, jobs: Arc<JobTable>, every: Duration) -> Self {
        ClusterView {
            store,
            base,
            jobs,
            every,
            state: Mutex::new(State::default()),
        }
    }

    /// The report, refreshed first if the last one is older than a poll. Concurrent callers
    /// wait for the one refresh.
    pub async fn get(&self) -> View {
        let mut st = self.state.lock().await;
        let fresh = st
            .last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.every);
        if !fresh {
            // One deadline for the whole refresh: a hanging store does not hold every page.
            let made = match tokio::time::timeout(REFRESH_DEADLINE, self.refresh(&mut st)).await {
                Ok(made) => made,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "the store did not answer within {REFRESH_DEADLINE:?}"
                ))),
            };
            if let Ok(r) = &made {
                st.good = Some(r.clone());
            }
            st.last = Some((Instant::now(), made.map_err(|e| e.to_string())));
        }
        match &st.last {
            Some((_, Ok(r))) => View::Fresh(r.clone()),
            Some((_, Err(e))) => View::Failed {
                error: e.clone(),
                last_good: st.good.clone(),
            },
            None => View::Failed {
                error: "not read yet".into(),
                last_good: None,
            },
        }
    }

    async fn refresh(&self, st: &mut State) -> Result<Arc<ClusterStatus>, StoreError> {
        let now = Utc::now();
        let mut config = self.base.clone();
        config.jobs = self
            .jobs
            .active()
            .into_iter()
            .map(|(_, j)| (*j).clone())
            .collect();
        let names: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
        let snapshot = timed(self.store.snapshot(&names)).await?;
        // A pause, trigger or backfill moves the control epoch; a trigger that ran within one
        // poll leaves the lease record as it was, so the epoch is what tells.
        let epoch = timed(self.store.control_epoch()).await?;
        // Kept only once the refresh succeeded: a failed one must not forget the move.
        let moved = st.epoch != Some(epoch);
        // Which jobs' histories may have changed since they were read.
        let stale: Vec<String> = config
            .jobs
            .iter()
            .filter(|job| match st.runs.get(&job.name) {
                None => true,
                Some(c) => {
                    moved
                        || c.runs.iter().any(|r| r.outcome == crate::store::RUNNING)
                        || c.lease.as_ref() != snapshot.leases.get(&job.name)
                        // A fire time passed since (or shortly before) the read: its run may
                        // have been recorded after it.
                        || job
                            .schedule
                            .next_after(c.read_at - RECORD_GRACE)
                            .is_some_and(|t| t <= now)
                }
            })
            .map(|job| job.name.clone())
            .collect();
        // Owned names and store handles: the future must not borrow across the stream (the
        // handler future is Send for any lifetime).
        let read: HashMap<String, Vec<RunRecord>> = futures::stream::iter(stale)
            .map(|name| {
                let store = self.store.clone();
                async move {
                    timed(store.recent_runs(&name, DASHBOARD_RUNS))
                        .await
                        .map(|runs| (name, runs))
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        for (name, runs) in read {
            let lease = snapshot.leases.get(&name).cloned();
            st.runs.insert(
                name,
                Cached {
                    runs,
                    read_at: now,
                    lease,
                },
            );
        }
        st.runs.retain(|name, _| names.contains(name));
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
        let runs: HashMap<String, Vec<RunRecord>> = st
            .runs
            .iter()
            .map(|(name, c)| (name.clone(), c.runs.clone()))
            .collect();
        Ok(Arc::new(status::build_keeping(
            &config,
            self.store.describe(),
            &snapshot,
            &runs,
            &st.definitions,
            now,
            DASHBOARD_RUNS,
        )))
    }
}
