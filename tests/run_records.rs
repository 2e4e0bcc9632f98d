//! Run records under faults, with real nodes on a real emulator, and on PostgreSQL (lease 3 s,
//! renew 500 ms, poll 250 ms): a run of a node killed with -9 is closed as `lost` by the job's next leader within
//! lease + poll (or run again with `recover = true`); a run whose node loses its lease is
//! stopped (`on_lease_lost = "stop"`, the default) or finishes (`"continue"`), and either way
//! its record ends with its outcome; a graceful stop leaves no record `running`.
mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cronlease::store::RunRecord;
use serde_json::Value;

use common::proxy::Proxy;
use common::{wait_until, write_config, Backend, Node, Target};

const LEASE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(250);

fn header() -> String {
    "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
     [node]\nshutdown_grace = \"5s\"\n"
        .to_string()
}

/// A job every 10 s whose run takes `secs` seconds, with extra keys.
fn long_job(name: &str, secs: u32, extra: &str) -> String {
    format!(
        "\n[[job]]\nname = \"{name}\"\nschedule = \"*/10 * * * * *\"\n\
         shell = \"echo started; sleep {secs}; echo done\"\n{extra}\n"
    )
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v[field].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{field} of {v}: {e}"))
        .with_timezone(&Utc)
}

fn runs(emu: &impl Target, job: &str) -> Vec<RunRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { emu.open_store("cronlease").await.runs(job).await.unwrap() })
}

fn run_at(emu: &impl Target, job: &str, fire: DateTime<Utc>) -> Option<RunRecord> {
    runs(emu, job).into_iter().find(|r| r.fire_time == fire)
}

/// Start `n` nodes and wait until one of them starts a run of `job`; returns the nodes, the
/// index of the one running it and the `tick_run` line.
fn until_running(
    emu: &impl Target,
    cfg: &std::path::Path,
    job: &str,
    ids: &[&str],
) -> (Vec<Node>, usize, Value) {
    let nodes: Vec<Node> = ids.iter().map(|id| Node::spawn(emu, cfg, id)).collect();
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(40), || {
            found = nodes.iter().enumerate().find_map(|(i, n)| {
                n.events_named("job_output")
                    .into_iter()
                    .find(|e| e["job"] == job && e["line"] == "started")
                    .map(|e| (i, e))
            });
            found.is_some()
        }),
        "no node started a run of {job} within 40 s"
    );
    let (i, started) = found.unwrap();
    let fire = started["fire_time"].clone();
    let run = nodes[i]
        .events_named("tick_run")
        .into_iter()
        .find(|e| e["job"] == job && e["fire_time"] == fire)
        .expect("the tick_run line of the started run");
    (nodes, i, run)
}

/// kill -9 of the node running a job: the job's next leader closes the run as `lost` (with
/// the dead node and term kept in the record) within lease + poll of the death, once; the
/// survivor keeps running the job's later fire times.
#[test]
fn a_run_of_a_killed_node_is_closed_as_lost_by_the_next_leader() {
    orphan_closed_as_lost(Backend::datastore());
}

#[test]
fn a_run_of_a_killed_node_is_closed_as_lost_by_the_next_leader_on_postgres() {
    orphan_closed_as_lost(Backend::postgres());
}

fn orphan_closed_as_lost(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &(emu.store_table() + &header() + &long_job("long", 30, "")),
    );
    let (mut nodes, i, run) = until_running(&emu, &cfg, "long", &["rr-a", "rr-b"]);
    let fire = time(&run, "fire_time");
    let victim = nodes[i].id.clone();
    let claimed = run_at(&emu, "long", fire).expect("the claimed record");
    assert_eq!(claimed.outcome, "running");
    assert!(!claimed.session.is_empty() && !claimed.process.is_empty());

    let killed_at = Instant::now();
    let t_kill = Utc::now();
    nodes[i].kill9();
    let survivor = &nodes[1 - i];
    let lost = survivor
        .wait_for(Duration::from_secs(15), |e| {
            e["event"] == "run_lost" && e["fire_time"] == run["fire_time"]
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never closed the orphan: {:?}",
                survivor.id,
                survivor.events_named("lease_acquired")
            )
        });
    let after_ms = (time(&lost, "ts") - t_kill).num_milliseconds();
    let bound = (LEASE + POLL * 2 + Duration::from_millis(750)).as_millis() as i64;
    assert!(
        after_ms <= bound,
        "closed {after_ms} ms after the kill: more than lease + poll (+ slack) = {bound} ms"
    );
    assert_eq!(lost["lost_node"], victim.as_str());
    let record = run_at(&emu, "long", fire).unwrap();
    assert_eq!(record.outcome, "lost");
    assert_eq!(record.node, victim, "the record keeps who lost it");
    assert_eq!(record.term, claimed.term);
    assert!(record.finished_at.is_some());
    assert!(
        ["node_gone", "heartbeat_stopped", "node_restarted"]
            .contains(&record.reason.as_deref().unwrap_or("")),
        "{record:?}"
    );
    eprintln!(
        "orphan closed {after_ms} ms after kill -9 ({} ms wall)",
        killed_at.elapsed().as_millis()
    );
    nodes[1 - i].signal(libc::SIGTERM);
    let status = nodes[1 - i].wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success());
    // Closed once: over the survivor's whole log (it has stopped), no second run_lost for it,
    // and nobody ran it again (recover is off).
    let survivor = &nodes[1 - i];
    let closes = survivor
        .events_named("run_lost")
        .into_iter()
        .filter(|e| e["fire_time"] == run["fire_time"])
        .count();
    assert_eq!(closes, 1);
    assert!(survivor
        .events_named("tick_run")
        .iter()
        .all(|e| e["fire_time"] != run["fire_time"]));
}

