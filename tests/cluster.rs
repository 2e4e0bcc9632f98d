//! The core guarantees, end to end: real `cronlease` processes against a real Datastore
//! emulator, each test on its own emulator and port. Lease 3 s, renew 500 ms, poll 250 ms.
//! Exactly-once and kill -9 failover hold for every store: they also run against the file
//! store (`*_on_the_file_store`), each test in its own directory.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronlease::store::Store;
use serde_json::Value;

use common::{report, wait_until, write_config, Backend, Holdings, Node, Target};

const LEASE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_secs(1);
/// A node's store-call timeout with `renew = "500ms"` (renew clamped to 1..10 s): the new
/// leader's claim of its first tick is one such call, which a loaded CI machine can stretch.
const CALL: Duration = Duration::from_secs(1);

fn config(jobs: &[&str]) -> String {
    let mut s = String::from(
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n[node]\nshutdown_grace = \"5s\"\n",
    );
    for job in jobs {
        s.push_str(&format!(
            "\n[[job]]\nname = \"{job}\"\nschedule = \"* * * * * *\"\n\
             shell = \"echo $CRONLEASE_JOB fired $CRONLEASE_FIRE_TIME term $CRONLEASE_TERM\"\ntimeout = \"5s\"\n"
        ));
    }
    s
}

