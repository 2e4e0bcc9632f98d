//! The Redis store (cargo feature `redis`): one Redis server (or a primary) shared by nodes on
//! many hosts.
//!
//! Keys, all under `cronlease:{namespace}:` (`P` below):
//!
//! ```text
//! P:lease:{job}          hash  holder, session, term, acquired_at; paused_by, paused_at,
//!                              paused_note while the job is paused (no paused_at: not paused,
//!                              as in leases written before pauses existed); resumed_at once
//!                              it was resumed; requests (`Requests::encode`, JSON) and
//!                              request_ids (their ids, a JSON array of strings) while the
//!                              job has pending operator requests (absent or empty: none)
//! P:control              string  the control epoch (an integer; absent: 0), INCRed by the
//!                              script that makes an announced change (pause, resume, request)
//! P:node:{id}            hash  id, session, heartbeat, lease_epoch, started_at, renewed_at, jobs,
//!                              http, version, process, clock_offset_ms, jobs_digest,
//!                              leaving ("1" while the node is stopping; absent otherwise)
//! P:nodes                set   every node id with a record (the snapshot's index of nodes)
//! P:defs:{id}            string  the node's job definitions, JSON {"digest":..,"jobs":{..}};
//!                              deleted with the node record
//! P:run:{job}:{time}     hash  job, fire_time, node, term, started_at, finished_at, outcome,
//!                              exit_code, attempts, session, process, reason, recovery;
//!                              trigger (`RunTrigger::encode`, JSON) for a requested run;
//!                              output (the tail of what it printed, UTF-8, up to 256 KiB)
//!                              and output_cut (bytes dropped before it, an integer) when
//!                              not empty/0 (absent: none, as in older records)
//! P:runs:{job}           zset  the fire times ({time}) of a job's runs, scored by them as
//!                              decimal unix seconds (so milliseconds order too)
//! P:running              set   `{job}@{time}` of every run recorded `running` (a progress
//!                              write, [`Store::finish`] still `running`, keeps it there)
//! P:pruned:{job}         string  the job's pruned watermark: the newest {time} deleted
//! ```
//!
//! `{time}` is [`time_key`]: unix seconds (`1800000000`), with milliseconds for a fire time
//! that is not a whole second (`1800000000.250`, a manual run's); keys, members, scores and
//! watermarks written before manual runs existed are whole seconds and read the same. A job
//! name or node id may hold any character, `:` included: the fire time is always the last
//! segment of a run key and has no `:`, so no two records share a key.
//!
//! Atomicity. Redis runs a Lua script as one step, with nothing interleaved, so every check and
//! its write are one script: [`Store::acquire`] compares the lease and the observed holder's
//! (session, heartbeat) with what the caller saw and only then writes the new lease;
//! [`Store::claim`] checks (holder, session, term) and that the job is not paused, and inserts
//! the run only if its key does not exist; [`Store::release`] frees, in one script per batch,
//! the leases still held by the node and session (keeping terms, pauses and requests);
//! [`Store::set_pause`] pauses or resumes in one script, touching only the pause fields and
//! INCRing the control epoch when it changed something; [`Store::delete_node_if`] deletes a
//! node (and its definitions) only if it still shows the session and heartbeat;
//! [`Store::finish`] and [`Store::close_orphan`] replace a run (delete-then-write) only while
//! it is `running` under the expected session (and term, or fence), and keep the running set in
//! step with the new outcome: a progress write (still `running`) stays in it. Terms live in
//! the lease hash and only the acquire script writes them (a pause or a request creates a free
//! lease at term 0), refusing a term that is not above the stored one. Plain writes (a
//! heartbeat) are `MULTI`/`EXEC` transactions of delete-then-write, so a reader never sees
//! half a record.
//!
//! Requests. A script cannot run [`Requests::apply`], so [`Store::change_request`] reads the
//! lease's `requests` field, applies the change in Rust, and writes the result (with
//! `request_ids`) by a script that checks the field still holds exactly what was read
//! (compare-and-set; a conflict is retried a few times), creates a free lease if there was
//! none, and INCRs the control epoch when the change is announced: the write and the epoch
//! move are one step. The claim script of a requested run checks that its request id is in
//! `request_ids` (decoded with Redis's built-in `cjson`) in the step that inserts. Acquire
//! neither compares nor writes the requests: it keeps them as stored. The control epoch is one
//! `GET`.
//!
//! Reads are batched: a snapshot is `SMEMBERS` plus pipelined `HGETALL`s, 1,000 to a round
//! trip; the history is read through the sorted set (`ZREVRANGE 0 n-1`, then the hashes), and
//! pruning deletes what `ZRANGE 0 -(keep+1)` names, so its cost is the number deleted.
//!
//! Expiry. A node record expires [`NODE_TTL`] after its last write, and so do its definitions
//! (every write of the record renews their expiry too): a backstop that removes the records of
//! a cluster that is gone entirely. Nothing relies on it: the election judges
//! liveness by a heartbeat's change on its own monotonic clock and removes dead nodes itself,
//! and the TTL is far above any renew period, so it never removes a live node's record.
//!
//! Every call is bounded by the store timeout: no answer in time, and connection failures, are
//! [`StoreError::Unavailable`]; refusals (a script error, a malformed record, a bad URL) are
//! [`StoreError::Other`]. The connection is a [`ConnectionManager`], which reconnects after a
//! failure; a call that timed out may still have been applied (a retried claim then reads
//! `AlreadyRun`, as with Datastore).
//!
//! Limits. Redis keeps its data in memory: a server without persistence (`appendonly yes`)
//! that restarts comes back empty, so leases are free again and terms start over from 1 (runs
//! of the last moments before a crash can be lost with `appendfsync everysec`). Replication is
//! asynchronous: a failover to a replica that had not yet received a claim can let that fire
//! time run a second time. A Redis Cluster is not supported (the client speaks to one server).
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};

use super::json_records;
use super::{
    parse_time_key, time_key, Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause,
    RequestChange, Requests, RunRecord, RunTrigger, Store, StoreError, StoreResult, RUNNING,
};

