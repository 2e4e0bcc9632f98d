//! The store contract: what the election and the tick logic rely on, checked against every
//! backend. Each backend gets one test per clause (`contract!` below), on a fresh store: its
//! own emulator for Datastore, its own temp directory for the file store. Tests only the file
//! store needs (other processes, crashed writers, the lock) follow at the end.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cronlease::store::file::FileStore;
use cronlease::store::{
    Acquire, BackfillRequest, Claim, Definitions, Fence, LeaseRecord, NodeRecord, Observed, Pause,
    RequestChange, Requests, RunRecord, RunTrigger, Store, StoreError, TriggerRequest,
    ACQUIRE_BATCH,
};

use common::Emulator;

/// A fresh file store in its own temp directory (deleted with the returned guard).
async fn file_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = FileStore::open(dir.path(), Duration::from_secs(10))
        .await
        .expect("open the file store");
    (Arc::new(store), dir)
}

/// A fresh Datastore store (kept alive by the returned guard): under nextest a project of its
/// own on the run's shared emulator, else an emulator of its own (see [`Emulator::start`]).
async fn datastore_store() -> (Arc<dyn Store>, Emulator) {
    let emu = Emulator::start();
    let store = emu.store("contract").await;
    (Arc::new(store), emu)
}

/// A fresh Redis store on its own `redis-server` (kept alive by the returned guard).
async fn redis_store() -> (Arc<dyn Store>, common::redis_server::RedisServer) {
    let server = common::redis_server::RedisServer::start();
    let store =
        cronlease::store::redis::connect(&server.url(), "contract", Duration::from_secs(10))
            .await
            .expect("connect to redis-server");
    (store, server)
}

/// A fresh ZooKeeper store on its own standalone server (kept alive by the returned guard).
async fn zookeeper_store() -> (Arc<dyn Store>, common::zookeeper_server::ZooKeeperServer) {
    let server = common::zookeeper_server::ZooKeeperServer::start();
    let store =
        cronlease::store::zookeeper::connect(&server.hosts(), "contract", Duration::from_secs(10))
            .await
            .expect("connect to ZooKeeper");
    (store, server)
}

/// A fresh PostgreSQL store on its own server (kept alive by the returned guard).
async fn postgres_store() -> (Arc<dyn Store>, common::postgres_server::PostgresServer) {
    let server = common::postgres_server::PostgresServer::start();
    let store = cronlease::store::postgres::connect(
        &server.url(),
        "cronlease",
        "contract",
        Duration::from_secs(10),
    )
    .await
    .expect("connect to postgres");
    (store, server)
}

fn node(id: &str, session: &str, heartbeat: i64) -> NodeRecord {
    NodeRecord {
        id: id.to_string(),
        session: session.to_string(),
        heartbeat,
        started_at: Utc::now(),
        renewed_at: Utc::now(),
        jobs: vec![],
        http: None,
        lease_epoch: 0,
        process: format!("p{id}"),
        clock_offset_ms: None,
        jobs_digest: String::new(),
        leaving: false,
    }
}

/// Definitions of `jobs` jobs named `job{i}`, each with a digest that depends on `version`.
fn defs(version: &str, jobs: usize) -> Definitions {
    let jobs: std::collections::BTreeMap<String, String> = (0..jobs)
        .map(|i| (format!("job{i:04}"), format!("{version}-{i:064x}")))
        .collect();
    Definitions {
        digest: format!("all-{version}-{}", jobs.len()),
        jobs,
    }
}

fn lease(holder: &str, session: &str, term: i64) -> LeaseRecord {
    LeaseRecord {
        holder: holder.to_string(),
        session: session.to_string(),
        term,
        acquired_at: Some(Utc::now()),
        paused: None,
        resumed_at: None,
        requests: Requests::default(),
    }
}

/// A pause by `by` at `secs` after the tests' epoch (to the millisecond: every backend keeps
/// at least that), with `note`.
fn pause(by: &str, secs: i64, note: &str) -> Pause {
    Pause {
        by: by.to_string(),
        at: Utc
            .timestamp_opt(1_800_000_000 + secs, 250_000_000)
            .unwrap(),
        note: note.to_string(),
    }
}

/// `job`'s lease as stored now.
async fn lease_of(store: &dyn Store, job: &str) -> LeaseRecord {
    store.leases(&[job.to_string()]).await.unwrap()[job].clone()
}

fn run(job: &str, fire: DateTime<Utc>, node: &str, term: i64) -> RunRecord {
    // The conventions of these tests: node `a` runs session `sa` in process `pa`.
    RunRecord::claimed(
        job,
        fire,
        node,
        term,
        &format!("s{node}"),
        &format!("p{node}"),
    )
}

/// `r` ended now with `outcome`.
fn ended(r: &RunRecord, outcome: &str) -> RunRecord {
    RunRecord {
        outcome: outcome.into(),
        finished_at: Some(Utc::now()),
        ..r.clone()
    }
}

fn fence(node: &str, term: i64) -> Fence {
    Fence {
        node: node.to_string(),
        session: format!("s{node}"),
        term,
    }
}

fn fire(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

const FREE: Observed = Observed {
    lease: None,
    holder_node: None,
    handed_over: false,
};

/// Take `job` for `who` from the state the store holds now.
async fn take(store: &dyn Store, job: &str, who: &str, session: &str) -> i64 {
    let snap = store.snapshot(&[job.to_string()]).await.unwrap();
    let a = acquisition(&snap, job, who, session);
    assert!(store.acquire(job, &a.observed, &a.new).await.unwrap());
    a.new.term
}

// ---- the clauses, generic over the backend ----

async fn concurrent_acquirers_exactly_one_wins(store: Arc<dyn Store>) {
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let who = format!("n{i}");
            store.acquire("job", &FREE, &lease(&who, "s", 1)).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        // An error (e.g. contention reported as unavailable) is not a win either.
        if let Ok(true) = h.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one of 8 concurrent acquirers wins");
    let snap = store.snapshot(&["job".to_string()]).await.unwrap();
    assert_eq!(snap.leases["job"].term, 1);
}

async fn term_grows_on_every_change_of_holder(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    assert_eq!(take(&*store, "job", "a", "sa").await, 1);
    assert_eq!(take(&*store, "job", "b", "sb").await, 2);
    assert_eq!(
        store
            .release(&["job".to_string()], "b", "sb")
            .await
            .unwrap(),
        1
    );
    let snap = store.snapshot(&["job".to_string()]).await.unwrap();
    assert!(snap.leases["job"].is_free());
    assert_eq!(snap.leases["job"].term, 2, "release keeps the term");
    assert_eq!(take(&*store, "job", "a", "sa").await, 3);
}

async fn acquire_fails_when_anything_observed_changed(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let seen = Observed {
        lease: Some(lease("a", "sa", t)),
        holder_node: Some(("sa".into(), 1)),
        handed_over: false,
    };
    // The holder renewed after the observation: its lease stays.
    store.put_node(&node("a", "sa", 2)).await.unwrap();
    assert!(!store
        .acquire("job", &seen, &lease("b", "sb", t + 1))
        .await
        .unwrap());
    // A stale lease observation loses too.
    let stale = Observed {
        lease: Some(lease("a", "sa", t - 1)),
        holder_node: Some(("sa".into(), 2)),
        handed_over: false,
    };
    assert!(!store
        .acquire("job", &stale, &lease("b", "sb", t + 1))
        .await
        .unwrap());
    // An exact observation wins.
    let exact = Observed {
        lease: Some(lease("a", "sa", t)),
        holder_node: Some(("sa".into(), 2)),
        handed_over: false,
    };
    assert!(store
        .acquire("job", &exact, &lease("b", "sb", t + 1))
        .await
        .unwrap());
    // Holder's node record gone (graceful stop): observed as gone, acquirable.
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    store.delete_node("b").await.unwrap();
    let gone = Observed {
        lease: Some(lease("b", "sb", t + 1)),
        holder_node: None,
        handed_over: false,
    };
    assert!(store
        .acquire("job", &gone, &lease("a", "sa", t + 2))
        .await
        .unwrap());
}

/// A lease its stopping holder handed over (`leaving`, the job not kept) is taken on the lease
/// alone: the holder's record exists and its heartbeat moved since it was read, and the take
/// still wins; a lease that changed since it was read is not taken that way either.
async fn a_handed_over_lease_is_taken_on_the_lease_alone(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    // The stopping holder heartbeats on.
    store.put_node(&node("a", "sa", 5)).await.unwrap();
    let stale = Observed {
        lease: Some(lease("a", "sa", t - 1)),
        holder_node: None,
        handed_over: true,
    };
    assert!(!store
        .acquire("job", &stale, &lease("b", "sb", t + 1))
        .await
        .unwrap());
    let handed = Observed {
        lease: Some(lease("a", "sa", t)),
        holder_node: None,
        handed_over: true,
    };
    let won = store
        .acquire_many(&[Acquire {
            job: "job".into(),
            observed: handed.clone(),
            new: lease("b", "sb", t + 1),
        }])
        .await
        .unwrap();
    assert_eq!(won, ["job"]);
    // Once taken, the same observation takes nothing more.
    assert!(!store
        .acquire("job", &handed, &lease("c", "sc", t + 2))
        .await
        .unwrap());
    let snap = store.snapshot(&["job".to_string()]).await.unwrap();
    assert_eq!(snap.leases["job"].holder, "b");
    assert_eq!(snap.leases["job"].term, t + 1);
}

/// One acquisition of a batch: `job` from what `snap` shows, for `who` in `session`.
fn acquisition(snap: &cronlease::store::Snapshot, job: &str, who: &str, session: &str) -> Acquire {
    let cur = snap.leases.get(job).cloned();
    let holder_node = cur
        .as_ref()
        .filter(|l| !l.holder.is_empty())
        .and_then(|l| snap.nodes.get(&l.holder))
        .map(|n| (n.session.clone(), n.heartbeat));
    let term = cur.as_ref().map_or(0, |l| l.term) + 1;
    Acquire {
        job: job.to_string(),
        observed: Observed {
            lease: cur,
            holder_node,
            handed_over: false,
        },
        new: lease(who, session, term),
    }
}

/// A batch writes every lease still as observed and leaves the others as they are: a holder
/// that heartbeated keeps its lease, a lease taken since is not taken again; each lease taken
/// gets its own job's next term; pauses and requests stay as stored.
async fn a_batch_takes_only_what_is_still_as_observed(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("dead", "sd", 7)).await.unwrap();
    let jobs: Vec<String> = (0..6).map(|i| format!("job{i}")).collect();
    // job0 and job1 held by `dead` (terms 1 and 2), job2 by `a`, job3 free with a pause,
    // job4 and job5 never held.
    take(&*store, "job0", "dead", "sd").await;
    take(&*store, "job1", "a", "sa").await;
    take(&*store, "job1", "dead", "sd").await;
    take(&*store, "job2", "a", "sa").await;
    assert!(store
        .set_pause("job3", Some(&pause("ops", 1, "hold")))
        .await
        .unwrap());
    let snap = store.snapshot(&jobs).await.unwrap();
    let batch: Vec<Acquire> = jobs
        .iter()
        .map(|j| acquisition(&snap, j, "b", "sb"))
        .collect();
    // Since the observation: `a` heartbeated (job2 stays), and somebody took job5.
    store.put_node(&node("a", "sa", 2)).await.unwrap();
    take(&*store, "job5", "c", "sc").await;
    let mut won = store.acquire_many(&batch).await.unwrap();
    won.sort();
    assert_eq!(won, ["job0", "job1", "job3", "job4"]);
    let now = store.leases(&jobs).await.unwrap();
    for (job, term) in [("job0", 2), ("job1", 3), ("job3", 1), ("job4", 1)] {
        assert_eq!(
            (now[job].holder.as_str(), now[job].term),
            ("b", term),
            "{job}"
        );
    }
    assert_eq!(
        now["job2"].holder, "a",
        "a holder that heartbeated keeps its lease"
    );
    assert_eq!(
        now["job5"].holder, "c",
        "a lease taken since is not taken again"
    );
    assert_eq!(
        now["job3"].paused,
        Some(Box::new(pause("ops", 1, "hold"))),
        "the pause stays"
    );
    // The same batch again: nothing is as observed any more.
    assert!(store.acquire_many(&batch).await.unwrap().is_empty());
    assert!(store.acquire_many(&[]).await.unwrap().is_empty());
}

