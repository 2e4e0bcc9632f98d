//! PostgreSQL store: the database most teams already run, back up and watch.
//!
//! Layout (schema `cronlease` unless `[store] schema` says otherwise; every key starts with the
//! namespace, so clusters share the tables):
//! - `nodes (ns, id)`: `session` and `heartbeat` as columns (the compare of an acquisition and
//!   of a dead node's removal), the whole record as `jsonb`. No other index, `fillfactor` 70:
//!   heartbeats stay HOT updates and do not bloat the table.
//! - `definitions (ns, node)`: a node's job definitions (`jsonb`), deleted with its record.
//! - `leases (ns, job)`: holder, session, term, pause, resume, the requests (their JSON text and
//!   their ids, which a claim checks), and `pruned_ms`, the job's pruned watermark: in the lease
//!   row, so one row lock orders a claim against a prune.
//! - `control (ns)`: the control epoch.
//! - `runs (ns, job, fire_ms)`: `outcome`, `session`, `term` as columns (the conditions of
//!   finish and orphan closing), the whole record as `jsonb`; a partial index on running runs.
//! - `meta`: the schema's version, so a later release can migrate it (a newer one is refused).
//!
//! How it stays correct without a clock or a session: every call but an acquisition is one
//! statement in autocommit (data-modifying CTEs), so a call that is cancelled never leaves a
//! connection inside a transaction, and nothing depends on session state (no advisory locks, no
//! `SET`, no prepared statements kept: unnamed statements, as PgBouncer's transaction mode
//! needs). Row locks order the races: a claim reads its lease row `FOR SHARE` in the statement
//! that inserts the run, so an acquisition (which locks the row `FOR UPDATE`) or a prune waits
//! for it or makes it fail its fence; READ COMMITTED re-reads the newest row after a wait. An
//! acquisition batch is one short transaction: the holders' node rows `FOR SHARE` (a
//! heartbeat committed meanwhile fails the compare), the lease rows `FOR UPDATE` in job order,
//! the compare in Rust ([`Observed::still`], shared with every backend), then the writes.
//!
//! Connections: a small pool of its own ([`POOL_SIZE`]); every call is bounded by the store
//! timeout, and a connection whose call timed out or failed on the wire is dropped, never
//! reused; a timed-out statement is also cancelled on the server, so one stuck behind a lock
//! does not wait on there holding its own. A server that became a read-only standby after a failover (`25006`), one shutting
//! down or out of connections are [`StoreError::Unavailable`]: retried like a lost network.
//!
//! TLS: the url's `sslmode` as libpq reads it, with rustls ([`super::postgres_tls`]).
//!
//! Limits: with asynchronous replication the last writes before a failover can vanish, so a claimed fire
//! time can run again (README, Stores).
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

use super::json_records::{self, Pause as JsonPause};
use super::postgres_tls::{Connector, TlsSettings};
use super::rules::{claim_result, ClaimFacts};
use super::{
    redact_url as redact, Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause,
    RequestChange, Requests, RunRecord, Store, StoreError, StoreResult, RUNNING,
};

/// Connections per node: a poll, the claims of a busy second and an acquisition batch side by
/// side. The server sees nodes × this many.
pub const POOL_SIZE: usize = 4;
/// The schema version this build writes; a newer one in `meta` is refused.
pub const SCHEMA_VERSION: i32 = 1;
/// A lease read of many jobs goes in chunks of this many names.
const LEASE_CHUNK: usize = 10_000;
/// A compare-and-set of requests lost to a concurrent change is tried again this many times.
const REQUEST_RETRIES: usize = 8;

/// Connect to `url` and make sure the schema exists; every later call is bounded by `timeout`.
pub async fn connect(
    url: &str,
    schema: &str,
    namespace: &str,
    timeout: Duration,
) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(
        PostgresStore::connect(url, schema, namespace, timeout).await?,
    ))
}

/// Check a url without connecting: it parses, asks for nothing this build cannot do, and the
/// trusted certificates it names can be read.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(drop)
}

/// The url's connection settings and TLS connector ([`check_url`] says what is refused).
fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Option<Connector>), String> {
    let cannot =
        |e: &dyn std::fmt::Display| format!("postgres url {:?} cannot be used: {e}", redact(url));
    let tls = TlsSettings::from_url(url).map_err(|e| cannot(&e))?;
    let config = tokio_postgres::Config::from_str(&tls.url).map_err(|e| cannot(&e))?;
    if config.get_hosts().is_empty() {
        return Err(format!("postgres url {:?} names no host", redact(url)));
    }
    let connector = tls.connector().map_err(|e| cannot(&e))?;
    Ok((config, connector))
}

/// A bounded pool of connections of this store's own.
struct Pool {
    config: tokio_postgres::Config,
    /// `None` for `sslmode=disable`.
    tls: Option<Connector>,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection taken from the pool; back to it on drop unless its call went wrong.
struct Conn<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    broken: AtomicBool,
    _permit: OwnedSemaphorePermit,
}

impl Conn<'_> {
    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a pooled connection")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !self.broken.load(Ordering::Relaxed) && !client.is_closed() {
                self.pool.idle.lock().unwrap().push(client);
            }
        }
    }
}

impl Pool {
    async fn get(&self) -> Result<Conn<'_>, tokio_postgres::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().unwrap();
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let client = match idle {
            Some(c) => c,
            None => {
                // Each connection task ends when its client is dropped or the server goes away.
                match &self.tls {
                    None => {
                        let (client, connection) = self.config.connect(NoTls).await?;
                        tokio::spawn(connection);
                        client
                    }
                    Some(tls) => {
                        let (client, connection) = self.config.connect(tls.clone()).await?;
                        tokio::spawn(connection);
                        client
                    }
                }
            }
        };
        Ok(Conn {
            client: Some(client),
            pool: self,
            broken: AtomicBool::new(true),
            _permit: permit,
        })
    }
}

