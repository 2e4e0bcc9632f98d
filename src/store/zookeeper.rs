//! The ZooKeeper store (cargo feature `zookeeper`): nodes on many hosts sharing a ZooKeeper
//! ensemble (`[store] backend = "zookeeper"`, `hosts = "zk1:2181,zk2:2181"`).
//!
//! Layout, under `/cronlease/{namespace}` (names escaped with [`encode`]):
//!
//! ```text
//! leases/{job}               JSON lease {"holder","session","term","acquired_at"} plus, when
//!                            set, "paused": {"by","at","note"}, "resumed_at" and "requests":
//!                            {"triggers":[..],"backfill":{..}} (each absent when unset, and
//!                            in leases written before it existed); compare-and-set on the
//!                            znode's data version
//! control                    empty; its data version is the control epoch (0: created, no
//!                            change yet), bumped by a set in the multi of every announced
//!                            change (pause, resume, request)
//! nodes/{id}                 JSON node record; EPHEMERAL, owned by the writer's ZooKeeper session
//! defs/{id}                  JSON job definitions of a node {"digest":..,"jobs":{..}};
//!                            persistent, deleted with the node record
//! runs/{job}/{time}          JSON run record, one per fire time; creating it is the claim.
//!                            {time} is [`time_key`]: unix seconds, `.mmm` milliseconds added
//!                            for a manual run's fire time; a requested run's record has a
//!                            "trigger": {"kind","by","request"}
//! running/{job}@{time}       empty marker while that run is `running` (orphan detection)
//! pruned/{job}               JSON {"fire_time": unix, "fire_time_ms": unix ms}: the newest
//!                            fire time pruned (records without "fire_time_ms" mean whole
//!                            seconds); claims at or before it are refused
//! ```
//!
//! Atomicity. Every conditional write is one ZooKeeper `multi` (all its operations or none):
//! - [`Store::acquire`] reads the lease and its holder's node record with their versions,
//!   compares them with the observation (the pause included), then commits {check the holder's
//!   node version (or, if it was absent, create-and-delete it: fails if it appeared), set the
//!   lease at its version (or create it if it was absent)}, keeping the stored pause and
//!   requests. A heartbeat, another acquire, a pause or a request change in between changes a
//!   version and the multi fails: `Ok(false)`.
//! - [`Store::claim`] reads the lease and the pruned watermark, checks holder, session, term,
//!   pause (or, for a requested run, that its request is pending in the lease data read) and
//!   watermark, then commits {check the lease version, check the watermark's version (or
//!   create it at 0 if absent: fails if a prune created it meanwhile), create the run znode,
//!   create its running marker}: a lease not held as the claim says is [`Claim::Fenced`], a
//!   paused one [`Claim::Paused`], an existing run znode [`Claim::AlreadyRun`], a request no
//!   longer pending [`Claim::Withdrawn`] (unless its run exists), a fire time at or before the
//!   watermark [`Claim::TooOld`]. A lease that changed between the read and the multi (a
//!   takeover, a pause, a request withdrawn) fails the version check and is read again.
//! - [`Store::finish`] and [`Store::close_orphan`] read the run, check it is still `running`
//!   under the expected session, and set it at the version read (with {check the lease
//!   version} for `close_orphan`, which reads the lease again if it changed, and refuses a
//!   recovery of a paused job). Terms live in the lease data and only version-checked writes
//!   change them, so they never go back.
//! - [`Store::set_pause`] and [`Store::change_request`] commit {set the lease at the version
//!   they read (or create a free one, term 0, if there is none), changing only the pause or
//!   the requests; set `control`, unversioned: the epoch moves by one} (a backfill's progress
//!   is not announced: the lease alone). [`Store::control_epoch`] is one `exists` of
//!   `control`.
//! - [`Store::release`] and [`Store::delete_node_if`] write or delete at the version they read;
//!   `delete_node_if` deletes the node's definitions in the same multi (or, if it has none,
//!   checks they are still absent: create-and-delete), so they go exactly when the record goes.
//!
//! Definitions are persistent, not ephemeral: a node writes them only when its jobs change, so
//! they must outlive a ZooKeeper session that expires and is replaced under a live node (whose
//! next `put_node` recreates only the record). The flip side: a node record that vanishes with
//! its session (a crashed process) leaves its `defs/{id}` behind, as nobody deletes that record
//! any more; it is a few bytes per job, and is overwritten by the next process with that id.
//!
//! Node records are ephemeral znodes of the writing process's ZooKeeper session: when that
//! session ends (the process exits, or ZooKeeper expires it after a crash or a partition longer
//! than the session timeout) the record vanishes, which the election reads as "holder gone" —
//! the same verdict a stopped heartbeat gives, only sooner. Correctness never rests on it: the
//! heartbeat counter in the record is what the election watches, and every lease change is a
//! version-checked `multi`.
//!
//! Sessions. The session timeout asked for is 5 × the store timeout, within 4 s..40 s (the
//! server clamps it to its own min/max, by default 2..20 ticks). A session that expires is
//! replaced by a new one at the next call; the next `put_node` recreates the node record.
//! Every call is bounded by the store timeout: connection loss, an expired session or no answer
//! in time is [`StoreError::Unavailable`]; anything else ZooKeeper refuses is
//! [`StoreError::Other`].
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{de::DeserializeOwned, Serialize};
use zookeeper_client as zk;

use super::json_records::{self, Lease, Node, Pruned, Run};
use super::{
    parse_time_key, time_key, Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause,
    RequestChange, RunRecord, Store, StoreError, StoreResult, RUNNING,
};

const PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
const EPHEMERAL: zk::CreateOptions<'static> =
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
/// Requests in flight at once when one call reads or deletes many znodes (pipelined on the one
/// connection: a batch costs about one round trip, not one per znode).
const PIPELINE: usize = 256;
/// Longest escaped name (a job name or node id as one path segment).
const MAX_NAME: usize = 1000;
/// Retries of a read-modify-write that lost a race it may still win (release, put_node).
const RETRIES: usize = 5;

