//! The Google Cloud Datastore backend (and its local emulator), over gcloud-sdk's Datastore v1
//! gRPC API.
//!
//! Kinds, in the configured namespace: `Node` (key: node id), `Lease` (key: job name; `holder`,
//! `session`, `term`, `acquired_at`, and the unindexed `paused_by`, `paused_at`, `paused_note`
//! while the job is paused and `resumed_at` once it was resumed: a lease without `paused_at` is
//! not paused, as are those written before pauses existed; the unindexed `requests`, the
//! pending operator requests as one JSON string ([`Requests::encode`]), absent when there are
//! none), `Run` (key: `{job}@{time_key(fire time)}`: unix seconds, with `.mmm` milliseconds
//! for a manual run; `fire_time` keeps the milliseconds, the indexed `outcome` is what
//! [`Store::running_runs`] queries (a progress write keeps it `running`), the unindexed
//! `trigger` ([`RunTrigger::encode`]) is there only for a run an operator asked for, the
//! unindexed string `output` (the tail of what the run printed, up to 256 KiB: an indexed string
//! could hold only 1,500 bytes) only when it printed something, and the unindexed integer
//! `output_cut` (bytes dropped before that tail) only when not 0), `Pruned` (key: job
//! name; `fire_time`, the newest fire time pruned, to the millisecond), `Control` (one entity,
//! key `epoch`: the integer `epoch`, the control epoch; absent until the first change) and
//! `Definitions` (key: node id; `digest`, and `jobs`, the map of job name → definition digest as
//! one unindexed JSON string, so that a thousand jobs cost one property and no index writes). A
//! node's `Definitions` is deleted in the commit that deletes its `Node`. Acquire, release,
//! pause, request changes and claim are read-write transactions:
//! Datastore commits them optimistically, so a transaction whose reads changed underneath it is
//! ABORTED and two nodes cannot both win. A claim inserts the `Run`; inserting an existing key
//! fails with ALREADY_EXISTS, so a fire time is claimed at most once, ever. A pause, a resume or
//! an announced request change reads `Control` in its transaction and writes it back bumped in
//! the commit that writes the `Lease`: both or neither.
//!
//! With `DATASTORE_EMULATOR_HOST` set the client talks plain HTTP/2 to the emulator with
//! anonymous credentials (gcloud-sdk has no emulator switch of its own); otherwise it uses
//! `https://datastore.googleapis.com` with Application Default Credentials.
use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gcloud_sdk::google::datastore::v1 as ds;
use gcloud_sdk::google::datastore::v1::datastore_client::DatastoreClient;
use gcloud_sdk::tonic::{Code, Status};
use gcloud_sdk::{GoogleApi, GoogleAuthMiddleware};

use ds::key::path_element::IdType;
use ds::value::ValueType;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::rules::{claim_refusal, ClaimFacts};
use super::{
    parse_time_key, Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause,
    RequestChange, Requests, RunRecord, RunTrigger, Store, StoreError, StoreResult, RUNNING,
};
use crate::config::StoreConfig;

const KIND_NODE: &str = "Node";
const KIND_LEASE: &str = "Lease";
const KIND_RUN: &str = "Run";
/// One per job once its history was pruned: `fire_time`, the newest fire time deleted.
const KIND_PRUNED: &str = "Pruned";
/// One entity, [`CONTROL_EPOCH`]: `epoch`, the control epoch of the namespace.
const KIND_CONTROL: &str = "Control";
const CONTROL_EPOCH: &str = "epoch";
/// One per node that wrote its job definitions: `digest`, and `jobs` as JSON.
const KIND_DEFINITIONS: &str = "Definitions";
/// A lease property set only by the insert that created it: which call of
/// [`Store::acquire_many`] that was (informational otherwise; the next write drops it).
const INSERTED_BY: &str = "inserted_by";
/// Datastore's limit on keys per lookup.
const LOOKUP_BATCH: usize = 1000;
/// How many of those lookups one read runs side by side.
const LOOKUPS_IN_FLIGHT: usize = 2;
/// The most entity groups one transaction may touch: Datastore's old limit, which the emulator
/// still enforces ("operating on too many entity groups in a single transaction"). Every lease
/// and every node record is a group of its own, so a transaction over many leases goes in
/// pieces of this size.
const TX_GROUPS: usize = 25;
/// Datastore's limit on mutations per commit (a non-transactional delete of old runs).
const COMMIT_BATCH: usize = 500;
/// Leases created per insert commit: small enough that a busy emulator answers within the
/// store timeout (500 did not, with five nodes starting at once).
const INSERT_BATCH: usize = 100;
/// How many of those transactions one call keeps ready; [`BULK_WRITES`] of them, across all
/// calls, are in flight at once.
const TX_IN_FLIGHT: usize = 8;
/// How many bulk lease writes a node has in flight across all its calls. More only queue at
/// the store: five nodes creating 10,000 leases with 16 commits each in flight made commits
/// wait past the store timeout (each one lost is read back and tried again).
const BULK_WRITES: usize = 2;
/// How many of the jobs a node leads its record lists (the rest are in the leases).
const NODE_JOBS_LISTED: usize = 100;
/// How often a transaction is retried after ABORTED before the caller is told it lost.
const ABORT_RETRIES: usize = 5;
/// The largest response accepted (tonic's default is 4 MiB): a query's batch of runs, each
/// with an output tail of up to 256 KiB (an entity may be up to 1 MiB), can be larger.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Project used with the emulator when none is configured.
const EMULATOR_DEFAULT_PROJECT: &str = "cronlease-dev";

type Client = DatastoreClient<GoogleAuthMiddleware>;

pub struct DatastoreStore {
    api: GoogleApi<Client>,
    project: String,
    namespace: String,
    endpoint: String,
    emulator: bool,
    timeout: Duration,
    /// Bulk lease writes (the transactions and inserts of `acquire_many` and `release`) in
    /// flight at once from this node, whatever the number of calls ([`BULK_WRITES`]).
    bulk_writes: std::sync::Arc<tokio::sync::Semaphore>,
}

impl DatastoreStore {
    /// Connect to the emulator (`DATASTORE_EMULATOR_HOST`) or to real Datastore.
    ///
    /// Fails with [`StoreError::Unavailable`] when the endpoint cannot be reached: the caller
    /// retries with backoff.
    pub async fn connect(config: &StoreConfig) -> StoreResult<Self> {
        Self::connect_with_timeout(config, Duration::from_secs(5)).await
    }