/// A full batch ([`ACQUIRE_BATCH`] leases) is one call, and two batches racing from one
/// observation never both take a lease: each lease ends with the batch that reports it.
/// (A Datastore transaction touches at most 25 entity groups: that store splits a batch into
/// transactions of that size, each all-or-nothing.)
async fn racing_batches_never_take_a_lease_twice(store: Arc<dyn Store>) {
    let jobs: Vec<String> = (0..ACQUIRE_BATCH).map(|i| format!("job{i:04}")).collect();
    let snap = store.snapshot(&jobs).await.unwrap();
    let mine: Vec<Acquire> = jobs
        .iter()
        .map(|j| acquisition(&snap, j, "a", "sa"))
        .collect();
    assert_eq!(
        store.acquire_many(&mine).await.unwrap().len(),
        ACQUIRE_BATCH
    );
    let held = store.leases(&jobs).await.unwrap();
    assert!(held.values().all(|l| l.holder == "a" && l.term == 1));
    // `a` is gone (its record never existed): two nodes race for all of its leases, each in
    // batches that overlap the other's half-way.
    let snap = store.snapshot(&jobs).await.unwrap();
    let half = ACQUIRE_BATCH / 2;
    let b: Vec<Acquire> = jobs[..half + 50]
        .iter()
        .map(|j| acquisition(&snap, j, "b", "sb"))
        .collect();
    let c: Vec<Acquire> = jobs[half - 50..]
        .iter()
        .map(|j| acquisition(&snap, j, "c", "sc"))
        .collect();
    let (won_b, won_c) = tokio::join!(store.acquire_many(&b), store.acquire_many(&c));
    // A backend may report contention as an error: that batch's leases may then have been
    // written unreported (the caller re-reads), but never taken twice.
    let both_answered = won_b.is_ok() && won_c.is_ok();
    let won_b = won_b.unwrap_or_default();
    let won_c = won_c.unwrap_or_default();
    assert!(!won_b.is_empty() || !won_c.is_empty(), "somebody wins");
    let now = store.leases(&jobs).await.unwrap();
    for job in &won_b {
        assert!(!won_c.contains(job), "{job} taken by both batches");
        assert_eq!((now[job].holder.as_str(), now[job].term), ("b", 2), "{job}");
    }
    for job in &won_c {
        assert_eq!((now[job].holder.as_str(), now[job].term), ("c", 2), "{job}");
    }
    let unreported = jobs
        .iter()
        .filter(|j| !won_b.contains(j) && !won_c.contains(j))
        .filter(|j| now[*j].holder != "a")
        .count();
    if both_answered {
        assert_eq!(
            unreported, 0,
            "a lease changed by a batch that did not report it"
        );
    }
    // Hundreds of leases go back in one call too (a graceful stop of a node that led them).
    let freed = store.release(&jobs, "b", "sb").await.unwrap();
    let now = store.leases(&jobs).await.unwrap();
    assert_eq!(freed, won_b.len());
    assert!(won_b.iter().all(|j| now[j].is_free()));
}

async fn a_fire_time_is_claimed_once_across_contenders(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.claim(&run("job", fire(0), "a", t), "sa").await
        }));
    }
    let mut won = 0;
    for h in handles {
        if let Ok(Claim::Won) = h.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "one claim of 8 wins");
    assert_eq!(
        store
            .claim(&run("job", fire(0), "a", t), "sa")
            .await
            .unwrap(),
        Claim::AlreadyRun
    );
    assert!(store.run_exists("job", fire(0)).await.unwrap());
    assert!(!store.run_exists("job", fire(1)).await.unwrap());
}

/// The holder's claims of one job's different fire times at the same moment (a catch-up and
/// the next tick, retries of both) all win: contention between them is the store's to resolve
/// (Datastore aborts one of two concurrent transactions on an entity group), never a lost fire
/// time.
async fn concurrent_claims_of_one_jobs_fire_times_all_win(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let mut handles = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.claim(&run("job", fire(i), "a", t), "sa").await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let claim = h.await.unwrap();
        assert!(
            matches!(claim, Ok(Claim::Won)),
            "the claim of fire time {i}: {claim:?}"
        );
    }
    for i in 0..6 {
        assert!(store.run_exists("job", fire(i)).await.unwrap());
    }
}

async fn a_stale_holder_cannot_claim(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let ta = take(&*store, "job", "a", "sa").await;
    let tb = take(&*store, "job", "b", "sb").await;
    assert_eq!(
        store
            .claim(&run("job", fire(1), "a", ta), "sa")
            .await
            .unwrap(),
        Claim::Fenced
    );
    // Right node, wrong session (a restarted process) or wrong term: fenced as well.
    assert_eq!(
        store
            .claim(&run("job", fire(1), "b", tb), "old")
            .await
            .unwrap(),
        Claim::Fenced
    );
    assert_eq!(
        store
            .claim(&run("job", fire(1), "b", tb - 1), "sb")
            .await
            .unwrap(),
        Claim::Fenced
    );
    assert!(
        !store.run_exists("job", fire(1)).await.unwrap(),
        "a fenced claim writes nothing"
    );
    assert_eq!(
        store
            .claim(&run("job", fire(1), "b", tb), "sb")
            .await
            .unwrap(),
        Claim::Won
    );
}

async fn claim_racing_a_takeover_never_both(store: Arc<dyn Store>) {
    // Many rounds: a holder claims while another node takes the lease over. Whatever the
    // interleaving, a claim that wins was made while the lease was the claimer's.
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    for round in 0..10 {
        let job = format!("race{round}");
        let ta = take(&*store, &job, "a", "sa").await;
        let observed = Observed {
            lease: Some(lease("a", "sa", ta)),
            holder_node: Some(("sa".into(), 1)),
            handed_over: false,
        };
        let (s1, s2) = (store.clone(), store.clone());
        let j1 = job.clone();
        let claim =
            tokio::spawn(async move { s1.claim(&run(&j1, fire(round), "a", ta), "sa").await });
        let j2 = job.clone();
        let takeover =
            tokio::spawn(
                async move { s2.acquire(&j2, &observed, &lease("b", "sb", ta + 1)).await },
            );
        let claim = claim.await.unwrap();
        let took = takeover.await.unwrap();
        // Either may win the race; what must hold is that after a takeover the old holder's
        // claims are fenced, and a claim that won left its run behind.
        if let Ok(Claim::Won) = claim {
            assert!(store.run_exists(&job, fire(round)).await.unwrap());
        }
        let after = store
            .claim(&run(&job, fire(round + 100), "a", ta), "sa")
            .await
            .unwrap();
        if matches!(took, Ok(true)) {
            assert_eq!(
                after,
                Claim::Fenced,
                "after a takeover the old holder is fenced"
            );
        }
    }
}

async fn release_frees_only_own_leases(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    take(&*store, "x", "a", "sa").await;
    take(&*store, "y", "b", "sb").await;
    let jobs = vec!["x".to_string(), "y".to_string(), "z".to_string()];
    assert_eq!(store.release(&jobs, "a", "sa").await.unwrap(), 1);
    let snap = store.snapshot(&jobs).await.unwrap();
    assert!(snap.leases["x"].is_free());
    assert_eq!(snap.leases["y"].holder, "b");
    assert!(!snap.leases.contains_key("z"));
    // A release under an old session frees nothing.
    assert_eq!(store.release(&jobs, "b", "old").await.unwrap(), 0);
}

