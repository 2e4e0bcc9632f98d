//! Run history: keep the newest `[store] history` runs per job, delete the older ones in the
//! background.
//!
//! The leader of a job prunes it after every `batch` runs it recorded (`batch` = a tenth of the
//! bound, at least one) and once when it acquires the lease. One prune is one bounded query
//! (skip the newest `keep`, read the keys of the rest) plus one delete batch, so its cost is
//! `keep + batch` index reads every `batch` runs: about eleven reads per run at the default
//! bound, whatever the length of the history. Nothing on the tick's path waits for it.
//!
//! Limit: between two prunes a job has up to `keep + batch - 1` runs stored.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ops::metrics::Metrics;
use crate::store::Store;

pub struct History {
    store: Arc<dyn Store>,
    keep: usize,
    batch: usize,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Runs recorded per job since its last prune.
    recorded: HashMap<String, usize>,
    /// Jobs waiting to be pruned.
    due: BTreeSet<String>,
    /// Jobs whose leases this node took, waiting for their first prune (paced).
    taken: BTreeSet<String>,
}

/// The least time between two prunes of jobs whose leases were just taken.
const ACQUIRED_PACE: std::time::Duration = std::time::Duration::from_millis(100);

impl History {
    pub fn new(store: Arc<dyn Store>, keep: usize, metrics: Arc<Metrics>) -> Self {
        History {
            store,
            keep,
            batch: (keep / 10).max(1),
            metrics,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    /// A run of `job` was recorded by this node.
    pub fn recorded(&self, job: &str) {
        let mut st = self.state.lock().unwrap();
        let n = st.recorded.entry(job.to_string()).or_insert(0);
        *n += 1;
        if *n >= self.batch {
            *n = 0;
            st.due.insert(job.to_string());
            drop(st);
            self.wake.notify_one();
        }
    }

    /// This node now leads `job`: prune what earlier leaders left, in the background, paced
    /// ([`ACQUIRED_PACE`]): a node that takes thousands of leases at once must not flood the
    /// store with their prunes while the election and the heartbeats need it.
    pub fn acquired(&self, job: &str) {
        self.state.lock().unwrap().taken.insert(job.to_string());
        self.wake.notify_one();
    }

    /// Prune due jobs until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            loop {
                let (job, paced) = {
                    let mut st = self.state.lock().unwrap();
                    match st.due.pop_first() {
                        Some(job) => (job, false),
                        None => match st.taken.pop_first() {
                            Some(job) => (job, true),
                            None => break,
                        },
                    }
                };
                if paced {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(ACQUIRED_PACE) => {}
                    }
                }
                if cancel.is_cancelled() {
                    return;
                }
                match self.store.prune_runs(&job, self.keep).await {
                    Ok(n) => {
                        failures = 0;
                        if n > 0 {
                            self.metrics.runs_pruned(n);
                            debug!(job = %job, deleted = n, keep = self.keep, "pruned old runs");
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures % 20 == 0 {
                            warn!(event = "store_error", job = %job, failures,
                                "cannot prune old runs (will retry after the next run): {e}");
                        }
                        // Try again at the next run of this job; do not spin.
                        self.state.lock().unwrap().recorded.insert(job, self.batch);
                        break;
                    }
                }
            }
        }
    }
}
