//! The file store: the processes of ONE host sharing a directory. No server to run; the
//! embedded default when no Datastore is configured.
//!
//! Layout of the store directory (`{path}/{namespace}`):
//!
//! ```text
//! lock                       the lock file (empty): every change holds flock(LOCK_EX) on it
//! leases.json                every job's lease, one JSON document {"version":1,"leases":{..}};
//!                            a lease is {"holder","session","term","acquired_at"} plus, when
//!                            set, "paused": {"by","at","note"}, "resumed_at" and "requests":
//!                            {"triggers":[..],"backfill":{..}} (the pending operator requests;
//!                            each absent in files written before it existed: not paused, no
//!                            requests)
//! control.json               the control epoch {"epoch": N}; absent until the first pause,
//!                            resume or announced request change (epoch 0)
//! nodes/{id}.json            one node record per file
//! defs/{id}.json             a node's job definitions {"digest":..,"jobs":{name: digest}};
//!                            deleted with its node record
//! runs/{job}/{time}.json     one run record per fire time; {time} is its `time_key`: unix
//!                            seconds, plus ".mmm" milliseconds for a manual run
//!                            (1800000000.250.json); sorted by the time it names, not the text
//! runs/{job}/{time}.running  empty marker while that run is `running` (orphan detection)
//! runs/{job}/pruned          the job's pruned watermark {"fire_time": unix, "fire_time_ms":
//!                            unix ms} (files without "fire_time_ms" mean whole seconds):
//!                            claims at or before it are refused
//! tmp/                       files being written; anything left here is from a dead writer
//! ```
//!
//! Why this split. A poll reads all leases and all nodes: with the leases in one file that is
//! one read and one parse (about 130 KB at 1,000 jobs) plus one small file per node, whatever
//! the number of jobs. A lease changes rarely (acquisition, release) and a release of all of a
//! node's leases is one write. Node records change on every heartbeat, so each is its own small
//! file: a heartbeat never rewrites the leases. Runs are one file per fire time so that a claim
//! writes one small file and the history is a directory listing: `recent_runs` and
//! `prune_runs` list one job's directory and sort the names, never reading the others.
//! Job names and node ids become file names with [`disk::encode`].
//!
//! Atomicity. Every change (put and delete of nodes and definitions, acquire, release, pause,
//! request changes, claim, finish, prune) is a read-modify-write under an exclusive `flock` on
//! `lock`, so the checks of [`Store::acquire`], [`Store::claim`], [`Store::release`],
//! [`Store::set_pause`], [`Store::change_request`] and [`Store::delete_node_if`] and their
//! writes are one step for every process on the host. A pause, resume or announced request
//! change also bumps the control epoch under the same lock, writing `control.json` AFTER
//! `leases.json`. Readers take no lock and read the epoch before the leases, so a reader
//! between the two writes caches the old epoch (with old or new leases) and re-reads at its
//! next poll, when it sees the bump; the other order could pair the new epoch with the old
//! leases, and that pairing would stay cached until the once-a-minute full re-read. A crash
//! between the two writes leaves the change unannounced until the next announced change or
//! that full re-read. [`Store::control_epoch`]
//! reads only `control.json`, so the per-poll check costs one small file whatever the number
//! of jobs. A heartbeat takes the lock too: an acquire compares the holder's heartbeat, so a
//! heartbeat must not land between that comparison and the lease write (in Datastore the
//! transaction would abort). Reads take no lock: every file is replaced by rename, so a reader
//! sees a whole old or a whole new file. Within one process calls first queue on an async mutex
//! (fair, and only one thread at a time polls the OS lock); a wait longer than the store
//! timeout is [`StoreError::Unavailable`].
//!
//! Crash safety. A file is replaced by writing a new one in `tmp/`, fsyncing it, renaming it
//! over the target and fsyncing the target's directory ([`disk::replace`]); a claim is durable
//! before the job runs. A writer killed at any point leaves the old or the new record and at
//! most a stray file in `tmp/`, which no reader looks at and the next [`FileStore::open`]
//! removes (under the lock, so never a live writer's). The kernel drops a dead process's
//! `flock`, so `kill -9` never leaves the store locked.
//!
//! Limits. One host: `flock` and rename are atomic for the processes of one kernel. Network
//! file systems are refused (NFS, SMB/CIFS; see [`disk::check_local`]): their locks are
//! emulated by a lock server that a partitioned client can lose without knowing, and their
//! client caches can show a reader an old file, so two hosts could both win a lease or a fire
//! time. A process frozen (SIGSTOP, a suspended VM) in the few milliseconds it holds the lock
//! stalls every change until it resumes or dies; changes then fail as unavailable. Every change
//! costs two fsyncs (on a VM disk about 10 ms), which bounds the store to some 100 changes per
//! second: fine for a heartbeat per node and a claim and finish per run, not for thousands of
//! every-second jobs.
mod disk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