async fn snapshot_reads_many_leases_and_all_nodes_in_batches(store: Arc<dyn Store>) {
    let jobs: Vec<String> = (0..1200).map(|i| format!("job{i:04}")).collect();
    store.put_node(&node("a", "sa", 7)).await.unwrap();
    store.put_node(&node("b", "sb", 3)).await.unwrap();
    for job in jobs.iter().step_by(100) {
        assert!(store
            .acquire(job, &FREE, &lease("a", "sa", 1))
            .await
            .unwrap());
    }
    let snap = store.snapshot(&jobs).await.unwrap();
    assert_eq!(snap.leases.len(), 12);
    assert_eq!(snap.nodes.len(), 2);
    assert_eq!(snap.nodes["a"].heartbeat, 7);
    assert_eq!(snap.nodes["b"].session, "sb");
    // The two halves on their own: the node records alone (what a follower reads every poll),
    // the leases alone (only when some node announced a change).
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes, snap.nodes);
    assert_eq!(store.leases(&jobs).await.unwrap(), snap.leases);
    assert_eq!(
        store.leases(&jobs[..150]).await.unwrap().len(),
        2,
        "only the leases asked for"
    );
}

async fn the_lease_epoch_round_trips_with_the_node_record(store: Arc<dyn Store>) {
    let mut a = node("a", "sa", 1);
    store.put_node(&a).await.unwrap();
    assert_eq!(store.nodes().await.unwrap()["a"].lease_epoch, 0);
    a.lease_epoch = 41;
    a.heartbeat = 2;
    store.put_node(&a).await.unwrap();
    a.lease_epoch = 42;
    store.put_node(&a).await.unwrap();
    let read = store.nodes().await.unwrap();
    assert_eq!(read["a"].lease_epoch, 42, "an overwrite carries the epoch");
    assert_eq!(read["a"].session, "sa");
    assert!(!read["a"].leaving);
    // A stopping node says so in its record (peers place no leases on it).
    a.leaving = true;
    a.lease_epoch = 43;
    store.put_node(&a).await.unwrap();
    let read = store.nodes().await.unwrap();
    assert!(read["a"].leaving, "the record carries leaving");
    assert_eq!(read["a"].lease_epoch, 43);
}

async fn runs_record_outcomes(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let mut r = run("job", fire(5), "a", t);
    assert_eq!(store.claim(&r, "sa").await.unwrap(), Claim::Won);
    let claimed = store.runs("job").await.unwrap();
    assert_eq!(claimed[0].outcome, "running");
    assert_eq!(claimed[0].attempts, 1);
    r.finished_at = Some(Utc::now());
    r.outcome = "failed".into();
    r.exit_code = Some(3);
    r.attempts = 3;
    assert!(store.finish(&r).await.unwrap());
    let runs = store.runs("job").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "failed");
    assert_eq!(runs[0].exit_code, Some(3));
    assert_eq!(runs[0].attempts, 3);
    assert_eq!(runs[0].term, t);
    assert_eq!(runs[0].fire_time, fire(5));
    // A skipped tick made no attempt; recent_runs reads the field too.
    let mut skipped = run("job", fire(6), "a", t);
    assert_eq!(store.claim(&skipped, "sa").await.unwrap(), Claim::Won);
    skipped.outcome = "skipped".into();
    skipped.finished_at = Some(skipped.started_at);
    skipped.attempts = 0;
    skipped.reason = Some("overlap".into());
    assert!(store.finish(&skipped).await.unwrap());
    let recent = store.recent_runs("job", 2).await.unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|r| (r.outcome.as_str(), r.attempts))
            .collect::<Vec<_>>(),
        [("skipped", 0), ("failed", 3)]
    );
    assert_eq!(recent[0].reason.as_deref(), Some("overlap"));
    assert_eq!(recent[0].session, "sa");
    assert_eq!(recent[0].process, "pa");
    assert_eq!(recent[1].reason, None);
    // get_run reads one record; the node record carries the process and the clock offset.
    let one = store
        .get_run("job", fire(5))
        .await
        .unwrap()
        .expect("the run");
    assert_eq!((one.outcome.as_str(), one.term), ("failed", t));
    assert_eq!(store.get_run("job", fire(99)).await.unwrap(), None);
    let mut a = node("a", "sa", 2);
    a.clock_offset_ms = Some(-61_500);
    store.put_node(&a).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes["a"].process, "pa");
    assert_eq!(nodes["a"].clock_offset_ms, Some(-61_500));
}

/// Claim `runs` (each under its node's lease, which must be held with the run's term), one
/// after the other: concurrent claims of one job contend on its lease (in Datastore, a
/// conflicting transaction aborts and the claim reports `Fenced`).
async fn claim_all(store: &Arc<dyn Store>, runs: &[RunRecord]) {
    for r in runs {
        assert_eq!(
            store.claim(r, &r.session).await.unwrap(),
            Claim::Won,
            "{r:?}"
        );
    }
}

/// A run is closed once: only the claim's own `running` record is finished, never a record
/// another session claimed, one already finished or one that does not exist.
async fn finish_is_conditional_and_once(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let r = run("job", fire(1), "a", t);
    assert_eq!(store.claim(&r, "sa").await.unwrap(), Claim::Won);
    let done = |outcome: &str| ended(&r, outcome);
    // Another session's or another term's finish: refused, nothing written.
    let other = RunRecord {
        session: "sx".into(),
        ..done("ok")
    };
    assert!(!store.finish(&other).await.unwrap());
    let older = RunRecord {
        term: t - 1,
        ..done("ok")
    };
    assert!(!store.finish(&older).await.unwrap());
    assert_eq!(
        store
            .get_run("job", fire(1))
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "running"
    );
    // Its own: written once; a second finish finds it closed.
    assert!(store.finish(&done("failed")).await.unwrap());
    assert!(!store.finish(&done("ok")).await.unwrap());
    assert_eq!(
        store
            .get_run("job", fire(1))
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "failed"
    );
    // A finish never creates a record.
    let never = RunRecord {
        fire_time: fire(2),
        ..done("ok")
    };
    assert!(!store.finish(&never).await.unwrap());
    assert!(!store.run_exists("job", fire(2)).await.unwrap());
}

/// Pruning never reopens a fire time: a claim at or before the newest pruned fire time is
/// refused as too old, by the lease holder too, and the watermark never goes down.
async fn a_pruned_fire_time_is_never_claimed_again(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let runs: Vec<RunRecord> = (0..10).map(|i| run("job", fire(i * 10), "a", t)).collect();
    claim_all(&store, &runs).await;
    assert_eq!(store.prune_runs("job", 3).await.unwrap(), 7);
    // fire(60) was the newest deleted: it and everything before it are refused, whether it
    // ran (fire(0..=60)) or never existed (fire(5), fire(55)).
    for secs in [0, 5, 55, 60] {
        assert_eq!(
            store
                .claim(&run("job", fire(secs), "a", t), "sa")
                .await
                .unwrap(),
            Claim::TooOld,
            "fire({secs})"
        );
        assert!(!store.run_exists("job", fire(secs)).await.unwrap());
    }
    // Newer than the watermark: as before.
    assert_eq!(
        store
            .claim(&run("job", fire(70), "a", t), "sa")
            .await
            .unwrap(),
        Claim::AlreadyRun
    );
    assert_eq!(
        store
            .claim(&run("job", fire(65), "a", t), "sa")
            .await
            .unwrap(),
        Claim::Won,
        "a fire time between the pruned and the kept ones that never ran"
    );
    // A holder that was paused meanwhile and whose lease moved on is fenced first; the new
    // holder, resumed late with an old fire time, still cannot claim it.
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let tb = take(&*store, "job", "b", "sb").await;
    assert_eq!(
        store
            .claim(&run("job", fire(30), "a", t), "sa")
            .await
            .unwrap(),
        Claim::Fenced
    );
    assert_eq!(
        store
            .claim(&run("job", fire(30), "b", tb), "sb")
            .await
            .unwrap(),
        Claim::TooOld
    );
    // Pruning less (a bigger history) does not lower the watermark; other jobs have none.
    assert_eq!(store.prune_runs("job", 100).await.unwrap(), 0);
    assert_eq!(
        store
            .claim(&run("job", fire(60), "b", tb), "sb")
            .await
            .unwrap(),
        Claim::TooOld
    );
    let _ = take(&*store, "other", "b", "sb").await;
    assert_eq!(
        store
            .claim(&run("other", fire(0), "b", 1), "sb")
            .await
            .unwrap(),
        Claim::Won
    );
}

/// `running_runs` lists exactly the running records, across jobs, with their claimer.
async fn running_runs_lists_what_is_going(store: Arc<dyn Store>) {
    assert!(store.running_runs().await.unwrap().is_empty());
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t1 = take(&*store, "j1", "a", "sa").await;
    let t2 = take(&*store, "j2", "a", "sa").await;
    let runs = vec![
        run("j1", fire(1), "a", t1),
        run("j1", fire(2), "a", t1),
        run("j2", fire(1), "a", t2),
    ];
    claim_all(&store, &runs).await;
    let finished = ended(&runs[1], "ok");
    assert!(store.finish(&finished).await.unwrap());
    let mut going = store.running_runs().await.unwrap();
    going.sort_by_key(|r| (r.job.clone(), r.fire_time));
    assert_eq!(
        going
            .iter()
            .map(|r| (
                r.job.as_str(),
                r.fire_time,
                r.session.as_str(),
                r.process.as_str()
            ))
            .collect::<Vec<_>>(),
        [("j1", fire(1), "sa", "pa"), ("j2", fire(1), "sa", "pa")]
    );
    // Pruned runs are not listed any more.
    assert_eq!(store.prune_runs("j1", 1).await.unwrap(), 1);
    let going = store.running_runs().await.unwrap();
    assert_eq!(going.len(), 1);
    assert_eq!(going[0].job, "j2");
}