/// One `tick_run` line.
#[derive(Debug, Clone)]
struct TickRun {
    job: String,
    fire_time: DateTime<Utc>,
    node: String,
    term: i64,
    at: DateTime<Utc>,
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"));
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn tick_runs(nodes: &[&Node]) -> Vec<TickRun> {
    let mut out = Vec::new();
    for n in nodes {
        for e in n.events_named("tick_run") {
            out.push(TickRun {
                job: e["job"].as_str().unwrap().to_string(),
                fire_time: time(&e, "fire_time"),
                node: e["node"].as_str().unwrap().to_string(),
                term: e["term"].as_i64().unwrap(),
                at: time(&e, "ts"),
            });
        }
    }
    out.sort_by_key(|t| (t.at, t.job.clone()));
    out
}

/// The (job, fire time, node) of every `tick_skipped` line with reason `lease_lost`: a claim made
/// ahead whose lease was lost before its instant. Its record says `skipped` and no node ran it,
/// by design; any other skipped record in these tests (their jobs never overlap) is a lost tick.
fn lease_lost_skips(nodes: &[&Node]) -> BTreeSet<(String, DateTime<Utc>, String)> {
    let mut out = BTreeSet::new();
    for n in nodes {
        for e in n.events_named("tick_skipped") {
            if e["reason"] == "lease_lost" {
                out.insert((
                    e["job"].as_str().unwrap().to_string(),
                    time(&e, "fire_time"),
                    e["node"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// Every (job, fire time) ran at most once across the nodes' logs.
fn assert_no_fire_time_twice(runs: &[TickRun]) {
    let mut seen: BTreeMap<(String, DateTime<Utc>), &TickRun> = BTreeMap::new();
    for r in runs {
        if let Some(first) = seen.insert((r.job.clone(), r.fire_time), r) {
            panic!("fire time ran twice: {first:?} and {r:?}");
        }
    }
}

/// Every (job, fire time) in the store's Run records is unique and matches the logs.
/// With `stopped` (every node stopped gracefully), also: no record is left `running`.
fn assert_store_agrees(
    backend: &Backend,
    jobs: &[&str],
    runs: &[TickRun],
    nodes: &[&Node],
    stopped: bool,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store_agrees(
        backend,
        jobs,
        runs,
        &lease_lost_skips(nodes),
        stopped,
    ));
}

/// The store the nodes of `backend` used, opened directly.
async fn open_store(backend: &Backend) -> Box<dyn Store> {
    backend.open_store("cronlease").await
}

async fn store_agrees(
    backend: &Backend,
    jobs: &[&str],
    runs: &[TickRun],
    excused: &BTreeSet<(String, DateTime<Utc>, String)>,
    stopped: bool,
) {
    let store = open_store(backend).await;
    for job in jobs {
        let stored = store.runs(job).await.unwrap();
        // The nodes stopped gracefully: every run reached its outcome in the store.
        let open: Vec<_> = stored.iter().filter(|r| r.outcome == "running").collect();
        assert!(
            !stopped || open.is_empty(),
            "runs of {job} left running: {open:?}"
        );
        // A claim made ahead whose lease was lost before its instant has a `skipped` record and
        // no tick_run line, by design. Any other skipped record is a tick nobody ran.
        let stored: Vec<_> = stored
            .into_iter()
            .filter(|r| {
                r.outcome != "skipped"
                    || !excused.contains(&(job.to_string(), r.fire_time, r.node.clone()))
            })
            .collect();
        let stored_set: BTreeSet<(DateTime<Utc>, String)> = stored
            .iter()
            .map(|r| (r.fire_time, r.node.clone()))
            .collect();
        assert_eq!(
            stored_set.len(),
            stored.len(),
            "duplicate run records for {job}"
        );
        let logged: BTreeSet<(DateTime<Utc>, String)> = runs
            .iter()
            .filter(|r| r.job == *job)
            .map(|r| (r.fire_time, r.node.clone()))
            .collect();
        assert_eq!(
            stored_set, logged,
            "the store's runs of {job} match the tick_run lines"
        );
    }
}

fn leader_of(runs: &[TickRun], job: &str) -> Option<String> {
    runs.iter()
        .rev()
        .find(|r| r.job == job)
        .map(|r| r.node.clone())
}

/// Writes the jobs file for `jobs` on `backend` into `dir`.
fn write_cluster_config(backend: &Backend, dir: &std::path::Path, jobs: &[&str]) -> PathBuf {
    write_config(dir, &format!("{}{}", backend.store_table(), config(jobs)))
}

fn start_nodes(backend: &Backend, cfg: &std::path::Path, n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node::spawn_on(backend, cfg, &format!("node-{i}")))
        .collect()
}

fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

/// Wait until `job` has ticked on some node; returns that node's index.
fn wait_for_leader(nodes: &[Node], job: &str, timeout: Duration) -> usize {
    let mut found = None;
    assert!(
        wait_until(timeout, || {
            found = nodes
                .iter()
                .position(|n| n.events_named("tick_run").iter().any(|e| e["job"] == job));
            found.is_some()
        }),
        "no node ran {job} within {timeout:?}"
    );
    // The latest runner is the leader.
    let runs = tick_runs(&refs(nodes));
    let leader = leader_of(&runs, job).unwrap();
    nodes.iter().position(|n| n.id == leader).unwrap()
}

/// Three nodes on `backend` sharing one every-second job; returns the leader's index.
fn solo_cluster(backend: Backend) -> (Backend, tempfile::TempDir, Vec<Node>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cluster_config(&backend, dir.path(), &["solo"]);
    let nodes = start_nodes(&backend, &cfg, 3);
    let leader = wait_for_leader(&nodes, "solo", Duration::from_secs(20));
    (backend, dir, nodes, leader)
}

/// The first tick run by a node other than `id` after `after`, waiting up to `timeout`.
fn first_tick_elsewhere(
    nodes: &[Node],
    id: &str,
    after: DateTime<Utc>,
    timeout: Duration,
) -> Option<TickRun> {
    let mut found = None;
    wait_until(timeout, || {
        found = tick_runs(&refs(nodes))
            .into_iter()
            .find(|r| r.node != id && r.at > after);
        found.is_some()
    });
    found
}

#[test]
fn three_nodes_run_every_fire_time_exactly_once() {
    exactly_once(Backend::datastore(), "three_nodes_exactly_once");
}

#[test]
fn three_nodes_run_every_fire_time_exactly_once_on_the_file_store() {
    exactly_once(Backend::file(), "three_nodes_exactly_once_file_store");
}

#[test]
fn three_nodes_run_every_fire_time_exactly_once_on_redis() {
    exactly_once(Backend::redis(), "three_nodes_exactly_once_redis");
}

#[test]
fn three_nodes_run_every_fire_time_exactly_once_on_zookeeper() {
    exactly_once(Backend::zookeeper(), "three_nodes_exactly_once_zookeeper");
}

#[test]
fn three_nodes_run_every_fire_time_exactly_once_on_postgres() {
    exactly_once(Backend::postgres(), "three_nodes_exactly_once_postgres");
}

fn exactly_once(backend: Backend, drill: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cluster_config(&backend, dir.path(), &["alpha", "beta"]);
    let nodes = start_nodes(&backend, &cfg, 3);

    // Settle: both jobs tick, led by different nodes.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let runs = tick_runs(&refs(&nodes));
            match (leader_of(&runs, "alpha"), leader_of(&runs, "beta")) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            }
        }),
        "the two jobs never ran on two different nodes"
    );
    let window_start = Utc::now() + chrono::Duration::seconds(1);
    let window_end = window_start + chrono::Duration::seconds(12);
    assert!(wait_until(Duration::from_secs(20), || Utc::now()
        > window_end + chrono::Duration::seconds(2)));
    let mut nodes = nodes;
    for n in &nodes {
        n.signal(libc::SIGTERM);
    }
    for n in &mut nodes {
        let status = n
            .wait_exit(Duration::from_secs(20))
            .expect("node exits after SIGTERM");
        assert!(
            status.success(),
            "{} exit status {status:?}: {}",
            n.id,
            n.stderr_text()
        );
    }

    let runs = tick_runs(&refs(&nodes));
    assert_no_fire_time_twice(&runs);
    assert_store_agrees(&backend, &["alpha", "beta"], &runs, &refs(&nodes), true);
    // No fault here: a claimed tick is never dropped, by a rebalancing hand-over either.
    let dropped = lease_lost_skips(&refs(&nodes));
    assert!(dropped.is_empty(), "claimed ticks nobody ran: {dropped:?}");

    // Every second of the window ran exactly once per job.
    for job in ["alpha", "beta"] {
        let mut t = DateTime::from_timestamp(window_start.timestamp(), 0).unwrap();
        while t <= window_end {
            let n = runs
                .iter()
                .filter(|r| r.job == job && r.fire_time == t)
                .count();
            assert_eq!(n, 1, "{job} at {t}: ran {n} times");
            t += chrono::Duration::seconds(1);
        }
    }
    // The others sat out, naming the holder.
    for job in ["alpha", "beta"] {
        let runner = leader_of(&runs, job).unwrap();
        let sat_out = nodes
            .iter()
            .filter(|n| n.id != runner)
            .flat_map(|n| n.events_named("sitting_out"))
            .filter(|e| e["job"] == job && e["holder"] == runner.as_str())
            .count();
        assert!(
            sat_out >= 10,
            "{job}: only {sat_out} sitting_out lines naming {runner}"
        );
    }
    // The job's own output is labelled.
    let outputs: usize = nodes
        .iter()
        .map(|n| n.events_named("job_output").len())
        .sum();
    assert!(outputs >= 24, "job output lines: {outputs}");
    report(
        drill,
        serde_json::json!({
            "ticks_checked": runs.len(),
            "window_fire_times": 2 * 13,
            "duplicate_runs": 0,
            "lost_ticks": 0,
        }),
    );
}

#[test]
fn kill_9_of_a_leader_fails_over_within_lease_poll_and_a_tick() {
    kill_9_failover(Backend::datastore(), "kill_9_failover");
}

#[test]
fn kill_9_of_a_leader_fails_over_within_lease_poll_and_a_tick_on_the_file_store() {
    kill_9_failover(Backend::file(), "kill_9_failover_file_store");
}

#[test]
fn kill_9_of_a_leader_fails_over_within_lease_poll_and_a_tick_on_redis() {
    kill_9_failover(Backend::redis(), "kill_9_failover_redis");
}

#[test]
fn kill_9_of_a_leader_fails_over_within_lease_poll_and_a_tick_on_postgres() {
    kill_9_failover(Backend::postgres(), "kill_9_failover_postgres");
}

#[test]
fn kill_9_of_a_leader_fails_over_within_lease_poll_and_a_tick_on_zookeeper() {
    kill_9_failover(Backend::zookeeper(), "kill_9_failover_zookeeper");
}

fn kill_9_failover(backend: Backend, drill: &str) {
    let (backend, _dir, mut nodes, leader) = solo_cluster(backend);
    // Let it lead for a couple of ticks, then kill it hard.
    let id = nodes[leader].id.clone();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[leader].events_named("tick_run").len() >= 2
    }));
    nodes[leader].kill9();
    let killed_at = Utc::now();
    let _ = nodes[leader].wait_exit(Duration::from_secs(5));

    let first = first_tick_elsewhere(&nodes, &id, killed_at, Duration::from_secs(15))
        .expect("no other node ran the job after the leader was killed");
    let gap = (first.at - killed_at).to_std().unwrap();
    let bound = LEASE + POLL + TICK + CALL;
    eprintln!(
        "failover after kill -9: {gap:?} (bound {bound:?}); new leader {} term {}",
        first.node, first.term
    );
    assert!(
        gap <= bound,
        "failover took {gap:?}, more than lease + poll + tick + the claim's call = {bound:?}"
    );

    // The run the dead leader had going (or had claimed ahead) is closed as lost by the new
    // leader, within lease + poll of the kill (plus slack for a loaded machine).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orphans = || {
        rt.block_on(async {
            let store = open_store(&backend).await;
            let runs = store.runs("solo").await.unwrap();
            runs.into_iter()
                .filter(|r| r.outcome == "running" && r.node == id)
                .collect::<Vec<_>>()
        })
    };
    let closed = wait_until(LEASE + POLL + Duration::from_secs(4), || {
        orphans().is_empty()
    });
    let diag: Vec<_> = nodes
        .iter()
        .filter(|n| n.id != id)
        .flat_map(|n| {
            n.events()
                .into_iter()
                .filter(|e| {
                    ["run_lost", "lease_acquired", "store_error", "orphan_scan"]
                        .contains(&e["event"].as_str().unwrap_or(""))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        closed,
        "the dead leader's runs are still running: {:?}\nthe others said: {diag:#?}",
        orphans()
    );
    drop(rt);

    // A few more ticks on the new leader, then check nothing ran twice.
    let new = nodes.iter().position(|n| n.id == first.node).unwrap();
    let before = nodes[new].events_named("tick_run").len();
    assert!(wait_until(Duration::from_secs(10), || nodes[new]
        .events_named("tick_run")
        .len()
        >= before + 3));
    let runs = tick_runs(&refs(&nodes));
    assert_no_fire_time_twice(&runs);
    assert_store_agrees(&backend, &["solo"], &runs, &refs(&nodes), false);
    report(
        drill,
        serde_json::json!({
            "failover_gap_ms": gap.as_millis() as u64,
            "bound_ms": bound.as_millis() as u64,
            "ticks_checked": runs.len(),
            "duplicate_runs": 0,
        }),
    );
}

#[test]
fn kill_9_of_a_node_leading_hundreds_moves_them_all_within_lease_and_3_s() {
    mass_failover(Backend::datastore(), Stop::Kill9, "mass_failover");
}

#[test]
fn kill_9_of_a_node_leading_hundreds_moves_them_all_within_lease_and_3_s_on_the_file_store() {
    mass_failover(Backend::file(), Stop::Kill9, "mass_failover_file_store");
}

#[test]
fn kill_9_of_a_node_leading_hundreds_moves_them_all_within_lease_and_3_s_on_redis() {
    mass_failover(Backend::redis(), Stop::Kill9, "mass_failover_redis");
}

#[test]
fn kill_9_of_a_node_leading_hundreds_moves_them_all_within_lease_and_3_s_on_postgres() {
    mass_failover(Backend::postgres(), Stop::Kill9, "mass_failover_postgres");
}

#[test]
fn sigterm_of_a_node_leading_hundreds_hands_them_all_over_on_postgres() {
    mass_failover(Backend::postgres(), Stop::Sigterm, "mass_handover_postgres");
}

#[test]
fn kill_9_of_a_node_leading_hundreds_moves_them_all_within_lease_and_3_s_on_zookeeper() {
    mass_failover(Backend::zookeeper(), Stop::Kill9, "mass_failover_zookeeper");
}

#[test]
fn sigterm_of_a_node_leading_hundreds_hands_them_all_over() {
    mass_failover(Backend::datastore(), Stop::Sigterm, "mass_handover");
}

#[test]
fn sigterm_of_a_node_leading_hundreds_hands_them_all_over_on_the_file_store() {
    mass_failover(Backend::file(), Stop::Sigterm, "mass_handover_file_store");
}

#[test]
fn sigterm_of_a_node_leading_hundreds_hands_them_all_over_on_redis() {
    mass_failover(Backend::redis(), Stop::Sigterm, "mass_handover_redis");
}

#[test]
fn sigterm_of_a_node_leading_hundreds_hands_them_all_over_on_zookeeper() {
    mass_failover(
        Backend::zookeeper(),
        Stop::Sigterm,
        "mass_handover_zookeeper",
    );
}

/// `[[job]]` tables for `names`, each once an hour (`say`), fire times spread over the hour:
/// jobs that are about elections, not runs.
fn hourly_jobs(names: &[String]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "\n[[job]]\nname = \"{name}\"\nschedule = \"{} {} * * * *\"\nsay = \"x\"\n",
                i % 60,
                (i / 60) % 60
            )
        })
        .collect()
}