/// Records read or written per round trip.
const BATCH: usize = 1000;
/// How many of the jobs a node leads its record lists (the rest are in the leases).
const NODE_JOBS_LISTED: usize = 100;
/// How many times a compare-and-set of a lease's requests is tried before giving up (a
/// conflict means the requests changed in between: rare, operator-made).
const REQUESTS_CAS_TRIES: usize = 16;
/// A node record expires this long after its last write (a renew rewrites it): a backstop for
/// a cluster that is gone, never the judge of a live one.
pub const NODE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Compare-and-set of many leases in one step. Only holder, session, term and acquired_at are
/// written: the pause fields and the requests stay as stored (requests are not compared
/// either). Every lease is checked first, then the ones that match are written: a term that
/// would go back fails the whole script before anything is written (a script that raises an
/// error keeps what it wrote so far, so nothing is written before the last check).
///
/// KEYS: per lease, two keys: the lease, then the observed holder's node record (the lease key
/// again when free). ARGV: per lease, 15 values: lease seen ("0" absent, "1" present), holder,
/// session, term; holder node seen ("0" absent, "1" present), its session, heartbeat; the new
/// holder, session, term, acquired_at; the lease seen's paused_by, paused_at, paused_note,
/// resumed_at ("" for none). Returns the (1-based) positions of the leases written.
const ACQUIRE_MANY: &str = r#"
local won = {}
for i = 1, #KEYS / 2 do
  local lease, node, o = KEYS[2 * i - 1], KEYS[2 * i], (i - 1) * 15
  local a = function(k) return ARGV[o + k] end
  local cur = redis.call('HMGET', lease, 'holder', 'session', 'term',
    'paused_by', 'paused_at', 'paused_note', 'resumed_at')
  local exists = redis.call('EXISTS', lease) == 1
  local same = true
  if a(1) == '0' then
    if exists then same = false end
  else
    if not exists then same = false
    elseif (cur[1] or '') ~= a(2) or (cur[2] or '') ~= a(3) or cur[3] ~= a(4) then
      same = false
    else
      for k = 4, 7 do
        if (cur[k] or '') ~= a(k + 8) then same = false end
      end
    end
  end
  -- a(5): '1' the holder's record as seen, '0' it was gone, '2' handed over (not compared)
  if same and a(2) ~= '' and a(5) ~= '2' then
    local node_exists = redis.call('EXISTS', node) == 1
    if a(5) == '0' then
      if node_exists then same = false end
    else
      if not node_exists then same = false
      else
        local n = redis.call('HMGET', node, 'session', 'heartbeat')
        if n[1] ~= a(6) or n[2] ~= a(7) then same = false end
      end
    end
  end
  if same then
    if exists and tonumber(a(10)) <= tonumber(cur[3] or '0') then
      return redis.error_reply('cronlease: refusing to move the term of ' .. lease ..
        ' from ' .. tostring(cur[3]) .. ' to ' .. a(10) .. ': terms never go back')
    end
    won[#won + 1] = i
  end
end
for _, i in ipairs(won) do
  local o = (i - 1) * 15
  redis.call('HSET', KEYS[2 * i - 1], 'holder', ARGV[o + 8], 'session', ARGV[o + 9],
    'term', ARGV[o + 10], 'acquired_at', ARGV[o + 11])
end
return won
"#;

/// Claim a tick: insert the run only if the lease is (node, session, term), the job is not
/// paused, the fire time is newer than the job's pruned watermark and the run is new.
///
/// A requested run (ARGV[7] "1") is not refused while paused; after the fence it is `already`
/// if it exists, then `withdrawn` unless its request id ARGV[8] is in the lease's
/// `request_ids` (a JSON array, decoded with Redis's built-in `cjson`), then the watermark.
///
/// KEYS: lease, run, runs index, pruned watermark, running set. ARGV: node, session, term,
/// fire time key (also its score), running-set member, "1" if the run is `running`, "1" for a
/// requested run ("0" for a scheduled one), its request id ("" for none), then the run's
/// field/value pairs.
const CLAIM: &str = r#"
local l = redis.call('HMGET', KEYS[1], 'holder', 'session', 'term', 'paused_at', 'request_ids')
if l[1] ~= ARGV[1] or l[2] ~= ARGV[2] or l[3] ~= ARGV[3] then return 'fenced' end
if ARGV[7] == '0' then
  if (l[4] or '') ~= '' then return 'paused' end
else
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'already' end
  local pending = false
  if (l[5] or '') ~= '' then
    for _, id in ipairs(cjson.decode(l[5])) do
      if id == ARGV[8] then pending = true end
    end
  end
  if not pending then return 'withdrawn' end
end
local pruned = redis.call('GET', KEYS[4])
if pruned and tonumber(ARGV[4]) <= tonumber(pruned) then return 'too_old' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'already' end
redis.call('HSET', KEYS[2], unpack(ARGV, 9))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[4])
if ARGV[6] == '1' then redis.call('SADD', KEYS[5], ARGV[5]) end
return 'won'
"#;

/// Overwrite a run that is still `running` under a session (and term, unless empty), and,
/// for `close_orphan`, only while the lease is (node, session, term) and, if the new record is
/// `running` (a recovery), the job is not paused.
///
/// KEYS: run, runs index, running set, lease. ARGV: expected session, expected term ("" for
/// any), fire time key (also its score), running-set member, "1" if the new record is
/// `running`, lease holder, lease session, lease term ("" to skip the lease check), then the
/// new record's field/value pairs.
const REPLACE_RUNNING: &str = r#"
if ARGV[6] ~= '' then
  local l = redis.call('HMGET', KEYS[4], 'holder', 'session', 'term', 'paused_at')
  if l[1] ~= ARGV[6] or l[2] ~= ARGV[7] or l[3] ~= ARGV[8] then return 'fenced' end
  if ARGV[5] == '1' and (l[4] or '') ~= '' then return 'paused' end
end
local r = redis.call('HMGET', KEYS[1], 'outcome', 'session', 'term')
if r[1] ~= 'running' or (r[2] or '') ~= ARGV[1] then return 'changed' end
if ARGV[2] ~= '' and r[3] ~= ARGV[2] then return 'changed' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[3], ARGV[4])
else
  redis.call('SREM', KEYS[3], ARGV[4])
end
return 'written'
"#;

/// Raise the pruned watermark KEYS[1] to ARGV[1] (a fire time key: decimal unix seconds,
/// compared as numbers), never lower it.
const RAISE_PRUNED: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

/// Free the leases (KEYS) held by node ARGV[1] in session ARGV[2], keeping their terms,
/// pauses and requests.
const RELEASE: &str = r#"
local freed = 0
for _, key in ipairs(KEYS) do
  local l = redis.call('HMGET', key, 'holder', 'session')
  if l[1] == ARGV[1] and l[2] == ARGV[2] then
    redis.call('HSET', key, 'holder', '', 'session', '')
    freed = freed + 1
  end
end
return freed
"#;

/// Pause (ARGV[1] "1") or resume ("0") the job of lease KEYS[1]. A pause (by ARGV[2], at
/// ARGV[3], note ARGV[4]) keeps an earlier one, and gives a job without a lease a free one
/// (term 0); a resume of a job not paused changes nothing, else it drops the pause and sets
/// resumed_at to ARGV[5]. A change INCRs the control epoch KEYS[2]. Returns 1 if it changed
/// the lease.
const SET_PAUSE: &str = r#"
local paused = (redis.call('HGET', KEYS[1], 'paused_at') or '') ~= ''
if ARGV[1] == '1' then
  if paused then return 0 end
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'holder', '', 'session', '', 'term', '0')
  end
  redis.call('HSET', KEYS[1], 'paused_by', ARGV[2], 'paused_at', ARGV[3],
    'paused_note', ARGV[4])
  redis.call('INCR', KEYS[2])
  return 1
