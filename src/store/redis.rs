//! The Redis store (cargo feature `redis`). Not built yet: connecting fails with a clear error.
use std::sync::Arc;
use std::time::Duration;

use super::{Store, StoreError, StoreResult};

/// Connect to Redis at `url`, keeping this cluster's records under `namespace`.
pub async fn connect(url: &str, namespace: &str, timeout: Duration) -> StoreResult<Arc<dyn Store>> {
    let _ = (namespace, timeout);
    Err(StoreError::Other(format!(
        "the redis store (url {url}) is not implemented yet"
    )))
}