    /// As [`connect`](Self::connect), with a bound on every call to the store.
    pub async fn connect_with_timeout(
        config: &StoreConfig,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let emulator_host = std::env::var("DATASTORE_EMULATOR_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty());
        let project = config
            .project
            .clone()
            .or_else(|| env_nonempty("DATASTORE_PROJECT_ID"))
            .or_else(|| env_nonempty("GOOGLE_CLOUD_PROJECT"))
            .or_else(|| {
                emulator_host
                    .as_ref()
                    .map(|_| EMULATOR_DEFAULT_PROJECT.to_string())
            })
            .ok_or_else(|| {
                StoreError::Other(
                    "no Datastore project: set [store] project, DATASTORE_PROJECT_ID or \
                     GOOGLE_CLOUD_PROJECT (or DATASTORE_EMULATOR_HOST for the emulator)"
                        .to_string(),
                )
            })?;
        match emulator_host {
            Some(host) => Self::open(&host, true, project, config.namespace.clone(), timeout).await,
            None => {
                let endpoint = "https://datastore.googleapis.com";
                Self::open(endpoint, false, project, config.namespace.clone(), timeout).await
            }
        }
    }

    /// Connect to an emulator at `host` ("127.0.0.1:8081") explicitly (tests, tools).
    pub async fn connect_emulator(
        host: &str,
        project: &str,
        namespace: &str,
        timeout: Duration,
    ) -> StoreResult<Self> {
        Self::open(
            host,
            true,
            project.to_string(),
            namespace.to_string(),
            timeout,
        )
        .await
    }

    async fn open(
        host_or_url: &str,
        emulator: bool,
        project: String,
        namespace: String,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let endpoint = if emulator {
            format!("http://{}", host_or_url.trim())
        } else {
            host_or_url.to_string()
        };
        let connecting = async {
            if emulator {
                let credentials =
                    gcloud_sdk::google_cloud_auth::credentials::anonymous::Builder::new().build();
                GoogleApi::from_function_with_credentials(new_client, &endpoint, None, credentials)
                    .await
            } else {
                GoogleApi::from_function(new_client, &endpoint, None).await
            }
        };
        let api = match tokio::time::timeout(timeout.max(Duration::from_secs(2)), connecting).await
        {
            Ok(Ok(api)) => api,
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to {endpoint}: {}",
                    causes(&e)
                )))
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to {endpoint}: no answer within {timeout:?}"
                )))
            }
        };
        Ok(DatastoreStore {
            api,
            project,
            namespace,
            endpoint,
            emulator,
            timeout,
            bulk_writes: std::sync::Arc::new(tokio::sync::Semaphore::new(BULK_WRITES)),
        })
    }

    /// `write` once one of the node's [`BULK_WRITES`] slots is free.
    async fn bulk<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let _slot = self.bulk_writes.acquire().await;
        write.await
    }

    fn client(&self) -> Client {
        self.api.get()
    }

    fn key(&self, kind: &str, name: &str) -> ds::Key {
        ds::Key {
            partition_id: Some(ds::PartitionId {
                project_id: self.project.clone(),
                database_id: String::new(),
                namespace_id: self.namespace.clone(),
            }),
            path: vec![ds::key::PathElement {
                kind: kind.to_string(),
                id_type: Some(IdType::Name(name.to_string())),
            }],
        }
    }

    /// Bound a call by the store timeout and map its status.
    async fn call<T, F>(&self, what: &str, fut: F) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<gcloud_sdk::tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map(|resp| resp.into_inner()),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn begin(&self) -> StoreResult<Vec<u8>> {
        let req = ds::BeginTransactionRequest {
            project_id: self.project.clone(),
            transaction_options: Some(ds::TransactionOptions {
                mode: Some(ds::transaction_options::Mode::ReadWrite(
                    ds::transaction_options::ReadWrite::default(),
                )),
            }),
            ..Default::default()
        };
        let mut client = self.client();
        let resp = self
            .call("begin transaction", client.begin_transaction(req))
            .await
            .map_err(map_status)?;
        Ok(resp.transaction)
    }

    /// Begin a read-write transaction and read `keys` in it, in one round trip (a lookup with
    /// `new_transaction`), instead of begin + lookup. Falls back to the two calls if the server
    /// does not return a transaction from the lookup.
    /// [`Self::begin_with`] in a retry loop: a lookup the emulator (or Datastore) aborted for
    /// contention with a concurrent transaction on the same entities wrote nothing, so after a
    /// short random pause it is tried again (`Ok(None)`: `continue`) while `attempt` allows.
    /// Before, such an abort of a claim's lookup was reported as unavailable and the tick was
    /// not run: a catch-up claim and the next tick's claim of one job, 2 ms apart, lost a
    /// fire time that way.
    async fn begin_contended(
        &self,
        keys: Vec<ds::Key>,
        attempt: usize,
    ) -> StoreResult<Option<(Vec<u8>, HashMap<String, ds::Entity>)>> {
        match self.begin_with(keys).await {
            Err(e) if is_aborted(&e) && attempt < ABORT_RETRIES => {
                contention_pause(attempt).await;
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    async fn begin_with(
        &self,
        keys: Vec<ds::Key>,
    ) -> StoreResult<(Vec<u8>, HashMap<String, ds::Entity>)> {
        let req = ds::LookupRequest {
            project_id: self.project.clone(),
            read_options: Some(ds::ReadOptions {
                consistency_type: Some(ds::read_options::ConsistencyType::NewTransaction(
                    ds::TransactionOptions {
                        mode: Some(ds::transaction_options::Mode::ReadWrite(
                            ds::transaction_options::ReadWrite::default(),
                        )),
                    },
                )),
            }),
            keys: keys.clone(),
            ..Default::default()
        };
        let mut client = self.client();
        let resp = self
            .call("lookup", client.lookup(req))
            .await
            .map_err(map_status)?;
        if resp.transaction.is_empty() {
            tracing::debug!("the lookup returned no transaction: begin + lookup instead");
            let tx = self.begin().await?;
            return match self.lookup(keys, Some(&tx)).await {
                Ok(found) => Ok((tx, found)),
                Err(e) => {
                    self.rollback(tx).await;
                    Err(e)
                }
            };
        }
        let tx = resp.transaction;
        let mut found = HashMap::new();
        for result in resp.found {
            if let Some(entity) = result.entity {
                if let Some(name) = found_key_of(entity.key.as_ref()) {
                    found.insert(name, entity);
                }
            }
        }
        if !resp.deferred.is_empty() {
            match self.lookup(resp.deferred, Some(&tx)).await {
                Ok(more) => found.extend(more),
                Err(e) => {
                    self.rollback(tx).await;
                    return Err(e);
                }
            }
        }
        Ok((tx, found))
    }

    /// The end of a compare-and-set: if what the transaction read is `unchanged`, commit the
    /// mutations `write` makes, all or none; else roll back. `Ok(false)` when it did not apply
    /// (changed, or a concurrent transaction aborted this one).
    async fn commit_if(
        &self,
        tx: Vec<u8>,
        unchanged: bool,
        write: impl FnOnce() -> Vec<ds::Mutation>,
    ) -> StoreResult<bool> {
        if !unchanged {
            self.rollback(tx).await;
            return Ok(false);
        }
        match self.commit(Some(tx), write()).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::Aborted => Ok(false),
            Err(s) => Err(map_status(s)),
        }
    }

    async fn rollback(&self, transaction: Vec<u8>) {
        let req = ds::RollbackRequest {
            project_id: self.project.clone(),
            transaction,
            ..Default::default()
        };
        let mut client = self.client();
        // Best effort: an abandoned transaction expires on its own.
        let _ = self.call("rollback", client.rollback(req)).await;
    }

    /// Look keys up (in a transaction if given), following `deferred` keys; returns the found
    /// entities by key name.
    async fn lookup(
        &self,
        keys: Vec<ds::Key>,
        transaction: Option<&[u8]>,
    ) -> StoreResult<HashMap<String, ds::Entity>> {
        let mut found = HashMap::new();
        let mut pending = keys;
        while !pending.is_empty() {
            let req = ds::LookupRequest {
                project_id: self.project.clone(),
                read_options: transaction.map(|tx| ds::ReadOptions {
                    consistency_type: Some(ds::read_options::ConsistencyType::Transaction(
                        tx.to_vec(),
                    )),
                }),
                keys: std::mem::take(&mut pending),
                ..Default::default()
            };
            let mut client = self.client();
            let resp = self
                .call("lookup", client.lookup(req))
                .await
                .map_err(map_status)?;
            for result in resp.found {
                if let Some(entity) = result.entity {
                    if let Some(name) = found_key_of(entity.key.as_ref()) {
                        found.insert(name, entity);
                    }
                }
            }
            pending = resp.deferred;
        }
        Ok(found)
    }

    /// Lookups of the entities of `kind` named `names`, a few batches at a time, each batch's
    /// entities parsed as it arrives, so no more than [`LOOKUPS_IN_FLIGHT`] batches of decoded
    /// entities exist at once (a read of 10,000 leases held all of them, 13 MB, before parsing
    /// any). Each batch's keys are built when it is sent: built up front, the keys of a read
    /// of 100,000 leases took about 40 MB at once.
    async fn lookup_parsed<T>(
        &self,
        kind: &str,
        names: &[String],
        parse: impl Fn(&ds::Entity) -> StoreResult<T>,
    ) -> StoreResult<HashMap<String, T>> {
        // A few at a time: 10 lookups of 1,000 sent at once to a busy emulator all ran past the
        // timeout together.
        let mut all = HashMap::with_capacity(names.len());
        // By start index: a closure over `&[String]` chunks trips the `Send` check of the
        // trait's boxed future (a higher-ranked lifetime).
        let batches = (0..names.len()).step_by(LOOKUP_BATCH).map(|start| {
            let end = (start + LOOKUP_BATCH).min(names.len());
            let keys = names[start..end]
                .iter()
                .map(|n| self.key(kind, n))
                .collect();
            self.lookup(keys, None)
        });
        let mut batches = futures::stream::iter(batches).buffer_unordered(LOOKUPS_IN_FLIGHT);
        while let Some(part) = batches.next().await {
            for entity in part?.into_values() {
                if let Some(name) = key_name(entity.key.as_ref()) {
                    all.insert(name, parse(&entity)?);
                }
            }
        }
        Ok(all)
    }

    async fn commit(
        &self,
        transaction: Option<Vec<u8>>,
        mutations: Vec<ds::Mutation>,
    ) -> Result<ds::CommitResponse, Status> {
        let (mode, selector) = match transaction {
            Some(tx) => (
                ds::commit_request::Mode::Transactional,
                Some(ds::commit_request::TransactionSelector::Transaction(tx)),
            ),
            None => (ds::commit_request::Mode::NonTransactional, None),
        };
        let req = ds::CommitRequest {
            project_id: self.project.clone(),
            mode: mode as i32,
            mutations,
            transaction_selector: selector,
            ..Default::default()
        };
        let mut client = self.client();
        self.call("commit", client.commit(req)).await
    }

    /// Run a query over one kind, following cursors to the end.
    async fn query_all(
        &self,
        kind: &str,
        filter: Option<ds::Filter>,
    ) -> StoreResult<Vec<ds::Entity>> {
        self.query(ds::Query {
            kind: vec![ds::KindExpression {
                name: kind.to_string(),
            }],
            filter,
            ..Default::default()
        })
        .await
    }

    /// Run a query, following cursors until its limit (if any) or its end.
    async fn query(&self, mut query: ds::Query) -> StoreResult<Vec<ds::Entity>> {
        let mut out = Vec::new();
        let mut left = query.limit.map(|l| l.max(0) as usize);
        loop {
            let req = ds::RunQueryRequest {
                project_id: self.project.clone(),
                partition_id: Some(ds::PartitionId {
                    project_id: self.project.clone(),
                    database_id: String::new(),
                    namespace_id: self.namespace.clone(),
                }),
                query_type: Some(ds::run_query_request::QueryType::Query(query.clone())),
                ..Default::default()
            };
            let mut client = self.client();
            let resp = self
                .call("query", client.run_query(req))
                .await
                .map_err(map_status)?;
            let Some(batch) = resp.batch else { break };
            let n = batch.entity_results.len();
            out.extend(batch.entity_results.into_iter().filter_map(|r| r.entity));
            let more = ds::query_result_batch::MoreResultsType::try_from(batch.more_results)
                .unwrap_or(ds::query_result_batch::MoreResultsType::NoMoreResults);
            if let Some(left) = left.as_mut() {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    break;
                }
                query.limit = Some(*left as i32);
            }
            // A batch may skip only part of the offset and return nothing yet: go on from its
            // cursor until a batch neither returns nor skips anything.
            if more != ds::query_result_batch::MoreResultsType::NotFinished
                || (n == 0 && batch.skipped_results == 0)
            {
                break;
            }
            // The offset was consumed by the first batch (skipped_results); never skip twice.
            query.offset = query.offset.saturating_sub(batch.skipped_results);
            query.start_cursor = batch.end_cursor;
        }
        Ok(out)
    }

    /// A job's runs, newest fire time first: `offset` skipped, at most `limit`, optionally
    /// keys only. Needs the composite index (job, -fire_time) of `index.yaml`.
    fn runs_query(job: &str, offset: usize, limit: usize, keys_only: bool) -> ds::Query {
        ds::Query {
            kind: vec![ds::KindExpression {
                name: KIND_RUN.to_string(),
            }],
            projection: if keys_only {
                vec![ds::Projection {
                    property: Some(ds::PropertyReference {
                        name: "__key__".into(),
                    }),
                }]
            } else {
                Vec::new()
            },
            filter: Some(job_filter(job)),
            order: vec![ds::PropertyOrder {
                property: Some(ds::PropertyReference {
                    name: "fire_time".into(),
                }),
                direction: ds::property_order::Direction::Descending as i32,
            }],
            offset: offset.min(i32::MAX as usize) as i32,
            limit: Some(limit.min(i32::MAX as usize) as i32),
            ..Default::default()
        }
    }

    /// The entity of `kind` named `name` among the found ones of a lookup.
    fn entity_of<'a>(
        &self,
        found: &'a HashMap<String, ds::Entity>,
        kind: &str,
        name: &str,
    ) -> Option<&'a ds::Entity> {
        found.get(&found_key(kind, name))
    }

    /// The lease of `job` among the found ones of a lookup (`None`: no record).
    fn lease_in(
        &self,
        found: &HashMap<String, ds::Entity>,
        job: &str,
    ) -> StoreResult<Option<LeaseRecord>> {
        self.entity_of(found, KIND_LEASE, job)
            .map(parse_lease)
            .transpose()
    }

    /// `r`, after rolling the transaction `tx` back if it is an error.
    async fn or_rollback<T>(&self, tx: &[u8], r: StoreResult<T>) -> StoreResult<T> {
        if r.is_err() {
            self.rollback(tx.to_vec()).await;
        }
        r
    }

    /// The `Control` entity holding `epoch`: what a transaction that read the control epoch as
    /// `epoch - 1` writes to bump it.
    fn control_entity(&self, epoch: i64) -> ds::Entity {
        let mut props = HashMap::new();
        props.insert("epoch".into(), integer(epoch, false));
        ds::Entity {
            key: Some(self.key(KIND_CONTROL, CONTROL_EPOCH)),
            properties: props,
        }
    }

    /// The mutation that bumps the control epoch read (in the same transaction) into `found`.
    fn bump_control(&self, found: &HashMap<String, ds::Entity>) -> ds::Mutation {
        let epoch = self
            .entity_of(found, KIND_CONTROL, CONTROL_EPOCH)
            .and_then(|e| get_int(e, "epoch"))
            .unwrap_or(0);
        mutation(ds::mutation::Operation::Upsert(
            self.control_entity(epoch + 1),
        ))
    }

    /// Raise `job`'s pruned watermark to `newest` (never lower it), in a transaction.
    async fn raise_pruned(&self, job: &str, newest: DateTime<Utc>) -> StoreResult<()> {
        for attempt in 1..=ABORT_RETRIES {
            let Some((tx, found)) = self
                .begin_contended(vec![self.key(KIND_PRUNED, job)], attempt)
                .await?
            else {
                continue;
            };
            let current = found
                .get(&found_key(KIND_PRUNED, job))
                .and_then(|e| get_time(e, "fire_time"));
            if current.is_some_and(|c| c >= newest) {
                self.rollback(tx).await;
                return Ok(());
            }
            let mut props = HashMap::new();
            props.insert("fire_time".into(), timestamp(newest, false));
            let entity = ds::Entity {
                key: Some(self.key(KIND_PRUNED, job)),
                properties: props,
            };
            let m = mutation(ds::mutation::Operation::Upsert(entity));
            match self.commit(Some(tx), vec![m]).await {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "raising the pruned watermark of {job}: aborted {ABORT_RETRIES} times"
        )))
    }

    /// Create leases observed absent, by inserts in one non-transactional commit. An insert
    /// fails if its lease exists (somebody created it since): then the commit may have applied
    /// in part, so the leases are read back; those this call wrote (marked [`INSERTED_BY`]
    /// it) are won, those still absent are inserted again, the others are lost.
    async fn insert_chunk(&self, chunk: &[&Acquire]) -> StoreResult<Vec<String>> {
        let mut won = Vec::new();
        let mut left: Vec<&Acquire> = chunk.to_vec();
        // Marks this call's inserts, so that a lease it wrote is told from one an earlier call
        // of the same acquisition wrote.
        let call = format!("{:016x}", rand::random::<u64>());
        for _ in 0..ABORT_RETRIES {
            if left.is_empty() {
                break;
            }
            let mutations = left
                .iter()
                .map(|a| {
                    let mut e = self.lease_entity(&a.job, &a.record(None));
                    e.properties
                        .insert(INSERTED_BY.into(), string(&call, false));
                    mutation(ds::mutation::Operation::Insert(e))
                })
                .collect();
            match self.commit(None, mutations).await {
                Ok(_) => {
                    won.extend(left.iter().map(|a| a.job.clone()));
                    return Ok(won);
                }
                Err(s) if s.code() == Code::AlreadyExists => {
                    let keys = left.iter().map(|a| self.key(KIND_LEASE, &a.job)).collect();
                    let found = self.lookup(keys, None).await?;
                    let mut again = Vec::new();
                    for a in left {
                        match self.entity_of(&found, KIND_LEASE, &a.job) {
                            None => again.push(a),
                            Some(e) if get_str(e, INSERTED_BY) == call => won.push(a.job.clone()),
                            Some(_) => {}
                        }
                    }
                    left = again;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Ok(won)
    }

    /// One transaction of [`Store::acquire_many`]: read the leases and their observed holders'
    /// node records, write the leases still as observed. A conflicting commit (another node
    /// took one of them, or a holder heartbeated) aborts all of it: read again and write what
    /// still matches.
    async fn acquire_chunk(&self, batch: &[&Acquire]) -> StoreResult<Vec<String>> {
        // Only the records the compare looks at are read (Observed::holder_to_check): a holder
        // observed gone ended its session for good, and a leaving one's kept jobs only shrink.
        // Concurrent transactions reading one node record abort each other.
        let mut holders: Vec<&str> = batch
            .iter()
            .filter_map(|a| a.observed.holder_to_check())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        for attempt in 1..=ABORT_RETRIES {
            let keys = batch
                .iter()
                .map(|a| self.key(KIND_LEASE, &a.job))
                .chain(holders.iter().map(|h| self.key(KIND_NODE, h)))
                .collect();
            let Some((tx, found)) = self.begin_contended(keys, attempt).await? else {
                continue;
            };
            let mut won = Vec::new();
            let mut mutations = Vec::new();
            for a in batch {
                let lease_now = self.or_rollback(&tx, self.lease_in(&found, &a.job)).await?;
                let node_now = a
                    .observed
                    .holder_to_check()
                    .and_then(|holder| found.get(&found_key(KIND_NODE, holder)))
                    .and_then(parse_node);
                let node_now = node_now.as_ref().map(|n| (n.session.as_str(), n.heartbeat));
                if a.observed.still(lease_now.as_ref(), node_now) {
                    let new = a.record(lease_now.as_ref());
                    mutations.push(mutation(ds::mutation::Operation::Upsert(
                        self.lease_entity(&a.job, &new),
                    )));
                    won.push(a.job.clone());
                }
            }
            if mutations.is_empty() {
                self.rollback(tx).await;
                return Ok(won);
            }
            match self.commit(Some(tx), mutations).await {
                Ok(_) => return Ok(won),
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) if s.code() == Code::Aborted => return Ok(Vec::new()),
                Err(s) => return Err(map_status(s)),
            }
        }
        Ok(Vec::new())
    }

    /// One transaction of [`Store::release`]: free those of `chunk` still held by `node` in
    /// `session`, keeping terms, pauses and requests.
    async fn release_chunk(
        &self,
        chunk: &[String],
        node: &str,
        session: &str,
    ) -> StoreResult<usize> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let keys = chunk.iter().map(|j| self.key(KIND_LEASE, j)).collect();
            let Some((tx, found)) = self.begin_contended(keys, attempt).await? else {
                continue;
            };
            let mut mutations = Vec::new();
            for job in chunk {
                if let Some(lease) = self.or_rollback(&tx, self.lease_in(&found, job)).await? {
                    if lease.holder == node && lease.session == session {
                        let free = LeaseRecord {
                            holder: String::new(),
                            session: String::new(),
                            ..lease
                        };
                        mutations.push(mutation(ds::mutation::Operation::Update(
                            self.lease_entity(job, &free),
                        )));
                    }
                }
            }
            if mutations.is_empty() {
                self.rollback(tx).await;
                return Ok(0);
            }
            let n = mutations.len();
            match self.commit(Some(tx), mutations).await {
                Ok(_) => return Ok(n),
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
    }

    fn lease_entity(&self, job: &str, lease: &LeaseRecord) -> ds::Entity {
        let mut props = HashMap::new();
        props.insert("holder".into(), string(&lease.holder, true));
        props.insert("session".into(), string(&lease.session, false));
        props.insert("term".into(), integer(lease.term, false));
        if let Some(at) = lease.acquired_at {
            props.insert("acquired_at".into(), timestamp(at, false));
        }
        // Unindexed: nothing queries them, and a pause must not cost index writes.
        if let Some(pause) = &lease.paused {
            props.insert("paused_by".into(), string(&pause.by, false));
            props.insert("paused_at".into(), timestamp(pause.at, false));
            props.insert("paused_note".into(), string(&pause.note, false));
        }
        if let Some(at) = lease.resumed_at {
            props.insert("resumed_at".into(), timestamp(at, false));
        }
        // Unindexed too, and absent when there are none (as in leases written before them).
        if !lease.requests.is_empty() {
            props.insert("requests".into(), string(&lease.requests.encode(), false));
        }
        ds::Entity {
            key: Some(self.key(KIND_LEASE, job)),
            properties: props,
        }
    }

    fn node_entity(&self, node: &NodeRecord) -> ds::Entity {
        let mut props = HashMap::new();
        props.insert("session".into(), string(&node.session, false));
        props.insert("heartbeat".into(), integer(node.heartbeat, false));
        props.insert("lease_epoch".into(), integer(node.lease_epoch, false));
        props.insert("process".into(), string(&node.process, false));
        if let Some(ms) = node.clock_offset_ms {
            props.insert("clock_offset_ms".into(), integer(ms, false));
        }
        props.insert("started_at".into(), timestamp(node.started_at, false));
        props.insert("renewed_at".into(), timestamp(node.renewed_at, false));
        if let Some(http) = &node.http {
            props.insert("http".into(), string(http, false));
        }
        props.insert("jobs_digest".into(), string(&node.jobs_digest, false));
        if node.leaving {
            props.insert("leaving".into(), boolean(true));
        }
        props.insert(
            "jobs".into(),
            ds::Value {
                value_type: Some(ValueType::ArrayValue(ds::ArrayValue {
                    // Informational and unindexed: a heartbeat must not cost an index write
                    // per job, nor grow without bound with 10,000 jobs.
                    values: node
                        .jobs
                        .iter()
                        .take(NODE_JOBS_LISTED)
                        .map(|j| string(j, false))
                        .collect(),
                })),
                ..Default::default()
            },
        );
        props.insert("version".into(), string(env!("CARGO_PKG_VERSION"), true));
        ds::Entity {
            key: Some(self.key(KIND_NODE, &node.id)),
            properties: props,
        }
    }

    /// Deleting a node's record and its definitions (one commit).
    fn node_deletes(&self, id: &str) -> Vec<ds::Mutation> {
        [KIND_NODE, KIND_DEFINITIONS]
            .into_iter()
            .map(|kind| mutation(ds::mutation::Operation::Delete(self.key(kind, id))))
            .collect()
    }

    fn definitions_entity(&self, node: &str, defs: &Definitions) -> StoreResult<ds::Entity> {
        let jobs = serde_json::to_string(&defs.jobs).map_err(|e| {
            StoreError::Other(format!("cannot encode the definitions of {node:?}: {e}"))
        })?;
        let mut props = HashMap::new();
        props.insert("digest".into(), string(&defs.digest, false));
        // One unindexed string, whatever the number of jobs: no index write per job.
        props.insert("jobs".into(), string(&jobs, false));
        props.insert("version".into(), string(env!("CARGO_PKG_VERSION"), false));
        Ok(ds::Entity {
            key: Some(self.key(KIND_DEFINITIONS, node)),
            properties: props,
        })
    }

    fn run_entity(&self, run: &RunRecord) -> ds::Entity {
        ds::Entity {
            key: Some(self.key(KIND_RUN, &RunRecord::key(&run.job, run.fire_time))),
            properties: run_props(run),
        }
    }
}

/// The properties of a `Run` entity (see the module doc).
fn run_props(run: &RunRecord) -> HashMap<String, ds::Value> {
    let mut props = HashMap::new();
    props.insert("job".into(), string(&run.job, true));
    props.insert("fire_time".into(), timestamp(run.fire_time, true));
    props.insert("node".into(), string(&run.node, true));
    props.insert("term".into(), integer(run.term, true));
    props.insert("started_at".into(), timestamp(run.started_at, true));
    if let Some(at) = run.finished_at {
        props.insert("finished_at".into(), timestamp(at, true));
    }
    // Indexed: orphan detection queries the `running` records.
    props.insert("outcome".into(), string(&run.outcome, true));
    if let Some(code) = run.exit_code {
        props.insert("exit_code".into(), integer(code as i64, true));
    }
    props.insert("attempts".into(), integer(run.attempts as i64, false));
    props.insert("session".into(), string(&run.session, false));
    props.insert("process".into(), string(&run.process, false));
    if let Some(reason) = &run.reason {
        props.insert("reason".into(), string(reason, false));
    }
    if run.recovery {
        props.insert("recovery".into(), boolean(true));
    }
    if let Some(trigger) = &run.trigger {
        props.insert("trigger".into(), string(&trigger.encode(), false));
    }
    // Unindexed: an indexed string is limited to 1,500 bytes, an unindexed one to 1 MiB
    // (the tail is at most 256 KiB).
    if !run.output.is_empty() {
        props.insert("output".into(), string(&run.output, false));
    }
    if run.output_cut > 0 {
        let cut = i64::try_from(run.output_cut).unwrap_or(i64::MAX);
        props.insert("output_cut".into(), integer(cut, false));
    }
    props
}

#[async_trait]
impl Store for DatastoreStore {
    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        let announced = change.announced();
        for attempt in 1..=ABORT_RETRIES {
            let mut keys = vec![self.key(KIND_LEASE, job)];
            if announced {
                keys.push(self.key(KIND_CONTROL, CONTROL_EPOCH));
            }
            let Some((tx, found)) = self.begin_contended(keys, attempt).await? else {
                continue;
            };
            // A job without a lease record gets a free one (term 0).
            let mut lease = self
                .or_rollback(&tx, self.lease_in(&found, job))
                .await?
                .unwrap_or_default();
            if !lease.requests.apply(change) {
                self.rollback(tx).await;
                return Ok(false);
            }
            let mut mutations = vec![mutation(ds::mutation::Operation::Upsert(
                self.lease_entity(job, &lease),
            ))];
            if announced {
                mutations.push(self.bump_control(&found));
            }
            match self.commit(Some(tx), mutations).await {
                Ok(_) => return Ok(true),
                // A concurrent acquire, release, claim or control change: look again.
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "changing the requests of {job}: aborted {ABORT_RETRIES} times by conflicting \
             transactions"
        )))
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        let found = self
            .lookup(vec![self.key(KIND_CONTROL, CONTROL_EPOCH)], None)
            .await?;
        Ok(self
            .entity_of(&found, KIND_CONTROL, CONTROL_EPOCH)
            .and_then(|e| get_int(e, "epoch"))
            .unwrap_or(0))
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let found = self.lookup(vec![self.key(KIND_PRUNED, job)], None).await?;
        Ok(self
            .entity_of(&found, KIND_PRUNED, job)
            .and_then(|e| get_time(e, "fire_time")))
    }

    fn describe(&self) -> String {
        if self.emulator {
            format!(
                "datastore emulator at {} (project {}, namespace {})",
                self.endpoint, self.project, self.namespace
            )
        } else {
            format!(
                "datastore (project {}, namespace {})",
                self.project, self.namespace
            )
        }
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let m = mutation(ds::mutation::Operation::Upsert(self.node_entity(node)));
        self.commit(None, vec![m]).await.map_err(map_status)?;
        Ok(())
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        self.commit(None, self.node_deletes(id))
            .await
            .map_err(map_status)?;
        Ok(())
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        let (tx, found) = self.begin_with(vec![self.key(KIND_NODE, id)]).await?;
        let same = found
            .get(&found_key(KIND_NODE, id))
            .and_then(parse_node)
            .is_some_and(|n| n.session == session && n.heartbeat == heartbeat);
        self.commit_if(tx, same, || self.node_deletes(id)).await
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        let entity = self.definitions_entity(node, defs)?;
        let m = mutation(ds::mutation::Operation::Upsert(entity));
        self.commit(None, vec![m]).await.map_err(map_status)?;
        Ok(())
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        let found = self
            .lookup(vec![self.key(KIND_DEFINITIONS, node)], None)
            .await?;
        found
            .get(&found_key(KIND_DEFINITIONS, node))
            .map(|e| parse_definitions(node, e))
            .transpose()
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        let nodes = self.query_all(KIND_NODE, None).await?;
        Ok(nodes
            .iter()
            .filter_map(parse_node)
            .map(|n| (n.id.clone(), n))
            .collect())
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        self.lookup_parsed(KIND_LEASE, jobs, parse_lease).await
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        // A transaction touches at most TX_GROUPS entity groups (each lease and each node
        // record is one): the batch goes in transactions of that size, side by side.
        // Leases that do not exist yet (a cluster's first start, a new job) are created by
        // plain inserts, 500 to a commit: an insert fails if the entity exists, which is the
        // whole compare. The others go in transactions.
        let (absent, present): (Vec<&Acquire>, Vec<&Acquire>) =
            batch.iter().partition(|a| a.observed.lease.is_none());
        let inserts: Vec<_> = absent
            .chunks(INSERT_BATCH)
            .map(|c| self.insert_chunk(c).boxed())
            .collect();
        let chunks = tx_chunks(&present);
        let calls: Vec<_> = chunks
            .iter()
            .map(|c| self.acquire_chunk(c).boxed())
            .chain(inserts)
            .map(|call| self.bulk(call))
            .collect();
        let results = futures::stream::iter(calls)
            .buffer_unordered(TX_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut won = Vec::new();
        let mut error = None;
        for r in results {
            match r {
                Ok(w) => won.extend(w),
                Err(e) => error = Some(e),
            }
        }
        match error {
            // Nothing taken: say why. Some taken: report those; the rest were not written (or
            // their answer was lost, and the next read of the leases finds them).
            Some(e) if won.is_empty() => Err(e),
            _ => Ok(won),
        }
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        // In transactions of TX_GROUPS leases, side by side (a stopping node hands back
        // thousands).
        let calls: Vec<_> = jobs
            .chunks(TX_GROUPS)
            .map(|chunk| self.bulk(self.release_chunk(chunk, node, session)))
            .collect();
        // The first error ends the release: the store is most likely down, and each of the
        // chunks left would wait out its own timeout (a stopping node with 2,000 leases sat
        // 80 s on a store that answered nothing). What is not released expires with this
        // node's record, as after any failed release.
        futures::stream::iter(calls)
            .buffer_unordered(TX_IN_FLIGHT)
            .try_fold(0, |freed, n| async move { Ok(freed + n) })
            .await
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        for attempt in 1..=ABORT_RETRIES {
            let (tx, found) = self
                .begin_with(vec![
                    self.key(KIND_LEASE, job),
                    self.key(KIND_CONTROL, CONTROL_EPOCH),
                ])
                .await?;
            let current = self.or_rollback(&tx, self.lease_in(&found, job)).await?;
            if pause.is_none() && current.is_none() {
                // No record: not paused, nothing to resume.
                self.rollback(tx).await;
                return Ok(false);
            }
            // A job without a lease record gets a free one (term 0).
            let mut lease = current.unwrap_or_default();
            match pause {
                Some(_) if lease.paused.is_some() => {
                    self.rollback(tx).await;
                    return Ok(false); // the first pause stays
                }
                Some(p) => lease.paused = Some(Box::new(p.clone())),
                None if lease.paused.is_none() => {
                    self.rollback(tx).await;
                    return Ok(false);
                }
                None => {
                    lease.paused = None;
                    lease.resumed_at = Some(Utc::now());
                }
            }
            // The change and the bump of the control epoch: one commit.
            let mutations = vec![
                mutation(ds::mutation::Operation::Upsert(
                    self.lease_entity(job, &lease),
                )),
                self.bump_control(&found),
            ];
            match self.commit(Some(tx), mutations).await {
                Ok(_) => return Ok(true),
                // A concurrent acquire, release, pause or request change: look again.
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "pausing or resuming {job}: aborted {ABORT_RETRIES} times by conflicting transactions"
        )))
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        let name = RunRecord::key(&run.job, run.fire_time);
        for attempt in 1..=ABORT_RETRIES {
            // The lease and the pruned watermark, read in the transaction that inserts: a
            // prune that raises the watermark meanwhile aborts this commit. A requested run
            // reads its own key too: it is reported as run before its request is looked at.
            let mut keys = vec![
                self.key(KIND_LEASE, &run.job),
                self.key(KIND_PRUNED, &run.job),
            ];
            if run.trigger.is_some() {
                keys.push(self.key(KIND_RUN, &name));
            }
            let Some((tx, found)) = self.begin_contended(keys, attempt).await? else {
                continue;
            };
            let lease = self
                .or_rollback(&tx, self.lease_in(&found, &run.job))
                .await?;
            let Some(lease) = lease
                .filter(|l| l.holder == run.node && l.session == session && l.term == run.term)
            else {
                self.rollback(tx).await;
                return Ok(Claim::Fenced);
            };
            // Read in this transaction: a pause or a request's removal committed meanwhile
            // aborts the insert. A scheduled run's record is not read: its insert fails if it
            // exists (`AlreadyExists` below), which is the same answer.
            let pruned = self
                .entity_of(&found, KIND_PRUNED, &run.job)
                .and_then(|e| get_time(e, "fire_time"));
            let facts = ClaimFacts::of_holder(
                run,
                lease.paused.is_some(),
                &lease.requests,
                pruned.is_some_and(|p| run.fire_time <= p),
                run.trigger.is_some() && self.entity_of(&found, KIND_RUN, &name).is_some(),
            );
            if let Some(refused) = claim_refusal(&facts) {
                self.rollback(tx).await;
                return Ok(refused);
            }
            let m = mutation(ds::mutation::Operation::Insert(self.run_entity(run)));
            match self.commit(Some(tx), vec![m]).await {
                Ok(_) => return Ok(Claim::Won),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(Claim::AlreadyRun),
                // Contention, not a lost lease: an aborted commit wrote nothing, and the lease
                // is still ours as far as anyone knows. Reported as unavailable (the tick is not
                // run; the claim is checked again later), never as fenced, which would drop the
                // lease and stop its runs.
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "claiming {name}: aborted {ABORT_RETRIES} times by conflicting transactions"
        )))
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        let name = RunRecord::key(&run.job, run.fire_time);
        for attempt in 1..=ABORT_RETRIES {
            let Some((tx, found)) = self
                .begin_contended(vec![self.key(KIND_RUN, &name)], attempt)
                .await?
            else {
                continue;
            };
            let found = found.get(&found_key(KIND_RUN, &name));
            let same = found.and_then(parse_run).is_some_and(|c| {
                c.outcome == RUNNING && c.session == run.session && c.term == run.term
            });
            if !same {
                self.rollback(tx).await;
                return Ok(false);
            }
            let m = mutation(ds::mutation::Operation::Update(self.run_entity(run)));
            match self.commit(Some(tx), vec![m]).await {
                Ok(_) => return Ok(true),
                // Another writer touched the record: look again (it may be closed now).
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "finishing {name}: aborted {ABORT_RETRIES} times"
        )))
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        let name = RunRecord::key(job, fire_time);
        let found = self.lookup(vec![self.key(KIND_RUN, &name)], None).await?;
        Ok(found.get(&found_key(KIND_RUN, &name)).and_then(parse_run))
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let filter = ds::Filter {
            filter_type: Some(ds::filter::FilterType::PropertyFilter(ds::PropertyFilter {
                property: Some(ds::PropertyReference {
                    name: "outcome".into(),
                }),
                op: ds::property_filter::Operator::Equal as i32,
                value: Some(string(RUNNING, true)),
            })),
        };
        Ok(self
            .query_all(KIND_RUN, Some(filter))
            .await?
            .iter()
            .filter_map(parse_run)
            .collect())
    }

    async fn close_orphan(
        &self,
        new: &RunRecord,
        orphan_session: &str,
        fence: &Fence,
    ) -> StoreResult<Claim> {
        let name = RunRecord::key(&new.job, new.fire_time);
        for attempt in 1..=ABORT_RETRIES {
            let (tx, found) = self
                .begin_with(vec![
                    self.key(KIND_LEASE, &new.job),
                    self.key(KIND_RUN, &name),
                ])
                .await?;
            let lease = self
                .or_rollback(&tx, self.lease_in(&found, &new.job))
                .await?
                .filter(|l| {
                    l.holder == fence.node && l.session == fence.session && l.term == fence.term
                });
            let Some(lease) = lease else {
                self.rollback(tx).await;
                return Ok(Claim::Fenced);
            };
            // A recovery is a new run of the job: not while it is paused. Closing as lost is.
            if new.outcome == RUNNING && lease.paused.is_some() {
                self.rollback(tx).await;
                return Ok(Claim::Paused);
            }
            let orphan = self
                .entity_of(&found, KIND_RUN, &name)
                .and_then(parse_run)
                .is_some_and(|c| c.outcome == RUNNING && c.session == orphan_session);
            if !orphan {
                self.rollback(tx).await;
                return Ok(Claim::AlreadyRun);
            }
            let m = mutation(ds::mutation::Operation::Update(self.run_entity(new)));
            match self.commit(Some(tx), vec![m]).await {
                Ok(_) => return Ok(Claim::Won),
                Err(s) if s.code() == Code::Aborted && attempt < ABORT_RETRIES => {
                    contention_pause(attempt).await;
                    continue;
                }
                Err(s) => return Err(map_status(s)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "closing {name}: aborted {ABORT_RETRIES} times by conflicting transactions"
        )))
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self
            .query_all(KIND_RUN, Some(job_filter(job)))
            .await?
            .iter()
            .filter_map(parse_run)
            .collect();
        runs.sort_by_key(|r| r.fire_time);
        Ok(runs)
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut runs: Vec<RunRecord> = self
            .query(Self::runs_query(job, 0, limit, false))
            .await?
            .iter()
            .filter_map(parse_run)
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
        runs.truncate(limit);
        Ok(runs)
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        let mut deleted = 0;
        loop {
            let old = self
                .query(Self::runs_query(job, keep, COMMIT_BATCH, true))
                .await?;
            let n = old.len();
            // Newest first: the first key is the newest fire time this batch deletes. The
            // watermark goes up before anything is deleted.
            if let Some(newest) = old
                .first()
                .and_then(|e| key_name(e.key.as_ref()))
                .and_then(|k| fire_time_of_key(&k))
            {
                self.raise_pruned(job, newest).await?;
            }
            let mutations: Vec<_> = old
                .into_iter()
                .filter_map(|e| e.key)
                .map(|k| mutation(ds::mutation::Operation::Delete(k)))
                .collect();
            if mutations.is_empty() {
                return Ok(deleted);
            }
            self.commit(None, mutations).await.map_err(map_status)?;
            deleted += n;
            if n < COMMIT_BATCH {
                return Ok(deleted);
            }
        }
    }
}

