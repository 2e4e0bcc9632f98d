//! Run history: keep the newest `[store] history` runs per job, delete the older ones in the
//! background.
//!
//! The leader of a job prunes it after every `batch` runs it recorded (`batch` = a tenth of the
//! bound, at least one), and after the first run it records once it took the lease over (what
//! earlier leaders left, however often the lease moves). Not at the take-over itself: a node
//! that takes 2,000 leases at a failover would send 2,000 prunes while the store is busiest,
//! most for jobs that run once an hour; at their first run they come spread over the
//! schedules, and a job that never runs again has no history growing. One prune is one bounded query
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
}

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

    /// This node now leads `job`, which somebody held before: prune what earlier leaders left
    /// after the first run this node records (module docs).
    pub fn acquired(&self, job: &str) {
        let mut st = self.state.lock().unwrap();
        let first_run_prunes = self.batch - 1;
        let n = st.recorded.entry(job.to_string()).or_insert(0);
        *n = (*n).max(first_run_prunes);
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
                let Some(job) = self.state.lock().unwrap().due.pop_first() else {
                    break;
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn history(keep: usize) -> History {
        History::new(
            Arc::new(crate::store::testing::NoStore::down()),
            keep,
            Arc::new(Metrics::new()),
        )
    }

    fn due(h: &History) -> Vec<String> {
        h.state.lock().unwrap().due.iter().cloned().collect()
    }

    #[test]
    fn a_taken_over_job_is_pruned_at_its_first_run_not_at_the_take_over() {
        let h = history(100); // a batch of 10
        h.acquired("a");
        assert!(
            due(&h).is_empty(),
            "nothing is pruned at the take-over itself"
        );
        h.recorded("a");
        assert_eq!(due(&h), ["a"], "the first run after the take-over prunes");
        h.state.lock().unwrap().due.clear();
        for _ in 0..9 {
            h.recorded("a");
        }
        assert!(due(&h).is_empty(), "then every tenth run");
        h.recorded("a");
        assert_eq!(due(&h), ["a"]);
    }

    #[test]
    fn a_job_this_node_always_led_prunes_every_batch() {
        let h = history(1); // a batch of 1: every run
        h.recorded("b");
        assert_eq!(due(&h), ["b"]);
        let h = history(30); // a batch of 3
        h.recorded("c");
        h.recorded("c");
        assert!(due(&h).is_empty());
        h.acquired("c"); // taken over again meanwhile: the next run prunes
        h.recorded("c");
        assert_eq!(due(&h), ["c"]);
    }
}