end
if not paused then return 0 end
redis.call('HDEL', KEYS[1], 'paused_by', 'paused_at', 'paused_note')
redis.call('HSET', KEYS[1], 'resumed_at', ARGV[5])
redis.call('INCR', KEYS[2])
return 1
"#;

/// Compare-and-set of the requests of lease KEYS[1]: only if its `requests` field still holds
/// ARGV[1] ("" for none), write ARGV[2] and their ids ARGV[4] (both "" for none: the fields are
/// deleted), creating a free lease (term 0) if there is none, and INCR the control epoch
/// KEYS[2] if ARGV[3] is "1". Returns 0 (nothing written) on a conflict, 1 when written.
const CHANGE_REQUESTS: &str = r#"
if (redis.call('HGET', KEYS[1], 'requests') or '') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'holder', '', 'session', '', 'term', '0')
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'requests', 'request_ids')
else
  redis.call('HSET', KEYS[1], 'requests', ARGV[2], 'request_ids', ARGV[4])
end
if ARGV[3] == '1' then redis.call('INCR', KEYS[2]) end
return 1
"#;

/// Delete node record KEYS[1] (id ARGV[1], listed in set KEYS[2]) and its definitions KEYS[3]
/// if it shows session ARGV[2] and heartbeat ARGV[3].
const DELETE_NODE_IF: &str = r#"
local n = redis.call('HMGET', KEYS[1], 'session', 'heartbeat')
if n[1] == ARGV[2] and n[2] == ARGV[3] then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// Drop ids (ARGV) from the node set KEYS[1] whose records (KEYS[2..]) are gone (expired).
const FORGET_EXPIRED: &str = r#"
local n = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    n = n + redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return n
"#;

pub struct RedisStore {
    con: ConnectionManager,
    keys: Keys,
    /// The URL without credentials, for messages.
    shown: String,
    namespace: String,
    timeout: Duration,
    scripts: Arc<Scripts>,
}

struct Scripts {
    acquire_many: Script,
    claim: Script,
    replace_running: Script,
    raise_pruned: Script,
    release: Script,
    set_pause: Script,
    change_requests: Script,
    delete_node_if: Script,
    forget_expired: Script,
}

/// Connect to Redis at `url`, keeping this cluster's records under `namespace`.
pub async fn connect(url: &str, namespace: &str, timeout: Duration) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(
        RedisStore::connect(url, namespace, timeout).await?,
    ))
}

impl RedisStore {
    /// Connect to `url` (`redis://[user:password@]host:port[/db]`); every later call is bounded
    /// by `timeout`. A URL that cannot be used is [`StoreError::Other`]; a server that cannot
    /// be reached in time is [`StoreError::Unavailable`].
    pub async fn connect(url: &str, namespace: &str, timeout: Duration) -> StoreResult<Self> {
        let shown = crate::store::redact_url(url);
        if url.trim().is_empty() {
            return Err(StoreError::Other(
                "the redis store needs a url (redis://host:port[/db]) in [store]".into(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Other(format!("redis url {shown:?} cannot be used: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(timeout);
        let con =
            match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(con)) => con,
                Ok(Err(e)) => return Err(classify(&format!("connecting to {shown}"), e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis at {shown}: no connection within {timeout:?}"
                    )))
                }
            };
        Ok(RedisStore {
            con,
            keys: Keys::new(namespace),
            shown,
            namespace: namespace.to_string(),
            timeout,
            scripts: Arc::new(Scripts {
                acquire_many: Script::new(ACQUIRE_MANY),
                claim: Script::new(CLAIM),
                replace_running: Script::new(REPLACE_RUNNING),
                raise_pruned: Script::new(RAISE_PRUNED),
                release: Script::new(RELEASE),
                set_pause: Script::new(SET_PAUSE),
                change_requests: Script::new(CHANGE_REQUESTS),
                delete_node_if: Script::new(DELETE_NODE_IF),
                forget_expired: Script::new(FORGET_EXPIRED),
            }),
        })
    }

    /// Run `op` (any number of round trips) within the store timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(|e| match e {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("redis {what} ({}): {m}", self.shown))
                }
                StoreError::Other(m) => {
                    StoreError::Other(format!("redis {what} ({}): {m}", self.shown))
                }
            }),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {what} ({}): no answer within {:?}",
                self.shown, self.timeout
            ))),
        }
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// `HGETALL` of every key, `BATCH` keys per round trip, in order.
    async fn hgetall_many(&self, keys: &[String]) -> StoreResult<Vec<HashMap<String, String>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut con = self.con();
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HGETALL").arg(key);
            }
            let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await.ctx()?;
            out.extend(maps);
        }
        Ok(out)
    }

    /// Run [`REPLACE_RUNNING`]: overwrite `new`'s record if it is `running` under `session`
    /// (and `term`, unless empty), and with a `fence` only while the lease is as it says.
    /// Returns the script's answer.
    async fn replace_running(
        &self,
        new: &RunRecord,
        session: &str,
        term: &str,
        fence: Option<&Fence>,
    ) -> StoreResult<String> {
        let time = time_key(new.fire_time);
        let mut call = self.scripts.replace_running.prepare_invoke();
        call.key(self.keys.run(&new.job, &time))
            .key(self.keys.runs(&new.job))
            .key(self.keys.running())
            .key(self.keys.lease(&new.job))
            .arg(session)
            .arg(term)
            .arg(&time)
            .arg(RunRecord::key(&new.job, new.fire_time))
            .arg(if new.outcome == RUNNING { "1" } else { "0" });
        match fence {
            Some(f) => call.arg(&f.node).arg(&f.session).arg(f.term),
            None => call.arg("").arg("").arg(""),
        };
        for (name, value) in run_fields(new) {
            call.arg(name).arg(value);
        }
        call.invoke_async(&mut self.con()).await.ctx()
    }

    /// The run records of `job` at the fire times `times` (runs index members), in that
    /// order; one deleted meanwhile is left out.
    async fn read_runs(
        &self,
        job: &str,
        times: &[(String, DateTime<Utc>)],
    ) -> StoreResult<Vec<RunRecord>> {
        let keys: Vec<String> = times.iter().map(|(k, _)| self.keys.run(job, k)).collect();
        let maps = self.hgetall_many(&keys).await?;
        let mut runs = Vec::with_capacity(maps.len());
        for ((_, t), map) in times.iter().zip(maps) {
            if !map.is_empty() {
                runs.push(parse_run(job, *t, &map)?);
            }
        }
        Ok(runs)
    }

    /// The lease's `requests` field as stored ("" for none).
    async fn requests_field(&self, job: &str) -> StoreResult<String> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.lease(job))
            .arg("requests")
            .query_async(&mut self.con())
            .await
            .ctx()?;
        Ok(raw.unwrap_or_default())
    }
}

