//! A [`Store`] wrapper that counts every call: latency, errors, entities written and entities
//! read, by operation. The node wraps whatever backend it runs on, so the figures are comparable across
//! backends and free of per-backend bookkeeping.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Observed, Pause, RequestChange,
    RunRecord, Store, StoreResult,
};
use crate::ops::metrics::Metrics;

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
        self.timed_read(op, fut, |r| (writes(r), 0)).await
    }

    /// As [`Self::timed`], with `(writes, reads)` derived from the result.
    async fn timed_read<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = StoreResult<T>>,
        counts: impl FnOnce(&T) -> (u64, u64),
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = fut.await;
        let (written, read) = result.as_ref().map(counts).unwrap_or((0, 0));
        self.metrics
            .store_call_read(op, start.elapsed(), result.is_ok(), written, read);
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
        self.timed_read(
            "delete_node_if",
            self.inner.delete_node_if(id, session, heartbeat),
            |deleted| (u64::from(*deleted), 1),
        )
        .await
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        self.timed(
            "put_definitions",
            self.inner.put_definitions(node, defs),
            |_| 1,
        )
        .await
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        // Reads: one lookup, found or not (as `get_run`).
        self.timed_read("definitions", self.inner.definitions(node), |_| (0, 1))
            .await
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        self.timed_read("nodes", self.inner.nodes(), |n| (0, n.len() as u64))
            .await
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        self.timed_read("leases", self.inner.leases(jobs), |l| (0, l.len() as u64))
            .await
    }

    async fn acquire(
        &self,
        job: &str,
        observed: &Observed,
        new: &LeaseRecord,
    ) -> StoreResult<bool> {
        // Reads: the lease and, if it had a holder, the holder's node record (the CAS).
        let reads = 1 + u64::from(observed.holder_to_check().is_some());
        self.timed_read("acquire", self.inner.acquire(job, observed, new), |won| {
            (u64::from(*won), reads)
        })
        .await
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        // Reads: every lease and each distinct holder's node record the compare looks at.
        let holders: std::collections::HashSet<&str> = batch
            .iter()
            .filter_map(|a| a.observed.holder_to_check())
            .collect();
        let reads = (batch.len() + holders.len()) as u64;
        self.timed_read("acquire_many", self.inner.acquire_many(batch), |won| {
            (won.len() as u64, reads)
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        let reads = jobs.len() as u64;
        self.timed_read("release", self.inner.release(jobs, node, session), |n| {
            (*n as u64, reads)
        })
        .await
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        // Reads: the lease (the read-modify-write); one write when it changed the record.
        self.timed_read("set_pause", self.inner.set_pause(job, pause), |changed| {
            (u64::from(*changed), 1)
        })
        .await
    }

    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        // Reads: the lease (the read-modify-write); a write when it changed the record, and
        // one more for the control epoch when the change is announced.
        let announced = u64::from(change.announced());
        self.timed_read(
            "change_request",
            self.inner.change_request(job, change),
            |changed| (u64::from(*changed) * (1 + announced), 1),
        )
        .await
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        self.timed_read("control_epoch", self.inner.control_epoch(), |_| (0, 1))
            .await
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.timed_read("pruned_until", self.inner.pruned_until(job), |_| (0, 1))
            .await
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        // Reads: the lease (the fence check) and the pruned watermark.
        self.timed_read("claim", self.inner.claim(run, session), |c| {
            (u64::from(*c == Claim::Won), 2)
        })
        .await
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        // Reads: the record (the condition).
        let written = self
            .timed_read("finish", self.inner.finish(run), |w| (u64::from(*w), 1))
            .await;
        if matches!(written, Ok(true)) {
            self.metrics.output_written(run.output.len());
        }
        written
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        self.timed_read("get_run", self.inner.get_run(job, fire_time), |_| (0, 1))
            .await
    }

    async fn run_exists(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<bool> {
        self.timed_read("run_exists", self.inner.run_exists(job, fire_time), |_| {
            (0, 1)
        })
        .await
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.timed_read("running_runs", self.inner.running_runs(), |r| {
            (0, r.len() as u64)
        })
        .await
    }

    async fn close_orphan(
        &self,
        new: &RunRecord,
        orphan_session: &str,
        fence: &Fence,
    ) -> StoreResult<Claim> {
        self.timed_read(
            "close_orphan",
            self.inner.close_orphan(new, orphan_session, fence),
            |c| (u64::from(*c == Claim::Won), 2),
        )
        .await
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        self.timed_read("runs", self.inner.runs(job), |r| (0, r.len() as u64))
            .await
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        self.timed_read("recent_runs", self.inner.recent_runs(job, limit), |r| {
            (0, r.len() as u64)
        })
        .await
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        self.timed("prune_runs", self.inner.prune_runs(job, keep), |n| {
            *n as u64
        })
        .await
    }
}