/// `recover = true`: the next leader runs the lost fire time once more, as a recovery (one
/// more attempt, its own node, term and session), and records how it ended.
#[test]
fn recover_runs_a_lost_fire_time_once_more() {
    recovered_once(Backend::datastore());
}

#[test]
fn recover_runs_a_lost_fire_time_once_more_on_postgres() {
    recovered_once(Backend::postgres());
}

fn recovered_once(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &(emu.store_table() + &header() + &long_job("recoverable", 3, "recover = true")),
    );
    let (mut nodes, i, run) = until_running(&emu, &cfg, "recoverable", &["rc-a", "rc-b"]);
    let fire = time(&run, "fire_time");
    nodes[i].kill9();
    let survivor = &nodes[1 - i];
    survivor
        .wait_for(Duration::from_secs(15), |e| {
            e["event"] == "run_recovering" && e["fire_time"] == run["fire_time"]
        })
        .unwrap_or_else(|| panic!("{} did not recover the run", survivor.id));
    let finished = survivor
        .wait_for(Duration::from_secs(15), |e| {
            e["event"] == "job_finished" && e["fire_time"] == run["fire_time"]
        })
        .expect("the recovery finished");
    assert_eq!(finished["outcome"], "ok");
    assert!(
        wait_until(Duration::from_secs(10), || run_at(
            &emu,
            "recoverable",
            fire
        )
        .is_some_and(|r| r.outcome == "ok")),
        "the recovery's outcome is not in the store: {:?}",
        run_at(&emu, "recoverable", fire)
    );
    let record = run_at(&emu, "recoverable", fire).unwrap();
    assert!(record.recovery);
    assert_eq!(record.node, survivor.id);
    assert_eq!(record.attempts, 2, "the lost attempt and the recovery");
    let recoveries = survivor
        .events_named("tick_run")
        .into_iter()
        .filter(|e| e["fire_time"] == run["fire_time"])
        .count();
    assert_eq!(recoveries, 1, "run again exactly once");
    nodes[1 - i].signal(libc::SIGTERM);
    assert!(nodes[1 - i]
        .wait_exit(Duration::from_secs(20))
        .unwrap()
        .success());
}

/// Cut the node that runs a 6 s job off the store for 2.5 s: its session lapses (renew
/// deadline 1.75 s) and it loses the lease, but comes back within the lease, so nobody judges
/// it dead. With `on_lease_lost = "stop"` (default) the run is stopped at once and recorded
/// `stopped`; with `"continue"` it finishes and is recorded `ok`. Either way the node writes
/// the outcome itself once the store answers again.
#[test]
fn on_lease_lost_stops_or_continues_the_run_and_records_it() {
    on_lease_lost(Backend::datastore);
}

#[test]
fn on_lease_lost_stops_or_continues_the_run_and_records_it_on_postgres() {
    on_lease_lost(Backend::postgres);
}

/// A node of `emu` whose store is reached through `proxy`, on `body` after its store table.
fn spawn_through(emu: &Backend, proxy: &Proxy, dir: &std::path::Path, body: &str) -> Node {
    let (table, env) = emu.through_proxy(&proxy.host(), "");
    let cfg = write_config(dir, &(table + body));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::spawn_with_env(emu, &cfg, "cut-node", &env)
}

fn on_lease_lost(make: fn() -> Backend) {
    for (policy, expected) in [("", "stopped"), ("on_lease_lost = \"continue\"", "ok")] {
        let emu = make();
        let proxy = Proxy::start(emu.upstream_port());
        let dir = tempfile::tempdir().unwrap();
        let mut node = spawn_through(
            &emu,
            &proxy,
            dir.path(),
            &(header() + &long_job("cut", 6, policy)),
        );
        let started = node
            .wait_for(Duration::from_secs(40), |e| {
                e["event"] == "job_output" && e["line"] == "started"
            })
            .expect("the run started");
        let fire = time(&started, "fire_time");
        proxy.cut();
        let lost = node
            .wait_for(Duration::from_secs(5), |e| e["event"] == "lease_lost")
            .expect("the lease is lost in the cut");
        // The cut lasts 700 ms past the loss (about 2.5 s in all): shorter than the lease, so
        // nobody judges the node dead. A fault's length, not a wait for an event.
        std::thread::sleep(Duration::from_millis(700));
        proxy.restore();
        let finished = node
            .wait_for(Duration::from_secs(15), |e| {
                e["event"] == "job_finished" && e["fire_time"] == started["fire_time"]
            })
            .expect("the run ended");
        assert_eq!(finished["outcome"], expected, "policy {policy:?}");
        if expected == "stopped" {
            let stop = node
                .wait_for(Duration::from_secs(1), |e| e["event"] == "run_stopping")
                .expect("run_stopping logged");
            let ms = (time(&stop, "ts") - time(&lost, "ts")).num_milliseconds();
            assert!(ms < 500, "stopped {ms} ms after the loss");
        }
        assert!(
            wait_until(Duration::from_secs(15), || run_at(&emu, "cut", fire)
                .is_some_and(|r| r.outcome == expected)),
            "policy {policy:?}: the store says {:?}",
            run_at(&emu, "cut", fire)
        );
        node.signal(libc::SIGTERM);
        assert!(node.wait_exit(Duration::from_secs(20)).unwrap().success());
        // A graceful stop leaves nothing running.
        assert!(runs(&emu, "cut").iter().all(|r| r.outcome != "running"));
    }
}