/// The key names of one namespace.
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(namespace: &str) -> Keys {
        Keys {
            prefix: format!("cronlease:{namespace}:"),
        }
    }
    fn lease(&self, job: &str) -> String {
        format!("{}lease:{job}", self.prefix)
    }
    fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    fn defs(&self, id: &str) -> String {
        format!("{}defs:{id}", self.prefix)
    }
    /// The run of `job` at the fire time whose [`time_key`] is `time`.
    fn run(&self, job: &str, time: &str) -> String {
        format!("{}run:{job}:{time}", self.prefix)
    }
    fn runs(&self, job: &str) -> String {
        format!("{}runs:{job}", self.prefix)
    }
    fn pruned(&self, job: &str) -> String {
        format!("{}pruned:{job}", self.prefix)
    }
    /// The set of running runs, members `{job}@{time}` ([`RunRecord::key`]).
    fn running(&self) -> String {
        format!("{}running", self.prefix)
    }
    /// The control epoch: an integer, INCRed by every announced change.
    fn control(&self) -> String {
        format!("{}control", self.prefix)
    }
}

/// A Redis failure as a store error: the connection or a busy/failing-over server is
/// unavailable (worth retrying); anything else (a script error, a refused command, a reply of
/// the wrong type) is a refusal.
fn classify(what: &str, e: RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
        || e.code() == Some("BUSY");
    if transient {
        StoreError::Unavailable(format!("{what}: {e}"))
    } else {
        StoreError::Other(format!("{what}: {e}"))
    }
}

/// `.ctx()`: a Redis result as a store result.
trait Ctx<T> {
    fn ctx(self) -> StoreResult<T>;
}

impl<T> Ctx<T> for RedisResult<T> {
    fn ctx(self) -> StoreResult<T> {
        self.map_err(|e| classify("request failed", e))
    }
}

// ---- records as hash fields ----

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// RFC 3339, or milliseconds since the epoch.
fn parse_time(field: &str, text: &str) -> StoreResult<DateTime<Utc>> {
    let parsed = if !text.is_empty()
        && text
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        text.parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    parsed.ok_or_else(|| malformed(field, text))
}

fn malformed(field: &str, text: &str) -> StoreError {
    StoreError::Other(format!("field {field} is not valid: {text:?}"))
}

/// Field `name` of a record: absent is `None`, unparseable an error.
fn field<T: std::str::FromStr>(
    map: &HashMap<String, String>,
    name: &str,
) -> StoreResult<Option<T>> {
    match map.get(name) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| malformed(name, text)),
    }
}

/// An optional field that may also be written empty.
fn opt_text(map: &HashMap<String, String>, name: &str) -> Option<String> {
    map.get(name).filter(|s| !s.is_empty()).cloned()
}

fn opt_time(map: &HashMap<String, String>, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
    match opt_text(map, name) {
        None => Ok(None),
        Some(text) => parse_time(name, &text).map(Some),
    }
}

fn text(map: &HashMap<String, String>, name: &str) -> String {
    map.get(name).cloned().unwrap_or_default()
}

/// A lease's pause fields as written (and compared by [`ACQUIRE`]): paused_by, paused_at,
/// paused_note, resumed_at; "" for none.
fn pause_fields(l: &LeaseRecord) -> [String; 4] {
    let p = l.paused.as_ref();
    [
        p.map(|p| p.by.clone()).unwrap_or_default(),
        p.map(|p| time_text(p.at)).unwrap_or_default(),
        p.map(|p| p.note.clone()).unwrap_or_default(),
        l.resumed_at.map(time_text).unwrap_or_default(),
    ]
}

/// A lease hash (`None` if the key does not exist). A lease without a term is refused, not
/// read as term 0: that would let terms go back. Without `paused_at` it is not paused.
fn parse_lease(job: &str, map: &HashMap<String, String>) -> StoreResult<Option<LeaseRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    let what = |e: StoreError| StoreError::Other(format!("the lease of {job:?}: {e}"));
    let term = field::<i64>(map, "term")
        .map_err(what)?
        .ok_or_else(|| what(StoreError::Other("no term".into())))?;
    Ok(Some(LeaseRecord {
        holder: text(map, "holder"),
        session: text(map, "session"),
        term,
        acquired_at: opt_time(map, "acquired_at").map_err(what)?,
        paused: opt_time(map, "paused_at").map_err(what)?.map(|at| {
            Box::new(Pause {
                by: text(map, "paused_by"),
                at,
                note: text(map, "paused_note"),
            })
        }),
        resumed_at: opt_time(map, "resumed_at").map_err(what)?,
        requests: Requests::decode(&text(map, "requests")).map_err(what)?,
    }))
}

/// The ids of the pending requests as written in `request_ids` (what [`CLAIM`] checks): a
/// JSON array of strings; "" for none.
fn request_ids(r: &Requests) -> String {
    if r.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = r
        .triggers
        .iter()
        .map(|t| t.id())
        .chain(r.backfill.iter().map(|b| b.id.clone()))
        .collect();
    serde_json::to_string(&ids).expect("strings serialize")
}

fn node_fields(n: &NodeRecord) -> StoreResult<Vec<(&'static str, String)>> {
    let jobs = &n.jobs[..n.jobs.len().min(NODE_JOBS_LISTED)];
    let jobs = serde_json::to_string(jobs)
        .map_err(|e| StoreError::Other(format!("cannot encode a node record: {e}")))?;
    let mut fields = vec![
        ("id", n.id.clone()),
        ("session", n.session.clone()),
        ("heartbeat", n.heartbeat.to_string()),
        ("lease_epoch", n.lease_epoch.to_string()),
        ("started_at", time_text(n.started_at)),
        ("renewed_at", time_text(n.renewed_at)),
        ("jobs", jobs),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("process", n.process.clone()),
    ];
    if let Some(http) = &n.http {
        fields.push(("http", http.clone()));
    }
    if let Some(ms) = n.clock_offset_ms {
        fields.push(("clock_offset_ms", ms.to_string()));
    }
    if !n.jobs_digest.is_empty() {
        fields.push(("jobs_digest", n.jobs_digest.clone()));
    }
    if n.leaving {
        fields.push(("leaving", "1".into()));
    }
    Ok(fields)
}