fn job_filter(job: &str) -> ds::Filter {
    ds::Filter {
        filter_type: Some(ds::filter::FilterType::PropertyFilter(ds::PropertyFilter {
            property: Some(ds::PropertyReference { name: "job".into() }),
            op: ds::property_filter::Operator::Equal as i32,
            value: Some(string(job, true)),
        })),
    }
}

/// An error and its sources on one line, innermost last, repeats left out:
/// "transport error: tcp connect error: Connection refused (os error 111)".
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

fn new_client(service: GoogleAuthMiddleware) -> Client {
    DatastoreClient::new(service).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `e` is [`map_status`]'s form of an aborted call (contention: nothing was written).
fn is_aborted(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.starts_with("Aborted:"))
}

/// A random pause before retrying a transaction that contention aborted: 5 ms up to 20 ms per
/// attempt made, so two contenders do not collide again in step.
async fn contention_pause(attempt: usize) {
    let ms = rand::random_range(5..=20 * attempt.max(1) as u64);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Transport trouble and overload are worth retrying; everything else is a refusal.
fn map_status(s: Status) -> StoreError {
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::ResourceExhausted
        | Code::Internal
        | Code::Aborted => StoreError::Unavailable(format!("{:?}: {}", s.code(), s.message())),
        _ => StoreError::Other(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// `batch` in pieces of at most [`TX_GROUPS`] entity groups: its leases and the node records
/// of their distinct holders observed alive.
fn tx_chunks<'a>(batch: &[&'a Acquire]) -> Vec<Vec<&'a Acquire>> {
    let mut chunks: Vec<Vec<&Acquire>> = Vec::new();
    let mut holders: Vec<&str> = Vec::new();
    for &a in batch {
        let holder = a.observed.holder_to_check().unwrap_or("");
        let new_holder = !holder.is_empty() && !holders.contains(&holder);
        let groups = |c: &Vec<&Acquire>, h: &Vec<&str>| c.len() + h.len();
        let fits = chunks
            .last()
            .is_some_and(|c| groups(c, &holders) + 1 + usize::from(new_holder) <= TX_GROUPS);
        if !fits {
            chunks.push(Vec::new());
            holders.clear();
        }
        if !holder.is_empty() && !holders.contains(&holder) {
            holders.push(holder);
        }
        chunks.last_mut().expect("pushed above").push(a);
    }
    chunks
}