/// The statements, with the schema's name in them.
struct Sql {
    /// `SET LOCAL` of the server-side bounds of an acquisition's transaction.
    bound_transaction: String,
    setup: String,
    version: String,
    control_row: String,
    put_node: String,
    delete_node: String,
    delete_node_if: String,
    put_definitions: String,
    definitions: String,
    nodes: String,
    leases: String,
    lock_nodes: String,
    lock_leases: String,
    insert_leases: String,
    update_leases: String,
    release: String,
    ensure_lease: String,
    pause: String,
    resume: String,
    read_requests: String,
    change_requests: String,
    control_epoch: String,
    pruned_until: String,
    claim: String,
    finish: String,
    get_run: String,
    running_runs: String,
    close_orphan: String,
    runs: String,
    recent_runs: String,
    prune_runs: String,
}

impl Sql {
    fn new(schema: &str, timeout: Duration) -> Sql {
        let s = format!("\"{}\"", schema.replace('"', "\"\""));
        let lease_cols = "job, holder, session, term, acquired_at, paused, resumed_at, requests";
        let ms = timeout.as_millis().max(1000);
        Sql {
            bound_transaction: format!(
                "SET LOCAL idle_in_transaction_session_timeout = {ms}; \
                 SET LOCAL lock_timeout = {ms}"
            ),
            setup: format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.meta (id int PRIMARY KEY, version int NOT NULL);
                 INSERT INTO {s}.meta VALUES (1, {SCHEMA_VERSION}) ON CONFLICT (id) DO NOTHING;
                 CREATE TABLE IF NOT EXISTS {s}.nodes (ns text NOT NULL, id text NOT NULL,
                   session text NOT NULL, heartbeat bigint NOT NULL, record jsonb NOT NULL,
                   written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (ns, id))
                   WITH (fillfactor = 70);
                 CREATE TABLE IF NOT EXISTS {s}.definitions (ns text NOT NULL, node text NOT NULL,
                   record jsonb NOT NULL, PRIMARY KEY (ns, node));
                 CREATE TABLE IF NOT EXISTS {s}.leases (ns text NOT NULL, job text NOT NULL,
                   holder text NOT NULL DEFAULT '', session text NOT NULL DEFAULT '',
                   term bigint NOT NULL DEFAULT 0, acquired_at timestamptz, paused jsonb,
                   resumed_at timestamptz, requests text NOT NULL DEFAULT '',
                   request_ids text[] NOT NULL DEFAULT '{{}}', pruned_ms bigint,
                   PRIMARY KEY (ns, job)) WITH (fillfactor = 70);
                 CREATE TABLE IF NOT EXISTS {s}.control (ns text PRIMARY KEY,
                   epoch bigint NOT NULL DEFAULT 0);
                 CREATE TABLE IF NOT EXISTS {s}.runs (ns text NOT NULL, job text NOT NULL,
                   fire_ms bigint NOT NULL, outcome text NOT NULL, session text NOT NULL,
                   term bigint NOT NULL, record jsonb NOT NULL, PRIMARY KEY (ns, job, fire_ms));
                 CREATE INDEX IF NOT EXISTS runs_running ON {s}.runs (ns)
                   WHERE outcome = 'running';"
            ),
            version: format!("SELECT version FROM {s}.meta WHERE id = 1"),
            control_row: format!(
                "INSERT INTO {s}.control (ns) VALUES ($1) ON CONFLICT (ns) DO NOTHING"
            ),
            put_node: format!(
                "INSERT INTO {s}.nodes (ns, id, session, heartbeat, record) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (ns, id) DO UPDATE SET session = EXCLUDED.session,
                   heartbeat = EXCLUDED.heartbeat, record = EXCLUDED.record, written_at = now()"
            ),
            delete_node: format!(
                "WITH d AS (DELETE FROM {s}.nodes WHERE ns = $1 AND id = $2),
                      dd AS (DELETE FROM {s}.definitions WHERE ns = $1 AND node = $2)
                 SELECT 1"
            ),
            delete_node_if: format!(
                "WITH d AS (DELETE FROM {s}.nodes WHERE ns = $1 AND id = $2 AND session = $3
                              AND heartbeat = $4 RETURNING id),
                      dd AS (DELETE FROM {s}.definitions WHERE ns = $1
                              AND node IN (SELECT id FROM d))
                 SELECT count(*) FROM d"
            ),
            put_definitions: format!(
                "INSERT INTO {s}.definitions (ns, node, record) VALUES ($1, $2, $3)
                 ON CONFLICT (ns, node) DO UPDATE SET record = EXCLUDED.record"
            ),
            definitions: format!(
                "SELECT record FROM {s}.definitions WHERE ns = $1 AND node = $2"
            ),
            nodes: format!("SELECT record FROM {s}.nodes WHERE ns = $1"),
            leases: format!(
                "SELECT {lease_cols} FROM {s}.leases WHERE ns = $1 AND job = ANY($2)"
            ),
            lock_nodes: format!(
                "SELECT id, session, heartbeat FROM {s}.nodes WHERE ns = $1 AND id = ANY($2)
                 ORDER BY id FOR SHARE"
            ),
            lock_leases: format!(
                "SELECT {lease_cols} FROM {s}.leases WHERE ns = $1 AND job = ANY($2)
                 ORDER BY job FOR UPDATE"
            ),
            insert_leases: format!(
                "INSERT INTO {s}.leases (ns, job, holder, session, term, acquired_at)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[],
                                          $6::timestamptz[])
                 ON CONFLICT (ns, job) DO NOTHING RETURNING job"
            ),
            update_leases: format!(
                "UPDATE {s}.leases l SET holder = n.holder, session = n.session, term = n.term,
                   acquired_at = n.acquired_at
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
                   AS n(job, holder, session, term, acquired_at)
                 WHERE l.ns = $1 AND l.job = n.job RETURNING l.job"
            ),
            release: format!(
                "UPDATE {s}.leases SET holder = '', session = ''
                 WHERE (ns, job) IN (SELECT ns, job FROM {s}.leases WHERE ns = $1
                   AND job = ANY($2) AND holder = $3 AND session = $4 ORDER BY job FOR UPDATE)
                   AND holder = $3 AND session = $4"
            ),
            ensure_lease: format!(
                "INSERT INTO {s}.leases (ns, job) VALUES ($1, $2) ON CONFLICT (ns, job) DO NOTHING"
            ),
            pause: format!(
                "WITH c AS (UPDATE {s}.leases SET paused = $3 WHERE ns = $1 AND job = $2
                              AND paused IS NULL RETURNING 1),
                      e AS (UPDATE {s}.control SET epoch = epoch + 1 WHERE ns = $1
                              AND EXISTS (SELECT 1 FROM c))
                 SELECT count(*) FROM c"
            ),
            resume: format!(
                "WITH c AS (UPDATE {s}.leases SET paused = NULL, resumed_at = $3 WHERE ns = $1
                              AND job = $2 AND paused IS NOT NULL RETURNING 1),
                      e AS (UPDATE {s}.control SET epoch = epoch + 1 WHERE ns = $1
                              AND EXISTS (SELECT 1 FROM c))
                 SELECT count(*) FROM c"
            ),
            read_requests: format!(
                "SELECT requests FROM {s}.leases WHERE ns = $1 AND job = $2"
            ),
            change_requests: format!(
                "WITH c AS (UPDATE {s}.leases SET requests = $3, request_ids = $4 WHERE ns = $1
                              AND job = $2 AND requests = $5 RETURNING 1),
                      e AS (UPDATE {s}.control SET epoch = epoch + 1 WHERE ns = $1 AND $6
                              AND EXISTS (SELECT 1 FROM c))
                 SELECT count(*) FROM c"
            ),
            control_epoch: format!("SELECT epoch FROM {s}.control WHERE ns = $1"),
            pruned_until: format!(
                "SELECT pruned_ms FROM {s}.leases WHERE ns = $1 AND job = $2"
            ),
            // $1 ns, $2 job, $3 node, $4 session, $5 term, $6 request id (NULL: scheduled),
            // $7 fire_ms, $8 outcome, $9 record.
            claim: format!(
                "WITH l AS (SELECT holder, session, term, paused, request_ids, pruned_ms
                            FROM {s}.leases WHERE ns = $1 AND job = $2 FOR SHARE),
                      f AS (SELECT (l.holder = $3 AND l.session = $4 AND l.term = $5) AS fenced_ok,
                              l.paused IS NOT NULL AS paused,
                              ($6::text IS NOT NULL AND $6::text = ANY(l.request_ids)) AS pending,
                              (l.pruned_ms IS NOT NULL AND $7 <= l.pruned_ms) AS too_old
                            FROM l),
                      i AS (INSERT INTO {s}.runs (ns, job, fire_ms, outcome, session, term, record)
                            SELECT $1, $2, $7, $8, $4, $5, $9 FROM f
                            WHERE f.fenced_ok AND NOT f.too_old
                              AND CASE WHEN $6::text IS NULL THEN NOT f.paused ELSE f.pending END
                            ON CONFLICT (ns, job, fire_ms) DO NOTHING RETURNING 1)
                 SELECT (SELECT count(*) FROM i) AS inserted, f.fenced_ok, f.paused, f.pending,
                   f.too_old, EXISTS (SELECT 1 FROM {s}.runs WHERE ns = $1 AND job = $2
                                      AND fire_ms = $7) AS existed
                 FROM f"
            ),
            // $1 ns, $2 job, $3 fire_ms, $4 session, $5 term, $6 outcome, $7 record.
            finish: format!(
                "UPDATE {s}.runs SET outcome = $6, record = $7 WHERE ns = $1 AND job = $2
                   AND fire_ms = $3 AND outcome = 'running' AND session = $4 AND term = $5"
            ),
            get_run: format!(
                "SELECT record FROM {s}.runs WHERE ns = $1 AND job = $2 AND fire_ms = $3"
            ),
            running_runs: format!(
                "SELECT record FROM {s}.runs WHERE ns = $1 AND outcome = 'running'"
            ),
            // $1 ns, $2 job, $3 fire_ms, $4 orphan session, $5 fence node, $6 fence session,
            // $7 fence term, $8 recovery (refused while paused), $9 outcome, $10 session,
            // $11 term, $12 record.
            close_orphan: format!(
                "WITH l AS (SELECT holder, session, term, paused FROM {s}.leases
                            WHERE ns = $1 AND job = $2 FOR SHARE),
                      f AS (SELECT (l.holder = $5 AND l.session = $6 AND l.term = $7) AS fenced_ok,
                              l.paused IS NOT NULL AS paused FROM l),
                      u AS (UPDATE {s}.runs r SET outcome = $9, session = $10, term = $11,
                              record = $12
                            FROM f WHERE r.ns = $1 AND r.job = $2 AND r.fire_ms = $3
                              AND r.outcome = 'running' AND r.session = $4 AND f.fenced_ok
                              AND NOT ($8 AND f.paused)
                            RETURNING 1)
                 SELECT (SELECT count(*) FROM u) AS updated, f.fenced_ok, f.paused FROM f"
            ),
            runs: format!(
                "SELECT record FROM {s}.runs WHERE ns = $1 AND job = $2 ORDER BY fire_ms"
            ),
            recent_runs: format!(
                "SELECT record FROM {s}.runs WHERE ns = $1 AND job = $2
                 ORDER BY fire_ms DESC LIMIT $3"
            ),
            // The watermark first (a scalar subquery of the delete): it waits for a claim
            // holding the lease row, so nothing is deleted under a claim.
            prune_runs: format!(
                "WITH v AS (SELECT fire_ms FROM {s}.runs WHERE ns = $1 AND job = $2
                            ORDER BY fire_ms DESC OFFSET $3),
                      m AS (UPDATE {s}.leases SET pruned_ms = greatest(coalesce(pruned_ms, -1),
                              (SELECT max(fire_ms) FROM v))
                            WHERE ns = $1 AND job = $2 AND EXISTS (SELECT 1 FROM v)
                            RETURNING pruned_ms),
                      d AS (DELETE FROM {s}.runs r WHERE r.ns = $1 AND r.job = $2
                              AND r.fire_ms <= (SELECT pruned_ms FROM m)
                              AND r.fire_ms IN (SELECT fire_ms FROM v) RETURNING 1)
                 SELECT count(*) FROM d"
            ),
        }
    }
}

