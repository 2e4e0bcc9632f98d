//! A takeover just before a fire time T, after T-1 went unled (`catch_up = "latest"`, the
//! default). On acquisition the new leader claims T ahead (it is due within the claim-ahead
//! window) and starts catch-up, whose latest miss is T-1. A newer fire time this node already
//! took on supersedes that miss: claiming T-1 as well got one of the two recorded `skipped`
//! behind the other (overlap), a tick claimed (so no other node could run it) and never run.
//!
//! This drives the real election and tick logic on the file store, placing the acquiring poll
//! at a chosen instant before T; the ticker is not involved.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use cronlease::node::election::Election;
use cronlease::node::history::History;
use cronlease::node::recorder::Recorder;
use cronlease::node::session::Session;
use cronlease::node::tick::{TickContext, Ticks};
use cronlease::ops::metrics::Metrics;
use cronlease::store::{file::FileStore, RunRecord, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Wait for a wall-clock instant: the scenario is defined by where the acquisition falls
/// relative to a fire time, so this places an event; it does not guess at a condition.
async fn at(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

/// Acquire the lease `lead_ms` before T; return every run record and T.
async fn takeover(lead_ms: i64, shell: &str) -> (Vec<RunRecord>, DateTime<Utc>) {
    let cfg = cronlease::config::parse(
        "race.toml",
        &format!(
            "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
             [[job]]\nname = \"solo\"\nschedule = \"* * * * * *\"\nshell = \"{shell}\"\n"
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        FileStore::open(dir.path().to_path_buf(), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let jobs = Arc::new(cronlease::node::jobs::JobTable::new(cfg.jobs.clone()));
    let metrics = Arc::new(Metrics::new());
    let session = Arc::new(Session::new("n1".into(), store.clone(), cfg.election, None));
    let cancel = CancellationToken::new();
    // T two whole seconds ahead, so that T-1 falls after this node's start (inside the
    // catch-up window) and nobody ran it.
    let second = chrono::Duration::seconds(1);
    let t = Utc::now().duration_trunc(second).unwrap() + second * 2;
    assert!(session.register(&cancel).await);
    let election = Arc::new(Election::new(
        session.clone(),
        store.clone(),
        cfg.election,
        jobs.clone(),
        metrics.clone(),
    ));
    let tracker = TaskTracker::new();
    let history = Arc::new(History::new(store.clone(), 100, metrics.clone()));
    let (recorder, writer) = Recorder::new("n1".into(), store.clone(), history, metrics.clone());
    tokio::spawn(writer.run(cancel.clone()));
    let ticks = Arc::new(Ticks::new(
        TickContext {
            node: "n1".into(),
            store: store.clone(),
            election: election.clone(),
            metrics: metrics.clone(),
            lease: cfg.election.lease,
            tracker: tracker.clone(),
            stopping: CancellationToken::new(),
            kill: CancellationToken::new(),
            recorder,
            process: session.process().to_string(),
            notifier: cronlease::notify::Notifier::new(
                "n1".into(),
                metrics.clone(),
                jobs.clone(),
                None,
            )
            .unwrap(),
        },
        jobs.clone(),
    ));
    {
        let ticks = ticks.clone();
        election.set_on_acquired(Box::new(move |idx, term| ticks.caught_up(idx, term)));
    }
    // The settling poll, a renewal that keeps the session valid past T, then the acquiring
    // poll `lead_ms` before T.
    at(t - chrono::Duration::milliseconds(600)).await;
    election.poll_once(&cancel).await;
    session.renew_once().await.unwrap();
    at(t - chrono::Duration::milliseconds(lead_ms)).await;
    election.poll_once(&cancel).await;
    assert!(
        election.leading("solo").is_some(),
        "the acquiring poll took the lease"
    );
    // Until T's run is finished.
    let finished = |runs: &[RunRecord]| {
        runs.iter()
            .any(|r| r.fire_time == t && r.outcome != "running")
    };
    let done = common::wait_until_async(Duration::from_secs(10), || {
        let store = store.clone();
        async move { finished(&store.runs("solo").await.unwrap()) }
    })
    .await;
    assert!(done, "T never finished: {:?}", store.runs("solo").await);
    // And every task the claims started is done.
    tracker.close();
    tracker.wait().await;
    (store.runs("solo").await.unwrap(), t)
}

fn assert_nothing_claimed_and_skipped(runs: &[RunRecord], t: DateTime<Utc>) {
    let skipped: Vec<_> = runs.iter().filter(|r| r.outcome == "skipped").collect();
    assert!(
        skipped.is_empty(),
        "claimed and never run: {skipped:?} (T = {t})"
    );
    let on_time = runs.iter().find(|r| r.fire_time == t).expect("T was run");
    assert_eq!(on_time.outcome, "ok", "{runs:?}");
}

/// Acquired 3 ms before T: T is claimed ahead and runs at once; T-1 is not claimed behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_just_before_a_fire_time_loses_no_claimed_tick() {
    let (runs, t) = takeover(3, "echo tick").await;
    assert_nothing_claimed_and_skipped(&runs, t);
    assert!(
        runs.iter().all(|r| r.fire_time >= t),
        "T supersedes the older miss: {runs:?}"
    );
}

/// Acquired 100 ms before T with a job that outlasts the gap: T-1 must not start first and get
/// the on-time tick T skipped behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_does_not_push_the_on_time_tick_aside() {
    let (runs, t) = takeover(100, "sleep 0.3").await;
    assert_nothing_claimed_and_skipped(&runs, t);
}