/// A node hash; session and heartbeat are required, the informational fields are not.
fn parse_node(id: &str, map: &HashMap<String, String>) -> StoreResult<NodeRecord> {
    let what = |e: StoreError| StoreError::Other(format!("the record of node {id:?}: {e}"));
    let missing = |name: &str| what(StoreError::Other(format!("no {name}")));
    let session = map
        .get("session")
        .cloned()
        .ok_or_else(|| missing("session"))?;
    let heartbeat = field::<i64>(map, "heartbeat")
        .map_err(what)?
        .ok_or_else(|| missing("heartbeat"))?;
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let started_at = opt_time(map, "started_at").map_err(what)?.unwrap_or(epoch);
    let renewed_at = opt_time(map, "renewed_at").map_err(what)?.unwrap_or(epoch);
    let jobs = match opt_text(map, "jobs") {
        None => Vec::new(),
        Some(json) => serde_json::from_str(&json).map_err(|_| what(malformed("jobs", &json)))?,
    };
    Ok(NodeRecord {
        id: opt_text(map, "id").unwrap_or_else(|| id.to_string()),
        session,
        heartbeat,
        started_at,
        renewed_at,
        jobs,
        http: opt_text(map, "http"),
        lease_epoch: field::<i64>(map, "lease_epoch").map_err(what)?.unwrap_or(0),
        process: text(map, "process"),
        clock_offset_ms: field::<i64>(map, "clock_offset_ms").map_err(what)?,
        jobs_digest: text(map, "jobs_digest"),
        leaving: text(map, "leaving") == "1",
    })
}

fn run_fields(r: &RunRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("job", r.job.clone()),
        ("fire_time", time_text(r.fire_time)),
        ("node", r.node.clone()),
        ("term", r.term.to_string()),
        ("started_at", time_text(r.started_at)),
        ("outcome", r.outcome.clone()),
        ("attempts", r.attempts.to_string()),
        ("session", r.session.clone()),
        ("process", r.process.clone()),
    ];
    if let Some(reason) = &r.reason {
        fields.push(("reason", reason.clone()));
    }
    if r.recovery {
        fields.push(("recovery", "1".to_string()));
    }
    if let Some(t) = r.finished_at {
        fields.push(("finished_at", time_text(t)));
    }
    if let Some(code) = r.exit_code {
        fields.push(("exit_code", code.to_string()));
    }
    if let Some(t) = &r.trigger {
        fields.push(("trigger", t.encode()));
    }
    if !r.output.is_empty() {
        fields.push(("output", r.output.clone()));
    }
    if r.output_cut != 0 {
        fields.push(("output_cut", r.output_cut.to_string()));
    }
    fields
}

/// A run hash of `job` at `time` (its key's fire time). Missing fields read as what older or
/// partial records meant: no attempts field is one attempt; the fire time is the key's.
fn parse_run(
    job: &str,
    time: DateTime<Utc>,
    map: &HashMap<String, String>,
) -> StoreResult<RunRecord> {
    let what =
        |e: StoreError| StoreError::Other(format!("the run of {job:?} at {}: {e}", time_key(time)));
    let fire_time = opt_time(map, "fire_time").map_err(what)?.unwrap_or(time);
    Ok(RunRecord {
        job: opt_text(map, "job").unwrap_or_else(|| job.to_string()),
        fire_time,
        node: text(map, "node"),
        term: field(map, "term").map_err(what)?.unwrap_or(0),
        started_at: opt_time(map, "started_at")
            .map_err(what)?
            .unwrap_or(fire_time),
        finished_at: opt_time(map, "finished_at").map_err(what)?,
        outcome: opt_text(map, "outcome").unwrap_or_else(|| "unknown".to_string()),
        exit_code: field(map, "exit_code").map_err(what)?,
        attempts: field(map, "attempts").map_err(what)?.unwrap_or(1),
        session: text(map, "session"),
        process: text(map, "process"),
        reason: opt_text(map, "reason"),
        recovery: opt_text(map, "recovery").is_some_and(|r| r == "1"),
        trigger: RunTrigger::decode(&text(map, "trigger")).map_err(what)?,
        output: text(map, "output"),
        output_cut: field(map, "output_cut").map_err(what)?.unwrap_or(0),
    })
}

