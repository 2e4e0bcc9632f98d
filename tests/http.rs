//! `cronlease run --http ADDR`: health, readiness, status and metrics of a real node against a
//! real emulator; and the run history bound (`[store] history`).
mod common;

use std::time::Duration;

use cronlease::store::Store;
use serde_json::Value;

use common::{http, wait_until, write_config, Emulator, Node};

const WAIT: Duration = Duration::from_secs(20);

fn config(extra: &str, jobs: &[&str]) -> String {
    let mut s = format!(
        "{extra}\n[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n[node]\nshutdown_grace = \"5s\"\n"
    );
    for job in jobs {
        s.push_str(&format!(
            "\n[[job]]\nname = \"{job}\"\nschedule = \"* * * * * *\"\nshell = \"echo tick\"\n"
        ));
    }
    s
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

fn code(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path, Duration::from_secs(5))
        .ok()
        .map(|(c, _)| c)
}

/// The value of one sample line of `/metrics`, e.g. `cronlease_ticks_run_total{job="a"}`.
fn metric(port: u16, sample: &str) -> f64 {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn every_endpoint_answers_and_metrics_rise_with_ticks() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("", &["every"]));
    let (node, port) = Node::spawn_with_http(&emu, &cfg, "web-1", &[]);

    assert!(
        wait_until(WAIT, || code(port, "/readyz") == Some(200)),
        "never ready; stderr:\n{}",
        node.stderr_text()
    );
    for path in ["/healthz", "/.well-known/live", "/.well-known/ready"] {
        assert_eq!(get(port, path).0, 200, "{path}");
    }
    assert_eq!(get(port, "/nope").0, 404);

    // It leads its only job and runs ticks.
    assert!(node
        .wait_for(WAIT, |e| e["event"] == "job_finished")
        .is_some());
    let (status, body) = get(port, "/status");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], "web-1");
    assert_eq!(v["state"], "ready");
    assert_eq!(v["healthy"], true);
    let job = &v["jobs"][0];
    assert_eq!(job["name"], "every");
    assert_eq!(job["role"], "leader");
    assert_eq!(job["holder"], "web-1");
    assert!(job["term"].as_i64().unwrap() >= 1);
    assert!(job["next_fire_time"].as_str().unwrap().ends_with('Z'));
    assert!(job["last_run"]["fire_time"].is_string(), "{v}");
    assert!(job["last_run"]["attempts"].as_u64().unwrap() <= 1, "{v}");

    // Counters rise as ticks run.
    let sample = r#"cronlease_ticks_run_total{job="every"}"#;
    let before = metric(port, sample);
    assert!(before >= 1.0);
    assert!(
        wait_until(WAIT, || metric(port, sample) >= before + 2.0),
        "ticks_run did not rise"
    );
    let (_, text) = get(port, "/metrics");
    for needed in [
        r#"cronlease_job_runs_total{job="every",outcome="ok"}"#,
        r#"cronlease_job_duration_seconds_count{job="every"}"#,
        r#"cronlease_lease_acquisitions_total{job="every"} 1"#,
        "cronlease_leases_held 1",
        r#"cronlease_store_calls_total{op="claim"}"#,
        r#"cronlease_store_calls_total{op="put_node"}"#,
        r#"cronlease_store_call_duration_seconds_bucket{le="#,
        "# EOF",
    ] {
        assert!(text.contains(needed), "{needed} missing from:\n{text}");
    }
    let node_id_in_record = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = emu.store("cronlease").await;
            store.snapshot(&[]).await.unwrap().nodes["web-1"]
                .http
                .clone()
        })
    };
    assert_eq!(
        node_id_in_record,
        Some(format!("127.0.0.1:{port}")),
        "the node advertises its address"
    );
}

#[test]
fn readiness_waits_for_the_store_and_liveness_does_not() {
    let mut emu = Emulator::start_own();
    emu.stop();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("", &["every"]));
    let (node, port) = Node::spawn_with_http(&emu, &cfg, "early", &[]);

    assert!(
        wait_until(WAIT, || code(port, "/healthz").is_some()),
        "the listener is up before the store is reached"
    );
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(get(port, "/readyz").0, 503);
    assert_eq!(get(port, "/.well-known/ready").0, 503);
    let v: Value = serde_json::from_str(&get(port, "/status").1).unwrap();
    assert_eq!(v["state"], "starting");

    emu.restart();
    assert!(
        wait_until(WAIT, || code(port, "/readyz") == Some(200)),
        "ready once the store answers; stderr:\n{}",
        node.stderr_text()
    );
}

#[test]
fn healthz_fails_for_a_leader_that_cannot_renew_and_recovers() {
    let mut emu = Emulator::start_own();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("", &["every"]));
    let (leader, port) = Node::spawn_with_http(&emu, &cfg, "leader", &[]);
    assert!(leader
        .wait_for(WAIT, |e| e["event"] == "lease_acquired")
        .is_some());
    let (follower, follower_port) = Node::spawn_with_http(&emu, &cfg, "follower", &[]);
    assert!(
        wait_until(WAIT, || code(follower_port, "/readyz") == Some(200)),
        "follower ready"
    );
    assert_eq!(get(port, "/healthz").0, 200);

    emu.kill();
    assert!(
        wait_until(WAIT, || code(port, "/healthz") == Some(503)),
        "the leader's /healthz did not turn 503"
    );
    assert!(leader
        .wait_for(WAIT, |e| e["event"] == "lease_lost")
        .is_some());
    assert_eq!(get(port, "/readyz").0, 503);
    // The follower held nothing: once its own session lapses it is not ready, but alive.
    assert!(
        wait_until(WAIT, || code(follower_port, "/readyz") == Some(503)),
        "follower not ready without the store"
    );
    assert_eq!(get(follower_port, "/healthz").0, 200);
    assert!(follower.events_named("lease_lost").is_empty());

    emu.restart();
    assert!(
        wait_until(WAIT, || code(port, "/healthz") == Some(200)
            && code(port, "/readyz") == Some(200)),
        "healthy and ready again once the store is back"
    );
}