use super::json_records::{self as records, Lease, LeasesFile, LEASES_VERSION};
use super::rules::{claim_refusal, ClaimFacts};
use super::{
    parse_time_key, time_key, Acquire, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Pause,
    RequestChange, RunRecord, Store, StoreError, StoreResult, RUNNING,
};

const LOCK: &str = "lock";
const LEASES: &str = "leases.json";
/// The control epoch, its own small file: every poll reads it, never the leases.
const CONTROL: &str = "control.json";
const NODES: &str = "nodes";
const DEFS: &str = "defs";
const RUNS: &str = "runs";
/// A job's pruned watermark, in its runs directory.
const PRUNED: &str = "pruned";
/// The suffix of a run's running marker.
const RUNNING_SUFFIX: &str = ".running";
const TMP: &str = "tmp";

pub struct FileStore {
    dir: Arc<Dir>,
    timeout: Duration,
    /// Queues this process's own changes before they compete for the OS lock.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The store directory's paths.
struct Dir {
    root: PathBuf,
    nodes: PathBuf,
    defs: PathBuf,
    runs: PathBuf,
    tmp: PathBuf,
}

impl FileStore {
    /// Open the store in `dir`, creating it (and its parents) if missing; remove what dead
    /// writers left in `tmp/`. Every later call is bounded by `timeout`.
    ///
    /// A directory that cannot be created or used, or that is on a network file system, is
    /// [`StoreError::Other`] (a configuration problem, not worth retrying); a lock held longer
    /// than `timeout` is [`StoreError::Unavailable`].
    pub async fn open(dir: impl AsRef<Path>, timeout: Duration) -> StoreResult<FileStore> {
        let root = std::path::absolute(dir.as_ref()).map_err(|e| {
            StoreError::Other(format!(
                "file store {}: cannot resolve the path: {e}",
                dir.as_ref().display()
            ))
        })?;
        let dir = Arc::new(Dir {
            nodes: root.join(NODES),
            defs: root.join(DEFS),
            runs: root.join(RUNS),
            tmp: root.join(TMP),
            root,
        });
        let store = FileStore {
            dir: dir.clone(),
            timeout,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.blocking("open", move || prepare(&dir)).await?;
        store
            .change("open", |dir| {
                disk::clear(&dir.tmp).map_err(|e| unavailable("clearing", &dir.tmp, e))
            })
            .await?;
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir.root
    }

    /// Run `op` on a blocking thread, bounded by the timeout (twice: the lock wait inside has
    /// the first, a file system that hangs gets the second).
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl FnOnce() -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let task = tokio::task::spawn_blocking(op);
        match tokio::time::timeout(self.timeout * 2, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(StoreError::Other(format!("file store {what}: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "file store {what}: no answer from the file system within {:?}",
                self.timeout * 2
            ))),
        }
    }

    /// Run `op` holding this process's gate and the OS lock, both waited for at most the
    /// timeout. The guards move into the blocking thread: if the caller stops waiting, the
    /// change still runs to its end before anyone else's starts.
    async fn change<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl FnOnce(&Dir) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let busy = || {
            StoreError::Unavailable(format!(
                "file store {what}: the lock on {} stayed busy for {:?}",
                self.dir.root.display(),
                self.timeout
            ))
        };
        let gate = tokio::time::timeout_at(deadline, self.gate.clone().lock_owned())
            .await
            .map_err(|_| busy())?;
        let dir = self.dir.clone();
        let lock_path = dir.root.join(LOCK);
        let deadline = deadline.into_std();
        let result = self
            .blocking(what, move || {
                let _gate = gate;
                let lock = disk::lock(&lock_path, deadline)
                    .map_err(|e| unavailable("locking", &lock_path, e))?;
                let Some(_lock) = lock else {
                    return Ok(None);
                };
                op(&dir).map(Some)
            })
            .await?;
        result.ok_or_else(busy)
    }

