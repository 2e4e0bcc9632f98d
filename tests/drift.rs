//! Config drift between nodes, with real nodes on a real emulator (lease 3 s, renew 500 ms,
//! poll 250 ms), each node with its own copy of the jobs file: a job defined differently, or
//! known by only some nodes, is reported (`config_drift`, `/metrics`, `/status`, `cronlease
//! status`), is contested only by the nodes that know it, and the report clears when the files
//! agree again. A rolling change of every node's file while every-second jobs run runs no fire
//! time twice and loses none.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::{http, wait_until, Emulator, Node};

const HEADER: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
                      [node]\nshutdown_grace = \"5s\"\n";

fn job(name: &str, say: &str) -> String {
    format!("\n[[job]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\nsay = \"{say}\"\n")
}

/// Node `id`'s own copy of the jobs file, in its own directory.
fn node_file(root: &Path, id: &str, body: &str) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn status_json(emu: &Emulator, cfg: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cronlease"))
        .args(["status", "--json", "--config"])
        .arg(cfg)
        .envs(emu.env())
        .output()
        .expect("run cronlease status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn drift_of(status: &Value, job: &str) -> Vec<(String, Option<String>)> {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == job)
        .map(|j| {
            j["drift"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["node"].as_str().unwrap().to_string(),
                        v["digest"].as_str().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn drift_is_reported_contested_only_by_knowers_and_cleared() {
    let emu = Emulator::start();
    let root = tempfile::tempdir().unwrap();
    let same = format!(
        "{HEADER}{}{}{}",
        job("a", "a"),
        job("b", "b"),
        job("c", "c")
    );
    // n3: b says something else, and c is missing.
    let other = format!("{HEADER}{}{}", job("a", "a"), job("b", "B!"));
    let f1 = node_file(root.path(), "n1", &same);
    let f2 = node_file(root.path(), "n2", &same);
    let f3 = node_file(root.path(), "n3", &other);
    let (n1, port1) = Node::spawn_with_http(&emu, &f1, "n1", &[]);
    let n2 = Node::spawn(&emu, &f2, "n2");
    let n3 = Node::spawn(&emu, &f3, "n3");

    // Every node that has the jobs reports the drift of b and c, naming each node's variant
    // (a node slow to start publishes late: the first report may name two nodes, a later one
    // all three).
    let all_three = |e: &Value| {
        e["nodes"].as_str().is_some_and(|nodes| {
            nodes.starts_with("n1=") && nodes.contains(", n2=") && nodes.contains(", n3=")
        })
    };
    for (node, jobs) in [(&n1, &["b", "c"][..]), (&n2, &["b", "c"]), (&n3, &["b"])] {
        for j in jobs {
            let line = node
                .wait_for(Duration::from_secs(20), |e| {
                    e["event"] == "config_drift" && e["job"] == *j && all_three(e)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{} never reported drift of {j} naming n1, n2 and n3: {:?}",
                        node.id,
                        node.events_named("config_drift")
                    )
                });
            let nodes = line["nodes"].as_str().unwrap();
            if *j == "c" {
                assert!(nodes.ends_with("n3=absent"), "{line}");
            }
        }
    }
    assert!(n1
        .events_named("config_drift")
        .iter()
        .all(|e| e["job"] != "a"));
    // The metric and the node's /status say so.
    assert!(wait_until(Duration::from_secs(5), || {
        http(port1, "GET", "/metrics", Duration::from_secs(2))
            .is_ok_and(|(_, body)| body.contains("cronlease_config_drift_jobs 2"))
    }));
    let (_, body) = http(port1, "GET", "/status", Duration::from_secs(2)).unwrap();
    let body: Value = serde_json::from_str(&body).expect("/status is JSON");
    let c = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "c")
        .cloned();
    assert!(
        c.is_some_and(|c| c["drift"]
            .as_str()
            .is_some_and(|d| d.ends_with("n3=absent"))),
        "{body}"
    );
    // `cronlease status` marks the jobs with each node's definition.
    let s = status_json(&emu, &f1);
    let b = drift_of(&s, "b");
    assert_eq!(b.len(), 3, "{s}");
    assert_eq!(b[0].1, b[1].1);
    assert_ne!(b[0].1, b[2].1);
    assert_eq!(drift_of(&s, "c")[2], ("n3".to_string(), None));
    assert!(drift_of(&s, "a").is_empty());

    // c is known by n1 and n2 only: n3 never takes it (and runs it never).
    assert!(wait_until(Duration::from_secs(10), || {
        n1.events_named("tick_run")
            .iter()
            .chain(n2.events_named("tick_run").iter())
            .any(|e| e["job"] == "c")
    }));
    assert!(n3
        .events_named("lease_acquired")
        .iter()
        .all(|e| e["job"] != "c"));

    // n3 gets the same file: the drift clears everywhere.
    std::fs::write(&f3, &same).unwrap();
    for node in [&n1, &n2, &n3] {
        node.wait_for(Duration::from_secs(20), |e| {
            e["event"] == "config_drift_cleared" && e["job"] == "b"
        })
        .unwrap_or_else(|| panic!("{} never saw the drift of b clear", node.id));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        http(port1, "GET", "/metrics", Duration::from_secs(2))
            .is_ok_and(|(_, body)| body.contains("cronlease_config_drift_jobs 0"))
    }));
    assert!(wait_until(Duration::from_secs(5), || drift_of(
        &status_json(&emu, &f1),
        "b"
    )
    .is_empty()));
}

fn fire(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["fire_time"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// Every (job, fire time) the nodes ran, with the nodes that ran it; fails if any ran twice.
fn run_once_each(nodes: &[Node]) -> BTreeMap<(String, DateTime<Utc>), Vec<String>> {
    let mut per_fire: BTreeMap<(String, DateTime<Utc>), Vec<String>> = BTreeMap::new();
    for node in nodes {
        for e in node.events_named("tick_run") {
            per_fire
                .entry((e["job"].as_str().unwrap().to_string(), fire(&e)))
                .or_default()
                .push(node.id.clone());
        }
    }
    let twice: Vec<_> = per_fire.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "fire times run twice: {twice:?}");
    per_fire
}

/// Three nodes get a new jobs file one after another (every job's definition changes) while
/// three every-second jobs run: no fire time runs twice, none is lost.
#[test]
fn a_rolling_change_runs_every_fire_time_once() {
    let emu = Emulator::start();
    let root = tempfile::tempdir().unwrap();
    let v1 = format!(
        "{HEADER}{}{}{}",
        job("a", "a1"),
        job("b", "b1"),
        job("c", "c1")
    );
    let v2 = format!(
        "{HEADER}{}{}{}",
        job("a", "a2"),
        job("b", "b2"),
        job("c", "c2")
    );
    let ids = ["n1", "n2", "n3"];
    let files: Vec<PathBuf> = ids
        .iter()
        .map(|id| node_file(root.path(), id, &v1))
        .collect();
    let nodes: Vec<Node> = ids
        .iter()
        .zip(&files)
        .map(|(id, f)| Node::spawn(&emu, f, id))
        .collect();
    let all_runs = || -> Vec<Value> {
        nodes
            .iter()
            .flat_map(|n| n.events_named("tick_run"))
            .collect()
    };
    // Settled: every job ran.
    assert!(wait_until(Duration::from_secs(30), || {
        let jobs: BTreeSet<String> = all_runs()
            .iter()
            .map(|e| e["job"].as_str().unwrap().to_string())
            .collect();
        jobs.len() == 3
    }));
    let whole = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp(), 0).unwrap();
    let started = whole(Utc::now()) + chrono::Duration::seconds(1);
    for (node, file) in nodes.iter().zip(&files) {
        std::fs::write(file, &v2).unwrap();
        node.wait_for(Duration::from_secs(10), |e| e["event"] == "config_reloaded")
            .unwrap_or_else(|| panic!("{} did not reload", node.id));
        // Two seconds of ticks in between.
        let seen = all_runs().len();
        assert!(wait_until(Duration::from_secs(10), || all_runs().len() >= seen + 6));
    }
    let ended = whole(Utc::now()) - chrono::Duration::seconds(2);
    // Every node says the new text from now on.
    assert!(wait_until(Duration::from_secs(10), || {
        nodes
            .iter()
            .flat_map(|n| n.events_named("job_output"))
            .any(|e| e["line"] == "c2")
    }));
    let per_fire = run_once_each(&nodes);
    for j in ["a", "b", "c"] {
        let mut t = started;
        while t <= ended {
            assert!(
                per_fire.contains_key(&(j.to_string(), t)),
                "{j} at {t} was not run (rolling change from {started} to {ended})"
            );
            t += chrono::Duration::seconds(1);
        }
    }
}

/// The same change made by restarting the nodes one after another (graceful stop, start on the
/// new file): no fire time runs twice, and the only ones lost fall in a hand-over (within
/// three seconds of a stop).
#[test]
fn a_rolling_restart_loses_only_hand_overs() {
    let emu = Emulator::start();
    let root = tempfile::tempdir().unwrap();
    let v1 = format!(
        "{HEADER}{}{}{}",
        job("a", "a1"),
        job("b", "b1"),
        job("c", "c1")
    );
    let v2 = format!(
        "{HEADER}{}{}{}",
        job("a", "a2"),
        job("b", "b2"),
        job("c", "c2")
    );
    let ids = ["n1", "n2", "n3"];
    let files: Vec<PathBuf> = ids
        .iter()
        .map(|id| node_file(root.path(), id, &v1))
        .collect();
    let mut nodes: Vec<Node> = ids
        .iter()
        .zip(&files)
        .map(|(id, f)| Node::spawn(&emu, f, id))
        .collect();
    let runs_of =
        |nodes: &[Node]| -> usize { nodes.iter().map(|n| n.events_named("tick_run").len()).sum() };
    assert!(wait_until(Duration::from_secs(30), || runs_of(&nodes) >= 6));
    let whole = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp(), 0).unwrap();
    let started = whole(Utc::now()) + chrono::Duration::seconds(1);
    let mut stops = Vec::new();
    for i in 0..3 {
        std::fs::write(&files[i], &v2).unwrap();
        stops.push(Utc::now());
        nodes[i].signal(libc::SIGTERM);
        assert!(
            nodes[i].wait_exit(Duration::from_secs(15)).is_some(),
            "{} did not stop",
            ids[i]
        );
        let fresh = Node::spawn(&emu, &files[i], ids[i]);
        assert!(fresh
            .wait_for(Duration::from_secs(15), |e| e["event"] == "node_started")
            .is_some());
        nodes.push(fresh);
        let seen = runs_of(&nodes);
        assert!(wait_until(Duration::from_secs(10), || runs_of(&nodes) >= seen + 6));
    }
    let ended = whole(Utc::now()) - chrono::Duration::seconds(2);
    let per_fire = run_once_each(&nodes);
    let mut lost = 0;
    for j in ["a", "b", "c"] {
        let mut t = started;
        while t <= ended {
            if !per_fire.contains_key(&(j.to_string(), t)) {
                lost += 1;
                let near = stops.iter().any(|s| {
                    let d = (t - *s).num_milliseconds();
                    (-1000..=3000).contains(&d)
                });
                assert!(
                    near,
                    "{j} at {t} was lost outside a hand-over (stops at {stops:?})"
                );
            }
            t += chrono::Duration::seconds(1);
        }
    }
    common::report(
        "rolling_restart",
        serde_json::json!({ "lost_fire_times": lost }),
    );
}