/// How the node leading the most is stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Kill9,
    Sigterm,
}

/// 600 jobs (150 for SIGTERM; once an hour: this is about elections) on three nodes; the node leading the most
/// stops: after kill -9, every one of its jobs has a new leader within lease + 3 s; after
/// SIGTERM, as fast (peers take its leases straight from it: its log says so; the target of
/// poll + 1 s is measured by the bench). The survivors share them within one of each
/// other, and the store agrees with what they say they lead.
fn mass_failover(backend: Backend, stop: Stop, drill: &str) {
    // A graceful stop's hand-over needs fewer jobs to show (and costs the suite less).
    let jobs_n: usize = if stop == Stop::Sigterm { 150 } else { 600 };
    let mut text = format!(
        "{}[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n",
        backend.store_table()
    );
    let names: Vec<String> = (0..jobs_n).map(|i| format!("mass{i:03}")).collect();
    text.push_str(&hourly_jobs(&names));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &text);
    let mut nodes = start_nodes(&backend, &cfg, 3);
    let mut held = Holdings::new(nodes.len());
    let everyone = [0, 1, 2];
    assert!(
        wait_until(Duration::from_secs(60), || {
            held.update(&nodes);
            held.union(&everyone) == jobs_n
        }),
        "not every job got a leader: {}",
        held.union(&everyone)
    );
    let victim = (0..3).max_by_key(|&i| held.count(i)).unwrap();
    let moved = held.count(victim);
    match stop {
        Stop::Kill9 => nodes[victim].kill9(),
        Stop::Sigterm => nodes[victim].signal(libc::SIGTERM),
    }
    let killed_at = std::time::Instant::now();
    let survivors: Vec<usize> = everyone.into_iter().filter(|&i| i != victim).collect();
    let all_led = wait_until(Duration::from_secs(30), || {
        held.update(&nodes);
        held.union(&survivors) == jobs_n
    });
    let gap = killed_at.elapsed();
    assert!(
        all_led,
        "the survivors lead {} of {jobs_n}",
        held.union(&survivors)
    );
    // The target is lease + 3 s after a crash and poll + 1 s after SIGTERM, and
    // `scripts/bench.sh scale` measures those on release builds. Here, debug builds beside the
    // rest of the suite: the bound adds one store call (the emulator answers the last batch of
    // acquisitions late under load), and a SIGTERM'd node can take seconds to finish the poll
    // it is in before it announces the hand-over, so its bound is the crash's. Both still fail
    // when leases move a lease late (the behaviour before batched acquisition).
    let bound = LEASE + Duration::from_secs(3) + CALL;
    // When each survivor took its part, and how its store calls went (for a failure message).
    let killed_wall = Utc::now() - chrono::Duration::from_std(gap).unwrap();
    let timeline: Vec<String> = survivors
        .iter()
        .map(|&i| {
            let after: Vec<i64> = nodes[i]
                .events_named("lease_acquired")
                .iter()
                .map(|e| (time(e, "ts") - killed_wall).num_milliseconds())
                .filter(|ms| *ms > 0)
                .collect();
            format!(
                "{}: {} acquired from {:?} to {:?} ms after the kill; {} store errors",
                nodes[i].id,
                after.len(),
                after.iter().min(),
                after.iter().max(),
                nodes[i].events_named("store_error").len()
            )
        })
        .collect();
    let victim_log: Vec<String> = nodes[victim]
        .events()
        .iter()
        .filter(|e| {
            ["stopping", "handing_over", "node_stopped", "store_error"]
                .contains(&e["event"].as_str().unwrap_or(""))
        })
        .map(|e| {
            format!(
                "{} {} ms",
                e["event"],
                (time(e, "ts") - killed_wall).num_milliseconds()
            )
        })
        .collect();
    eprintln!("{moved} leases moved after {stop:?} in {gap:?} (bound {bound:?}): {timeline:?}; the stopped node: {victim_log:?}");
    assert!(
        gap <= bound,
        "the {moved} leases of the stopped node ({stop:?}) moved in {gap:?}, more than {bound:?}: \
         {timeline:?}; the stopped node: {victim_log:?}"
    );
    if stop == Stop::Sigterm {
        let status = nodes[victim]
            .wait_exit(Duration::from_secs(30))
            .expect("the stopped node exits");
        assert!(status.success(), "exit status {status:?}");
        let taken = nodes[victim]
            .events_named("lease_released")
            .iter()
            .filter(|e| {
                e["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("a peer took it"))
            })
            .count();
        // Most, on a machine that is not loaded; any at all shows they took them from a
        // stopping node rather than after its release. Only asked when the node announced the
        // hand-over promptly (a loaded machine can delay it past the node's wait for peers).
        let announced_ms = nodes[victim]
            .events_named("handing_over")
            .first()
            .map(|e| (time(e, "ts") - killed_wall).num_milliseconds());
        eprintln!("peers took {taken} of {moved}; hand-over announced after {announced_ms:?} ms");
        if announced_ms.is_some_and(|ms| ms < 500) {
            assert!(
                taken > 0,
                "peers took none of the {moved} leases straight from the stopping node"
            );
        }
    }
    // Shared out within one of each other.
    let spread = wait_until(Duration::from_secs(20), || {
        held.update(&nodes);
        let (a, b) = (held.count(survivors[0]), held.count(survivors[1]));
        a.abs_diff(b) <= 1 && a + b == jobs_n
    });
    assert!(
        spread,
        "survivors hold {} and {}",
        held.count(survivors[0]),
        held.count(survivors[1])
    );
    // The store agrees: each lease held by the survivor that says it leads it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leases = rt.block_on(async { open_store(&backend).await.leases(&names).await.unwrap() });
    for &i in &survivors {
        for job in held.jobs(i) {
            assert_eq!(leases[job].holder, nodes[i].id, "{job}");
        }
    }
    report(
        drill,
        serde_json::json!({
            "jobs": jobs_n,
            "moved": moved,
            "all_moved_ms": gap.as_millis() as u64,
            "bound_ms": bound.as_millis() as u64,
        }),
    );
}