    /// Run a read on a blocking thread (no lock: files are replaced atomically).
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl FnOnce(&Dir) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let dir = self.dir.clone();
        self.blocking(what, move || op(&dir)).await
    }
}

/// Create the directory and its subdirectories; refuse a network file system.
fn prepare(dir: &Dir) -> StoreResult<()> {
    let refuse = |e: std::io::Error| {
        StoreError::Other(format!(
            "cannot create the file store directory {}: {e}",
            dir.root.display()
        ))
    };
    std::fs::create_dir_all(&dir.root).map_err(refuse)?;
    if let Err(why) = disk::check_local(&dir.root) {
        return Err(StoreError::Other(format!(
            "the file store directory {} cannot be used: {why}; the file store needs a local \
             file system (use Datastore to share a store between hosts)",
            dir.root.display()
        )));
    }
    for sub in [NODES, DEFS, RUNS, TMP] {
        disk::ensure_dir(&dir.root, sub).map_err(refuse)?;
    }
    // The lock file is created here so that a read-only directory is refused at start, not at
    // the first heartbeat.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.root.join(LOCK))
        .map_err(refuse)?;
    Ok(())
}

fn unavailable(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("file store: {what} {}: {e}", path.display()))
}

fn malformed(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!(
        "file store: {} is not a valid record: {e}",
        path.display()
    ))
}

/// A name as a file name, or a refusal (empty, or too long for a file name).
fn file_name(kind: &str, name: &str) -> StoreResult<String> {
    disk::encode(name).ok_or_else(|| {
        StoreError::Other(format!(
            "file store: {kind} {name:?} cannot be a file name (empty or too long)"
        ))
    })
}

fn to_json(value: &impl serde::Serialize) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Other(format!("file store: cannot encode a record: {e}")))
}

/// `control.json`: the control epoch ([`Store::control_epoch`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Control {
    epoch: i64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> StoreResult<Option<T>> {
    match disk::read(path).map_err(|e| unavailable("reading", path, e))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| malformed(path, e)),
    }
}

impl Dir {
    fn read_leases(&self) -> StoreResult<LeasesFile> {
        let path = self.root.join(LEASES);
        let file: LeasesFile = read_json(&path)?.unwrap_or(LeasesFile {
            version: LEASES_VERSION,
            leases: Default::default(),
        });
        if file.version != LEASES_VERSION {
            return Err(malformed(
                &path,
                format!(
                    "format version {} (this cronlease reads {LEASES_VERSION})",
                    file.version
                ),
            ));
        }
        Ok(file)
    }

    fn write_leases(&self, file: &LeasesFile) -> StoreResult<()> {
        disk::replace(&self.tmp, &self.root, LEASES, &to_json(file)?)
            .map_err(|e| unavailable("writing", &self.root.join(LEASES), e))
    }

    /// The control epoch; 0 if it was never bumped.
    fn read_control(&self) -> StoreResult<i64> {
        Ok(read_json::<Control>(&self.root.join(CONTROL))?.map_or(0, |c| c.epoch))
    }

    /// Bump the control epoch by one. Call with the lock held, AFTER writing the change it
    /// announces (module docs: a reader must never pair the new epoch with the old leases).
    fn bump_control(&self) -> StoreResult<()> {
        let epoch = self.read_control()? + 1;
        disk::replace(
            &self.tmp,
            &self.root,
            CONTROL,
            &to_json(&Control { epoch })?,
        )
        .map_err(|e| unavailable("writing", &self.root.join(CONTROL), e))
    }

    fn node_file(&self, id: &str) -> StoreResult<String> {
        Ok(format!("{}.json", file_name("node id", id)?))
    }

    fn read_node(&self, id: &str) -> StoreResult<Option<NodeRecord>> {
        let path = self.nodes.join(self.node_file(id)?);
        Ok(read_json::<records::Node>(&path)?.map(NodeRecord::from))
    }