/// An orphan (a `running` record of a dead process) is closed once, by the job's current
/// leader only; the dead node's late finish does not overwrite it; a recovery takes the record
/// over as a new running run of the leader, and is closed like any run.
async fn an_orphan_is_closed_once_by_the_leader(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let ta = take(&*store, "job", "a", "sa").await;
    let orphans = vec![run("job", fire(1), "a", ta), run("job", fire(2), "a", ta)];
    claim_all(&store, &orphans).await;
    let tb = take(&*store, "job", "b", "sb").await;
    let lost = RunRecord {
        reason: Some("node_gone".into()),
        ..ended(&orphans[0], "lost")
    };
    // The old holder cannot close it (fenced); the new holder can, once.
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("a", ta))
            .await
            .unwrap(),
        Claim::Fenced
    );
    assert_eq!(
        store
            .close_orphan(&lost, "sb", &fence("b", tb))
            .await
            .unwrap(),
        Claim::AlreadyRun,
        "not running under that session"
    );
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::Won
    );
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::AlreadyRun,
        "closed once"
    );
    let stored = store.get_run("job", fire(1)).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.outcome.as_str(),
            stored.node.as_str(),
            stored.reason.as_deref()
        ),
        ("lost", "a", Some("node_gone"))
    );
    // The dead node's late outcome is refused.
    let late = ended(&orphans[0], "ok");
    assert!(!store.finish(&late).await.unwrap());
    assert_eq!(
        store
            .get_run("job", fire(1))
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "lost"
    );
    // Recovery: the record becomes b's running run, listed as running, finished by b.
    let recovery = RunRecord {
        node: "b".into(),
        term: tb,
        session: "sb".into(),
        process: "pb".into(),
        attempts: 2,
        recovery: true,
        ..orphans[1].clone()
    };
    assert_eq!(
        store
            .close_orphan(&recovery, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::Won
    );
    assert_eq!(
        store
            .close_orphan(&recovery, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::AlreadyRun,
        "recovered once"
    );
    let going = store.running_runs().await.unwrap();
    assert_eq!(going.len(), 1);
    assert_eq!((going[0].node.as_str(), going[0].recovery), ("b", true));
    let done = ended(&recovery, "ok");
    assert!(store.finish(&done).await.unwrap());
    assert!(store.running_runs().await.unwrap().is_empty());
    let stored = store.get_run("job", fire(2)).await.unwrap().unwrap();
    assert_eq!(
        (stored.outcome.as_str(), stored.attempts, stored.recovery),
        ("ok", 2, true)
    );
}

/// A paused job is never claimed, by its leader either; pausing again keeps the first pause,
/// resuming stamps the time, and neither touches the lease's holder, session or term.
async fn a_paused_job_is_never_claimed(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let first = pause("ops@h1", 0, "maintenance window");
    assert!(store.set_pause("job", Some(&first)).await.unwrap());
    let r = run("job", fire(1), "a", t);
    assert_eq!(store.claim(&r, "sa").await.unwrap(), Claim::Paused);
    assert_eq!(
        store.get_run("job", fire(1)).await.unwrap(),
        None,
        "a paused claim inserts nothing"
    );
    // Paused or not, a claimer that does not hold the lease is fenced.
    assert_eq!(
        store
            .claim(&run("job", fire(1), "b", t), "sb")
            .await
            .unwrap(),
        Claim::Fenced
    );
    // Pausing again: refused, the first pause stays.
    let second = pause("other@h2", 5, "again");
    assert!(!store.set_pause("job", Some(&second)).await.unwrap());
    let paused = lease_of(&*store, "job").await;
    assert_eq!(
        paused.paused.as_deref(),
        Some(&first),
        "the first pause stays"
    );
    assert_eq!(paused.resumed_at, None);
    assert_eq!(
        (paused.holder.as_str(), paused.session.as_str(), paused.term),
        ("a", "sa", t),
        "a pause leaves the lease alone"
    );
    // Resume: the pause goes, the time is stamped, the lease stays.
    let before = Utc::now();
    assert!(store.set_pause("job", None).await.unwrap());
    let resumed = lease_of(&*store, "job").await;
    assert_eq!(resumed.paused, None);
    let at = resumed.resumed_at.expect("resumed_at is set");
    // Stored to the backend's precision (microseconds in Datastore).
    assert!(
        at >= before - chrono::Duration::milliseconds(1),
        "resumed at {at}, before the call {before}"
    );
    assert!(at <= Utc::now());
    assert_eq!(
        (
            resumed.holder.as_str(),
            resumed.session.as_str(),
            resumed.term
        ),
        ("a", "sa", t),
        "a resume leaves the lease alone"
    );
    // Resuming again: nothing to do, nothing changed.
    assert!(!store.set_pause("job", None).await.unwrap());
    assert_eq!(lease_of(&*store, "job").await, resumed);
    assert_eq!(store.claim(&r, "sa").await.unwrap(), Claim::Won);
    // A job without a lease: nothing to resume, and no record appears.
    assert!(!store.set_pause("never", None).await.unwrap());
    assert!(store
        .leases(&["never".to_string()])
        .await
        .unwrap()
        .is_empty());
}

/// The pause lives in the lease record: a free job gets a free record, acquire and release keep
/// the stored pause whatever the new lease says, and an acquire observed before a pause (or a
/// resume) fails.
async fn a_pause_survives_acquire_and_release(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let p = pause("ops@h1", 0, "");
    assert!(store.set_pause("job", Some(&p)).await.unwrap());
    let free = lease_of(&*store, "job").await;
    assert!(free.is_free(), "{free:?}");
    assert_eq!((free.term, free.paused.as_deref()), (0, Some(&p)));
    // An observation from before the pause (no record) is stale now.
    assert!(!store
        .acquire("job", &FREE, &lease("a", "sa", 1))
        .await
        .unwrap());
    // Acquired from the paused record with a new lease that says "not paused": still paused.
    let t = take(&*store, "job", "a", "sa").await;
    assert_eq!(t, 1);
    let held = lease_of(&*store, "job").await;
    assert_eq!(
        (held.holder.as_str(), held.session.as_str(), held.term),
        ("a", "sa", 1)
    );
    assert_eq!(held.paused.as_deref(), Some(&p), "acquire keeps the pause");
    assert_eq!(
        store
            .claim(&run("job", fire(1), "a", t), "sa")
            .await
            .unwrap(),
        Claim::Paused
    );
    // Released: free again, term and pause kept.
    assert_eq!(
        store
            .release(&["job".to_string()], "a", "sa")
            .await
            .unwrap(),
        1
    );
    let released = lease_of(&*store, "job").await;
    assert!(released.is_free());
    assert_eq!(
        (released.term, released.paused.as_deref()),
        (1, Some(&p)),
        "release keeps the term and the pause"
    );
    // Observed paused, then resumed: the observation is stale.
    let seen_paused = Observed {
        lease: Some(released.clone()),
        holder_node: None,
        handed_over: false,
    };
    assert!(store.set_pause("job", None).await.unwrap());
    assert!(!store
        .acquire("job", &seen_paused, &lease("a", "sa", 2))
        .await
        .unwrap());
    // Observed resumed, then paused again: stale too.
    let seen_resumed = Observed {
        lease: Some(lease_of(&*store, "job").await),
        holder_node: None,
        handed_over: false,
    };
    assert!(seen_resumed.lease.as_ref().unwrap().resumed_at.is_some());
    let again = pause("ops@h2", 10, "again");
    assert!(store.set_pause("job", Some(&again)).await.unwrap());
    assert!(!store
        .acquire("job", &seen_resumed, &lease("a", "sa", 2))
        .await
        .unwrap());
    let now = lease_of(&*store, "job").await;
    assert!(now.is_free());
    assert_eq!(now.term, 1, "no stale acquire went through");
    assert_eq!(now.paused.as_deref(), Some(&again));
    // An exact observation wins, and keeps the pause and the resume time.
    assert_eq!(take(&*store, "job", "a", "sa").await, 2);
    let held = lease_of(&*store, "job").await;
    assert_eq!((held.holder.as_str(), held.term), ("a", 2));
    assert_eq!(held.paused.as_deref(), Some(&again));
    assert_eq!(held.resumed_at, now.resumed_at);
}

/// While a job is paused its orphans may be closed as lost, never recovered (a recovery is a
/// new run); after the resume a recovery works again.
async fn a_recovery_is_refused_while_paused(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let ta = take(&*store, "job", "a", "sa").await;
    let orphans = vec![run("job", fire(1), "a", ta), run("job", fire(2), "a", ta)];
    claim_all(&store, &orphans).await;
    let tb = take(&*store, "job", "b", "sb").await;
    assert!(store
        .set_pause("job", Some(&pause("ops@h1", 0, "")))
        .await
        .unwrap());
    let recovery = |orphan: &RunRecord| RunRecord {
        node: "b".into(),
        term: tb,
        session: "sb".into(),
        process: "pb".into(),
        attempts: 2,
        recovery: true,
        ..orphan.clone()
    };
    // The old holder is fenced, paused or not.
    assert_eq!(
        store
            .close_orphan(&recovery(&orphans[0]), "sa", &fence("a", ta))
            .await
            .unwrap(),
        Claim::Fenced
    );
    assert_eq!(
        store
            .close_orphan(&recovery(&orphans[0]), "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::Paused
    );
    let stored = store.get_run("job", fire(1)).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.outcome.as_str(),
            stored.node.as_str(),
            stored.session.as_str(),
            stored.term,
            stored.recovery
        ),
        ("running", "a", "sa", ta, false),
        "a refused recovery changes nothing"
    );
    assert_eq!(store.running_runs().await.unwrap().len(), 2);
    // Closing it as lost is not a run: allowed while paused, once.
    let lost = RunRecord {
        reason: Some("node_gone".into()),
        ..ended(&orphans[0], "lost")
    };
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::Won
    );
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::AlreadyRun
    );
    let stored = store.get_run("job", fire(1)).await.unwrap().unwrap();
    assert_eq!(
        (stored.outcome.as_str(), stored.reason.as_deref()),
        ("lost", Some("node_gone"))
    );
    // Resumed: the other orphan can be recovered.
    assert!(store.set_pause("job", None).await.unwrap());
    assert_eq!(
        store
            .close_orphan(&recovery(&orphans[1]), "sa", &fence("b", tb))
            .await
            .unwrap(),
        Claim::Won
    );
    let going = store.running_runs().await.unwrap();
    assert_eq!(going.len(), 1);
    assert_eq!((going[0].node.as_str(), going[0].recovery), ("b", true));
}

