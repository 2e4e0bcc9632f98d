//! The ZooKeeper store (cargo feature `zookeeper`). Not built yet: connecting fails with a clear error.
use std::sync::Arc;
use std::time::Duration;

use super::{Store, StoreError, StoreResult};

/// Connect to ZooKeeper at `hosts`, keeping this cluster's records under `namespace`.
pub async fn connect(
    hosts: &str,
    namespace: &str,
    timeout: Duration,
) -> StoreResult<Arc<dyn Store>> {
    let _ = (namespace, timeout);
    Err(StoreError::Other(format!(
        "the zookeeper store (hosts {hosts}) is not implemented yet"
    )))
}