#[test]
fn sigterm_of_a_leader_releases_and_hands_over_within_a_poll_and_a_tick() {
    graceful_hand_over(Backend::datastore());
}

#[test]
fn sigterm_of_a_leader_releases_and_hands_over_within_a_poll_and_a_tick_on_postgres() {
    graceful_hand_over(Backend::postgres());
}

fn graceful_hand_over(backend: Backend) {
    let (_backend, _dir, mut nodes, leader) = solo_cluster(backend);
    let id = nodes[leader].id.clone();
    nodes[leader].signal(libc::SIGTERM);
    let status = nodes[leader]
        .wait_exit(Duration::from_secs(15))
        .expect("leader exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let released = nodes[leader]
        .events_named("lease_released")
        .into_iter()
        .find(|e| e["job"] == "solo")
        .expect("the leader logged lease_released");
    let released_at = time(&released, "ts");
    assert!(
        nodes[leader].events_named("node_stopped").len() == 1,
        "the leader logged node_stopped"
    );

    let first = first_tick_elsewhere(&nodes, &id, released_at, Duration::from_secs(10))
        .expect("no other node ran the job after the leader released it");
    let gap = (first.at - released_at).to_std().unwrap();
    // A release is seen at the next poll; the tick after it is claimed with one store call.
    // Without the release at stop, the hand-over would take a lease (3 s) or more.
    let bound = POLL + TICK + CALL;
    eprintln!("handover after SIGTERM: {gap:?} (bound {bound:?})");
    assert!(
        gap <= bound,
        "handover took {gap:?}, more than poll + tick + the claim's call = {bound:?}"
    );
    let runs = tick_runs(&refs(&nodes));
    assert_no_fire_time_twice(&runs);
    report(
        "sigterm_handover",
        serde_json::json!({
            "handover_ms": gap.as_millis() as u64,
            "bound_ms": bound.as_millis() as u64,
            "duplicate_runs": 0,
        }),
    );
}

/// A store that hangs (connections open, nothing answered) must not hold a stopping node:
/// each store call of the stop gives up after its timeout, and the first failed batch ends
/// the release. Before, each of the 40 release transactions of 1,000 leases waited out its
/// own timeout, two at a time: 40 s and more on top of the grace.
#[test]
fn sigterm_with_the_store_hanging_stops_within_a_few_store_timeouts() {
    let emu = common::Emulator::start_own();
    let jobs_n = 1000;
    let names: Vec<String> = (0..jobs_n).map(|i| format!("hang{i:04}")).collect();
    let text = format!("[node]\nshutdown_grace = \"1s\"\n{}", hourly_jobs(&names));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &text);
    let mut node = Node::spawn(&emu, &cfg, "hang-node");
    let mut held = Holdings::new(1);
    assert!(
        wait_until(Duration::from_secs(90), || {
            held.update([&node]);
            held.count(0) == jobs_n
        }),
        "the node leads {} of {jobs_n}",
        held.count(0)
    );
    emu.freeze();
    node.signal(libc::SIGTERM);
    let asked = std::time::Instant::now();
    // Default election: store calls time out after 2 s. The stop makes a handful of them in
    // a row (the hand-over, outcomes, the node record), each at most one timeout.
    let bound = Duration::from_secs(25);
    let exited = node.wait_exit(bound);
    let took = asked.elapsed();
    emu.thaw();
    if exited.is_none() {
        node.kill9();
    }
    let stop_log: Vec<String> = node
        .events()
        .iter()
        .filter(|e| e["level"] != "DEBUG" && e["event"] != "lease_lost")
        .map(|e| format!("{} {} {}", e["ts"], e["event"], e["msg"]))
        .filter(|l| !l.contains("tick"))
        .rev()
        .take(15)
        .collect();
    assert!(
        exited.is_some(),
        "the node did not exit within {bound:?} of SIGTERM with the store hanging; its \
         last lines, newest first: {stop_log:#?}"
    );
    eprintln!("stopped {took:?} after SIGTERM with the store hanging: {stop_log:#?}");
}