async fn history_keeps_the_newest_runs(store: Arc<dyn Store>) {
    // 1,200 runs of one job (more than one delete batch) and 5 of another.
    let total = 1200;
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let busy = take(&*store, "busy", "a", "sa").await;
    let quiet = take(&*store, "quiet", "a", "sa").await;
    let all: Vec<RunRecord> = (0..total)
        .map(|i| run("busy", fire(i), "a", busy))
        .chain((0..5).map(|i| run("quiet", fire(i), "a", quiet)))
        .collect();
    claim_all(&store, &all).await;
    let newest = store.recent_runs("busy", 3).await.unwrap();
    let times: Vec<_> = newest.iter().map(|r| r.fire_time).collect();
    assert_eq!(
        times,
        vec![fire(total - 1), fire(total - 2), fire(total - 3)]
    );

    assert_eq!(store.prune_runs("busy", 100).await.unwrap(), 1100);
    let kept = store.runs("busy").await.unwrap();
    assert_eq!(kept.len(), 100);
    assert_eq!(kept[0].fire_time, fire(total - 100), "the oldest kept");
    assert_eq!(kept[99].fire_time, fire(total - 1), "the newest kept");
    // Nothing left to prune; the other job is untouched.
    assert_eq!(store.prune_runs("busy", 100).await.unwrap(), 0);
    assert_eq!(store.runs("quiet").await.unwrap().len(), 5);
    assert_eq!(store.prune_runs("quiet", 2).await.unwrap(), 3);
    let quiet = store.recent_runs("quiet", 10).await.unwrap();
    assert_eq!(quiet.len(), 2);
    assert_eq!(quiet[0].fire_time, fire(4));
}

async fn dead_nodes_are_removed_only_if_unchanged(store: Arc<dyn Store>) {
    let mut rec = node("gone", "s1", 4);
    rec.http = Some("127.0.0.1:9000".into());
    store.put_node(&rec).await.unwrap();
    let snap = store.snapshot(&[]).await.unwrap();
    assert_eq!(snap.nodes["gone"].http.as_deref(), Some("127.0.0.1:9000"));
    assert_eq!(
        snap.nodes["gone"].renewed_at.timestamp_millis(),
        rec.renewed_at.timestamp_millis()
    );
    // It beat again, or it is a new session: keep it.
    assert!(!store.delete_node_if("gone", "s1", 3).await.unwrap());
    assert!(!store.delete_node_if("gone", "s0", 4).await.unwrap());
    assert!(store
        .snapshot(&[])
        .await
        .unwrap()
        .nodes
        .contains_key("gone"));
    // Exactly as observed: gone.
    assert!(store.delete_node_if("gone", "s1", 4).await.unwrap());
    assert!(store.snapshot(&[]).await.unwrap().nodes.is_empty());
    assert!(!store.delete_node_if("gone", "s1", 4).await.unwrap());
}

/// A node's definitions read back as written, an overwrite replaces them whole, a node that
/// never wrote any has none, and a thousand jobs fit.
async fn definitions_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.definitions("a").await.unwrap(), None);
    let first = defs("v1", 3);
    store.put_definitions("a", &first).await.unwrap();
    assert_eq!(store.definitions("a").await.unwrap(), Some(first.clone()));
    // Written before the node record exists (a starting node): readable, and no record appears.
    assert!(store.nodes().await.unwrap().is_empty());
    // An overwrite with fewer jobs: the old ones are gone.
    let second = defs("v2", 1);
    store.put_definitions("a", &second).await.unwrap();
    assert_eq!(store.definitions("a").await.unwrap(), Some(second.clone()));
    // Empty maps and odd node ids.
    let empty = Definitions {
        digest: "none".into(),
        jobs: Default::default(),
    };
    store.put_definitions("b/c:d", &empty).await.unwrap();
    assert_eq!(store.definitions("b/c:d").await.unwrap(), Some(empty));
    assert_eq!(store.definitions("b").await.unwrap(), None);
    // A big cluster's jobs, with names and digests of the usual lengths.
    let big = defs("v3", 1000);
    store.put_definitions("c", &big).await.unwrap();
    let read = store
        .definitions("c")
        .await
        .unwrap()
        .expect("the definitions");
    assert_eq!(read.jobs.len(), 1000);
    assert_eq!(read, big);
    // Each node has its own.
    assert_eq!(store.definitions("a").await.unwrap(), Some(second));
}

/// `jobs_digest` is written and read with the node record; an empty one reads as empty.
async fn the_jobs_digest_round_trips_with_the_node_record(store: Arc<dyn Store>) {
    let mut a = node("a", "sa", 1);
    store.put_node(&a).await.unwrap();
    assert_eq!(store.nodes().await.unwrap()["a"].jobs_digest, "");
    a.jobs_digest = "d1".into();
    a.heartbeat = 2;
    store.put_node(&a).await.unwrap();
    let read = store.nodes().await.unwrap()["a"].clone();
    assert_eq!(read.jobs_digest, "d1");
    // The rest of the record as written (times to the store's precision).
    assert_eq!(
        NodeRecord {
            started_at: a.started_at,
            renewed_at: a.renewed_at,
            ..read
        },
        a
    );
    a.jobs_digest = "d2".into();
    a.heartbeat = 3;
    store.put_node(&a).await.unwrap();
    let read = store.nodes().await.unwrap();
    assert_eq!(
        read["a"].jobs_digest, "d2",
        "an overwrite carries the digest"
    );
    assert_eq!(read["a"].heartbeat, 3);
    // Back to empty (a node of an older version writing its record).
    a.jobs_digest.clear();
    a.heartbeat = 4;
    store.put_node(&a).await.unwrap();
    assert_eq!(store.nodes().await.unwrap()["a"].jobs_digest, "");
}

/// A node's definitions go with its record: `delete_node` removes them, `delete_node_if` only
/// when it deletes the record; other nodes' definitions stay.
async fn definitions_are_deleted_with_the_node_record(store: Arc<dyn Store>) {
    // delete_node, with and without a record.
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_definitions("a", &defs("a", 2)).await.unwrap();
    store.put_node(&node("keep", "sk", 1)).await.unwrap();
    store.put_definitions("keep", &defs("k", 2)).await.unwrap();
    store.delete_node("a").await.unwrap();
    assert_eq!(store.definitions("a").await.unwrap(), None);
    assert!(!store.nodes().await.unwrap().contains_key("a"));
    store
        .put_definitions("norecord", &defs("n", 1))
        .await
        .unwrap();
    store.delete_node("norecord").await.unwrap();
    assert_eq!(store.definitions("norecord").await.unwrap(), None);
    store.delete_node("neither").await.unwrap();

    // delete_node_if: a changed heartbeat or session keeps both.
    store.put_node(&node("gone", "s1", 4)).await.unwrap();
    store.put_definitions("gone", &defs("g", 3)).await.unwrap();
    assert!(!store.delete_node_if("gone", "s1", 3).await.unwrap());
    assert!(!store.delete_node_if("gone", "s0", 4).await.unwrap());
    assert_eq!(
        store.definitions("gone").await.unwrap(),
        Some(defs("g", 3)),
        "not deleted: the definitions stay"
    );
    assert!(store.nodes().await.unwrap().contains_key("gone"));
    // Exactly as observed: both go.
    assert!(store.delete_node_if("gone", "s1", 4).await.unwrap());
    assert_eq!(store.definitions("gone").await.unwrap(), None);
    assert!(!store.nodes().await.unwrap().contains_key("gone"));
    // A record without definitions is deleted all the same.
    store.put_node(&node("bare", "sb", 1)).await.unwrap();
    assert!(store.delete_node_if("bare", "sb", 1).await.unwrap());
    assert!(!store.nodes().await.unwrap().contains_key("bare"));
    // No record: nothing deleted, definitions written meanwhile stay.
    store.put_definitions("gone", &defs("g2", 1)).await.unwrap();
    assert!(!store.delete_node_if("gone", "s1", 4).await.unwrap());
    assert_eq!(
        store.definitions("gone").await.unwrap(),
        Some(defs("g2", 1))
    );
    // The bystander kept everything.
    assert_eq!(store.definitions("keep").await.unwrap(), Some(defs("k", 2)));
    assert!(store.nodes().await.unwrap().contains_key("keep"));
}

/// A trigger request at `ms` milliseconds after fire(0) (never a whole second).
fn trigger(ms: i64) -> TriggerRequest {
    assert!(ms % 1000 != 0);
    TriggerRequest {
        fire_time: fire(0) + chrono::Duration::milliseconds(ms),
        by: "ops@h1".into(),
        expires_at: fire(3600),
        allow_overlap: ms % 2 == 0,
    }
}

fn backfill(id: &str) -> BackfillRequest {
    BackfillRequest {
        id: id.into(),
        by: "ops@h1".into(),
        at: fire(0),
        from: fire(-600),
        to: fire(-60),
        total: 10,
        done: 0,
        cursor: None,
    }
}

/// `r`, started by the request `request` (`manual` or `backfill`).
fn triggered(r: RunRecord, kind: &str, request: &str) -> RunRecord {
    RunRecord {
        trigger: Some(RunTrigger {
            kind: kind.into(),
            by: "ops@h1".into(),
            request: request.into(),
        }),
        ..r
    }
}