    /// Delete node `id`'s record and then its definitions; whether the record existed.
    fn remove_node(&self, id: &str) -> StoreResult<bool> {
        let name = self.node_file(id)?;
        let existed = disk::remove(&self.nodes, &name)
            .map_err(|e| unavailable("deleting", &self.nodes.join(&name), e))?;
        disk::remove(&self.defs, &name)
            .map_err(|e| unavailable("deleting", &self.defs.join(&name), e))?;
        Ok(existed)
    }

    fn read_nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        let stems =
            disk::json_stems(&self.nodes).map_err(|e| unavailable("listing", &self.nodes, e))?;
        let mut nodes = HashMap::new();
        for stem in stems {
            if disk::decode(&stem).is_none() {
                continue; // not a name this store wrote
            }
            let path = self.nodes.join(format!("{stem}.json"));
            // Gone between listing and reading: deleted meanwhile, as good as never seen.
            if let Some(node) = read_json::<records::Node>(&path)? {
                nodes.insert(node.id.clone(), NodeRecord::from(node));
            }
        }
        Ok(nodes)
    }

    fn job_dir(&self, job: &str) -> StoreResult<PathBuf> {
        Ok(self.runs.join(file_name("job name", job)?))
    }

    fn run_path(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<PathBuf> {
        Ok(self.job_dir(job)?.join(run_name(fire_time)))
    }

    /// Write (create or overwrite) a run record, creating its job's directory if needed.
    fn write_run(&self, run: &RunRecord) -> StoreResult<()> {
        let name = file_name("job name", &run.job)?;
        disk::ensure_dir(&self.runs, &name).map_err(|e| unavailable("creating", &self.runs, e))?;
        let dir = self.runs.join(&name);
        let file = run_name(run.fire_time);
        disk::replace(&self.tmp, &dir, &file, &to_json(&records::Run::from(run))?)
            .map_err(|e| unavailable("writing", &dir.join(&file), e))
    }

    fn read_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        Ok(read_json::<records::Run>(&self.run_path(job, fire_time)?)?.map(RunRecord::from))
    }

    /// The job's pruned watermark (to the millisecond), if it was ever pruned.
    fn pruned(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let path = self.job_dir(job)?.join(PRUNED);
        Ok(read_json::<records::Pruned>(&path)?.map(|p| p.time()))
    }

    /// Mark a run as going (an empty file beside its record). Not synced on its own: the
    /// record's write that follows syncs the directory.
    fn mark_running(&self, run: &RunRecord) -> StoreResult<()> {
        let name = file_name("job name", &run.job)?;
        disk::ensure_dir(&self.runs, &name).map_err(|e| unavailable("creating", &self.runs, e))?;
        let path = self.runs.join(&name).join(running_name(run.fire_time));
        std::fs::write(&path, b"").map_err(|e| unavailable("writing", &path, e))
    }

    /// Drop a run's running marker. Not synced: a marker that outlives a crash is harmless
    /// (`running_runs` reads the record and keeps only those still `running`).
    fn unmark_running(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<()> {
        let path = self.job_dir(job)?.join(running_name(fire_time));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable("deleting", &path, e)),
        }
    }

    /// Replace a run record that is still `running` under `session` (and `term`, if given)
    /// with `new`; false if it is not.
    fn replace_running(
        &self,
        new: &RunRecord,
        session: &str,
        term: Option<i64>,
    ) -> StoreResult<bool> {
        let current = self.read_run(&new.job, new.fire_time)?;
        let same = current.is_some_and(|c| {
            c.outcome == RUNNING && c.session == session && term.is_none_or(|t| t == c.term)
        });
        if !same {
            return Ok(false);
        }
        if new.outcome == RUNNING {
            self.mark_running(new)?;
        }
        self.write_run(new)?;
        if new.outcome != RUNNING {
            self.unmark_running(&new.job, new.fire_time)?;
        }
        Ok(true)
    }

    /// A job's run fire times, newest first (by the full time: `1800000000.250` sorts after
    /// `1800000000` and before `1800000001`, `999999999` before `1000000000`).
    fn run_times(&self, job: &str) -> StoreResult<(PathBuf, Vec<DateTime<Utc>>)> {
        let dir = self.job_dir(job)?;
        let stems = disk::json_stems(&dir).map_err(|e| unavailable("listing", &dir, e))?;
        let mut times: Vec<DateTime<Utc>> = stems.iter().filter_map(|s| run_time(s)).collect();
        times.sort_unstable_by_key(|t| std::cmp::Reverse(*t));
        Ok((dir, times))
    }

    /// The run records of `times` in that order; one deleted meanwhile is left out.
    fn read_runs(&self, dir: &Path, times: &[DateTime<Utc>]) -> StoreResult<Vec<RunRecord>> {
        let mut runs = Vec::with_capacity(times.len());
        for t in times {
            if let Some(run) = read_json::<records::Run>(&dir.join(run_name(*t)))? {
                runs.push(RunRecord::from(run));
            }
        }
        Ok(runs)
    }
}

