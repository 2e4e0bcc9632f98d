//! A [`Store`] wrapper that counts every call: latency, errors and entities written, by
//! operation. The node wraps whatever backend it runs on, so the figures are comparable across
//! backends and free of per-backend bookkeeping.
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Claim, LeaseRecord, NodeRecord, Observed, RunRecord, Snapshot, Store, StoreResult};
use crate::metrics::Metrics;

pub struct Metered {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// Time `fut`, record it under `op` with the number of writes `writes` derives from its
    /// result.
    async fn timed<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = StoreResult<T>>,
        writes: impl FnOnce(&T) -> u64,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = fut.await;
        let written = result.as_ref().map(writes).unwrap_or(0);
        self.metrics
            .store_call(op, start.elapsed(), result.is_ok(), written);
        result
    }
}

#[async_trait]
impl Store for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        self.timed("put_node", self.inner.put_node(node), |_| 1)
            .await
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        self.timed("delete_node", self.inner.delete_node(id), |_| 1)
            .await
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        self.timed(
            "delete_node_if",
            self.inner.delete_node_if(id, session, heartbeat),
            |deleted| u64::from(*deleted),
        )
        .await
    }

    async fn snapshot(&self, jobs: &[String]) -> StoreResult<Snapshot> {
        self.timed("snapshot", self.inner.snapshot(jobs), |_| 0)
            .await
    }

    async fn acquire(
        &self,
        job: &str,
        observed: &Observed,
        new: &LeaseRecord,
    ) -> StoreResult<bool> {
        self.timed("acquire", self.inner.acquire(job, observed, new), |won| {
            u64::from(*won)
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        self.timed("release", self.inner.release(jobs, node, session), |n| {
            *n as u64
        })
        .await
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        self.timed("claim", self.inner.claim(run, session), |c| {
            u64::from(*c == Claim::Won)
        })
        .await
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<()> {
        self.timed("finish", self.inner.finish(run), |_| 1).await
    }

    async fn run_exists(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<bool> {
        self.timed("run_exists", self.inner.run_exists(job, fire_time), |_| 0)
            .await
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        self.timed("runs", self.inner.runs(job), |_| 0).await
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        self.timed("recent_runs", self.inner.recent_runs(job, limit), |_| 0)
            .await
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        self.timed("prune_runs", self.inner.prune_runs(job, keep), |n| {
            *n as u64
        })
        .await
    }
}