/// Requests live in the lease record and change atomically by the rules of
/// `Requests::apply`; every announced change (and every pause or resume that changed
/// something) moves the control epoch by one, a refused one or a progress report does not.
async fn requests_change_atomically_and_move_the_control_epoch(store: Arc<dyn Store>) {
    assert_eq!(store.control_epoch().await.unwrap(), 0);
    let t = trigger(250);
    assert!(store
        .change_request("job", &RequestChange::AddTrigger(t.clone()))
        .await
        .unwrap());
    let free = lease_of(&*store, "job").await;
    assert_eq!(
        (free.holder.as_str(), free.term, &free.requests.triggers),
        ("", 0, &vec![t.clone()]),
        "a job with no lease gets a free record with the request"
    );
    assert_eq!(store.control_epoch().await.unwrap(), 1);
    assert!(!store
        .change_request("job", &RequestChange::AddTrigger(t.clone()))
        .await
        .unwrap());
    assert_eq!(store.control_epoch().await.unwrap(), 1, "refused: no move");

    // On a held lease: holder, session and term stay.
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let term = take(&*store, "job", "a", "sa").await;
    let b = backfill("b1");
    assert!(store
        .change_request("job", &RequestChange::AddBackfill(b.clone()))
        .await
        .unwrap());
    assert!(!store
        .change_request("job", &RequestChange::AddBackfill(backfill("b2")))
        .await
        .unwrap());
    assert_eq!(store.control_epoch().await.unwrap(), 2);
    let progress = RequestChange::Progress {
        id: "b1".into(),
        done: 3,
        cursor: Some(fire(-400)),
    };
    assert!(store.change_request("job", &progress).await.unwrap());
    assert_eq!(
        store.control_epoch().await.unwrap(),
        2,
        "progress is not announced"
    );
    let held = lease_of(&*store, "job").await;
    assert_eq!(
        (held.holder.as_str(), held.session.as_str(), held.term),
        ("a", "sa", term)
    );
    assert_eq!(held.requests.triggers, vec![t.clone()]);
    let stored = held.requests.backfill.expect("the backfill");
    assert_eq!((stored.done, stored.cursor), (3, Some(fire(-400))));
    assert_eq!(
        (stored.from, stored.to, stored.total),
        (b.from, b.to, b.total)
    );

    assert!(store
        .change_request("job", &RequestChange::Remove(t.id()))
        .await
        .unwrap());
    assert!(!store
        .change_request("job", &RequestChange::Remove(t.id()))
        .await
        .unwrap());
    assert_eq!(store.control_epoch().await.unwrap(), 3);
    // Pauses and resumes are announced too, only when they change something.
    assert!(store
        .set_pause("job", Some(&pause("ops@h1", 0, "")))
        .await
        .unwrap());
    assert_eq!(store.control_epoch().await.unwrap(), 4);
    assert!(!store
        .set_pause("job", Some(&pause("ops@h1", 0, "")))
        .await
        .unwrap());
    assert!(store.set_pause("job", None).await.unwrap());
    assert_eq!(store.control_epoch().await.unwrap(), 5);
    let now = lease_of(&*store, "job").await;
    assert_eq!(now.requests.backfill.map(|b| b.id), Some("b1".into()));
    assert!(now.requests.triggers.is_empty());
}

/// Acquire and release keep the stored requests, whatever the new lease says.
async fn requests_survive_acquire_and_release(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let t = trigger(500);
    assert!(store
        .change_request("job", &RequestChange::AddTrigger(t.clone()))
        .await
        .unwrap());
    let _ = take(&*store, "job", "a", "sa").await;
    assert_eq!(
        lease_of(&*store, "job").await.requests.triggers,
        vec![t.clone()]
    );
    assert_eq!(
        store
            .release(&["job".to_string()], "a", "sa")
            .await
            .unwrap(),
        1
    );
    let released = lease_of(&*store, "job").await;
    assert!(released.is_free());
    assert_eq!(released.requests.triggers, vec![t.clone()]);
    let _ = take(&*store, "job", "b", "sb").await;
    let held = lease_of(&*store, "job").await;
    assert_eq!(
        (held.holder.as_str(), &held.requests.triggers),
        ("b", &vec![t])
    );
}

/// A triggered run is keyed by its millisecond fire time (never colliding with a scheduled
/// one), claimed once, only while its request is pending, whether the job is paused or not,
/// and under the same fence as any claim.
async fn a_triggered_run_is_claimed_once_while_its_request_is_pending(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    store.put_node(&node("b", "sb", 1)).await.unwrap();
    let term = take(&*store, "job", "a", "sa").await;
    let t = trigger(250);
    assert!(store
        .change_request("job", &RequestChange::AddTrigger(t.clone()))
        .await
        .unwrap());
    let manual = triggered(run("job", t.fire_time, "a", term), "manual", &t.id());
    // Another node is fenced, as for any claim.
    let from_b = triggered(run("job", t.fire_time, "b", term), "manual", &t.id());
    assert_eq!(store.claim(&from_b, "sb").await.unwrap(), Claim::Fenced);
    assert_eq!(store.claim(&manual, "sa").await.unwrap(), Claim::Won);
    assert_eq!(store.claim(&manual, "sa").await.unwrap(), Claim::AlreadyRun);
    // The scheduled fire time of the same second is another run.
    let scheduled = run("job", fire(0), "a", term);
    assert_eq!(store.claim(&scheduled, "sa").await.unwrap(), Claim::Won);
    let stored = store
        .get_run("job", t.fire_time)
        .await
        .unwrap()
        .expect("the run");
    assert_eq!(stored.fire_time, t.fire_time, "milliseconds kept");
    assert_eq!(stored.trigger, manual.trigger);
    assert_eq!(
        store
            .get_run("job", fire(0))
            .await
            .unwrap()
            .unwrap()
            .trigger,
        None
    );
    let running: Vec<_> = store
        .running_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.fire_time)
        .collect();
    assert!(
        running.contains(&t.fire_time) && running.contains(&fire(0)),
        "{running:?}"
    );
    assert!(store.finish(&ended(&manual, "ok")).await.unwrap());
    assert!(store.finish(&ended(&scheduled, "ok")).await.unwrap());
    let all: Vec<_> = store
        .runs("job")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.fire_time)
        .collect();
    assert_eq!(
        all,
        vec![fire(0), t.fire_time],
        "oldest first, milliseconds in order"
    );
    let newest = store.recent_runs("job", 1).await.unwrap();
    assert_eq!(newest[0].fire_time, t.fire_time);

    // A request that is not pending: withdrawn, nothing inserted.
    let gone = trigger(750);
    let orphan = triggered(run("job", gone.fire_time, "a", term), "manual", &gone.id());
    assert_eq!(store.claim(&orphan, "sa").await.unwrap(), Claim::Withdrawn);
    assert!(!store.run_exists("job", gone.fire_time).await.unwrap());
    assert!(store
        .change_request("job", &RequestChange::Remove(t.id()))
        .await
        .unwrap());
    let again = triggered(run("job", t.fire_time, "a", term), "manual", &t.id());
    assert_eq!(
        store.claim(&again, "sa").await.unwrap(),
        Claim::AlreadyRun,
        "a run that exists is reported as run, pending or not"
    );

    // Paused: scheduled runs are refused, requested ones (trigger, backfill) are not.
    assert!(store
        .set_pause("job", Some(&pause("ops@h1", 0, "")))
        .await
        .unwrap());
    assert_eq!(
        store
            .claim(&run("job", fire(1), "a", term), "sa")
            .await
            .unwrap(),
        Claim::Paused
    );
    let t2 = trigger(1250);
    assert!(store
        .change_request("job", &RequestChange::AddTrigger(t2.clone()))
        .await
        .unwrap());
    let manual2 = triggered(run("job", t2.fire_time, "a", term), "manual", &t2.id());
    assert_eq!(store.claim(&manual2, "sa").await.unwrap(), Claim::Won);
    assert!(store
        .change_request("job", &RequestChange::AddBackfill(backfill("b1")))
        .await
        .unwrap());
    let filled = triggered(run("job", fire(-120), "a", term), "backfill", "b1");
    assert_eq!(store.claim(&filled, "sa").await.unwrap(), Claim::Won);
    let other = triggered(run("job", fire(-180), "a", term), "backfill", "b0");
    assert_eq!(store.claim(&other, "sa").await.unwrap(), Claim::Withdrawn);
    // A lost manual run is closed like any orphan, by its key.
    store.put_node(&node("a", "sa2", 2)).await.unwrap();
    let lost = RunRecord {
        outcome: "lost".into(),
        finished_at: Some(Utc::now()),
        ..manual2.clone()
    };
    assert_eq!(
        store
            .close_orphan(&lost, "sa", &fence("a", term))
            .await
            .unwrap(),
        Claim::Won
    );
    assert_eq!(
        store
            .get_run("job", t2.fire_time)
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "lost"
    );
}

/// The pruned watermark keeps milliseconds: pruning a manual run refuses exactly what is at
/// or before it, and `pruned_until` reports it.
async fn a_pruned_manual_run_sets_a_millisecond_watermark(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let term = take(&*store, "job", "a", "sa").await;
    assert_eq!(store.pruned_until("job").await.unwrap(), None);
    let t = trigger(250);
    let late = trigger(750);
    for r in [&t, &late] {
        assert!(store
            .change_request("job", &RequestChange::AddTrigger(r.clone()))
            .await
            .unwrap());
    }
    let runs = vec![
        run("job", fire(0), "a", term),
        triggered(run("job", t.fire_time, "a", term), "manual", &t.id()),
        run("job", fire(1), "a", term),
        run("job", fire(2), "a", term),
    ];
    claim_all(&store, &runs).await;
    for r in &runs {
        assert!(store.finish(&ended(r, "ok")).await.unwrap());
    }
    assert_eq!(store.prune_runs("job", 2).await.unwrap(), 2);
    assert_eq!(store.pruned_until("job").await.unwrap(), Some(t.fire_time));
    // 0.750 is after the watermark (0.250): claimable; 0.250 itself is not.
    let after = triggered(run("job", late.fire_time, "a", term), "manual", &late.id());
    assert_eq!(store.claim(&after, "sa").await.unwrap(), Claim::Won);
    let before = run("job", fire(0), "a", term);
    assert_eq!(store.claim(&before, "sa").await.unwrap(), Claim::TooOld);
    assert_eq!(store.pruned_until("other").await.unwrap(), None);
}