/// The record's file name of a fire time: `{time_key}.json`.
fn run_name(fire_time: DateTime<Utc>) -> String {
    format!("{}.json", time_key(fire_time))
}

/// The running marker's file name of a fire time: `{time_key}.running`.
fn running_name(fire_time: DateTime<Utc>) -> String {
    format!("{}{RUNNING_SUFFIX}", time_key(fire_time))
}

/// The fire time a run file's stem names; `None` for a name this store did not write (not a
/// [`time_key`], or not in its one spelling, which would name a file no read looks for).
fn run_time(stem: &str) -> Option<DateTime<Utc>> {
    parse_time_key(stem).filter(|t| time_key(*t) == stem)
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file store at {}", self.dir.root.display())
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let record = records::Node::from(node);
        let id = node.id.clone();
        self.change("put_node", move |dir| {
            let name = dir.node_file(&id)?;
            disk::replace(&dir.tmp, &dir.nodes, &name, &to_json(&record)?)
                .map_err(|e| unavailable("writing", &dir.nodes.join(&name), e))
        })
        .await
    }

    async fn delete_node(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.change("delete_node", move |dir| dir.remove_node(&id).map(|_| ()))
            .await
    }

    async fn delete_node_if(&self, id: &str, session: &str, heartbeat: i64) -> StoreResult<bool> {
        let (id, session) = (id.to_string(), session.to_string());
        self.change("delete_node_if", move |dir| {
            let same = dir
                .read_node(&id)?
                .is_some_and(|n| n.session == session && n.heartbeat == heartbeat);
            if !same {
                return Ok(false);
            }
            dir.remove_node(&id)
        })
        .await
    }

    async fn put_definitions(&self, node: &str, defs: &Definitions) -> StoreResult<()> {
        let record = records::Definitions::from(defs);
        let id = node.to_string();
        self.change("put_definitions", move |dir| {
            let name = dir.node_file(&id)?;
            disk::replace(&dir.tmp, &dir.defs, &name, &to_json(&record)?)
                .map_err(|e| unavailable("writing", &dir.defs.join(&name), e))
        })
        .await
    }

    async fn definitions(&self, node: &str) -> StoreResult<Option<Definitions>> {
        let id = node.to_string();
        self.read("definitions", move |dir| {
            let path = dir.defs.join(dir.node_file(&id)?);
            Ok(read_json::<records::Definitions>(&path)?.map(Definitions::from))
        })
        .await
    }

    async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
        self.read("nodes", move |dir| dir.read_nodes()).await
    }

    async fn leases(&self, jobs: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
        let jobs = jobs.to_vec();
        self.read("leases", move |dir| {
            let mut all = dir.read_leases()?.leases;
            Ok(jobs
                .into_iter()
                .filter_map(|job| {
                    let lease = all.remove(&job)?;
                    Some((job, LeaseRecord::from(lease)))
                })
                .collect())
        })
        .await
    }

    async fn acquire_many(&self, batch: &[Acquire]) -> StoreResult<Vec<String>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch.to_vec();
        // Under the lock: one read of the leases, one of each observed holder, one write.
        self.change("acquire_many", move |dir| {
            let mut file = dir.read_leases()?;
            let mut holders: HashMap<String, Option<(String, i64)>> = HashMap::new();
            let mut won = Vec::new();
            for a in &batch {
                let holder = a.observed.holder();
                let node_now = if holder.is_empty() {
                    None
                } else {
                    if !holders.contains_key(holder) {
                        let now = dir.read_node(holder)?.map(|n| (n.session, n.heartbeat));
                        holders.insert(holder.to_string(), now);
                    }
                    holders[holder].clone()
                };
                let stored = file.leases.get(&a.job).cloned().map(LeaseRecord::from);
                let node_now = node_now.as_ref().map(|(s, h)| (s.as_str(), *h));
                if a.observed.still(stored.as_ref(), node_now) {
                    let new = a.record(stored.as_ref());
                    file.leases.insert(a.job.clone(), Lease::from(&new));
                    won.push(a.job.clone());
                }
            }
            if !won.is_empty() {
                dir.write_leases(&file)?;
            }
            Ok(won)
        })
        .await
    }

    async fn release(&self, jobs: &[String], node: &str, session: &str) -> StoreResult<usize> {
        let (jobs, node, session) = (jobs.to_vec(), node.to_string(), session.to_string());
        self.change("release", move |dir| {
            let mut file = dir.read_leases()?;
            let mut freed = 0;
            for job in &jobs {
                if let Some(lease) = file.leases.get_mut(job) {
                    if lease.holder == node && lease.session == session {
                        // Free, keeping the term (the next holder's term is still higher),
                        // the pause and the requests.
                        lease.holder.clear();
                        lease.session.clear();
                        freed += 1;
                    }
                }
            }
            if freed > 0 {
                dir.write_leases(&file)?;
            }
            Ok(freed)
        })
        .await
    }

    async fn set_pause(&self, job: &str, pause: Option<&Pause>) -> StoreResult<bool> {
        let (job, pause) = (job.to_string(), pause.cloned());
        self.change("set_pause", move |dir| {
            let mut file = dir.read_leases()?;
            if pause.is_none() && !file.leases.contains_key(&job) {
                return Ok(false); // no record: not paused, nothing to resume
            }
            let lease = file.leases.entry(job).or_insert_with(Lease::free);
            if !lease.set_pause(pause.as_ref(), Utc::now()) {
                return Ok(false);
            }
            dir.write_leases(&file)?;
            dir.bump_control()?;
            Ok(true)
        })
        .await
    }

    async fn change_request(&self, job: &str, change: &RequestChange) -> StoreResult<bool> {
        let (job, change) = (job.to_string(), change.clone());
        self.change("change_request", move |dir| {
            let mut file = dir.read_leases()?;
            let mut lease = file.leases.get(&job).cloned().unwrap_or_else(Lease::free);
            if !lease.requests.apply(&change) {
                return Ok(false);
            }
            file.leases.insert(job, lease);
            dir.write_leases(&file)?;
            if change.announced() {
                dir.bump_control()?;
            }
            Ok(true)
        })
        .await
    }

    async fn control_epoch(&self) -> StoreResult<i64> {
        self.read("control_epoch", |dir| dir.read_control()).await
    }

    async fn pruned_until(&self, job: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let job = job.to_string();
        self.read("pruned_until", move |dir| dir.pruned(&job)).await
    }

    async fn claim(&self, run: &RunRecord, session: &str) -> StoreResult<Claim> {
        let (run, session) = (run.clone(), session.to_string());
        self.change("claim", move |dir| {
            let leases = dir.read_leases()?.leases;
            let Some(lease) = leases
                .get(&run.job)
                .filter(|l| l.holder == run.node && l.session == session && l.term == run.term)
            else {
                return Ok(Claim::Fenced);
            };
            let path = dir.run_path(&run.job, run.fire_time)?;
            let existed = match std::fs::symlink_metadata(&path) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(unavailable("checking", &path, e)),
            };
            // To the millisecond, as the run's file name and the watermark are.
            let at = run.fire_time.trunc_subsecs(3);
            let facts = ClaimFacts::of_holder(
                &run,
                lease.paused.is_some(),
                &lease.requests,
                dir.pruned(&run.job)?.is_some_and(|p| at <= p),
                existed,
            );
            // Under the lock, nobody else inserts: no refusal means this claim wins.
            if let Some(refused) = claim_refusal(&facts) {
                return Ok(refused);
            }
            if run.outcome == RUNNING {
                dir.mark_running(&run)?;
            }
            dir.write_run(&run)?;
            Ok(Claim::Won)
        })
        .await
    }

    async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
        let run = run.clone();
        self.change("finish", move |dir| {
            dir.replace_running(&run, &run.session, Some(run.term))
        })
        .await
    }

    async fn get_run(&self, job: &str, fire_time: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
        let job = job.to_string();
        self.read("get_run", move |dir| dir.read_run(&job, fire_time))
            .await
    }

    async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.read("running_runs", move |dir| {
            let jobs = match std::fs::read_dir(&dir.runs) {
                Ok(entries) => entries,
                Err(e) => return Err(unavailable("listing", &dir.runs, e)),
            };
            let mut out = Vec::new();
            for entry in jobs {
                let entry = entry.map_err(|e| unavailable("listing", &dir.runs, e))?;
                let job_dir = entry.path();
                let Ok(names) = std::fs::read_dir(&job_dir) else {
                    continue; // removed meanwhile, or not a directory
                };
                for name in names.flatten() {
                    let name = name.file_name();
                    let Some(fire_time) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(RUNNING_SUFFIX))
                        .and_then(run_time)
                    else {
                        continue;
                    };
                    let path = job_dir.join(run_name(fire_time));
                    match read_json::<records::Run>(&path) {
                        Ok(Some(run)) if run.outcome == RUNNING => out.push(RunRecord::from(run)),
                        Ok(_) => {}
                        // One damaged record must not hide every orphan.
                        Err(StoreError::Other(e)) => tracing::warn!("skipping a run record: {e}"),
                        Err(e) => return Err(e),
                    }
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
        let (new, orphan_session, fence) = (new.clone(), orphan_session.to_string(), fence.clone());
        self.change("close_orphan", move |dir| {
            let leases = dir.read_leases()?.leases;
            let Some(lease) = leases.get(&new.job).filter(|l| {
                l.holder == fence.node && l.session == fence.session && l.term == fence.term
            }) else {
                return Ok(Claim::Fenced);
            };
            // A recovery is a new run of the job: not while it is paused. Closing as lost is.
            if new.outcome == RUNNING && lease.paused.is_some() {
                return Ok(Claim::Paused);
            }
            Ok(if dir.replace_running(&new, &orphan_session, None)? {
                Claim::Won
            } else {
                Claim::AlreadyRun
            })
        })
        .await
    }

    async fn runs(&self, job: &str) -> StoreResult<Vec<RunRecord>> {
        let job = job.to_string();
        self.read("runs", move |dir| {
            let (path, mut times) = dir.run_times(&job)?;
            times.reverse();
            dir.read_runs(&path, &times)
        })
        .await
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let job = job.to_string();
        self.read("recent_runs", move |dir| {
            let (path, times) = dir.run_times(&job)?;
            dir.read_runs(&path, &times[..times.len().min(limit)])
        })
        .await
    }

    async fn prune_runs(&self, job: &str, keep: usize) -> StoreResult<usize> {
        let job = job.to_string();
        self.change("prune_runs", move |dir| {
            let (path, times) = dir.run_times(&job)?;
            // The watermark first: a crash after it leaves records nobody may claim again,
            // never a gap in which a deleted fire time could be claimed.
            if let Some(newest) = times.get(keep).copied() {
                if dir.pruned(&job)?.is_none_or(|p| p < newest) {
                    let bytes = to_json(&records::Pruned::at(newest))?;
                    disk::replace(&dir.tmp, &path, PRUNED, &bytes)
                        .map_err(|e| unavailable("writing", &path.join(PRUNED), e))?;
                }
            }
            let mut deleted = 0;
            for t in times.iter().skip(keep) {
                let _ = std::fs::remove_file(path.join(running_name(*t)));
                let name = run_name(*t);
                match std::fs::remove_file(path.join(&name)) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(unavailable("deleting", &path.join(&name), e)),
                }
            }
            if deleted > 0 {
                // One directory fsync for the whole batch.
                disk::sync_dir(&path).map_err(|e| unavailable("syncing", &path, e))?;
            }
            Ok(deleted)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, ms: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, ms * 1_000_000).unwrap()
    }

    async fn open(dir: &Path) -> FileStore {
        FileStore::open(dir, Duration::from_secs(10)).await.unwrap()
    }

    #[test]
    fn run_names_are_time_keys() {
        assert_eq!(run_name(at(1_800_000_000, 0)), "1800000000.json");
        assert_eq!(run_name(at(1_800_000_000, 250)), "1800000000.250.json");
        assert_eq!(running_name(at(1_800_000_000, 0)), "1800000000.running");
        assert_eq!(running_name(at(1_800_000_000, 5)), "1800000000.005.running");
        assert_eq!(run_time("1800000000.250"), Some(at(1_800_000_000, 250)));
        // Names no write produces (another spelling of a time, or no time) are not runs.
        for stem in [
            "1800000000.000",
            "01800000000",
            "+1800000000",
            "x",
            "1800000000.25",
        ] {
            assert_eq!(run_time(stem), None, "{stem}");
        }
    }

    #[tokio::test]
    async fn runs_sort_by_the_full_fire_time_not_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path()).await;
        let job_dir = tmp.path().join(RUNS).join("job");
        std::fs::create_dir_all(&job_dir).unwrap();
        let times = [
            at(999_999_999, 0),
            at(999_999_999, 900),
            at(1_000_000_000, 0),
            at(1_000_000_000, 250),
            at(1_000_000_001, 0),
        ];
        for t in times {
            let run = RunRecord {
                job: "job".into(),
                fire_time: t,
                outcome: "ok".into(),
                ..RunRecord::default()
            };
            let bytes = serde_json::to_vec(&records::Run::from(&run)).unwrap();
            std::fs::write(job_dir.join(run_name(t)), bytes).unwrap();
        }
        std::fs::write(job_dir.join("1000000000.000.json"), b"{").unwrap();
        let oldest_first: Vec<_> = store
            .runs("job")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.fire_time)
            .collect();
        assert_eq!(oldest_first, times);
        let newest: Vec<_> = store
            .recent_runs("job", 2)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.fire_time)
            .collect();
        assert_eq!(newest, vec![times[4], times[3]]);
        assert_eq!(store.prune_runs("job", 2).await.unwrap(), 3);
        assert_eq!(store.pruned_until("job").await.unwrap(), Some(times[2]));
        let pruned = std::fs::read_to_string(job_dir.join(PRUNED)).unwrap();
        assert_eq!(
            pruned,
            r#"{"fire_time":1000000000,"fire_time_ms":1000000000000}"#
        );
    }

    #[tokio::test]
    async fn an_old_watermark_reads_as_whole_seconds() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path()).await;
        let job_dir = tmp.path().join(RUNS).join("job");
        std::fs::create_dir_all(&job_dir).unwrap();
        std::fs::write(job_dir.join(PRUNED), br#"{"fire_time":1800000000}"#).unwrap();
        assert_eq!(
            store.pruned_until("job").await.unwrap(),
            Some(at(1_800_000_000, 0))
        );
    }

    #[tokio::test]
    async fn the_control_epoch_is_its_own_small_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path()).await;
        assert_eq!(store.control_epoch().await.unwrap(), 0);
        assert!(!tmp.path().join(CONTROL).exists());
        let pause = Pause {
            by: "ops@h".into(),
            at: at(1_800_000_000, 0),
            note: String::new(),
        };
        assert!(store.set_pause("job", Some(&pause)).await.unwrap());
        let control = std::fs::read_to_string(tmp.path().join(CONTROL)).unwrap();
        assert_eq!(control, r#"{"epoch":1}"#);
        assert!(!store.set_pause("job", Some(&pause)).await.unwrap());
        assert!(store.set_pause("job", None).await.unwrap());
        assert_eq!(store.control_epoch().await.unwrap(), 2);
        // The epoch is read from its file alone: a damaged leases file does not hide it.
        std::fs::write(tmp.path().join(LEASES), b"{").unwrap();
        assert_eq!(store.control_epoch().await.unwrap(), 2);
        std::fs::write(tmp.path().join(CONTROL), b"[").unwrap();
        match store.control_epoch().await {
            Err(StoreError::Other(m)) => assert!(m.contains(CONTROL), "{m}"),
            other => panic!("a damaged control file was read: {other:?}"),
        }
    }
}