fn mutation(op: ds::mutation::Operation) -> ds::Mutation {
    ds::Mutation {
        operation: Some(op),
        ..Default::default()
    }
}

/// How a lookup's found entities are keyed: kind and name (a job's lease and its pruned
/// watermark share a name, and so may a job and a node).
fn found_key(kind: &str, name: &str) -> String {
    format!("{kind}\u{0}{name}")
}

fn found_key_of(key: Option<&ds::Key>) -> Option<String> {
    let kind = &key?.path.last()?.kind;
    Some(found_key(kind, &key_name(key)?))
}

/// The fire time in a run's key name `{job}@{time_key}` (milliseconds included).
fn fire_time_of_key(name: &str) -> Option<DateTime<Utc>> {
    parse_time_key(name.rsplit_once('@')?.1)
}

fn key_name(key: Option<&ds::Key>) -> Option<String> {
    match key?.path.last()?.id_type.as_ref()? {
        IdType::Name(n) => Some(n.clone()),
        IdType::Id(id) => Some(id.to_string()),
    }
}

fn string(s: &str, indexed: bool) -> ds::Value {
    ds::Value {
        value_type: Some(ValueType::StringValue(s.to_string())),
        exclude_from_indexes: !indexed,
        ..Default::default()
    }
}

fn integer(i: i64, indexed: bool) -> ds::Value {
    ds::Value {
        value_type: Some(ValueType::IntegerValue(i)),
        exclude_from_indexes: !indexed,
        ..Default::default()
    }
}