/// A run keeps its output tail: a progress write (outcome still `running`) updates the record
/// in place, under the claim's condition, and it stays running; the outcome's write keeps the
/// final tail; a progress write after that is refused. 256 KiB (the largest `output_limit`) of
/// multi-byte text round-trips.
async fn a_run_keeps_its_output_tail(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let term = take(&*store, "job", "a", "sa").await;
    let claimed = run("job", fire(0), "a", term);
    assert_eq!(store.claim(&claimed, "sa").await.unwrap(), Claim::Won);
    let progress = RunRecord {
        output: "starting\nhalf way\n".into(),
        output_cut: 0,
        ..claimed.clone()
    };
    assert!(store.finish(&progress).await.unwrap());
    let stored = store.get_run("job", fire(0)).await.unwrap().unwrap();
    assert_eq!(
        (stored.outcome.as_str(), stored.output.as_str()),
        ("running", "starting\nhalf way\n")
    );
    assert!(
        store
            .running_runs()
            .await
            .unwrap()
            .iter()
            .any(|r| r.fire_time == fire(0)),
        "a progress write keeps the run listed as running"
    );
    // Another claim's session cannot write progress either.
    let stranger = RunRecord {
        session: "other".into(),
        ..progress.clone()
    };
    assert!(!store.finish(&stranger).await.unwrap());
    let big: String = "é".repeat(128 * 1024); // 256 KiB of UTF-8
    let done = RunRecord {
        output: big.clone(),
        output_cut: 1_000_000,
        ..ended(&claimed, "ok")
    };
    assert!(store.finish(&done).await.unwrap());
    let stored = store.get_run("job", fire(0)).await.unwrap().unwrap();
    assert_eq!(stored.outcome, "ok");
    assert_eq!(stored.output, big);
    assert_eq!(stored.output_cut, 1_000_000);
    assert!(!store
        .running_runs()
        .await
        .unwrap()
        .iter()
        .any(|r| r.fire_time == fire(0)));
    assert!(
        !store.finish(&progress).await.unwrap(),
        "closed: no more progress"
    );
    assert_eq!(
        store
            .get_run("job", fire(0))
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "ok"
    );
    let recent = store.recent_runs("job", 1).await.unwrap();
    assert_eq!(recent[0].output.len(), big.len());
}

// ---- every clause, for every backend ----

/// `contract!(module, constructor)`: one test per clause in `mod module`, each on a fresh store
/// from `constructor` (an async fn returning the store and a guard that keeps it alive).
macro_rules! contract {
    ($backend:ident, $make:ident) => {
        contract!(
            @clauses $backend, $make,
            concurrent_acquirers_exactly_one_wins,
            term_grows_on_every_change_of_holder,
            acquire_fails_when_anything_observed_changed,
            a_batch_takes_only_what_is_still_as_observed,
            racing_batches_never_take_a_lease_twice,
            a_handed_over_lease_is_taken_on_the_lease_alone,
            a_fire_time_is_claimed_once_across_contenders,
            concurrent_claims_of_one_jobs_fire_times_all_win,
            a_stale_holder_cannot_claim,
            claim_racing_a_takeover_never_both,
            release_frees_only_own_leases,
            snapshot_reads_many_leases_and_all_nodes_in_batches,
            the_lease_epoch_round_trips_with_the_node_record,
            runs_record_outcomes,
            finish_is_conditional_and_once,
            a_pruned_fire_time_is_never_claimed_again,
            running_runs_lists_what_is_going,
            an_orphan_is_closed_once_by_the_leader,
            history_keeps_the_newest_runs,
            dead_nodes_are_removed_only_if_unchanged,
            definitions_round_trip,
            the_jobs_digest_round_trips_with_the_node_record,
            definitions_are_deleted_with_the_node_record,
            a_paused_job_is_never_claimed,
            a_pause_survives_acquire_and_release,
            a_recovery_is_refused_while_paused,
            requests_change_atomically_and_move_the_control_epoch,
            requests_survive_acquire_and_release,
            a_triggered_run_is_claimed_once_while_its_request_is_pending,
            a_pruned_manual_run_sets_a_millisecond_watermark,
            a_run_keeps_its_output_tail,
        );
    };
    (@clauses $backend:ident, $make:ident, $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = super::$make().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

contract!(datastore, datastore_store);
contract!(file, file_store);
contract!(redis, redis_store);
contract!(zookeeper, zookeeper_store);
contract!(postgres, postgres_store);

// ---- the file store only ----

mod file_only {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::*;

    async fn open(dir: &Path) -> FileStore {
        FileStore::open(dir, Duration::from_secs(10))
            .await
            .expect("open the file store")
    }

    /// Eight tasks, each with its OWN store on one directory (so nothing in-process orders
    /// them: only the OS lock does), race round after round for a free lease and for a fire
    /// time: exactly one winner each time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn separate_instances_contend_through_the_os_lock() {
        let dir = tempfile::tempdir().unwrap();
        let setup = open(dir.path()).await;
        setup.put_node(&node("a", "sa", 1)).await.unwrap();
        let t = take(&setup, "c", "a", "sa").await;
        const TASKS: usize = 8;
        const ROUNDS: i64 = 15;
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let (barrier, path) = (barrier.clone(), dir.path().to_path_buf());
            handles.push(tokio::spawn(async move {
                let store = open(&path).await;
                let who = format!("n{i}");
                let mut results = Vec::new();
                for r in 0..ROUNDS {
                    barrier.wait().await;
                    let won = store
                        .acquire(&format!("p{r}"), &FREE, &lease(&who, "s", 1))
                        .await
                        .unwrap();
                    barrier.wait().await;
                    let claim = store.claim(&run("c", fire(r), "a", t), "sa").await.unwrap();
                    results.push((r, won, claim));
                }
                results
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        assert_one_winner_per_round(&all, ROUNDS);
        assert_eq!(setup.runs("c").await.unwrap().len(), ROUNDS as usize);
    }

    /// Checks the (round, acquire won, claim) results of every contender.
    fn assert_one_winner_per_round(all: &[(i64, bool, Claim)], rounds: i64) {
        for r in 0..rounds {
            let this: Vec<_> = all.iter().filter(|(round, ..)| *round == r).collect();
            let acquired = this.iter().filter(|(_, won, _)| *won).count();
            assert_eq!(acquired, 1, "round {r}: {acquired} acquirers won: {this:?}");
            let claimed = this.iter().filter(|(.., c)| *c == Claim::Won).count();
            assert_eq!(claimed, 1, "round {r}: {claimed} claims won: {this:?}");
            assert!(
                this.iter()
                    .all(|(.., c)| matches!(c, Claim::Won | Claim::AlreadyRun)),
                "round {r}: {this:?}"
            );
        }
    }

    /// Set in the child processes of `processes_contend_through_the_os_lock`.
    const CHILD_DIR: &str = "CRONLEASE_CONTRACT_CHILD_DIR";
    const CHILD_ROUNDS: i64 = 30;

    /// Four real processes (this test binary, running [`child_process`]) race for free leases
    /// and for fire times in one directory: exactly one winner each time.
    #[test]
    fn processes_contend_through_the_os_lock() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let setup = open(dir.path()).await;
            setup.put_node(&node("a", "sa", 1)).await.unwrap();
            assert_eq!(take(&setup, "c", "a", "sa").await, 1);
        });
        let exe = std::env::current_exe().unwrap();
        let mut children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", "file_only::child_process", "--nocapture"])
                    .args(["--test-threads", "1"])
                    .env(CHILD_DIR, dir.path())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start a child test process")
            })
            .collect();
        // The start line: every child waits for end of file on its stdin.
        for child in &mut children {
            drop(child.stdin.take());
        }
        let mut all = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(
                out.status.success(),
                "child {i}: {:?}\n{stdout}\n{stderr}",
                out.status
            );
            let lines: Vec<_> = stderr.lines().filter_map(parse_child_line).collect();
            assert_eq!(lines.len(), CHILD_ROUNDS as usize, "child {i}:\n{stderr}");
            all.extend(lines);
        }
        assert_one_winner_per_round(&all, CHILD_ROUNDS);
        let runs = rt.block_on(async { open(dir.path()).await.runs("c").await.unwrap() });
        assert_eq!(runs.len(), CHILD_ROUNDS as usize);
    }

    /// "CHILD {round} {won} {claim:?}" → (round, won, claim).
    fn parse_child_line(line: &str) -> Option<(i64, bool, Claim)> {
        let mut words = line.strip_prefix("CHILD ")?.split(' ');
        let round = words.next()?.parse().ok()?;
        let won = words.next()?.parse().ok()?;
        let claim = match words.next()? {
            "Won" => Claim::Won,
            "AlreadyRun" => Claim::AlreadyRun,
            "Fenced" => Claim::Fenced,
            _ => return None,
        };
        Some((round, won, claim))
    }

    /// The body of one child process of `processes_contend_through_the_os_lock`; without its
    /// environment (a normal test run) it does nothing.
    #[test]
    fn child_process() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        // Wait for the start line (the parent closes our stdin once all children exist).
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let me = format!("pid{}", std::process::id());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = open(Path::new(&dir)).await;
            for r in 0..CHILD_ROUNDS {
                let won = store
                    .acquire(&format!("p{r}"), &FREE, &lease(&me, &me, 1))
                    .await
                    .unwrap();
                let claim = store.claim(&run("c", fire(r), "a", 1), "sa").await.unwrap();
                // On stderr: libtest writes its own progress to stdout, without line ends.
                eprintln!("CHILD {r} {won} {claim:?}");
            }
        });
    }

    /// The store still reads exactly what `a_crashed_writers_leftovers_do_not_corrupt_reads`
    /// wrote before the leftovers appeared.
    async fn reads_unchanged(store: &FileStore, before: &cronlease::store::Snapshot) {
        let snap = store.snapshot(&["job".to_string()]).await.unwrap();
        assert_eq!(snap.leases, before.leases);
        assert_eq!(snap.nodes, before.nodes);
        let runs = store.runs("job").await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].fire_time, fire(1));
        assert_eq!(store.recent_runs("job", 5).await.unwrap().len(), 1);
        assert!(!store.run_exists("job", fire(2)).await.unwrap());
    }

    /// What a writer killed mid-write leaves behind (an empty temp file, one cut off halfway
    /// through a record, one complete but never renamed) and stray files in the record
    /// directories change no read; reopening the store removes the temp files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_writers_leftovers_do_not_corrupt_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        let t = take(&store, "job", "a", "sa").await;
        let claim = store.claim(&run("job", fire(1), "a", t), "sa").await;
        assert_eq!(claim.unwrap(), Claim::Won);
        let before = store.snapshot(&["job".to_string()]).await.unwrap();

        let tmp = dir.path().join("tmp");
        let leases = std::fs::read(dir.path().join("leases.json")).unwrap();
        let write = |path: std::path::PathBuf, bytes: &[u8]| std::fs::write(path, bytes).unwrap();
        write(tmp.join("dead1.leases.json"), b"");
        write(tmp.join("dead2.leases.json"), &leases[..leases.len() / 2]);
        write(
            tmp.join("dead3.a.json"),
            br#"{"id":"a","session":"x","heartbeat":9"#,
        );
        write(
            tmp.join("dead4.leases.json"),
            br#"{"version":1,"leases":{}}"#,
        );
        write(dir.path().join("nodes/.a.json.swp"), &leases);
        write(dir.path().join("nodes/notes.txt"), b"x");
        write(dir.path().join("runs/job/2.json.tmp"), b"{");

        reads_unchanged(&store, &before).await;
        // A restarted node reopens the store: dead writers' temp files go, records stay.
        drop(store);
        let store = open(dir.path()).await;
        reads_unchanged(&store, &before).await;
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        let claim = store.claim(&run("job", fire(2), "a", t), "sa").await;
        assert_eq!(claim.unwrap(), Claim::Won);
        let claim = store.claim(&run("job", fire(1), "a", t), "sa").await;
        assert_eq!(claim.unwrap(), Claim::AlreadyRun);
    }

    /// `r` failed as [`StoreError::Other`] with a message naming `what`.
    fn refused<T>(r: Result<T, StoreError>, what: &str) {
        match r {
            Err(StoreError::Other(m)) => assert!(m.contains(what), "{m}"),
            Err(e) => panic!("not Other: {e}"),
            Ok(_) => panic!("a damaged {what} was read"),
        }
    }

    /// A record damaged from outside (the store's own writes cannot tear one) is an error that
    /// names the file; never a panic, and never read as "no lease" (that would reset terms).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        let t = take(&store, "job", "a", "sa").await;
        let claimed = store.claim(&run("job", fire(1), "a", t), "sa").await;
        assert_eq!(claimed.unwrap(), Claim::Won);
        let write =
            |path: &str, bytes: &[u8]| std::fs::write(dir.path().join(path), bytes).unwrap();

        write("leases.json", br#"{"version":1,"lea"#);
        refused(store.snapshot(&["job".into()]).await, "leases.json");
        let lease_b = lease("b", "sb", 1);
        refused(store.acquire("job", &FREE, &lease_b).await, "leases.json");
        write("leases.json", br#"{"version":7,"leases":{}}"#);
        refused(store.snapshot(&[]).await, "format version 7");

        write("runs/job/1800000001.json", b"[]");
        refused(store.runs("job").await, "1800000001.json");
        write("nodes/b.json", b"");
        std::fs::remove_file(dir.path().join("leases.json")).unwrap();
        refused(store.snapshot(&[]).await, "b.json");
    }

    /// A directory that cannot be created is a configuration error that names it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unusable_directory_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let at = file.join("store");
        match FileStore::open(&at, Duration::from_secs(1)).await {
            Err(StoreError::Other(m)) => {
                assert!(m.contains("cannot create the file store directory"), "{m}");
                assert!(m.contains(&at.display().to_string()), "{m}");
            }
            Err(e) => panic!("not Other: {e}"),
            Ok(_) => panic!("opened a store under a regular file"),
        }
    }

    /// While another process holds the lock, changes wait at most the store timeout and then
    /// fail as unavailable; reads do not wait at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lock_bounds_changes_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(300);
        let store = FileStore::open(dir.path(), timeout).await.unwrap();
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        // The lock as another process would hold it: its own open file description.
        let held = std::fs::File::open(dir.path().join("lock")).unwrap();
        // SAFETY: plain syscall on a descriptor `held` owns.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let start = std::time::Instant::now();
        match store.put_node(&node("a", "sa", 2)).await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("busy"), "{m}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        let waited = start.elapsed();
        assert!(
            waited >= timeout && waited < timeout * 4,
            "waited {waited:?}"
        );
        assert_eq!(store.snapshot(&[]).await.unwrap().nodes["a"].heartbeat, 1);
        drop(held);
        store.put_node(&node("a", "sa", 2)).await.unwrap();
        assert_eq!(store.snapshot(&[]).await.unwrap().nodes["a"].heartbeat, 2);
    }
}