/// Connect to ZooKeeper at `hosts`, keeping this cluster's records under `namespace`.
pub async fn connect(
    hosts: &str,
    namespace: &str,
    timeout: Duration,
) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(
        ZooKeeperStore::connect(hosts, namespace, timeout).await?,
    ))
}

pub struct ZooKeeperStore {
    hosts: String,
    /// `/cronlease/{namespace}`.
    root: String,
    timeout: Duration,
    session_timeout: Duration,
    /// The current session's client; replaced when its session has ended.
    client: Mutex<zk::Client>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

/// The session timeout asked of ZooKeeper for a store timeout.
fn session_timeout(timeout: Duration) -> Duration {
    (timeout * 5).clamp(Duration::from_secs(4), Duration::from_secs(40))
}

impl ZooKeeperStore {
    /// Connect and create the namespace's directories if missing; bounded by `timeout`.
    pub async fn connect(
        hosts: &str,
        namespace: &str,
        timeout: Duration,
    ) -> StoreResult<ZooKeeperStore> {
        let hosts = hosts.trim();
        if hosts.is_empty() {
            return Err(StoreError::Other(
                "the zookeeper store needs `hosts` (\"host:port[,host:port...]\") in [store]"
                    .into(),
            ));
        }
        let root = format!("/cronlease/{}", name("namespace", namespace)?);
        let session_timeout = session_timeout(timeout);
        let client = bounded("connect", timeout, open(hosts, session_timeout, timeout)).await?;
        let store = ZooKeeperStore {
            hosts: hosts.to_string(),
            root,
            timeout,
            session_timeout,
            client: Mutex::new(client.clone()),
            reconnecting: tokio::sync::Mutex::new(()),
        };
        bounded("connect", timeout, store.make_dirs(&client)).await?;
        Ok(store)
    }

    /// Create the namespace's directories if missing (`mkdir -p`).
    async fn make_dirs(&self, client: &zk::Client) -> StoreResult<()> {
        let dirs = ["leases", "nodes", "defs", "runs", "running", "pruned"]
            .map(|d| format!("{}/{d}", self.root));
        futures::future::try_join_all(dirs.iter().map(|dir| async {
            let dir = dir.as_str();
            client
                .mkdir(dir, &PERSISTENT)
                .await
                .map_err(|e| zk_err(&format!("creating {dir}"), e))
        }))
        .await?;
        // The control epoch's znode (version 0: epoch 0), so that an announced change finds
        // it; a change that does not (wiped meanwhile) creates it and tries again.
        ensure_dir(client, &self.control_path()).await
    }

    /// The client of a live session: a new session if the last one ended (expired, closed).
    async fn client(&self) -> StoreResult<zk::Client> {
        let current = self.client.lock().unwrap().clone();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let _one = self.reconnecting.lock().await;
        let current = self.client.lock().unwrap().clone();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let fresh = open(&self.hosts, self.session_timeout, self.timeout).await?;
        // A session ends by expiry, or because the ensemble lost its data (restored from an
        // old backup, wiped): then the directories are gone too.
        self.make_dirs(&fresh).await?;
        tracing::warn!(
            event = "store_session_renewed",
            old = %current.session_id(),
            new = %fresh.session_id(),
            "the ZooKeeper session ended ({:?}); opened a new one",
            current.state()
        );
        *self.client.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        bounded(what, self.timeout, op).await
    }

    fn lease_path(&self, job: &str) -> StoreResult<String> {
        Ok(format!("{}/leases/{}", self.root, name("job name", job)?))
    }

    fn node_path(&self, id: &str) -> StoreResult<String> {
        Ok(format!("{}/nodes/{}", self.root, name("node id", id)?))
    }

    fn defs_path(&self, id: &str) -> StoreResult<String> {
        Ok(format!("{}/defs/{}", self.root, name("node id", id)?))
    }

    fn runs_dir(&self, job: &str) -> StoreResult<String> {
        Ok(format!("{}/runs/{}", self.root, name("job name", job)?))
    }

    fn run_path(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<String> {
        Ok(format!("{}/{}", self.runs_dir(job)?, time_key(fire_time)))
    }

    fn running_path(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<String> {
        Ok(format!(
            "{}/running/{}@{}",
            self.root,
            name("job name", job)?,
            time_key(fire_time)
        ))
    }

    /// The control epoch's znode: its data version is the epoch.
    fn control_path(&self) -> String {
        format!("{}/control", self.root)
    }

    fn pruned_path(&self, job: &str) -> StoreResult<String> {
        Ok(format!("{}/pruned/{}", self.root, name("job name", job)?))
    }

    /// Overwrite `new`'s run znode if it is still `running` under `session` (and `term`, if
    /// given), in one multi with {check the lease at `lease_version`} if given. `Ok(None)`
    /// when the run is not that (or the lease check failed: `Some(false)` is not used).
    async fn replace_running(
        &self,
        c: &zk::Client,
        new: &RunRecord,
        session: &str,
        term: Option<i64>,
        lease: Option<(&str, i32)>,
    ) -> StoreResult<Claim> {
        let path = self.run_path(&new.job, new.fire_time)?;
        let data = to_json(&Run::from(new))?;
        let marker = self.running_path(&new.job, new.fire_time)?;
        // A run that ends drops its running marker in the same multi (one round trip); a
        // record without a marker (written before markers existed) is written without.
        let mut drop_marker = new.outcome != RUNNING;
        let mut written = false;
        for _ in 0..RETRIES {
            let Some((current, stat)) = read::<Run>(c, path.clone()).await? else {
                return Ok(Claim::AlreadyRun);
            };
            let same = current.outcome == RUNNING
                && current.session == session
                && term.is_none_or(|t| t == current.term);
            if !same {
                return Ok(Claim::AlreadyRun);
            }
            let mut txn = c.new_multi_writer();
            let mut run_index = 0;
            if let Some((lease_path, version)) = lease {
                txn.add_check_version(lease_path, version).map_err(op_err)?;
                run_index = 1;
            }
            txn.add_set_data(&path, &data, Some(stat.version))
                .map_err(op_err)?;
            if drop_marker {
                txn.add_delete(&marker, None).map_err(op_err)?;
            }
            match txn.commit().await {
                Ok(_) => {
                    written = true;
                    break;
                }
                Err(zk::MultiWriteError::OperationFailed {
                    index: 0,
                    source: zk::Error::BadVersion | zk::Error::NoNode,
                }) if lease.is_some() => return Ok(Claim::Fenced),
                Err(zk::MultiWriteError::OperationFailed { index, .. }) if index == run_index => {
                    continue; // the run changed meanwhile: look again
                }
                Err(zk::MultiWriteError::OperationFailed {
                    index,
                    source: zk::Error::NoNode,
                }) if drop_marker && index == run_index + 1 => {
                    drop_marker = false; // no marker to drop
                }
                Err(e) => return Err(zk_err("writing a run", e.into())),
            }
        }
        if !written {
            return Err(StoreError::Unavailable(format!(
                "zookeeper: writing {path} kept racing other writers"
            )));
        }
        // A recovery keeps the record running: its marker normally exists already.
        if new.outcome == RUNNING {
            match c.create(&marker, &[], &PERSISTENT).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(zk_err("marking a run", e)),
            }
        }
        Ok(Claim::Won)
    }

    /// A job's runs as (fire time, znode name), newest first by the full fire time
    /// (milliseconds included); none if it has no runs directory.
    async fn run_times(&self, c: &zk::Client, dir: &str) -> StoreResult<Vec<RunName>> {
        let names = match c.list_children(dir).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(zk_err("listing runs", e)),
        };
        Ok(newest_first(names))
    }