fn boolean(b: bool) -> ds::Value {
    ds::Value {
        value_type: Some(ValueType::BooleanValue(b)),
        exclude_from_indexes: true,
        ..Default::default()
    }
}

fn timestamp(t: DateTime<Utc>, indexed: bool) -> ds::Value {
    ds::Value {
        value_type: Some(ValueType::TimestampValue(
            gcloud_sdk::prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            },
        )),
        exclude_from_indexes: !indexed,
        ..Default::default()
    }
}

fn get_str(e: &ds::Entity, name: &str) -> String {
    match e.properties.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

fn get_int(e: &ds::Entity, name: &str) -> Option<i64> {
    match e.properties.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::IntegerValue(i)) => Some(*i),
        _ => None,
    }
}

fn get_time(e: &ds::Entity, name: &str) -> Option<DateTime<Utc>> {
    match e.properties.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::TimestampValue(t)) => {
            DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        }
        _ => None,
    }
}

/// A `Lease` entity; without `paused_at` (as in leases written before pauses existed) it is
/// not paused, without `requests` it has none; `requests` that do not decode are refused.
fn parse_lease(e: &ds::Entity) -> StoreResult<LeaseRecord> {
    let requests = Requests::decode(&get_str(e, "requests")).map_err(|err| {
        let job = key_name(e.key.as_ref()).unwrap_or_default();
        StoreError::Other(format!("the lease of {job:?}: {err}"))
    })?;
    Ok(LeaseRecord {
        holder: get_str(e, "holder"),
        session: get_str(e, "session"),
        term: get_int(e, "term").unwrap_or(0),
        acquired_at: get_time(e, "acquired_at"),
        paused: get_time(e, "paused_at").map(|at| {
            Box::new(Pause {
                by: get_str(e, "paused_by"),
                at,
                note: get_str(e, "paused_note"),
            })
        }),
        resumed_at: get_time(e, "resumed_at"),
        requests,
    })
}