pub struct PostgresStore {
    shown: String,
    schema: String,
    ns: String,
    timeout: Duration,
    pool: Pool,
    sql: Sql,
}

impl PostgresStore {
    /// Connect to `url`, create the schema if it is missing (several nodes may do so at once)
    /// and check its version. A url that cannot be used, or a schema this build cannot use, is
    /// [`StoreError::Other`]; a server that cannot be reached in time is
    /// [`StoreError::Unavailable`].
    pub async fn connect(
        url: &str,
        schema: &str,
        namespace: &str,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let shown = redact(url);
        let (mut config, tls) = parse_url(url).map_err(StoreError::Other)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .tcp_user_timeout(timeout * 2);
        if config.get_application_name().is_none() {
            config.application_name("cronlease");
        }
        let store = PostgresStore {
            shown,
            schema: schema.to_string(),
            ns: namespace.to_string(),
            timeout,
            pool: Pool {
                config,
                tls,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(POOL_SIZE)),
            },
            sql: Sql::new(schema, timeout),
        };
        store.setup().await?;
        Ok(store)
    }

    /// Make sure the schema is there at a version this build knows. A schema already at this
    /// version is used as it is, with no DDL: a user that may only read and write its tables
    /// (a schema its DBA made) needs no right to create anything. Otherwise the missing objects
    /// are created, race-free: concurrent `CREATE ... IF NOT EXISTS` of the same object can
    /// fail with a duplicate (another node made it first), which is tried again.
    async fn setup(&self) -> StoreResult<()> {
        // No row (a `meta` table left without one) is a schema to complete, not an outage.
        let version = self
            .call("setup", async |c: &mut Client| {
                match c.query_typed_opt(&self.sql.version, &[]).await? {
                    Some(row) => row.try_get::<_, i32>(0).map(Some),
                    None => Ok(None),
                }
            })
            .await;
        let version = match version {
            Ok(Some(v)) if v >= SCHEMA_VERSION => v,
            Err(StoreError::Other(m)) if !m.contains("(3F000)") && !m.contains("(42P01)") => {
                return Err(self.explain_setup(StoreError::Other(m)));
            }
            Err(StoreError::Unavailable(m)) => return Err(self.explain_tls(m)),
            _ => self.create().await?,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Other(format!(
                "the postgres schema {:?} is at version {version}, newer than this cronlease \
                 knows ({SCHEMA_VERSION}): upgrade cronlease on this node",
                self.schema
            )));
        }
        let ns = self.ns.clone();
        self.call("setup", async |c: &mut Client| {
            c.execute_typed(&self.sql.control_row, &[text(&ns)])
                .await
                .map(drop)
        })
        .await
        .map_err(|e| self.explain_setup(e))
    }

    /// Create the missing objects (see [`PostgresStore::setup`]); the schema's version after.
    async fn create(&self) -> StoreResult<i32> {
        let mut last = None;
        for _ in 0..5 {
            let result = self
                .call("setup", async |c: &mut Client| {
                    // One simple query: one implicit transaction, rolled back whole on an error.
                    c.batch_execute(&self.sql.setup).await
                })
                .await;
            match result {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    let retry = matches!(&e, StoreError::Other(m) if m.contains("duplicate")
                        || m.contains("already exists"));
                    if !retry {
                        return Err(self.explain_setup(e));
                    }
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if let Some(e) = last {
            return Err(self.explain_setup(e));
        }
        self.call("setup", async |c: &mut Client| {
            c.query_typed_one(&self.sql.version, &[]).await?.try_get(0)
        })
        .await
    }

    /// A connection that failed at the first call for a TLS reason is a configuration error
    /// (retrying would not change the server's certificate): said with what to do. Anything
    /// else stays unavailable.
    fn explain_tls(&self, m: String) -> StoreError {
        // Matched on the errors' own words, never on the url the message also shows.
        let advice = if m.contains("invalid peer certificate") {
            "check sslrootcert (the CA that signed the server's certificate) and, with \
             sslmode=verify-full, that the certificate names the host in the url"
        } else if m.contains("server does not support TLS") {
            "enable ssl on the server, or use sslmode=prefer or disable on a trusted network"
        } else {
            return StoreError::Unavailable(m);
        };
        StoreError::Other(format!("postgres at {}: {m}; {advice}", self.shown))
    }

    /// What to do about an error of the first calls, which show a wrong url or missing rights.
    fn explain_setup(&self, e: StoreError) -> StoreError {
        let StoreError::Other(m) = e else { return e };
        let s = &self.schema;
        let advice = if m.contains("no encryption") {
            "the server lets this user in only over TLS: set sslmode=require (or verify-full \
             with sslrootcert) in [store] url"
                .to_string()
        } else if m.contains("(28P01)") || m.contains("(28000)") {
            "check the user and password in [store] url, and that the server's pg_hba.conf \
             lets this host in as that user"
                .to_string()
        } else if m.contains("(3D000)") {
            "create the database (CREATE DATABASE ...) or name an existing one in [store] url"
                .to_string()
        } else if m.contains("(42501)") || m.contains("must be owner") {
            format!(
                "this user may not create or use the schema {s:?}: let it own the schema \
                 (CREATE SCHEMA {s} AUTHORIZATION <user>), or have the schema's owner run \
                 GRANT USAGE ON SCHEMA {s} TO <user>; GRANT SELECT, INSERT, UPDATE, DELETE ON \
                 ALL TABLES IN SCHEMA {s} TO <user>, or name another with [store] schema"
            )
        } else {
            return StoreError::Other(m);
        };
        StoreError::Other(format!("postgres at {}: {m}; {advice}", self.shown))
    }

    /// Run `f` on a pooled connection, the whole call (waiting for a connection included)
    /// bounded by the store timeout. A connection whose call timed out or failed other than
    /// with an answer from the server is dropped.
    async fn call<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<T> {
        let cancel: Mutex<Option<tokio_postgres::CancelToken>> = Mutex::new(None);
        let work = async {
            let mut conn = self.pool.get().await?;
            *cancel.lock().unwrap() = Some(conn.client().cancel_token());
            let result = f(conn.client()).await;
            // Broken until shown otherwise: a call cut off by the timeout drops its connection
            // mid-statement, and that connection must not be reused.
            let fine = match &result {
                Ok(_) => true,
                Err(e) => e.as_db_error().is_some() && !unavailable_code(e.code()),
            };
            conn.broken.store(!fine, Ordering::Relaxed);
            result
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(what, e)),
            Err(_) => {
                // The statement may still run on the server (waiting for a lock, holding
                // others): ask the server to cancel it, in the background.
                if let Some(token) = cancel.lock().unwrap().take() {
                    // Over TLS as the connection was (a server may refuse plain ones).
                    let tls = self.pool.tls.clone();
                    tokio::spawn(async move {
                        let _ = match tls {
                            None => token.cancel_query(NoTls).await,
                            Some(tls) => token.cancel_query(tls).await,
                        };
                    });
                }
                Err(StoreError::Unavailable(format!(
                    "{what}: no answer from postgres within {:?}",
                    self.timeout
                )))
            }
        }
    }

    fn map_error(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        let text = match e.as_db_error() {
            Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
            None if e.to_string().starts_with("error connecting to server") => format!(
                "{what}: {} ({}); is the server running there and accepting connections \
                 from this host?",
                with_causes(&e),
                self.shown
            ),
            None => format!("{what}: {} ({})", with_causes(&e), self.shown),
        };
        if e.as_db_error().is_none() || unavailable_code(e.code()) {
            StoreError::Unavailable(text)
        } else {
            StoreError::Other(text)
        }
    }

    fn rows_to<T: serde::de::DeserializeOwned>(rows: Vec<Row>) -> StoreResult<Vec<T>> {
        rows.into_iter()
            .map(|r| {
                let v: serde_json::Value = r
                    .try_get(0)
                    .map_err(|e| StoreError::Other(format!("a postgres record: {e}")))?;
                serde_json::from_value(v)
                    .map_err(|e| StoreError::Other(format!("a malformed postgres record: {e}")))
            })
            .collect()
    }
}