    /// The run records named in `times`, in that order (pipelined); one deleted meanwhile is
    /// left out.
    async fn read_runs(
        &self,
        c: &zk::Client,
        dir: &str,
        times: &[RunName],
    ) -> StoreResult<Vec<RunRecord>> {
        let reads: Vec<_> = times
            .iter()
            .map(|(_, n)| read::<Run>(c, format!("{dir}/{n}")))
            .collect();
        let runs: Vec<Option<(Run, zk::Stat)>> = futures::stream::iter(reads)
            .buffered(PIPELINE)
            .try_collect()
            .await?;
        Ok(runs.into_iter().flatten().map(|(r, _)| r.into()).collect())
    }

    /// Raise the pruned watermark at `path` to `newest` (never lower it, keep milliseconds),
    /// version-checked.
    async fn raise_pruned(
        &self,
        c: &zk::Client,
        path: &str,
        newest: DateTime<Utc>,
    ) -> StoreResult<()> {
        let data = to_json(&Pruned::at(newest))?;
        for _ in 0..RETRIES {
            match read::<Pruned>(c, path.to_string()).await? {
                Some((p, _)) if p.time() >= Pruned::at(newest).time() => return Ok(()),
                Some((_, stat)) => match c.set_data(path, &data, Some(stat.version)).await {
                    Ok(_) => return Ok(()),
                    Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                    Err(e) => return Err(zk_err("raising the pruned watermark", e)),
                },
                None => match c.create(path, &data, &PERSISTENT).await {
                    Ok(_) => return Ok(()),
                    Err(zk::Error::NodeExists) => continue,
                    Err(e) => return Err(zk_err("raising the pruned watermark", e)),
                },
            }
        }
        Err(StoreError::Unavailable(format!(
            "zookeeper: raising {path} kept racing other writers"
        )))
    }

    /// Free `job`'s lease if `node` holds it in `session`: 1 if freed, else 0.
    async fn release_one(
        &self,
        c: &zk::Client,
        job: &str,
        node: &str,
        session: &str,
    ) -> StoreResult<usize> {
        let path = self.lease_path(job)?;
        for _ in 0..RETRIES {
            let Some((mut lease, stat)) = read::<Lease>(c, path.clone()).await? else {
                return Ok(0);
            };
            if lease.holder != node || lease.session != session {
                return Ok(0);
            }
            // Free, keeping the term (the next holder's term is still higher) and the pause.
            lease.holder.clear();
            lease.session.clear();
            match c
                .set_data(&path, &to_json(&lease)?, Some(stat.version))
                .await
            {
                Ok(_) => return Ok(1),
                Err(zk::Error::BadVersion) => continue, // changed meanwhile: look again
                Err(zk::Error::NoNode) => return Ok(0),
                Err(e) => return Err(zk_err("releasing a lease", e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "zookeeper: releasing {path} kept racing other writers"
        )))
    }

    /// An operator's change of a lease (pause, resume, request) in one multi: {set the lease
    /// at `version`, the one read (or create it if it was absent: `None`), and if `announce`,
    /// set the control znode, whatever its version: the epoch moves by one}. `Ok(false)` when
    /// the lease changed, appeared or went meanwhile (nothing written: read it again), or the
    /// control znode was missing (created now: try again).
    async fn write_lease(
        &self,
        c: &zk::Client,
        what: &str,
        path: &str,
        version: Option<i32>,
        lease: &Lease,
        announce: bool,
    ) -> StoreResult<bool> {
        let data = to_json(lease)?;
        let control = self.control_path();
        let mut txn = c.new_multi_writer();
        match version {
            Some(v) => txn.add_set_data(path, &data, Some(v)),
            None => txn.add_create(path, &data, &PERSISTENT),
        }
        .map_err(op_err)?;
        if announce {
            txn.add_set_data(&control, &[], None).map_err(op_err)?;
        }
        match txn.commit().await {
            Ok(_) => Ok(true),
            Err(zk::MultiWriteError::OperationFailed {
                index: 0,
                source: zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode,
            }) => Ok(false),
            Err(zk::MultiWriteError::OperationFailed {
                index: 1,
                source: zk::Error::NoNode,
            }) => {
                ensure_dir(c, &control).await?;
                Ok(false)
            }
            Err(e) => Err(zk_err(what, e.into())),
        }
    }
}

/// Open a session (the whole attempt bounded by the caller).
async fn open(
    hosts: &str,
    session_timeout: Duration,
    timeout: Duration,
) -> StoreResult<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(timeout)
        .connect(hosts)
        .await
        .map_err(|e| zk_err(&format!("connecting to {hosts}"), e))
}

async fn bounded<T>(
    what: &str,
    timeout: Duration,
    op: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "zookeeper {what}: no answer within {timeout:?}"
        ))),
    }
}