fn parse_node(e: &ds::Entity) -> Option<NodeRecord> {
    let jobs = match e.properties.get("jobs").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match &v.value_type {
                Some(ValueType::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(NodeRecord {
        id: key_name(e.key.as_ref())?,
        session: get_str(e, "session"),
        heartbeat: get_int(e, "heartbeat").unwrap_or(0),
        started_at: get_time(e, "started_at").unwrap_or_default(),
        renewed_at: get_time(e, "renewed_at").unwrap_or_default(),
        jobs,
        http: Some(get_str(e, "http")).filter(|h| !h.is_empty()),
        lease_epoch: get_int(e, "lease_epoch").unwrap_or(0),
        process: get_str(e, "process"),
        clock_offset_ms: get_int(e, "clock_offset_ms"),
        // Absent in records written before it existed: empty.
        jobs_digest: get_str(e, "jobs_digest"),
        leaving: matches!(
            e.properties
                .get("leaving")
                .and_then(|v| v.value_type.as_ref()),
            Some(ValueType::BooleanValue(true))
        ),
    })
}

/// A `Definitions` entity of node `node`; `jobs` absent reads as no jobs, `jobs` that is not a
/// JSON object of strings is refused.
fn parse_definitions(node: &str, e: &ds::Entity) -> StoreResult<Definitions> {
    let jobs = match e.properties.get("jobs").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(json)) => serde_json::from_str(json).map_err(|err| {
            StoreError::Other(format!(
                "the definitions of node {node:?} are not valid: jobs: {err}"
            ))
        })?,
        _ => Default::default(),
    };
    Ok(Definitions {
        digest: get_str(e, "digest"),
        jobs,
    })
}