#[test]
fn without_http_there_is_no_listener_and_a_taken_address_is_a_clear_error() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("", &["every"]));
    let plain = Node::spawn(&emu, &cfg, "plain");
    assert!(plain
        .wait_for(WAIT, |e| e["event"] == "node_started")
        .is_some());
    assert!(plain.events_named("http_listening").is_empty());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let args = [
        "run".to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--http".into(),
        addr.to_string(),
    ];
    let mut clash = Node::spawn_args("clash", &args, &emu.env());
    let status = clash.wait_exit(WAIT).expect("exits");
    assert_eq!(status.code(), Some(1));
    let err = clash.stderr_text();
    assert!(
        err.contains(&format!("cannot listen for HTTP on {addr}")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn history_stays_at_its_bound_over_many_ticks() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("[store]\nhistory = 5\n", &["every"]));
    let (node, port) = Node::spawn_with_http(&emu, &cfg, "keeper", &[]);
    assert!(
        wait_until(Duration::from_secs(60), || node
            .events_named("job_finished")
            .len()
            >= 20),
        "20 runs"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(emu.store("cronlease"));
    let finished: Vec<String> = node
        .events_named("job_finished")
        .iter()
        .map(|e| e["fire_time"].as_str().unwrap().to_string())
        .collect();
    // Pruning follows every run at this bound: at most the bound plus the run in flight.
    let mut stored = Vec::new();
    assert!(
        wait_until(WAIT, || {
            stored = rt.block_on(store.runs("every")).unwrap();
            stored.len() <= 6
        }),
        "{} runs stored, bound 5",
        stored.len()
    );
    // The oldest runs are the ones gone: none of the first ten of 20+ is left.
    let oldest_kept = stored.first().unwrap().fire_time;
    let tenth = chrono::DateTime::parse_from_rfc3339(&finished[9]).unwrap();
    assert!(
        oldest_kept > tenth,
        "oldest kept {oldest_kept}, 10th run {tenth}"
    );
    assert!(metric(port, "cronlease_runs_pruned_total") >= 14.0);
}

/// Followers read the few node records every poll and the leases only when some node announced
/// a lease change (its `lease_epoch`): a settled cluster reads no leases at all, while every
/// change is still seen within a poll or two, from both sides.
#[test]
fn leases_are_reread_only_when_a_node_announces_a_change() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["e1", "e2", "e3", "e4"];
    let cfg = write_config(dir.path(), &config("", &jobs));
    // -1 until the node's listener is up.
    let held = |port: u16| {
        if code(port, "/healthz").is_none() {
            return -1.0;
        }
        metric(port, "cronlease_leases_held")
    };
    let nodes_read = |port: u16| metric(port, r#"cronlease_store_calls_total{op="nodes"}"#);
    let leases_read = |port: u16| metric(port, r#"cronlease_store_calls_total{op="leases"}"#);

    let (a, pa) = Node::spawn_with_http(&emu, &cfg, "epoch-a", &[]);
    assert!(
        wait_until(WAIT, || code(pa, "/readyz") == Some(200) && held(pa) == 4.0),
        "a never led all four; stderr:\n{}",
        a.stderr_text()
    );
    // b joins: a hands back two (announced by its epoch, as a's record shows a live node
    // holding them), and b takes them. Without the announcement b would not re-read the leases
    // before the once-a-minute safety net.
    let (b, pb) = Node::spawn_with_http(&emu, &cfg, "epoch-b", &[]);
    assert!(
        wait_until(WAIT, || held(pb) == 2.0 && held(pa) == 2.0),
        "no spread: a {} b {}; b stderr:\n{}",
        held(pa),
        held(pb),
        b.stderr_text()
    );
    // a learns who took them the same way: its /status names b as their holder.
    let holders = |port: u16| -> Vec<(String, String)> {
        let v: Value = serde_json::from_str(&get(port, "/status").1).unwrap();
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap().to_string(),
                    j["holder"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert!(
        wait_until(WAIT, || holders(pa) == holders(pb)
            && holders(pa).iter().filter(|(_, h)| h == "epoch-b").count() == 2),
        "a sees {:?}, b sees {:?}",
        holders(pa),
        holders(pb)
    );

    // Settled: over twelve more polls, b reads the node records each time and the leases not at
    // all (one read at most, for a change still settling).
    let (n0, l0) = (nodes_read(pb), leases_read(pb));
    assert!(wait_until(WAIT, || nodes_read(pb) >= n0 + 12.0));
    let (n1, l1) = (nodes_read(pb), leases_read(pb));
    assert!(
        l1 - l0 <= 1.0,
        "b read the leases {} times in {} polls of a settled cluster",
        l1 - l0,
        n1 - n0
    );
    let lease_entities = metric(pb, r#"cronlease_store_reads_total{op="leases"}"#);
    assert!(lease_entities >= 4.0, "entity reads are counted");
    common::report(
        "lease_rereads",
        serde_json::json!({ "polls": n1 - n0, "lease_reads": l1 - l0 }),
    );

    // A node that stops: its record goes, b re-reads and takes everything.
    a.signal(libc::SIGTERM);
    assert!(
        wait_until(WAIT, || held(pb) == 4.0),
        "b did not take over a's leases; b stderr:\n{}",
        b.stderr_text()
    );
    drop(a);
}