/// A node restarted under its own id (systemd's `Restart=`) starts a new session; the
/// leases of its old one are free for anyone. Before, the election compared them against
/// the node's *new* record: every node taking one first "ended" that live session by
/// deleting the restarted node's record (its peers and the node itself), so the restarted
/// node's own leases then looked free and moved; at 100,000 jobs, after a store outage, no
/// lease came back at all.
#[test]
fn a_node_restarted_under_its_own_id_keeps_its_new_session() {
    restarted_keeps_session(Backend::datastore());
}

#[test]
fn a_node_restarted_under_its_own_id_keeps_its_new_session_on_postgres() {
    restarted_keeps_session(Backend::postgres());
}

fn restarted_keeps_session(backend: Backend) {
    let jobs_n = 40;
    let names: Vec<String> = (0..jobs_n).map(|i| format!("again{i:02}")).collect();
    let text = format!(
        "{}[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n{}",
        backend.store_table(),
        hourly_jobs(&names)
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &text);
    let mut nodes = start_nodes(&backend, &cfg, 2);
    let mut held = Holdings::new(2);
    assert!(
        wait_until(Duration::from_secs(60), || {
            held.update(&nodes);
            held.union(&[0, 1]) == jobs_n && held.count(0) > 0
        }),
        "not every job got a leader: {}",
        held.union(&[0, 1])
    );
    nodes[0].kill9();
    nodes[0] = Node::spawn_on(&backend, &cfg, "node-0");
    // Every job led again, with the restarted node holding its share.
    let (mut again, mut peer) = (Holdings::new(1), Holdings::new(1));
    assert!(
        wait_until(Duration::from_secs(60), || {
            again.update([&nodes[0]]);
            peer.update([&nodes[1]]);
            let led: BTreeSet<&String> = again.jobs(0).iter().chain(peer.jobs(0)).collect();
            led.len() == jobs_n && again.count(0) >= jobs_n / 2 - 1
        }),
        "after the restart: {} led by the restarted node, {} by its peer",
        again.count(0),
        peer.count(0)
    );
    // A node "ends" a session before it takes that session's leases: every removal there
    // was would be logged by now, when every one of them has been taken again.
    let removed: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.events_named("node_removed"))
        .filter(|e| e["removed"] == "node-0")
        .map(|e| format!("{} by {}", e["ts"], e["node"]))
        .collect();
    assert!(
        removed.is_empty(),
        "the record of the restarted (live) node was removed: {removed:?}"
    );
    let lapsed = nodes[0].events_named("session_lapsed");
    assert!(
        lapsed.is_empty(),
        "the restarted node's session lapsed: {lapsed:?}"
    );
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_when_it_wakes() {
    paused_leader_fenced(Backend::datastore());
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_when_it_wakes_on_postgres() {
    paused_leader_fenced(Backend::postgres());
}

fn paused_leader_fenced(backend: Backend) {
    let (backend, _dir, nodes, leader) = solo_cluster(backend);
    let id = nodes[leader].id.clone();
    let old_term = tick_runs(&refs(&nodes))
        .iter()
        .rev()
        .find(|r| r.node == id)
        .unwrap()
        .term;

    nodes[leader].stop();
    let stopped_at = std::time::Instant::now();
    // Another node takes over while it sleeps ...
    assert!(wait_until(Duration::from_secs(15), || {
        tick_runs(&refs(&nodes))
            .iter()
            .any(|r| r.node != id && r.term > old_term)
    }));
    // ... and the pause lasts twice the lease.
    assert!(wait_until(LEASE * 3, || stopped_at.elapsed() >= LEASE * 2));
    let before_wake = nodes[leader].events().len();
    nodes[leader].cont();

    assert!(
        nodes[leader]
            .wait_for(Duration::from_secs(5), |e| e["event"] == "lease_lost"
                && e["job"] == "solo")
            .is_some(),
        "the woken node logged lease_lost"
    );
    // Let the cluster run on for a few ticks.
    let count = |nodes: &[Node]| tick_runs(&refs(nodes)).len();
    let n0 = count(&nodes);
    assert!(wait_until(Duration::from_secs(10), || count(&nodes) >= n0 + 3));

    let woken: Vec<Value> = nodes[leader].events()[before_wake..].to_vec();
    for e in woken.iter().filter(|e| e["event"] == "tick_run") {
        assert!(
            e["term"].as_i64().unwrap() > old_term,
            "the woken node ran a tick under its old term: {e}"
        );
    }
    let runs = tick_runs(&refs(&nodes));
    assert_no_fire_time_twice(&runs);
    assert_store_agrees(&backend, &["solo"], &runs, &refs(&nodes), false);
    report(
        "paused_leader_fenced",
        serde_json::json!({
            "pause_ms": (LEASE * 2).as_millis() as u64,
            "old_term_ticks_after_wake": 0,
            "ticks_checked": runs.len(),
            "duplicate_runs": 0,
        }),
    );
}