/// The fire times of a runs index reply: each member as stored (a [`time_key`]) and read.
fn times(members: Vec<String>) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
    members
        .into_iter()
        .map(|m| match parse_time_key(&m) {
            Some(t) => Ok((m, t)),
            None => Err(malformed("runs index member", &m)),
        })
        .collect()
}

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        format!("redis at {} (namespace {})", self.shown, self.namespace)
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let fields = node_fields(node)?;
        let key = self.keys.node(&node.id);
        self.bounded("put_node", async {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&key)
                .ignore()
                .hset_multiple(&key, &fields)
                .ignore()
                .pexpire(&key, NODE_TTL.as_millis() as i64)
                .ignore()
                // The definitions live as long as the record (no-op if there are none).
                .pexpire(self.keys.defs(&node.id), NODE_TTL.as_millis() as i64)
                .ignore()
                .sadd(self.keys.nodes(), &node.id)
                .ignore();
            pipe.query_async::<()>(&mut self.con()).await.ctx()
        })
        .await
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        self.bounded("delete_node", async {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&[self.keys.node(id), self.keys.defs(id)])
                .ignore()
                .srem(self.keys.nodes(), id)
                .ignore();
            pipe.query_async::<()>(&mut self.con()).await.ctx()
        })
        .await
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        self.bounded("delete_node_if", async {
            let deleted: i64 = self
                .scripts
                .delete_node_if
                .key(self.keys.node(id))
                .key(self.keys.nodes())
                .key(self.keys.defs(id))
                .arg(id)
                .arg(session)
                .arg(heartbeat)
                .invoke_async(&mut self.con())
                .await
                .ctx()?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        let json = serde_json::to_vec(&json_records::Definitions::from(defs)).map_err(|e| {
            StoreError::Other(format!("cannot encode the definitions of {node:?}: {e}"))
        })?;
        self.bounded("put_definitions", async {
            redis::cmd("SET")
                .arg(self.keys.defs(node))
                .arg(json)
                .arg("PX")
                .arg(NODE_TTL.as_millis() as i64)
                .query_async::<()>(&mut self.con())
                .await
                .ctx()
        })
        .await
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        self.bounded("definitions", async {
            let json: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.keys.defs(node))
                .query_async(&mut self.con())
                .await
                .ctx()?;
            json.map(|bytes| {
                serde_json::from_slice::<json_records::Definitions>(&bytes)
                    .map(Definitions::from)
                    .map_err(|e| {
                        StoreError::Other(format!(
                            "the definitions of node {node:?} are not valid: {e}"
                        ))
                    })
            })
            .transpose()
        })
        .await
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        self.bounded("nodes", async {
            let ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.keys.nodes())
                .query_async(&mut self.con())
                .await
                .ctx()?;
            let node_keys: Vec<String> = ids.iter().map(|id| self.keys.node(id)).collect();
            let node_maps = self.hgetall_many(&node_keys).await?;
            let mut nodes = HashMap::with_capacity(ids.len());
            let mut expired = Vec::new();
            for (id, map) in ids.iter().zip(&node_maps) {
                if map.is_empty() {
                    expired.push(id.clone());
                } else {
                    nodes.insert(id.clone(), parse_node(id, map)?);
                }
            }
            if !expired.is_empty() {
                // Records that expired: drop them from the index (only if still gone).
                let mut call = self.scripts.forget_expired.prepare_invoke();
                call.key(self.keys.nodes());
                for id in &expired {
                    call.key(self.keys.node(id)).arg(id);
                }
                call.invoke_async::<i64>(&mut self.con()).await.ctx()?;
            }
            Ok(nodes)
        })
        .await
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        self.bounded("leases", async {
            let lease_keys: Vec<String> = jobs.iter().map(|j| self.keys.lease(j)).collect();
            let lease_maps = self.hgetall_many(&lease_keys).await?;
            let mut leases = HashMap::new();
            for (job, map) in jobs.iter().zip(&lease_maps) {
                if let Some(lease) = parse_lease(job, map)? {
                    leases.insert(job.clone(), lease);
                }
            }
            Ok(leases)
        })
        .await
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.acquire_many.prepare_invoke();
        for a in batch {
            let lease_key = self.keys.lease(&a.job);
            let seen = a.observed.lease.as_ref();
            let holder = a.observed.holder();
            let node_key = if holder.is_empty() {
                lease_key.clone()
            } else {
                self.keys.node(holder)
            };
            let (node_seen, node_session, node_heartbeat) = match &a.observed.holder_node {
                _ if a.observed.handed_over => ("2", "", String::new()),
                Some((session, heartbeat)) => ("1", session.as_str(), heartbeat.to_string()),
                None => ("0", "", String::new()),
            };
            let [paused_by, paused_at, paused_note, resumed_at] =
                seen.map(pause_fields).unwrap_or_default();
            invocation
                .key(&lease_key)
                .key(&node_key)
                .arg(if seen.is_some() { "1" } else { "0" })
                .arg(holder)
                .arg(seen.map(|l| l.session.as_str()).unwrap_or(""))
                .arg(seen.map(|l| l.term).unwrap_or(0))
                .arg(node_seen)
                .arg(node_session)
                .arg(&node_heartbeat)
                .arg(&a.new.holder)
                .arg(&a.new.session)
                .arg(a.new.term)
                .arg(a.new.acquired_at.map(time_text).unwrap_or_default())
                .arg(&paused_by)
                .arg(&paused_at)
                .arg(&paused_note)
                .arg(&resumed_at);
        }
        self.bounded("acquire", async {
            let won: Vec<usize> = invocation.invoke_async(&mut self.con()).await.ctx()?;
            Ok(won
                .into_iter()
                .filter_map(|i| batch.get(i.checked_sub(1)?))
                .map(|a| a.job.clone())
                .collect())
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        self.bounded("release", async {
            let mut freed = 0;
            for chunk in jobs.chunks(BATCH) {
                let mut call = self.scripts.release.prepare_invoke();
                for job in chunk {
                    call.key(self.keys.lease(job));
                }
                call.arg(node).arg(session);
                let n: i64 = call.invoke_async(&mut self.con()).await.ctx()?;
                freed += n as usize;
            }
            Ok(freed)
        })
        .await
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        self.bounded("set_pause", async {
            let mut call = self.scripts.set_pause.prepare_invoke();
            call.key(self.keys.lease(job)).key(self.keys.control());
            match pause {
                Some(p) => call.arg("1").arg(&p.by).arg(time_text(p.at)).arg(&p.note),
                None => call.arg("0").arg("").arg("").arg(""),
            };
            call.arg(time_text(Utc::now()));
            let changed: i64 = call.invoke_async(&mut self.con()).await.ctx()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        self.bounded("change_request", async {
            for _ in 0..REQUESTS_CAS_TRIES {
                let seen = self.requests_field(job).await?;
                let mut requests = Requests::decode(&seen)
                    .map_err(|e| StoreError::Other(format!("the lease of {job:?}: {e}")))?;
                if !requests.apply(change) {
                    return Ok(false);
                }
                let written: i64 = self
                    .scripts
                    .change_requests
                    .key(self.keys.lease(job))
                    .key(self.keys.control())
                    .arg(&seen)
                    .arg(requests.encode())
                    .arg(if change.announced() { "1" } else { "0" })
                    .arg(request_ids(&requests))
                    .invoke_async(&mut self.con())
                    .await
                    .ctx()?;
                if written == 1 {
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable(format!(
                "the requests of {job:?} kept changing: {REQUESTS_CAS_TRIES} tries failed"
            )))
        })
        .await
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        self.bounded("control_epoch", async {
            let epoch: Option<i64> = redis::cmd("GET")
                .arg(self.keys.control())
                .query_async(&mut self.con())
                .await
                .ctx()?;
            Ok(epoch.unwrap_or(0))
        })
        .await
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.bounded("pruned_until", async {
            let mark: Option<String> = redis::cmd("GET")
                .arg(self.keys.pruned(job))
                .query_async(&mut self.con())
                .await
                .ctx()?;
            mark.map(|m| parse_time_key(&m).ok_or_else(|| malformed("pruned watermark", &m)))
                .transpose()
        })
        .await
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        let time = time_key(run.fire_time);
        self.bounded("claim", async {
            let mut call = self.scripts.claim.prepare_invoke();
            call.key(self.keys.lease(&run.job))
                .key(self.keys.run(&run.job, &time))
                .key(self.keys.runs(&run.job))
                .key(self.keys.pruned(&run.job))
                .key(self.keys.running())
                .arg(&run.node)
                .arg(session)
                .arg(run.term)
                .arg(&time)
                .arg(RunRecord::key(&run.job, run.fire_time))
                .arg(if run.outcome == RUNNING { "1" } else { "0" });
            match &run.trigger {
                Some(t) => call.arg("1").arg(&t.request),
                None => call.arg("0").arg(""),
            };
            for (name, value) in run_fields(run) {
                call.arg(name).arg(value);
            }
            let answer: String = call.invoke_async(&mut self.con()).await.ctx()?;
            match answer.as_str() {
                "won" => Ok(Claim::Won),
                "already" => Ok(Claim::AlreadyRun),
                "fenced" => Ok(Claim::Fenced),
                "paused" => Ok(Claim::Paused),
                "too_old" => Ok(Claim::TooOld),
                "withdrawn" => Ok(Claim::Withdrawn),
                other => Err(StoreError::Other(format!(
                    "unexpected answer of the claim script: {other:?}"
                ))),
            }
        })
        .await
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        let term = run.term.to_string();
        self.bounded("finish", async {
            let answer = self.replace_running(run, &run.session, &term, None).await?;
            Ok(answer == "written")
        })
        .await
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        let time = time_key(fire_time);
        self.bounded("get_run", async {
            let map: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.keys.run(job, &time))
                .query_async(&mut self.con())
                .await
                .ctx()?;
            if map.is_empty() {
                return Ok(None);
            }
            let at = parse_time_key(&time).unwrap_or(fire_time);
            parse_run(job, at, &map).map(Some)
        })
        .await
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.bounded("running_runs", async {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.keys.running())
                .query_async(&mut self.con())
                .await
                .ctx()?;
            let runs: Vec<(&str, &str, DateTime<Utc>)> = members
                .iter()
                .filter_map(|m| {
                    let (job, time) = m.rsplit_once('@')?;
                    Some((job, time, parse_time_key(time)?))
                })
                .collect();
            let keys: Vec<String> = runs.iter().map(|(j, k, _)| self.keys.run(j, k)).collect();
            let maps = self.hgetall_many(&keys).await?;
            let mut out = Vec::new();
            for ((job, _, time), map) in runs.iter().zip(maps) {
                if map.is_empty() {
                    continue;
                }
                match parse_run(job, *time, &map) {
                    Ok(run) if run.outcome == RUNNING => out.push(run),
                    Ok(_) => {}
                    // One damaged record must not hide every orphan.
                    Err(e) => tracing::warn!("skipping a run record: {e}"),
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
        self.bounded("close_orphan", async {
            let answer = self
                .replace_running(new, orphan_session, "", Some(fence))
                .await?;
            Ok(match answer.as_str() {
                "written" => Claim::Won,
                "fenced" => Claim::Fenced,
                "paused" => Claim::Paused,
                _ => Claim::AlreadyRun,
            })
        })
        .await
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        self.bounded("runs", async {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.runs(job))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.con())
                .await
                .ctx()?;
            self.read_runs(job, &times(members)?).await
        })
        .await
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.bounded("recent_runs", async {
            let members: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(self.keys.runs(job))
                .arg(0)
                .arg(limit.saturating_sub(1).min(i64::MAX as usize) as i64)
                .query_async(&mut self.con())
                .await
                .ctx()?;
            self.read_runs(job, &times(members)?).await
        })
        .await
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        self.bounded("prune_runs", async {
            // Everything but the newest `keep`, oldest first: O(log n + deleted).
            let stop = -(keep.min(i64::MAX as usize - 1) as i64) - 1;
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.runs(job))
                .arg(0)
                .arg(stop)
                .query_async(&mut self.con())
                .await
                .ctx()?;
            let old = times(members)?;
            // The watermark first (oldest first: the last one is the newest deleted), as its
            // time key: decimal seconds, milliseconds kept.
            if let Some((_, newest)) = old.last() {
                self.scripts
                    .raise_pruned
                    .key(self.keys.pruned(job))
                    .arg(time_key(*newest))
                    .invoke_async::<i64>(&mut self.con())
                    .await
                    .ctx()?;
            }
            let mut deleted = 0;
            for chunk in old.chunks(BATCH) {
                let keys: Vec<String> = chunk.iter().map(|(k, _)| self.keys.run(job, k)).collect();
                let running: Vec<String> =
                    chunk.iter().map(|(k, _)| format!("{job}@{k}")).collect();
                let members: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .del(&keys)
                    .ignore()
                    .srem(self.keys.running(), &running)
                    .ignore()
                    .zrem(self.keys.runs(job), &members);
                // ZREM counts what this call removed: a concurrent prune is not counted twice.
                let (removed,): (i64,) = pipe.query_async(&mut self.con()).await.ctx()?;
                deleted += removed as usize;
            }
            Ok(deleted)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn records_round_trip_through_hash_fields() {
        let run = RunRecord {
            job: "a:b".into(),
            fire_time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            node: "n".into(),
            term: 7,
            started_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
            finished_at: Some(DateTime::from_timestamp(1_800_000_001, 5).unwrap()),
            outcome: "failed".into(),
            exit_code: Some(-1),
            attempts: 0,
            session: "s1".into(),
            process: "p1".into(),
            reason: Some("lease_lost".into()),
            recovery: true,
            trigger: None,
            output: String::new(),
            output_cut: 0,
        };
        let back = parse_run("a:b", run.fire_time, &map(&run_fields(&run))).unwrap();
        assert_eq!(back, run);
        assert!(!run_fields(&run).iter().any(|(k, _)| *k == "trigger"));
        // A requested run: a fire time in milliseconds, and its trigger.
        let manual = RunRecord {
            fire_time: DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap(),
            trigger: Some(RunTrigger {
                kind: "manual".into(),
                by: "ops@h".into(),
                request: "1800000000.250".into(),
            }),
            ..run.clone()
        };
        let at = parse_time_key("1800000000.250").unwrap();
        let back = parse_run("a:b", at, &map(&run_fields(&manual))).unwrap();
        assert_eq!(back, manual);
        // An output tail, cut: both fields; none: neither is written.
        let printed = RunRecord {
            output: "é\nlast line\n".into(),
            output_cut: 1_000_000,
            ..run.clone()
        };
        let back = parse_run("a:b", run.fire_time, &map(&run_fields(&printed))).unwrap();
        assert_eq!(back, printed);
        assert!(!run_fields(&run)
            .iter()
            .any(|(k, _)| *k == "output" || *k == "output_cut"));

        let node = NodeRecord {
            id: "n:1".into(),
            session: "s".into(),
            heartbeat: 42,
            started_at: DateTime::from_timestamp(1_800_000_000, 1).unwrap(),
            renewed_at: DateTime::from_timestamp(1_800_000_100, 999_999_999).unwrap(),
            jobs: (0..150).map(|i| format!("job{i}")).collect(),
            http: Some("127.0.0.1:9000".into()),
            lease_epoch: 9,
            process: "p".into(),
            clock_offset_ms: Some(-1500),
            jobs_digest: "d1".into(),
            leaving: true,
        };
        let back = parse_node("n:1", &map(&node_fields(&node).unwrap())).unwrap();
        assert_eq!(back.jobs.len(), NODE_JOBS_LISTED, "the job list is capped");
        assert_eq!(back.jobs[..], node.jobs[..NODE_JOBS_LISTED]);
        assert_eq!(
            NodeRecord {
                jobs: node.jobs.clone(),
                ..back
            },
            node
        );
    }

    #[test]
    fn missing_fields_read_as_older_records_meant() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = parse_run("j", at, &map(&[("outcome", "ok".into())])).unwrap();
        assert_eq!(run.attempts, 1);
        assert_eq!(run.fire_time, at);
        assert_eq!(run.started_at, run.fire_time);
        assert_eq!((run.finished_at, run.exit_code), (None, None));
        assert_eq!(run.trigger, None);
        assert_eq!((run.output.as_str(), run.output_cut), ("", 0));
        let ms = parse_time_key("1800000000.250").unwrap();
        let run = parse_run("j", ms, &map(&[("trigger", String::new())])).unwrap();
        assert_eq!(
            (run.fire_time, run.trigger),
            (ms, None),
            "the key's fire time"
        );

        let node = parse_node(
            "n",
            &map(&[
                ("session", "s".into()),
                ("heartbeat", "3".into()),
                ("renewed_at", "1800000000123".into()),
            ]),
        )
        .unwrap();
        assert_eq!(node.id, "n");
        assert_eq!(node.renewed_at.timestamp_millis(), 1_800_000_000_123);
        assert!(node.jobs.is_empty() && node.http.is_none());
        assert_eq!(node.lease_epoch, 0);
        assert_eq!(node.jobs_digest, "");

        let lease = parse_lease("j", &map(&[("term", "4".into())]))
            .unwrap()
            .unwrap();
        assert!(lease.is_free());
        assert_eq!((lease.term, lease.acquired_at), (4, None));
        assert_eq!((lease.paused, lease.resumed_at), (None, None), "not paused");
        assert!(lease.requests.is_empty(), "no requests field: none");
        let empty = map(&[("term", "4".into()), ("requests", String::new())]);
        assert!(parse_lease("j", &empty)
            .unwrap()
            .unwrap()
            .requests
            .is_empty());
        assert_eq!(parse_lease("j", &HashMap::new()).unwrap(), None);
    }

    #[test]
    fn a_lease_pause_and_requests_round_trip_through_hash_fields() {
        let lease = LeaseRecord {
            holder: "a".into(),
            session: "s".into(),
            term: 2,
            acquired_at: None,
            paused: Some(Box::new(Pause {
                by: "ops@h".into(),
                at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
                note: "n".into(),
            })),
            resumed_at: Some(DateTime::from_timestamp(1_799_999_000, 0).unwrap()),
            requests: Requests {
                triggers: vec![crate::store::TriggerRequest {
                    fire_time: DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap(),
                    by: "ops@h".into(),
                    expires_at: DateTime::from_timestamp(1_800_003_600, 0).unwrap(),
                    allow_overlap: true,
                }],
                backfill: None,
            },
        };
        let [by, at, note, resumed] = pause_fields(&lease);
        let stored = map(&[
            ("holder", "a".into()),
            ("session", "s".into()),
            ("term", "2".into()),
            ("paused_by", by),
            ("paused_at", at),
            ("paused_note", note),
            ("resumed_at", resumed),
            ("requests", lease.requests.encode()),
        ]);
        let back = parse_lease("j", &stored).unwrap().unwrap();
        assert_eq!(back, lease);
        assert_eq!(request_ids(&back.requests), r#"["1800000000.250"]"#);
        let mut more = back.requests.clone();
        assert!(
            more.apply(&RequestChange::AddBackfill(crate::store::BackfillRequest {
                id: "b\"1".into(),
                by: "ops@h".into(),
                at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                from: DateTime::from_timestamp(1_799_000_000, 0).unwrap(),
                to: DateTime::from_timestamp(1_799_900_000, 0).unwrap(),
                total: 3,
                done: 0,
                cursor: None,
            }))
        );
        assert_eq!(request_ids(&more), r#"["1800000000.250","b\"1"]"#);
        assert_eq!(request_ids(&Requests::default()), "");
        // What ACQUIRE compares: the fields of a lease read back are the fields written.
        assert_eq!(pause_fields(&back), pause_fields(&lease));
        assert_eq!(
            pause_fields(&LeaseRecord::default()),
            <[String; 4]>::default()
        );
    }

    #[test]
    fn damaged_records_are_refused_not_guessed() {
        // A lease without a term would reset terms: refused.
        assert!(matches!(
            parse_lease("j", &map(&[("holder", "a".into())])),
            Err(StoreError::Other(m)) if m.contains("no term")
        ));
        assert!(parse_lease("j", &map(&[("term", "x".into())])).is_err());
        assert!(parse_node("n", &map(&[("session", "s".into())])).is_err());
        let at = DateTime::from_timestamp(1, 0).unwrap();
        assert!(parse_run("j", at, &map(&[("attempts", "-1".into())])).is_err());
        assert!(parse_run("j", at, &map(&[("started_at", "yesterday".into())])).is_err());
        assert!(parse_run("j", at, &map(&[("trigger", "{".into())])).is_err());
        assert!(parse_run("j", at, &map(&[("output_cut", "-1".into())])).is_err());
        let bad = map(&[("term", "1".into()), ("requests", "[".into())]);
        assert!(parse_lease("j", &bad).is_err());
        assert!(times(vec!["1".into(), "1.25".into()]).is_err());
    }

    #[test]
    fn keys_keep_jobs_apart_and_urls_hide_passwords() {
        let k = Keys::new("ns");
        assert_eq!(k.lease("a"), "cronlease:ns:lease:a");
        assert_ne!(k.run("a:1", "2"), k.run("a", "12"));
        assert_eq!(k.run("a:1", "2"), "cronlease:ns:run:a:1:2");
        assert_eq!(k.run("a", "2.250"), "cronlease:ns:run:a:2.250");
        assert_eq!(k.control(), "cronlease:ns:control");
        assert_ne!(k.control(), k.lease("control"));
        let read = times(vec!["1800000000".into(), "1800000000.250".into()]).unwrap();
        assert_eq!(
            read[0],
            ("1800000000".into(), parse_time_key("1800000000").unwrap())
        );
        assert_eq!(read[1].1.timestamp_subsec_millis(), 250);
        assert_eq!(k.defs("a:1"), "cronlease:ns:defs:a:1");
        assert_ne!(k.defs("a"), k.node("a"));
        assert_eq!(
            crate::store::redact_url("redis://user:secret@db.example:6379/2"),
            "redis://user:***@db.example:6379/2"
        );
        assert_eq!(
            crate::store::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn connection_failures_are_unavailable_script_errors_are_not() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify("x", io), StoreError::Unavailable(_)));
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "bad"));
        assert!(matches!(classify("x", script), StoreError::Other(_)));
        let loading = RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "wait"));
        assert!(matches!(classify("x", loading), StoreError::Unavailable(_)));
    }

    /// A URL the client cannot use is a configuration error, without a connection attempt.
    #[tokio::test]
    async fn a_bad_url_is_refused() {
        for url in ["", "http://127.0.0.1:6379", "redis://:x@[bad"] {
            match RedisStore::connect(url, "ns", Duration::from_secs(1)).await {
                Err(StoreError::Other(m)) => assert!(!m.contains(":x@"), "{m}"),
                Err(e) => panic!("{url}: not Other: {e}"),
                Ok(_) => panic!("{url}: connected"),
            }
        }
    }

    /// Nothing listening: unavailable (retried by the node), within the timeout.
    #[tokio::test]
    async fn no_server_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let start = std::time::Instant::now();
        match RedisStore::connect(&url, "ns", Duration::from_secs(1)).await {
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("not Unavailable: {e}"),
            Ok(_) => panic!("connected to a closed port"),
        }
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