/// An error with its causes, `a: b: c` (a connection error's own text does not say why).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Codes that mean "not now" rather than "no": connection trouble, a server shutting down or
/// out of connections, a standby (read-only after a failover), serialization or deadlock
/// aborts, a lock wait past `lock_timeout`.
fn unavailable_code(code: Option<&SqlState>) -> bool {
    let Some(code) = code else { return true };
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("57P")
        || c.starts_with("53")
        || c == SqlState::READ_ONLY_SQL_TRANSACTION.code()
        || c == SqlState::T_R_SERIALIZATION_FAILURE.code()
        || c == SqlState::T_R_DEADLOCK_DETECTED.code()
        || c == SqlState::ADMIN_SHUTDOWN.code()
        || c == SqlState::QUERY_CANCELED.code()
        || c == SqlState::LOCK_NOT_AVAILABLE.code()
}

/// A parameter with its type. Statements go with their parameters' types (`query_typed`):
/// one round trip, an unnamed statement. Untyped, the client first prepares a named statement
/// to learn the types: a second round trip, and a statement that PgBouncer in transaction mode
/// may have bound to another server connection by the time it is executed.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// The helpers that type a parameter: `text(&x)` is `(&x, Type::TEXT)`.
macro_rules! typed {
    ($($name:ident => $ty:ident),* $(,)?) => {
        $(
            fn $name(v: &(dyn ToSql + Sync)) -> Param<'_> {
                (v, Type::$ty)
            }
        )*
    };
}