/// A run's fire time and the name of its znode ([`time_key`]).
type RunName = (DateTime<Utc>, String);

/// The run znode names that are fire times ([`parse_time_key`]), newest first by the full
/// fire time (`1800000000.250` after `1800000000`, before `1800000001`).
fn newest_first(names: Vec<String>) -> Vec<RunName> {
    let mut times: Vec<RunName> = names
        .into_iter()
        .filter_map(|n| Some((parse_time_key(&n)?, n)))
        .collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    times
}

/// A pruned watermark as a fire time; `None` for the zero one a claim creates where no run
/// was ever pruned.
fn watermark(p: &Pruned) -> Option<DateTime<Utc>> {
    let t = p.time();
    (t.timestamp_millis() > 0).then_some(t)
}

/// Create a persistent directory znode if missing.
async fn ensure_dir(c: &zk::Client, dir: &str) -> StoreResult<()> {
    match c.create(dir, &[], &PERSISTENT).await {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(zk_err(&format!("creating {dir}"), e)),
    }
}

/// Whether a znode exists.
async fn exists(c: &zk::Client, path: &str) -> StoreResult<bool> {
    match c.check_stat(path).await {
        Ok(stat) => Ok(stat.is_some()),
        Err(e) => Err(zk_err(&format!("looking for {path}"), e)),
    }
}

/// Read and decode a znode; `None` if it does not exist.
async fn read<T: DeserializeOwned>(
    c: &zk::Client,
    path: String,
) -> StoreResult<Option<(T, zk::Stat)>> {
    match c.get_data(&path).await {
        Ok((bytes, stat)) => serde_json::from_slice(&bytes)
            .map(|v| Some((v, stat)))
            .map_err(|e| {
                StoreError::Other(format!("zookeeper: {path} is not a valid record: {e}"))
            }),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(zk_err(&format!("reading {path}"), e)),
    }
}

fn to_json(value: &impl Serialize) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Other(format!("zookeeper: cannot encode a record: {e}")))
}

/// Connection loss, an ended session, no server or an overloaded one: may be retried. The
/// client reports a socket failure (a server that went away mid-request) as `Custom` with the
/// I/O error inside.
fn is_transient(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::Timeout
            | zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::NoHosts
            | zk::Error::Throttled
            | zk::Error::NotReadOnly
            | zk::Error::Custom(_)
    )
}

fn zk_err(what: &str, e: zk::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(format!("zookeeper {what}: {e}"))
    } else {
        StoreError::Other(format!("zookeeper {what}: {e}"))
    }
}

fn op_err(e: zk::Error) -> StoreError {
    zk_err("building a multi", e)
}

/// A job name, node id or namespace as one znode name: ASCII letters, digits, `_`, `-` and
/// `.` (not first, so never `.` or `..`) as they are, every other byte as `%XX`. `None` if
/// empty or longer than [`MAX_NAME`].
pub fn encode(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    (!out.is_empty() && out.len() <= MAX_NAME).then_some(out)
}

/// The inverse of [`encode`]; `None` for a name `encode` cannot have produced.
pub fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (encode(&name).as_deref() == Some(segment)).then_some(name)
}

fn name(kind: &str, value: &str) -> StoreResult<String> {
    encode(value).ok_or_else(|| {
        StoreError::Other(format!(
            "zookeeper: {kind} {value:?} cannot be a znode name (empty or too long)"
        ))
    })
}