// ---- the Redis store only ----

mod redis_only {
    use super::*;
    use common::redis_server::RedisServer;
    use cronlease::store::redis::RedisStore;

    /// A killed server is unavailable within the timeout, and the same store works again once
    /// a server is back (the connection is re-made); a server without persistence comes back
    /// empty, terms included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_is_unavailable_and_the_store_reconnects() {
        let mut server = RedisServer::start();
        let timeout = Duration::from_millis(500);
        let store = RedisStore::connect(&server.url(), "outage", timeout)
            .await
            .unwrap();
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        assert_eq!(take(&store, "job", "a", "sa").await, 1);
        server.stop();
        let start = std::time::Instant::now();
        match store.put_node(&node("a", "sa", 2)).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(start.elapsed() < timeout * 3, "{:?}", start.elapsed());
        server.restart();
        // The same store, without reconnecting by hand: the connection is re-made.
        let reconnected = common::wait_until_async(Duration::from_secs(10), || async {
            store.put_node(&node("a", "sa", 3)).await.is_ok()
        })
        .await;
        assert!(reconnected, "no reconnect");
        let snap = store.snapshot(&["job".to_string()]).await.unwrap();
        assert_eq!(snap.nodes["a"].heartbeat, 3);
        assert!(snap.leases.is_empty(), "no persistence: the lease is gone");
        assert_eq!(take(&store, "job", "a", "sa").await, 1, "terms start over");
    }

    /// The acquire script refuses a term that is not above the stored one; node records carry
    /// an expiry (a backstop only); a lease without a term is an error, never "free, term 0".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn terms_never_go_back_and_damage_is_refused() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), "ns", Duration::from_secs(10))
            .await
            .unwrap();
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        let t = take(&store, "job", "a", "sa").await;
        let exact = Observed {
            lease: Some(lease("a", "sa", t)),
            holder_node: Some(("sa".into(), 1)),
            handed_over: false,
        };
        match store.acquire("job", &exact, &lease("b", "sb", t)).await {
            Err(StoreError::Other(m)) => assert!(m.contains("terms never go back"), "{m}"),
            other => panic!("a term that does not grow was accepted: {other:?}"),
        }

        let client = ::redis::Client::open(server.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg("cronlease:ns:node:a")
            .query_async(&mut con)
            .await
            .unwrap();
        let max = cronlease::store::redis::NODE_TTL.as_millis() as i64;
        assert!(ttl > max - 60_000 && ttl <= max, "node record ttl {ttl} ms");
        // The definitions expire with the record: every write of the record renews theirs.
        store
            .put_definitions("a", &Definitions::default())
            .await
            .unwrap();
        let defs_ttl = |mut con: ::redis::aio::MultiplexedConnection| async move {
            ::redis::cmd("PTTL")
                .arg("cronlease:ns:defs:a")
                .query_async::<i64>(&mut con)
                .await
                .unwrap()
        };
        let ttl = defs_ttl(con.clone()).await;
        assert!(ttl > max - 60_000 && ttl <= max, "definitions ttl {ttl} ms");
        let _: () = ::redis::cmd("PEXPIRE")
            .arg("cronlease:ns:defs:a")
            .arg(60_000)
            .query_async(&mut con)
            .await
            .unwrap();
        store.put_node(&node("a", "sa", 2)).await.unwrap();
        let ttl = defs_ttl(con.clone()).await;
        assert!(ttl > max - 60_000, "renewed by put_node: ttl {ttl} ms");

        let _: () = ::redis::cmd("HDEL")
            .arg("cronlease:ns:lease:job")
            .arg("term")
            .query_async(&mut con)
            .await
            .unwrap();
        match store.snapshot(&["job".to_string()]).await {
            Err(StoreError::Other(m)) => assert!(m.contains("no term"), "{m}"),
            other => panic!("a lease without a term was read: {other:?}"),
        }
    }
}

// ---- the PostgreSQL store only ----

mod postgres_only {
    use super::*;
    use common::postgres_server::PostgresServer;
    use std::process::{Command, Stdio};

    /// A call stuck behind a row lock gives up at the store timeout as unavailable, and its
    /// statement does not go on waiting on the server (it is cancelled), so it holds nothing
    /// once the other transaction ends; the store is usable again at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_stuck_on_a_lock_times_out_and_is_cancelled_on_the_server() {
        let server = PostgresServer::start();
        let timeout = Duration::from_secs(1);
        let store = cronlease::store::postgres::connect(&server.url(), "cronlease", "t", timeout)
            .await
            .expect("connect to postgres");
        store.put_node(&node("a", "sa", 1)).await.unwrap();
        assert!(store
            .acquire("job", &FREE, &lease("a", "sa", 1))
            .await
            .unwrap());
        // Another session holds the lease row for 20 s.
        let mut holder = Command::new(common::postgres_server::postgres_bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-c"])
            .arg(
                "BEGIN; SELECT 1 FROM cronlease.leases WHERE ns = 't' AND job = 'job' \
                 FOR UPDATE; SELECT pg_sleep(20); COMMIT;",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start psql");
        let locked = || {
            server.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
            )
        };
        assert!(
            common::wait_until(Duration::from_secs(10), || locked().trim() == "1"),
            "the other session never took the lock"
        );
        let started = std::time::Instant::now();
        let claimed = store.claim(&run("job", fire(60), "a", 1), "sa").await;
        let took = started.elapsed();
        assert!(
            matches!(claimed, Err(StoreError::Unavailable(_))),
            "a claim behind a lock: {claimed:?}"
        );
        assert!(took < Duration::from_secs(5), "it gave up after {took:?}");
        // Cancelled on the server: no statement of ours is left waiting for the lock.
        let waiting = || {
            server.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cronlease' \
                 AND wait_event_type = 'Lock'",
            )
        };
        assert!(
            common::wait_until(Duration::from_secs(5), || waiting().trim() == "0"),
            "the timed-out claim still waits on the server: {}",
            waiting()
        );
        // End the other session on the server (killing psql alone would leave its backend
        // asleep with the lock).
        server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE '%pg_sleep(20)%' AND pid <> pg_backend_pid()",
        );
        let _ = holder.wait();
        // The lock gone, the same store claims at once.
        assert_eq!(
            store
                .claim(&run("job", fire(61), "a", 1), "sa")
                .await
                .unwrap(),
            Claim::Won
        );
    }
}
