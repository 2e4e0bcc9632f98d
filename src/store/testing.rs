//! Stores for unit tests that must not reach a real one: every call fails at once as
//! unavailable ([`NoStore::down`]) or never answers ([`NoStore::hung`], a store stuck past any
//! timeout the caller does not set itself).
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{
    Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause, RequestChange, RunRecord,
    Store, StoreError, StoreResult,
};

/// A store that is never reached.
pub struct NoStore {
    hang: bool,
}

impl NoStore {
    /// Every call answers `Unavailable` at once.
    pub fn down() -> Self {
        NoStore { hang: false }
    }

    /// Every call waits forever.
    pub fn hung() -> Self {
        NoStore { hang: true }
    }

    async fn answer<T>(&self) -> StoreResult<T> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(StoreError::Unavailable("no store in this test".into()))
    }
}

#[async_trait::async_trait]
impl Store for NoStore {
    fn describe(&self) -> String {
        if self.hang { "hung" } else { "unreachable" }.into()
    }
    async fn put_node(&self, _: &NodeRecord) -> StoreResult<()> {
        self.answer().await
    }
    async fn delete_node(&self, _: &str) -> StoreResult<()> {
        self.answer().await
    }
    async fn delete_node_if(&self, _: &str, _: &str, _: i64) -> StoreResult<bool> {
        self.answer().await
    }
    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        self.answer().await
    }
    async fn leases(&self, _: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        self.answer().await
    }
    async fn acquire_many(&self, _: &[Acquire]) -> StoreResult<Vec<String>> {
        self.answer().await
    }
    async fn release(&self, _: &[String], _: &str, _: &str) -> StoreResult<usize> {
        self.answer().await
    }
    async fn claim(&self, _: &RunRecord, _: &str) -> StoreResult<Claim> {
        self.answer().await
    }
    async fn finish(&self, _: &RunRecord) -> StoreResult<bool> {
        self.answer().await
    }
    async fn get_run(&self, _: &str, _: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        self.answer().await
    }
    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.answer().await
    }
    async fn put_definitions(&self, _: &str, _: &Definitions) -> StoreResult<()> {
        self.answer().await
    }
    async fn definitions(&self, _: &str) -> StoreResult<Option<Definitions>> {
        self.answer().await
    }
    async fn set_pause(&self, _: &str, _: Option<&Pause>) -> StoreResult<bool> {
        self.answer().await
    }
    async fn change_request(&self, _: &str, _: &RequestChange) -> StoreResult<bool> {
        self.answer().await
    }
    async fn control_epoch(&self) -> StoreResult<i64> {
        self.answer().await
    }
    async fn pruned_until(&self, _: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.answer().await
    }
    async fn close_orphan(&self, _: &RunRecord, _: &str, _: &Fence) -> StoreResult<Claim> {
        self.answer().await
    }
    async fn runs(&self, _: &str) -> StoreResult<Vec<RunRecord>> {
        self.answer().await
    }
    async fn recent_runs(&self, _: &str, _: usize) -> StoreResult<Vec<RunRecord>> {
        self.answer().await
    }
    async fn prune_runs(&self, _: &str, _: usize) -> StoreResult<usize> {
        self.answer().await
    }
}