typed!(
    text => TEXT,
    texts => TEXT_ARRAY,
    int8 => INT8,
    int8s => INT8_ARRAY,
    jsonb => JSONB,
    stamp => TIMESTAMPTZ,
    stamps => TIMESTAMPTZ_ARRAY,
    boolean => BOOL,
);

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("records serialize")
}

fn fire_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn lease_of(row: &Row) -> StoreResult<(String, LeaseRecord)> {
    let bad = |e: tokio_postgres::Error| StoreError::Other(format!("a postgres lease row: {e}"));
    let paused: Option<serde_json::Value> = row.try_get(5).map_err(bad)?;
    let paused = paused
        .map(|v| {
            serde_json::from_value::<JsonPause>(v)
                .map(|p| Box::new(Pause::from(p)))
                .map_err(|e| StoreError::Other(format!("a malformed pause in a lease: {e}")))
        })
        .transpose()?;
    let requests: String = row.try_get(7).map_err(bad)?;
    Ok((
        row.try_get(0).map_err(bad)?,
        LeaseRecord {
            holder: row.try_get(1).map_err(bad)?,
            session: row.try_get(2).map_err(bad)?,
            term: row.try_get(3).map_err(bad)?,
            acquired_at: row.try_get(4).map_err(bad)?,
            paused,
            resumed_at: row.try_get(6).map_err(bad)?,
            requests: Requests::decode(&requests)?,
        },
    ))
}

