//! The store contract: what the election and the tick logic rely on, checked against every
//! backend. Each backend gets one test per clause, on a fresh, real server.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cronlease::store::datastore::DatastoreStore;
use cronlease::store::{Claim, LeaseRecord, NodeRecord, Observed, RunRecord, Store};

use common::Emulator;

/// A fresh Datastore store on its own emulator (kept alive by the returned guard).
async fn datastore() -> (Arc<dyn Store>, Emulator) {
    let emu = Emulator::start();
    let store = DatastoreStore::connect_emulator(
        &emu.host(),
        "cronlease-test",
        "contract",
        Duration::from_secs(10),
    )
    .await
    .expect("connect to the emulator");
    (Arc::new(store), emu)
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
    }
}

fn lease(holder: &str, session: &str, term: i64) -> LeaseRecord {
    LeaseRecord {
        holder: holder.to_string(),
        session: session.to_string(),
        term,
        acquired_at: Some(Utc::now()),
    }
}

fn run(job: &str, fire: DateTime<Utc>, node: &str, term: i64) -> RunRecord {
    RunRecord {
        job: job.to_string(),
        fire_time: fire,
        node: node.to_string(),
        term,
        started_at: Utc::now(),
        finished_at: None,
        outcome: "running".to_string(),
        exit_code: None,
    }
}

fn fire(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

const FREE: Observed = Observed {
    lease: None,
    holder_node: None,
};

/// Take `job` for `who` from the state the store holds now.
async fn take(store: &dyn Store, job: &str, who: &str, session: &str) -> i64 {
    let snap = store.snapshot(&[job.to_string()]).await.unwrap();
    let cur = snap.leases.get(job).cloned();
    let holder_node = cur
        .as_ref()
        .filter(|l| !l.holder.is_empty())
        .and_then(|l| snap.nodes.get(&l.holder))
        .map(|n| (n.session.clone(), n.heartbeat));
    let term = cur.as_ref().map(|l| l.term).unwrap_or(0) + 1;
    let observed = Observed {
        lease: cur,
        holder_node,
    };
    assert!(store
        .acquire(job, &observed, &lease(who, session, term))
        .await
        .unwrap());
    term
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
    };
    assert!(!store
        .acquire("job", &stale, &lease("b", "sb", t + 1))
        .await
        .unwrap());
    // An exact observation wins.
    let exact = Observed {
        lease: Some(lease("a", "sa", t)),
        holder_node: Some(("sa".into(), 2)),
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
    };
    assert!(store
        .acquire("job", &gone, &lease("a", "sa", t + 2))
        .await
        .unwrap());
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
}

async fn runs_record_outcomes(store: Arc<dyn Store>) {
    store.put_node(&node("a", "sa", 1)).await.unwrap();
    let t = take(&*store, "job", "a", "sa").await;
    let mut r = run("job", fire(5), "a", t);
    assert_eq!(store.claim(&r, "sa").await.unwrap(), Claim::Won);
    r.finished_at = Some(Utc::now());
    r.outcome = "failed".into();
    r.exit_code = Some(3);
    store.finish(&r).await.unwrap();
    let runs = store.runs("job").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "failed");
    assert_eq!(runs[0].exit_code, Some(3));
    assert_eq!(runs[0].term, t);
    assert_eq!(runs[0].fire_time, fire(5));
}

async fn history_keeps_the_newest_runs(store: Arc<dyn Store>) {
    // 1,200 runs of one job (more than one delete batch) and 5 of another.
    let total = 1200;
    let all: Vec<RunRecord> = (0..total)
        .map(|i| run("busy", fire(i), "a", 1))
        .chain((0..5).map(|i| run("quiet", fire(i), "a", 1)))
        .collect();
    for chunk in all.chunks(100) {
        futures::future::try_join_all(chunk.iter().map(|r| store.finish(r)))
            .await
            .unwrap();
    }
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

// ---- Datastore (emulator) ----

macro_rules! datastore_contract {
    ($($name:ident),* $(,)?) => {
        mod datastore {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _emu) = datastore().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

datastore_contract!(
    concurrent_acquirers_exactly_one_wins,
    term_grows_on_every_change_of_holder,
    acquire_fails_when_anything_observed_changed,
    a_fire_time_is_claimed_once_across_contenders,
    a_stale_holder_cannot_claim,
    claim_racing_a_takeover_never_both,
    release_frees_only_own_leases,
    snapshot_reads_many_leases_and_all_nodes_in_batches,
    runs_record_outcomes,
    history_keeps_the_newest_runs,
    dead_nodes_are_removed_only_if_unchanged,
);