fn parse_run(e: &ds::Entity) -> Option<RunRecord> {
    Some(RunRecord {
        job: get_str(e, "job"),
        fire_time: get_time(e, "fire_time")?,
        node: get_str(e, "node"),
        term: get_int(e, "term").unwrap_or(0),
        started_at: get_time(e, "started_at").unwrap_or_default(),
        finished_at: get_time(e, "finished_at"),
        outcome: get_str(e, "outcome"),
        exit_code: get_int(e, "exit_code").map(|c| c as i32),
        // Absent in records written before retries existed: those made one attempt.
        attempts: get_int(e, "attempts")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        session: get_str(e, "session"),
        process: get_str(e, "process"),
        reason: Some(get_str(e, "reason")).filter(|r| !r.is_empty()),
        recovery: matches!(
            e.properties
                .get("recovery")
                .and_then(|v| v.value_type.as_ref()),
            Some(ValueType::BooleanValue(true))
        ),
        // Absent in scheduled runs and in records written before triggers existed. One that
        // does not decode is kept as unknown rather than hiding the run.
        trigger: RunTrigger::decode(&get_str(e, "trigger")).unwrap_or_else(|err| {
            tracing::warn!("run {:?}: {err}", key_name(e.key.as_ref()));
            None
        }),
        // Absent when the run printed nothing and in records written before output was kept.
        output: get_str(e, "output"),
        output_cut: get_int(e, "output_cut")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Observed;

    fn run_entity_without_attempts() -> ds::Entity {
        let mut props = HashMap::new();
        props.insert("job".into(), string("j", true));
        props.insert(
            "fire_time".into(),
            timestamp(DateTime::from_timestamp(1_800_000_000, 0).unwrap(), true),
        );
        props.insert("outcome".into(), string("ok", false));
        ds::Entity {
            key: None,
            properties: props,
        }
    }

    #[test]
    fn definitions_and_the_jobs_digest_read_as_older_records_meant() {
        let key = ds::Key {
            partition_id: None,
            path: vec![ds::key::PathElement {
                kind: KIND_NODE.into(),
                id_type: Some(IdType::Name("n".into())),
            }],
        };
        let mut e = ds::Entity {
            key: Some(key),
            properties: HashMap::new(),
        };
        e.properties.insert("session".into(), string("s", false));
        assert_eq!(parse_node(&e).unwrap().jobs_digest, "", "absent: empty");
        e.properties
            .insert("jobs_digest".into(), string("d1", false));
        assert_eq!(parse_node(&e).unwrap().jobs_digest, "d1");

        let mut d = ds::Entity {
            key: None,
            properties: HashMap::new(),
        };
        d.properties.insert("digest".into(), string("all", false));
        assert_eq!(parse_definitions("n", &d).unwrap().jobs.len(), 0);
        d.properties
            .insert("jobs".into(), string(r#"{"a":"1","b":"2"}"#, false));
        let read = parse_definitions("n", &d).unwrap();
        assert_eq!((read.digest.as_str(), read.jobs.len()), ("all", 2));
        assert_eq!(read.jobs["b"], "2");
        d.properties.insert("jobs".into(), string("[1]", false));
        assert!(matches!(
            parse_definitions("n", &d),
            Err(StoreError::Other(m)) if m.contains("\"n\"")
        ));
    }

    #[test]
    fn a_lease_reads_its_pause_and_older_leases_are_not_paused() {
        let mut e = ds::Entity {
            key: None,
            properties: HashMap::new(),
        };
        e.properties.insert("holder".into(), string("a", true));
        e.properties.insert("term".into(), integer(3, false));
        let old = parse_lease(&e).unwrap();
        assert_eq!((old.term, &old.paused, old.resumed_at), (3, &None, None));
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        e.properties
            .insert("paused_by".into(), string("ops", false));
        e.properties
            .insert("paused_at".into(), timestamp(at, false));
        e.properties
            .insert("resumed_at".into(), timestamp(at, false));
        let paused = parse_lease(&e).unwrap();
        assert_eq!(
            paused.paused,
            Some(Box::new(Pause {
                by: "ops".into(),
                at,
                note: String::new()
            }))
        );
        assert_eq!(paused.resumed_at, Some(at));
        let seen = |l: &LeaseRecord| Observed {
            lease: Some(l.clone()),
            holder_node: Some(("s".into(), 1)),
            handed_over: false,
        };
        assert!(!seen(&paused).still(Some(&old), Some(("s", 1))));
        assert!(seen(&paused).still(Some(&paused.clone()), Some(("s", 1))));
    }

    #[test]
    fn a_lease_reads_its_requests_and_refuses_malformed_ones() {
        let mut e = ds::Entity {
            key: None,
            properties: HashMap::new(),
        };
        e.properties.insert("holder".into(), string("a", true));
        assert!(parse_lease(&e).unwrap().requests.is_empty(), "absent: none");
        e.properties.insert("requests".into(), string("", false));
        assert!(parse_lease(&e).unwrap().requests.is_empty(), "empty: none");
        let mut requests = Requests::default();
        let at = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        assert!(
            requests.apply(&RequestChange::AddTrigger(crate::store::TriggerRequest {
                fire_time: at,
                by: "ops@h".into(),
                expires_at: at + chrono::Duration::hours(1),
                allow_overlap: false,
            }))
        );
        e.properties
            .insert("requests".into(), string(&requests.encode(), false));
        let read = parse_lease(&e).unwrap();
        assert_eq!(read.requests, requests);
        assert!(read.requests.has("1800000000.250"));
        e.properties
            .insert("requests".into(), string("{not json", false));
        assert!(matches!(parse_lease(&e), Err(StoreError::Other(_))));
    }

    #[test]
    fn run_keys_keep_milliseconds_and_read_back() {
        let whole = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let manual = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        assert_eq!(RunRecord::key("j", manual), "j@1800000000.250");
        for t in [whole, manual] {
            assert_eq!(fire_time_of_key(&RunRecord::key("a@b", t)), Some(t));
        }
        assert_eq!(fire_time_of_key("j@1800000000"), Some(whole), "older keys");
        assert_eq!(fire_time_of_key("j@x"), None);
        assert_eq!(fire_time_of_key("j"), None);
        // The timestamp property keeps the milliseconds too.
        let v = timestamp(manual, true);
        let e = ds::Entity {
            key: None,
            properties: HashMap::from([("t".to_string(), v)]),
        };
        assert_eq!(get_time(&e, "t"), Some(manual));
    }

    #[test]
    fn a_run_reads_its_trigger_and_older_runs_have_none() {
        let mut e = run_entity_without_attempts();
        assert_eq!(parse_run(&e).unwrap().trigger, None);
        let trigger = RunTrigger {
            kind: crate::store::MANUAL.into(),
            by: "ops@h".into(),
            request: "1800000000.250".into(),
        };
        e.properties
            .insert("trigger".into(), string(&trigger.encode(), false));
        assert_eq!(parse_run(&e).unwrap().trigger, Some(trigger));
        e.properties.insert("trigger".into(), string("[", false));
        let read = parse_run(&e).expect("a malformed trigger does not hide the run");
        assert_eq!(read.trigger, None);
    }

    #[test]
    fn a_run_keeps_its_output_unindexed_and_older_runs_have_none() {
        let e = run_entity_without_attempts();
        let old = parse_run(&e).unwrap();
        assert_eq!(
            (old.output.as_str(), old.output_cut),
            ("", 0),
            "absent: none"
        );

        let fire = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut run = RunRecord::claimed("j", fire, "a", 1, "s", "p");
        let bare = run_props(&run);
        assert!(!bare.contains_key("output") && !bare.contains_key("output_cut"));
        run.output = "é".repeat(128 * 1024);
        run.output_cut = 1_000_000;
        let props = run_props(&run);
        assert!(
            props["output"].exclude_from_indexes,
            "over 1,500 bytes: unindexed"
        );
        assert!(props["output_cut"].exclude_from_indexes);
        let e = ds::Entity {
            key: None,
            properties: props,
        };
        let read = parse_run(&e).unwrap();
        assert_eq!((read.output, read.output_cut), (run.output, 1_000_000));

        let mut e = e;
        e.properties.insert("output_cut".into(), integer(-1, false));
        assert_eq!(
            parse_run(&e).unwrap().output_cut,
            0,
            "nonsense reads as none"
        );
    }

    #[test]
    fn attempts_default_to_one_when_absent() {
        let mut e = run_entity_without_attempts();
        assert_eq!(parse_run(&e).unwrap().attempts, 1);
        e.properties.insert("attempts".into(), integer(3, false));
        assert_eq!(parse_run(&e).unwrap().attempts, 3);
        e.properties.insert("attempts".into(), integer(0, false));
        assert_eq!(parse_run(&e).unwrap().attempts, 0);
        // Nonsense reads as the default rather than wrapping.
        e.properties.insert("attempts".into(), integer(-4, false));
        assert_eq!(parse_run(&e).unwrap().attempts, 1);
    }
}