/// The ids of the pending requests, which a claim checks.
fn request_ids(r: &Requests) -> Vec<String> {
    r.triggers
        .iter()
        .map(|t| t.id())
        .chain(r.backfill.iter().map(|b| b.id.clone()))
        .collect()
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        format!(
            "postgres ({}, schema {}, namespace {})",
            self.shown, self.schema, self.ns
        )
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let record = json(&json_records::Node::from(node));
        self.call("put_node", async |c: &mut Client| {
            c.execute_typed(
                &self.sql.put_node,
                &[
                    text(&self.ns),
                    text(&node.id),
                    text(&node.session),
                    int8(&node.heartbeat),
                    jsonb(&record),
                ],
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        self.call("delete_node", async |c: &mut Client| {
            c.query_typed(&self.sql.delete_node, &[text(&self.ns), text(&id)])
                .await
                .map(drop)
        })
        .await
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        let n: i64 = self
            .call("delete_node_if", async |c: &mut Client| {
                c.query_typed_one(
                    &self.sql.delete_node_if,
                    &[text(&self.ns), text(&id), text(&session), int8(&heartbeat)],
                )
                .await?
                .try_get(0)
            })
            .await?;
        Ok(n > 0)
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        let record = json(&json_records::Definitions::from(defs));
        self.call("put_definitions", async |c: &mut Client| {
            c.execute_typed(
                &self.sql.put_definitions,
                &[text(&self.ns), text(&node), jsonb(&record)],
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        let rows = self
            .call("definitions", async |c: &mut Client| {
                c.query_typed(&self.sql.definitions, &[text(&self.ns), text(&node)])
                    .await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Definitions>(rows)?
            .pop()
            .map(Definitions::from))
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        let rows = self
            .call("nodes", async |c: &mut Client| {
                c.query_typed(&self.sql.nodes, &[text(&self.ns)]).await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Node>(rows)?
            .into_iter()
            .map(|n| (n.id.clone(), NodeRecord::from(n)))
            .collect())
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        let mut all = HashMap::with_capacity(jobs.len());
        for chunk in jobs.chunks(LEASE_CHUNK) {
            let rows = self
                .call("leases", async |c: &mut Client| {
                    c.query_typed(&self.sql.leases, &[text(&self.ns), texts(&chunk)])
                        .await
                })
                .await?;
            for row in &rows {
                let (job, lease) = lease_of(row)?;
                all.insert(job, lease);
            }
        }
        Ok(all)
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut holders: Vec<&str> = batch
            .iter()
            .filter_map(|a| a.observed.holder_to_check())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let mut jobs: Vec<&str> = batch.iter().map(|a| a.job.as_str()).collect();
        jobs.sort_unstable();
        self.call("acquire_many", async |c: &mut Client| {
            let tx = c.transaction().await?;
            // The only transaction that spans round trips holds row locks between them: if
            // this node froze (SIGSTOP, a paused VM) or its network went mid-way, every claim
            // of these jobs would wait behind them until the server noticed the connection
            // dead, which can take hours. Bounded on the server instead, for this transaction
            // only (SET LOCAL: no session state, fine behind PgBouncer).
            tx.batch_execute(&self.sql.bound_transaction).await?;
            let mut nodes: HashMap<String, (String, i64)> = HashMap::new();
            if !holders.is_empty() {
                for row in tx
                    .query_typed(&self.sql.lock_nodes, &[text(&self.ns), texts(&holders)])
                    .await?
                {
                    nodes.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
                }
            }
            let mut stored: HashMap<String, LeaseRecord> = HashMap::new();
            for row in tx
                .query_typed(&self.sql.lock_leases, &[text(&self.ns), texts(&jobs)])
                .await?
            {
                // A row that does not parse compares as changed: nothing is written over it.
                if let Ok((job, lease)) = lease_of(&row) {
                    stored.insert(job, lease);
                }
            }
            let (mut new, mut old) = (Columns::default(), Columns::default());
            for a in batch {
                let now = stored.get(&a.job);
                // Only a holder to check was read (and locked); for the others the lease
                // compare is the whole compare ([`Observed::holder_to_check`]).
                let holder_now = a
                    .observed
                    .holder_to_check()
                    .and_then(|h| nodes.get(h))
                    .map(|(s, h)| (s.as_str(), *h));
                if !a.observed.still(now, holder_now) {
                    continue;
                }
                let record = a.record(now);
                let columns = if now.is_some() { &mut old } else { &mut new };
                columns.push(&a.job, &record);
            }
            let mut won: Vec<String> = Vec::new();
            for (sql, cols) in [
                (&self.sql.insert_leases, &new),
                (&self.sql.update_leases, &old),
            ] {
                if cols.job.is_empty() {
                    continue;
                }
                let params = [
                    text(&self.ns),
                    texts(&cols.job),
                    texts(&cols.holder),
                    texts(&cols.session),
                    int8s(&cols.term),
                    stamps(&cols.acquired_at),
                ];
                for row in tx.query_typed(sql.as_str(), &params).await? {
                    won.push(row.try_get(0)?);
                }
            }
            tx.commit().await?;
            Ok(won)
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let n = self
            .call("release", async |c: &mut Client| {
                c.execute_typed(
                    &self.sql.release,
                    &[text(&self.ns), texts(&jobs), text(&node), text(&session)],
                )
                .await
            })
            .await?;
        Ok(n as usize)
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        self.call("set_pause", async |c: &mut Client| {
            let row = match pause {
                // A job with no lease record gets a free one to hold the pause; a resume of
                // such a job has nothing to do and writes nothing.
                Some(p) => {
                    c.execute_typed(&self.sql.ensure_lease, &[text(&self.ns), text(&job)])
                        .await?;
                    let p = json(&JsonPause::from(p));
                    c.query_typed_one(&self.sql.pause, &[text(&self.ns), text(&job), jsonb(&p)])
                        .await?
                }
                None => {
                    let now = Utc::now();
                    c.query_typed_one(&self.sql.resume, &[text(&self.ns), text(&job), stamp(&now)])
                        .await?
                }
            };
            Ok(row.try_get::<_, i64>(0)? > 0)
        })
        .await
    }

    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        let announced = change.announced();
        for _ in 0..REQUEST_RETRIES {
            let outcome = self
                .call("change_request", async |c: &mut Client| {
                    c.execute_typed(&self.sql.ensure_lease, &[text(&self.ns), text(&job)])
                        .await?;
                    let old: String = c
                        .query_typed_one(&self.sql.read_requests, &[text(&self.ns), text(&job)])
                        .await?
                        .try_get(0)?;
                    Ok(old)
                })
                .await?;
            let mut requests = Requests::decode(&outcome)?;
            if !requests.apply(change) {
                return Ok(false);
            }
            let new = requests.encode();
            let ids = request_ids(&requests);
            let changed: i64 = self
                .call("change_request", async |c: &mut Client| {
                    c.query_typed_one(
                        &self.sql.change_requests,
                        &[
                            text(&self.ns),
                            text(&job),
                            text(&new),
                            texts(&ids),
                            text(&outcome),
                            boolean(&announced),
                        ],
                    )
                    .await?
                    .try_get(0)
                })
                .await?;
            if changed > 0 {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "changing the requests of {job}: lost to concurrent changes {REQUEST_RETRIES} times"
        )))
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        let rows = self
            .call("control_epoch", async |c: &mut Client| {
                c.query_typed(&self.sql.control_epoch, &[text(&self.ns)])
                    .await
            })
            .await?;
        match rows.first() {
            Some(r) => r
                .try_get(0)
                .map_err(|e| StoreError::Other(format!("the control epoch: {e}"))),
            None => Ok(0),
        }
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let rows = self
            .call("pruned_until", async |c: &mut Client| {
                c.query_typed(&self.sql.pruned_until, &[text(&self.ns), text(&job)])
                    .await
            })
            .await?;
        let ms: Option<i64> = match rows.first() {
            Some(r) => r
                .try_get(0)
                .map_err(|e| StoreError::Other(format!("a pruned watermark: {e}")))?,
            None => None,
        };
        Ok(ms.and_then(DateTime::from_timestamp_millis))
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        let request: Option<&str> = run.trigger.as_ref().map(|t| t.request.as_str());
        let record = json(&json_records::Run::from(run));
        let at = fire_ms(run.fire_time);
        let rows = self
            .call("claim", async |c: &mut Client| {
                c.query_typed(
                    &self.sql.claim,
                    &[
                        text(&self.ns),
                        text(&run.job),
                        text(&run.node),
                        text(&session),
                        int8(&run.term),
                        text(&request),
                        int8(&at),
                        text(&run.outcome),
                        jsonb(&record),
                    ],
                )
                .await
            })
            .await?;
        // No lease row at all: nobody holds it, least of all this node.
        let Some(row) = rows.first() else {
            return Ok(Claim::Fenced);
        };
        let get = |i: usize| -> StoreResult<bool> {
            row.try_get::<_, Option<bool>>(i)
                .map(|b| b.unwrap_or(false))
                .map_err(|e| StoreError::Other(format!("a claim's answer: {e}")))
        };
        let inserted: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::Other(format!("a claim's answer: {e}")))?;
        let facts = ClaimFacts {
            fenced_ok: get(1)?,
            requested: request.is_some(),
            paused: get(2)?,
            pending: get(3)?,
            too_old: get(4)?,
            existed: get(5)?,
        };
        Ok(claim_result(&facts, inserted > 0))
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        let record = json(&json_records::Run::from(run));
        let at = fire_ms(run.fire_time);
        let n = self
            .call("finish", async |c: &mut Client| {
                c.execute_typed(
                    &self.sql.finish,
                    &[
                        text(&self.ns),
                        text(&run.job),
                        int8(&at),
                        text(&run.session),
                        int8(&run.term),
                        text(&run.outcome),
                        jsonb(&record),
                    ],
                )
                .await
            })
            .await?;
        Ok(n > 0)
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        let at = fire_ms(fire_time);
        let rows = self
            .call("get_run", async |c: &mut Client| {
                c.query_typed(&self.sql.get_run, &[text(&self.ns), text(&job), int8(&at)])
                    .await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Run>(rows)?
            .pop()
            .map(RunRecord::from))
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let rows = self
            .call("running_runs", async |c: &mut Client| {
                c.query_typed(&self.sql.running_runs, &[text(&self.ns)])
                    .await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Run>(rows)?
            .into_iter()
            .map(RunRecord::from)
            .collect())
    }

    async fn close_orphan(
        &self,
        new: &RunRecord,
        orphan_session: &str,
        fence: &Fence,
    ) -> StoreResult<Claim> {
        let record = json(&json_records::Run::from(new));
        let at = fire_ms(new.fire_time);
        let recovery = new.outcome == RUNNING;
        let rows = self
            .call("close_orphan", async |c: &mut Client| {
                c.query_typed(
                    &self.sql.close_orphan,
                    &[
                        text(&self.ns),
                        text(&new.job),
                        int8(&at),
                        text(&orphan_session),
                        text(&fence.node),
                        text(&fence.session),
                        int8(&fence.term),
                        boolean(&recovery),
                        text(&new.outcome),
                        text(&new.session),
                        int8(&new.term),
                        jsonb(&record),
                    ],
                )
                .await
            })
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Claim::Fenced);
        };
        let bad = |e: tokio_postgres::Error| StoreError::Other(format!("an orphan's answer: {e}"));
        let updated: i64 = row.try_get(0).map_err(bad)?;
        let fenced_ok: Option<bool> = row.try_get(1).map_err(bad)?;
        let paused: bool = row.try_get(2).map_err(bad)?;
        Ok(if !fenced_ok.unwrap_or(false) {
            Claim::Fenced
        } else if recovery && paused {
            Claim::Paused
        } else if updated > 0 {
            Claim::Won
        } else {
            Claim::AlreadyRun
        })
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        let rows = self
            .call("runs", async |c: &mut Client| {
                c.query_typed(&self.sql.runs, &[text(&self.ns), text(&job)])
                    .await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Run>(rows)?
            .into_iter()
            .map(RunRecord::from)
            .collect())
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .call("recent_runs", async |c: &mut Client| {
                c.query_typed(
                    &self.sql.recent_runs,
                    &[text(&self.ns), text(&job), int8(&limit)],
                )
                .await
            })
            .await?;
        Ok(Self::rows_to::<json_records::Run>(rows)?
            .into_iter()
            .map(RunRecord::from)
            .collect())
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        let keep = keep.min(i64::MAX as usize) as i64;
        let n: i64 = self
            .call("prune_runs", async |c: &mut Client| {
                c.query_typed_one(
                    &self.sql.prune_runs,
                    &[text(&self.ns), text(&job), int8(&keep)],
                )
                .await?
                .try_get(0)
            })
            .await?;
        Ok(n as usize)
    }
}

/// The columns of a batch of lease writes, for `unnest`.
#[derive(Default)]
struct Columns {
    job: Vec<String>,
    holder: Vec<String>,
    session: Vec<String>,
    term: Vec<i64>,
    acquired_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns {
    fn push(&mut self, job: &str, l: &LeaseRecord) {
        self.job.push(job.to_string());
        self.holder.push(l.holder.clone());
        self.session.push(l.session.clone());
        self.term.push(l.term);
        self.acquired_at.push(l.acquired_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::is_postgres_url;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/jobs"),
            "postgres://app:***@db:5432/jobs"
        );
        assert_eq!(
            redact("postgresql://app@db/jobs?password=s3cret&sslmode=disable"),
            "postgresql://app@db/jobs?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db/jobs"), "postgres://db/jobs");
        // Unencoded `?`, `/` or `@` in a password: masked whole, however a parser reads it.
        for url in [
            "postgres://app:p?w@db/jobs",
            "postgres://app:p/w@db/jobs",
            "postgres://app:p@w@db/jobs",
            "postgres://app:p?w@db/jobs?sslmode=require",
        ] {
            let shown = redact(url);
            assert!(
                shown.starts_with("postgres://app:***@db/jobs"),
                "{url} → {shown}"
            );
        }
        assert_eq!(
            redact("postgres://a:b@h1:5432,h2:5432/db?target_session_attrs=read-write"),
            "postgres://a:***@h1:5432,h2:5432/db?target_session_attrs=read-write"
        );
    }

    #[test]
    fn urls_are_checked_without_connecting() {
        assert!(check_url("postgres://app@db:5432/jobs").is_ok());
        assert!(check_url("postgresql://app@h1,h2/jobs?target_session_attrs=read-write").is_ok());
        assert!(check_url("postgres://app:pw@db/jobs?sslmode=require").is_ok());
        let e = check_url("postgres://app:pw@db/jobs?sslmode=verify-ca&sslrootcert=/no/ca.pem")
            .unwrap_err();
        assert!(e.contains("/no/ca.pem") && !e.contains("pw@"), "{e}");
        assert!(check_url("postgres://db/jobs?sslmode=bogus").is_err());
        assert!(is_postgres_url("PostgreSQL://x/y") && !is_postgres_url("redis://x"));
    }
}