#[async_trait]
impl Store for ZooKeeperStore {
    fn describe(&self) -> String {
        format!("zookeeper at {} under {}", self.hosts, self.root)
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let path = self.node_path(&node.id)?;
        let data = to_json(&Node::from(node))?;
        self.bounded("put_node", async {
            let c = self.client().await?;
            let ours = c.session_id().0;
            for _ in 0..RETRIES {
                match c.set_data(&path, &data, None).await {
                    Ok(stat) if stat.ephemeral_owner == ours => return Ok(()),
                    Ok(stat) => {
                        // Owned by an ended session of this id (a restarted process) or not
                        // ephemeral: replace it with ours in one step, so it never vanishes with
                        // that old session and is never seen missing.
                        let mut txn = c.new_multi_writer();
                        txn.add_delete(&path, Some(stat.version)).map_err(op_err)?;
                        txn.add_create(&path, &data, &EPHEMERAL).map_err(op_err)?;
                        match txn.commit().await {
                            Ok(_) => return Ok(()),
                            Err(zk::MultiWriteError::OperationFailed {
                                source: zk::Error::BadVersion | zk::Error::NoNode,
                                ..
                            }) => continue,
                            Err(e) => return Err(zk_err("put_node", e.into())),
                        }
                    }
                    Err(zk::Error::NoNode) => match c.create(&path, &data, &EPHEMERAL).await {
                        Ok(_) => return Ok(()),
                        Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(zk_err("put_node", e)),
                    },
                    Err(e) => return Err(zk_err("put_node", e)),
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper: writing {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        let path = self.node_path(id)?;
        let defs = self.defs_path(id)?;
        self.bounded("delete_node", async {
            let c = self.client().await?;
            // The record first: a crash in between leaves definitions nobody reads, never a
            // record whose definitions are gone.
            for path in [&path, &defs] {
                match c.delete(path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(zk_err("delete_node", e)),
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        let path = self.node_path(id)?;
        let defs = self.defs_path(id)?;
        self.bounded("delete_node_if", async {
            let c = self.client().await?;
            for _ in 0..RETRIES {
                let Some((node, stat)) = read::<Node>(&c, path.clone()).await? else {
                    return Ok(false);
                };
                if node.session != session || node.heartbeat != heartbeat {
                    return Ok(false);
                }
                let defs_exist = match c.check_stat(&defs).await {
                    Ok(stat) => stat.is_some(),
                    Err(e) => return Err(zk_err("delete_node_if", e)),
                };
                let mut txn = c.new_multi_writer();
                txn.add_delete(&path, Some(stat.version)).map_err(op_err)?;
                if defs_exist {
                    txn.add_delete(&defs, None).map_err(op_err)?;
                } else {
                    // Seen absent: still absent at commit, or the create fails.
                    txn.add_create(&defs, &[], &PERSISTENT).map_err(op_err)?;
                    txn.add_delete(&defs, None).map_err(op_err)?;
                }
                match txn.commit().await {
                    Ok(_) => return Ok(true),
                    // The record changed or went meanwhile: not the one observed.
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 0,
                        source: zk::Error::BadVersion | zk::Error::NoNode,
                    }) => return Ok(false),
                    // The definitions appeared or went meanwhile: look again.
                    Err(zk::MultiWriteError::OperationFailed {
                        source: zk::Error::NodeExists | zk::Error::NoNode,
                        ..
                    }) => continue,
                    Err(e) => return Err(zk_err("delete_node_if", e.into())),
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper: deleting {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        let path = self.defs_path(node)?;
        let data = to_json(&json_records::Definitions::from(defs))?;
        self.bounded("put_definitions", async {
            let c = self.client().await?;
            for _ in 0..RETRIES {
                match c.set_data(&path, &data, None).await {
                    Ok(_) => return Ok(()),
                    // The first write: create it (unless another writer just did: set again).
                    Err(zk::Error::NoNode) => match c.create(&path, &data, &PERSISTENT).await {
                        Ok(_) => return Ok(()),
                        Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(zk_err("put_definitions", e)),
                    },
                    Err(e) => return Err(zk_err("put_definitions", e)),
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper: writing {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        let path = self.defs_path(node)?;
        self.bounded("definitions", async {
            let c = self.client().await?;
            Ok(read::<json_records::Definitions>(&c, path)
                .await?
                .map(|(d, _)| d.into()))
        })
        .await
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        self.bounded("nodes", async {
            let c = self.client().await?;
            // One listing, then pipelined reads of every node.
            let nodes = c
                .list_children(&format!("{}/nodes", self.root))
                .await
                .map_err(|e| zk_err("listing nodes", e))?;
            let node_reads = nodes
                .into_iter()
                .filter(|n| decode(n).is_some())
                .map(|n| read::<Node>(&c, format!("{}/nodes/{n}", self.root)));
            let nodes: Vec<_> = futures::stream::iter(node_reads)
                .buffered(PIPELINE)
                .try_collect()
                .await?;
            // A node deleted between the listing and the read: as good as never seen.
            Ok(nodes
                .into_iter()
                .flatten()
                .map(|(n, _)| (n.id.clone(), NodeRecord::from(n)))
                .collect())
        })
        .await
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        let mut wanted = HashMap::new();
        for job in jobs {
            wanted.insert(name("job name", job)?, job.clone());
        }
        self.bounded("leases", async {
            let c = self.client().await?;
            // One listing, then pipelined reads of the leases asked for that exist: a few round
            // trips, whatever the number of jobs.
            let leases = c
                .list_children(&format!("{}/leases", self.root))
                .await
                .map_err(|e| zk_err("listing leases", e))?;
            let lease_reads = leases
                .into_iter()
                .filter_map(|n| wanted.get(&n).map(|job| (n, job.clone())))
                .map(|(n, job)| {
                    let c = &c;
                    let path = format!("{}/leases/{n}", self.root);
                    async move { Ok::<_, StoreError>((job, read::<Lease>(c, path).await?)) }
                });
            let leases: Vec<_> = futures::stream::iter(lease_reads)
                .buffered(PIPELINE)
                .try_collect()
                .await?;
            Ok(leases
                .into_iter()
                .filter_map(|(job, l)| Some((job, LeaseRecord::from(l?.0))))
                .collect())
        })
        .await
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let paths = batch
            .iter()
            .map(|a| self.lease_path(&a.job))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut holders: Vec<&str> = batch
            .iter()
            .map(|a| a.observed.holder())
            .filter(|h| !h.is_empty())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let holder_paths = holders
            .iter()
            .map(|h| Ok((h.to_string(), self.node_path(h)?)))
            .collect::<StoreResult<HashMap<String, String>>>()?;
        self.bounded("acquire_many", async {
            let c = self.client().await?;
            // Read every lease and observed holder (pipelined), then one multi: a version
            // check of each holder's record, a versioned write (or create) of each lease still
            // as observed. A change in between fails the multi as a whole: read again.
            for _ in 0..RETRIES {
                let lease_reads: Vec<_> =
                    paths.iter().map(|p| read::<Lease>(&c, p.clone())).collect();
                let leases: Vec<Option<(Lease, zk::Stat)>> = futures::stream::iter(lease_reads)
                    .buffered(PIPELINE)
                    .try_collect()
                    .await?;
                let ids: Vec<&String> = holder_paths.keys().collect();
                let node_reads: Vec<_> = ids
                    .iter()
                    .map(|id| read::<Node>(&c, holder_paths[*id].clone()))
                    .collect();
                let found: Vec<Option<(Node, zk::Stat)>> = futures::stream::iter(node_reads)
                    .buffered(PIPELINE)
                    .try_collect()
                    .await?;
                let nodes: HashMap<String, Option<(Node, zk::Stat)>> =
                    ids.into_iter().cloned().zip(found).collect();
                let mut txn = c.new_multi_writer();
                let mut checked = std::collections::HashSet::new();
                let mut won = Vec::new();
                for ((a, path), current) in batch.iter().zip(&paths).zip(&leases) {
                    let stored = current.as_ref().map(|(l, _)| LeaseRecord::from(l.clone()));
                    let holder = a.observed.holder();
                    let node = nodes.get(holder).and_then(|n| n.as_ref());
                    let node_now = node.map(|(n, _)| (n.session.as_str(), n.heartbeat));
                    if !a.observed.still(stored.as_ref(), node_now) {
                        continue;
                    }
                    // A handed-over lease is compared on itself alone: its stopping holder's
                    // record changes with every heartbeat.
                    if !holder.is_empty() && !a.observed.handed_over && checked.insert(holder) {
                        let node_path = &holder_paths[holder];
                        match node {
                            Some((_, stat)) => txn.add_check_version(node_path, stat.version),
                            // Seen absent: still absent at commit, or the create fails.
                            None => txn
                                .add_create(node_path, &[], &PERSISTENT)
                                .and_then(|()| txn.add_delete(node_path, None)),
                        }
                        .map_err(op_err)?;
                    }
                    let data = to_json(&Lease::from(&a.record(stored.as_ref())))?;
                    match current {
                        Some((_, stat)) => txn.add_set_data(path, &data, Some(stat.version)),
                        None => txn.add_create(path, &data, &PERSISTENT),
                    }
                    .map_err(op_err)?;
                    won.push(a.job.clone());
                }
                if won.is_empty() {
                    return Ok(won);
                }
                match txn.commit().await {
                    Ok(_) => return Ok(won),
                    Err(zk::MultiWriteError::OperationFailed {
                        source: zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode,
                        ..
                    }) => continue,
                    Err(e) => return Err(zk_err("acquire", e.into())),
                }
            }
            Ok(Vec::new())
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        self.bounded("release", async {
            let c = self.client().await?;
            let releases: Vec<_> = jobs
                .iter()
                .map(|job| self.release_one(&c, job, node, session))
                .collect();
            let freed: Vec<usize> = futures::stream::iter(releases)
                .buffered(PIPELINE)
                .try_collect()
                .await?;
            Ok(freed.into_iter().sum())
        })
        .await
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        let path = self.lease_path(job)?;
        self.bounded("set_pause", async {
            let c = self.client().await?;
            for _ in 0..RETRIES {
                let current = read::<Lease>(&c, path.clone()).await?;
                if pause.is_none() && current.is_none() {
                    return Ok(false); // no record: not paused, nothing to resume
                }
                let version = current.as_ref().map(|(_, stat)| stat.version);
                // A job without a lease record gets a free one (term 0).
                let mut lease = current.map(|(l, _)| l).unwrap_or_else(Lease::free);
                if !lease.set_pause(pause, Utc::now()) {
                    return Ok(false);
                }
                // Changed, created or deleted meanwhile: look again.
                if self
                    .write_lease(&c, "set_pause", &path, version, &lease, true)
                    .await?
                {
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper: writing {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        let path = self.lease_path(job)?;
        self.bounded("change_request", async {
            let c = self.client().await?;
            for _ in 0..RETRIES {
                let current = read::<Lease>(&c, path.clone()).await?;
                let version = current.as_ref().map(|(_, stat)| stat.version);
                // A job without a lease record gets a free one (term 0) if the change is taken.
                let mut lease = current.map(|(l, _)| l).unwrap_or_else(Lease::free);
                if !lease.requests.apply(change) {
                    return Ok(false);
                }
                // Changed, created or deleted meanwhile: look again.
                if self
                    .write_lease(
                        &c,
                        "change_request",
                        &path,
                        version,
                        &lease,
                        change.announced(),
                    )
                    .await?
                {
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper: writing {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        let path = self.control_path();
        self.bounded("control_epoch", async {
            let c = self.client().await?;
            match c.check_stat(&path).await {
                Ok(stat) => Ok(stat.map_or(0, |s| i64::from(s.version))),
                Err(e) => Err(zk_err("reading the control epoch", e)),
            }
        })
        .await
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let path = self.pruned_path(job)?;
        self.bounded("pruned_until", async {
            let c = self.client().await?;
            Ok(read::<Pruned>(&c, path)
                .await?
                .and_then(|(p, _)| watermark(&p)))
        })
        .await
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        let lease_path = self.lease_path(&run.job)?;
        let pruned_path = self.pruned_path(&run.job)?;
        let marker = self.running_path(&run.job, run.fire_time)?;
        let dir = self.runs_dir(&run.job)?;
        let path = self.run_path(&run.job, run.fire_time)?;
        let data = to_json(&Run::from(run))?;
        let zero = to_json(&Pruned::default())?;
        self.bounded("claim", async {
            let c = self.client().await?;
            let mut made_dir = false;
            for _ in 0..RETRIES {
                // Read on every attempt: the multi checks the version read here, so a lease
                // that changed meanwhile (a takeover, a pause) is looked at again.
                let lease = read::<Lease>(&c, lease_path.clone()).await?;
                let Some((lease, stat)) = lease.filter(|(l, _)| {
                    l.holder == run.node && l.session == session && l.term == run.term
                }) else {
                    return Ok(Claim::Fenced);
                };
                match &run.trigger {
                    // A requested run: paused or not, only while its request is pending in the
                    // lease read at the version the multi checks. One that exists was run.
                    Some(t) if !lease.requests.has(&t.request) => {
                        return Ok(if exists(&c, &path).await? {
                            Claim::AlreadyRun
                        } else {
                            Claim::Withdrawn
                        });
                    }
                    Some(_) => {}
                    None if lease.paused.is_some() => return Ok(Claim::Paused),
                    None => {}
                }
                let pruned = read::<Pruned>(&c, pruned_path.clone()).await?;
                if pruned
                    .as_ref()
                    .and_then(|(p, _)| watermark(p))
                    .is_some_and(|w| run.fire_time.timestamp_millis() <= w.timestamp_millis())
                {
                    // A requested run that exists is reported as run (the order of checks).
                    if run.trigger.is_some() && exists(&c, &path).await? {
                        return Ok(Claim::AlreadyRun);
                    }
                    return Ok(Claim::TooOld);
                }
                let mut txn = c.new_multi_writer();
                txn.add_check_version(&lease_path, stat.version)
                    .map_err(op_err)?;
                match &pruned {
                    Some((_, p)) => txn.add_check_version(&pruned_path, p.version),
                    None => txn.add_create(&pruned_path, &zero, &PERSISTENT),
                }
                .map_err(op_err)?;
                txn.add_create(&path, &data, &PERSISTENT).map_err(op_err)?;
                if run.outcome == RUNNING {
                    txn.add_create(&marker, &[], &PERSISTENT).map_err(op_err)?;
                }
                match txn.commit().await {
                    Ok(_) => return Ok(Claim::Won),
                    // The lease changed (or went) meanwhile: read it again.
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 0,
                        source: zk::Error::BadVersion | zk::Error::NoNode,
                    }) => continue,
                    // The watermark moved or appeared meanwhile: read it again.
                    Err(zk::MultiWriteError::OperationFailed { index: 1, .. }) => continue,
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 2,
                        source: zk::Error::NodeExists,
                    }) => return Ok(Claim::AlreadyRun),
                    // The job's first run: make its directory and try once more.
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 2,
                        source: zk::Error::NoNode,
                    }) if !made_dir => {
                        ensure_dir(&c, &dir).await?;
                        made_dir = true;
                    }
                    // A stale marker of a pruned run: drop it and try again.
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 3,
                        source: zk::Error::NodeExists,
                    }) => match c.delete(&marker, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(zk_err("claim", e)),
                    },
                    Err(e) => return Err(zk_err("claim", e.into())),
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper claim: {path} kept racing other writers"
            )))
        })
        .await
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        self.bounded("finish", async {
            let c = self.client().await?;
            let done = self
                .replace_running(&c, run, &run.session, Some(run.term), None)
                .await?;
            Ok(done == Claim::Won)
        })
        .await
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        let path = self.run_path(job, fire_time)?;
        self.bounded("get_run", async {
            let c = self.client().await?;
            Ok(read::<Run>(&c, path).await?.map(|(r, _)| r.into()))
        })
        .await
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let dir = format!("{}/running", self.root);
        self.bounded("running_runs", async {
            let c = self.client().await?;
            let names = match c.list_children(&dir).await {
                Ok(names) => names,
                Err(zk::Error::NoNode) => return Ok(Vec::new()),
                Err(e) => return Err(zk_err("listing running runs", e)),
            };
            let paths: Vec<String> = names
                .iter()
                .filter_map(|n| {
                    let (job, time) = n.rsplit_once('@')?;
                    parse_time_key(time)?;
                    Some(format!("{}/runs/{job}/{time}", self.root))
                })
                .collect();
            let reads: Vec<_> = paths.into_iter().map(|p| read::<Run>(&c, p)).collect();
            let runs: Vec<StoreResult<Option<(Run, zk::Stat)>>> = futures::stream::iter(reads)
                .buffered(PIPELINE)
                .collect()
                .await;
            let mut out = Vec::new();
            for run in runs {
                match run {
                    Ok(Some((r, _))) if r.outcome == RUNNING => out.push(RunRecord::from(r)),
                    Ok(_) => {}
                    // One damaged record must not hide every orphan.
                    Err(StoreError::Other(e)) => tracing::warn!("skipping a run record: {e}"),
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn close_orphan(
        &self,
        new: &RunRecord,
        orphan_session: &str,
        fence: &Fence,
    ) -> StoreResult<Claim> {
        let lease_path = self.lease_path(&new.job)?;
        self.bounded("close_orphan", async {
            let c = self.client().await?;
            for _ in 0..RETRIES {
                let lease = read::<Lease>(&c, lease_path.clone()).await?;
                let Some((lease, stat)) = lease.filter(|(l, _)| {
                    l.holder == fence.node && l.session == fence.session && l.term == fence.term
                }) else {
                    return Ok(Claim::Fenced);
                };
                // A recovery is a new run of the job: not while it is paused. Closing as lost is.
                if new.outcome == RUNNING && lease.paused.is_some() {
                    return Ok(Claim::Paused);
                }
                match self
                    .replace_running(
                        &c,
                        new,
                        orphan_session,
                        None,
                        Some((&lease_path, stat.version)),
                    )
                    .await?
                {
                    // The lease's version changed after the read (a takeover, a pause): nothing
                    // was written; read it again.
                    Claim::Fenced => continue,
                    other => return Ok(other),
                }
            }
            Err(StoreError::Unavailable(format!(
                "zookeeper close_orphan: {lease_path} kept changing"
            )))
        })
        .await
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        let dir = self.runs_dir(job)?;
        self.bounded("runs", async {
            let c = self.client().await?;
            let mut times = self.run_times(&c, &dir).await?;
            times.reverse();
            self.read_runs(&c, &dir, &times).await
        })
        .await
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let dir = self.runs_dir(job)?;
        self.bounded("recent_runs", async {
            let c = self.client().await?;
            let times = self.run_times(&c, &dir).await?;
            self.read_runs(&c, &dir, &times[..times.len().min(limit)])
                .await
        })
        .await
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        let dir = self.runs_dir(job)?;
        let pruned_path = self.pruned_path(job)?;
        let running_dir = format!("{}/running/{}", self.root, name("job name", job)?);
        self.bounded("prune_runs", async {
            let c = self.client().await?;
            let times = self.run_times(&c, &dir).await?;
            // The watermark first (newest first: the first deleted is the newest).
            if let Some((newest, _)) = times.get(keep) {
                self.raise_pruned(&c, &pruned_path, *newest).await?;
            }
            let deletes: Vec<_> = times
                .iter()
                .skip(keep)
                .map(|(_, n)| {
                    let path = format!("{dir}/{n}");
                    let marker = format!("{running_dir}@{n}");
                    let c = &c;
                    async move {
                        match c.delete(&marker, None).await {
                            Ok(()) | Err(zk::Error::NoNode) => {}
                            Err(e) => return Err(zk_err("pruning runs", e)),
                        }
                        match c.delete(&path, None).await {
                            Ok(()) => Ok(true),
                            Err(zk::Error::NoNode) => Ok(false), // pruned by someone else
                            Err(e) => Err(zk_err("pruning runs", e)),
                        }
                    }
                })
                .collect();
            let deleted: Vec<bool> = futures::stream::iter(deletes)
                .buffered(PIPELINE)
                .try_collect()
                .await?;
            Ok(deleted.into_iter().filter(|d| *d).count())
        })
        .await
    }
}

// ---- records as JSON (the znodes' data) ----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_path_segments() {
        assert_eq!(
            encode("backup-db_1.daily").as_deref(),
            Some("backup-db_1.daily")
        );
        assert_eq!(encode("a/b").as_deref(), Some("a%2Fb"));
        assert_eq!(encode(".").as_deref(), Some("%2E"));
        assert_eq!(encode("..").as_deref(), Some("%2E."));
        assert_eq!(encode(".hidden").as_deref(), Some("%2Ehidden"));
        assert_eq!(encode("zookeeper").as_deref(), Some("zookeeper"));
        assert_eq!(encode("50%").as_deref(), Some("50%25"));
        assert_eq!(encode("é x").as_deref(), Some("%C3%A9%20x"));
        assert_eq!(encode("\0").as_deref(), Some("%00"));
        assert_eq!(encode(""), None);
        assert_eq!(encode(&"x".repeat(MAX_NAME + 1)), None);
        for name in [
            "a/b",
            ".",
            "..",
            "é x",
            "50%",
            "node-1.example.com:8080",
            "\u{1}",
        ] {
            let enc = encode(name).unwrap();
            assert!(!enc.contains('/') && enc != "." && enc != "..", "{enc}");
            assert!(enc.bytes().all(|b| b.is_ascii_graphic()), "{enc}");
            assert_eq!(decode(&enc).as_deref(), Some(name));
        }
    }

    #[test]
    fn decode_refuses_what_encode_never_writes() {
        for seg in ["a%2", "a%zz", "%61", "a/b", ".x", "%FF"] {
            assert_eq!(decode(seg), None, "{seg}");
        }
    }

    #[test]
    fn the_session_timeout_follows_the_store_timeout_within_bounds() {
        assert_eq!(
            session_timeout(Duration::from_secs(2)),
            Duration::from_secs(10)
        );
        assert_eq!(
            session_timeout(Duration::from_millis(100)),
            Duration::from_secs(4)
        );
        assert_eq!(
            session_timeout(Duration::from_secs(60)),
            Duration::from_secs(40)
        );
    }

    #[test]
    fn connection_trouble_is_unavailable_refusals_are_other() {
        for e in [
            zk::Error::ConnectionLoss,
            zk::Error::SessionExpired,
            zk::Error::Timeout,
            zk::Error::ClientClosed,
        ] {
            assert!(matches!(zk_err("x", e), StoreError::Unavailable(_)));
        }
        for e in [
            zk::Error::NoAuth,
            zk::Error::InvalidAcl,
            zk::Error::BadVersion,
        ] {
            assert!(matches!(zk_err("x", e), StoreError::Other(_)));
        }
    }

    #[test]
    fn records_round_trip() {
        let run = RunRecord {
            job: "j".into(),
            fire_time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            node: "a".into(),
            term: 3,
            started_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
            finished_at: Some(DateTime::from_timestamp(1_800_000_001, 5).unwrap()),
            outcome: "failed".into(),
            exit_code: Some(-1),
            attempts: 0,
            session: "s1".into(),
            process: "p1".into(),
            reason: Some("lease_lost".into()),
            recovery: true,
            trigger: Some(crate::store::RunTrigger {
                kind: crate::store::MANUAL.into(),
                by: "ops@h".into(),
                request: "1800000000.250".into(),
            }),
            output: String::new(),
            output_cut: 0,
        };
        let json = serde_json::to_vec(&Run::from(&run)).unwrap();
        let back: RunRecord = serde_json::from_slice::<Run>(&json).unwrap().into();
        assert_eq!(back, run);
        let lease = LeaseRecord {
            holder: "a".into(),
            session: "s".into(),
            term: 7,
            acquired_at: None,
            paused: Some(Box::new(Pause {
                by: "ops".into(),
                at: DateTime::from_timestamp(1_800_000_000, 5).unwrap(),
                note: String::new(),
            })),
            resumed_at: None,
            requests: crate::store::Requests {
                triggers: vec![crate::store::TriggerRequest {
                    fire_time: DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap(),
                    by: "ops@h".into(),
                    expires_at: DateTime::from_timestamp(1_800_003_600, 0).unwrap(),
                    allow_overlap: false,
                }],
                backfill: None,
            },
        };
        let json = serde_json::to_vec(&Lease::from(&lease)).unwrap();
        let back: LeaseRecord = serde_json::from_slice::<Lease>(&json).unwrap().into();
        assert_eq!(back, lease);
    }

    #[test]
    fn run_names_sort_by_the_full_fire_time() {
        let names = [
            "1800000001",
            "1800000000.250",
            "junk",
            "1800000000",
            "1799999999.999",
        ];
        let sorted: Vec<String> = newest_first(names.iter().map(|n| n.to_string()).collect())
            .into_iter()
            .map(|(t, n)| {
                assert_eq!(time_key(t), n);
                n
            })
            .collect();
        assert_eq!(
            sorted,
            [
                "1800000001",
                "1800000000.250",
                "1800000000",
                "1799999999.999"
            ]
        );
    }

    #[test]
    fn the_zero_watermark_of_a_claim_is_no_watermark() {
        assert_eq!(watermark(&Pruned::default()), None);
        let old: Pruned = serde_json::from_str(r#"{"fire_time":1800000000}"#).unwrap();
        assert_eq!(watermark(&old), DateTime::from_timestamp(1_800_000_000, 0));
        let manual = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        assert_eq!(watermark(&Pruned::at(manual)), Some(manual));
    }
}
