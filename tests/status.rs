//! `cronlease status` through the real binary against a real Datastore emulator: with no node
//! up, following a two-node cluster through a graceful stop, with the store unreachable, and
//! with a bad config. Election timings as in `tests/cluster.rs`: lease 3 s, renew 500 ms,
//! poll 250 ms.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{free_port, wait_until, write_config, Emulator, Node, PROJECT_ID};

/// How long one `status` run may take before the test kills it and fails.
const STATUS_DEADLINE: Duration = Duration::from_secs(30);

fn config(jobs: &[&str]) -> String {
    let mut s = String::from(
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n[node]\nshutdown_grace = \"5s\"\n",
    );
    for job in jobs {
        s.push_str(&format!(
            "\n[[job]]\nname = \"{job}\"\nschedule = \"* * * * * *\"\n\
             shell = \"echo $CRONLEASE_JOB fired term $CRONLEASE_TERM\"\ntimeout = \"5s\"\n"
        ));
    }
    s
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json printed no JSON ({e}); stdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `cronlease status --config CFG [--json]` with only `env` as store environment; killed (and
/// the test failed) if it runs longer than [`STATUS_DEADLINE`].
fn status(cfg: &Path, json: bool, env: &[(String, String)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronlease"));
    cmd.arg("status").arg("--config").arg(cfg);
    if json {
        cmd.arg("--json");
    }
    let start = Instant::now();
    let mut child = cmd
        .env_remove("DATASTORE_EMULATOR_HOST")
        .env_remove("DATASTORE_PROJECT_ID")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cronlease status");
    // The output is small (a few KiB), so it cannot fill the pipes while we wait.
    let exited = wait_until(STATUS_DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
    let took = start.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect cronlease output");
    let outcome = Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    };
    assert!(
        exited,
        "`cronlease status` still running after {took:?}; stdout:\n{}\nstderr:\n{}",
        outcome.stdout, outcome.stderr
    );
    outcome
}

/// A successful `status --json` against `emu`.
fn status_json(emu: &Emulator, cfg: &Path) -> Value {
    let out = status(cfg, true, &emu.env());
    assert_eq!(
        out.code,
        Some(0),
        "status --json failed; stderr:\n{}",
        out.stderr
    );
    out.json()
}

/// A successful `status` (tables) against `emu`.
fn status_text(emu: &Emulator, cfg: &Path) -> String {
    let out = status(cfg, false, &emu.env());
    assert_eq!(out.code, Some(0), "status failed; stderr:\n{}", out.stderr);
    out.stdout
}

fn job<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {report:#}"))
}

fn node_ids(report: &Value) -> Vec<String> {
    report["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes array in {report:#}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// What a node's own log says it holds now: job -> term, replaying its `lease_acquired`,
/// `lease_released` and `lease_lost` lines in order.
fn held_per_log(node: &Node) -> BTreeMap<String, i64> {
    let mut held = BTreeMap::new();
    for e in node.events() {
        let (Some(job), Some(term)) = (e["job"].as_str(), e["term"].as_i64()) else {
            continue;
        };
        match e["event"].as_str() {
            Some("lease_acquired") => {
                held.insert(job.to_string(), term);
            }
            Some("lease_released") | Some("lease_lost") => {
                held.remove(job);
            }
            _ => {}
        }
    }
    held
}

#[test]
fn status_with_no_nodes() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&["alpha", "beta"]));

    let report = status_json(&emu, &cfg);
    assert!(
        report["store"]
            .as_str()
            .is_some_and(|s| s.contains(&emu.host())),
        "{report:#}"
    );
    assert_eq!(report["lease_s"], 3.0);
    assert!(report["generated_at"].is_string(), "{report:#}");
    assert_eq!(report["nodes"], Value::Array(Vec::new()), "{report:#}");
    let names: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    for name in ["alpha", "beta"] {
        let j = job(&report, name);
        assert_eq!(j["state"], "free", "{j:#}");
        assert_eq!(j["leader"], Value::Null, "{j:#}");
        assert_eq!(j["term"], 0, "{j:#}");
        assert_eq!(j["schedule"], "* * * * * *", "{j:#}");
        assert_eq!(j["timezone"], "UTC", "{j:#}");
        assert!(j["next_fire_time"].is_string(), "{j:#}");
        assert_eq!(j["runs"], Value::Array(Vec::new()), "{j:#}");
    }

    let text = status_text(&emu, &cfg);
    println!("{text}");
    assert!(text.contains("No node is registered"), "{text}");
    assert!(text.contains("FREE"), "{text}");
}

#[test]
fn status_follows_a_two_node_cluster() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["alpha", "beta"];
    let cfg = write_config(dir.path(), &config(&jobs));
    let mut nodes = vec![
        Node::spawn(&emu, &cfg, "node-a"),
        Node::spawn(&emu, &cfg, "node-b"),
    ];

    // Settle: by their own logs, each node holds exactly one job (fair share), and a job has
    // finished somewhere.
    let settled = |nodes: &[Node]| {
        let a = held_per_log(&nodes[0]);
        let b = held_per_log(&nodes[1]);
        a.len() == 1 && b.len() == 1 && a.keys().ne(b.keys())
    };
    assert!(
        wait_until(Duration::from_secs(30), || settled(&nodes)
            && nodes
                .iter()
                .any(|n| !n.events_named("job_finished").is_empty())),
        "the two nodes never settled on one job each with a finished run: a {:?}, b {:?}",
        held_per_log(&nodes[0]),
        held_per_log(&nodes[1])
    );
    let logged: BTreeMap<String, (String, i64)> = nodes
        .iter()
        .flat_map(|n| {
            held_per_log(n)
                .into_iter()
                .map(|(job, term)| (job, (n.id.clone(), term)))
        })
        .collect();

    // A finished run reaches the store just after its job_finished line: wait for an `ok` run
    // of every job in the report.
    let mut report = Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            report = status_json(&emu, &cfg);
            jobs.iter().all(|name| {
                job(&report, name)["runs"]
                    .as_array()
                    .is_some_and(|runs| runs.iter().any(|r| r["outcome"] == "ok"))
            })
        }),
        "no `ok` run of every job in status: {report:#}"
    );
    assert!(settled(&nodes), "the leases moved while status was read");
    assert_eq!(node_ids(&report), ["node-a", "node-b"], "{report:#}");
    for n in report["nodes"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        assert_eq!(n["live"], true, "{n:#}");
        assert!(
            n["session"].as_str().is_some_and(|s| !s.is_empty()),
            "{n:#}"
        );
        let age = n["heartbeat_age_s"].as_f64().unwrap();
        assert!(age < 3.0, "{n:#}");
        let held: Vec<&str> = logged
            .iter()
            .filter(|(_, (node, _))| node == id)
            .map(|(job, _)| job.as_str())
            .collect();
        assert_eq!(n["jobs_held"], serde_json::json!(held), "{n:#}");
    }
    for (name, (leader, term)) in &logged {
        let j = job(&report, name);
        assert_eq!(j["state"], "held", "{j:#}");
        assert_eq!(j["leader"], leader.as_str(), "{j:#}");
        assert_eq!(j["term"], *term, "{j:#}");
        assert!(j["acquired_at"].is_string(), "{j:#}");
        assert!(j["held_for_s"].as_f64().is_some(), "{j:#}");
        let runs = j["runs"].as_array().unwrap();
        assert!(!runs.is_empty() && runs.len() <= 3, "{j:#}");
        let fires: Vec<&str> = runs
            .iter()
            .map(|r| r["fire_time"].as_str().unwrap())
            .collect();
        let mut sorted = fires.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(fires, sorted, "runs are newest first: {j:#}");
        for r in runs.iter().filter(|r| r["outcome"] == "ok") {
            assert_eq!(r["exit_code"], 0, "{r:#}");
            assert!(r["duration_ms"].as_i64().is_some_and(|d| d >= 0), "{r:#}");
            assert!(r["finished_at"].is_string(), "{r:#}");
        }
    }

    // Each node publishes its clock offset from its peer once it has a few samples: the two
    // share this machine's clock, so it is near zero.
    assert!(
        wait_until(Duration::from_secs(20), || {
            report = status_json(&emu, &cfg);
            report["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["clock_offset_ms"].is_i64()))
        }),
        "no clock offset in status: {report:#}"
    );
    for n in report["nodes"].as_array().unwrap() {
        let off = n["clock_offset_ms"].as_i64().unwrap();
        assert!(off.abs() < 1000, "{n:#}");
    }

    let text = status_text(&emu, &cfg);
    println!("--- status of the two-node cluster ---\n{text}");
    for id in ["node-a", "node-b"] {
        assert!(text.contains(id), "{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("NODE ") && l.contains(" CLOCK ")),
        "{text}"
    );
    assert!(text.contains("held"), "{text}");
    assert!(!text.contains("No node is registered"), "{text}");

    // Stop node-a gracefully: it hands its lease back and deletes its record; node-b takes the
    // job over with a higher term.
    let (stopped_job, (_, old_term)) = logged
        .iter()
        .find(|(_, (node, _))| node == "node-a")
        .map(|(job, v)| (job.clone(), v.clone()))
        .unwrap();
    nodes[0].signal(libc::SIGTERM);
    let exit = nodes[0]
        .wait_exit(Duration::from_secs(20))
        .expect("node-a exits after SIGTERM");
    assert!(exit.success(), "node-a exit status {exit:?}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            report = status_json(&emu, &cfg);
            let j = job(&report, &stopped_job);
            node_ids(&report) == ["node-b"]
                && j["state"] == "held"
                && j["leader"] == "node-b"
                && j["term"].as_i64().is_some_and(|t| t > old_term)
        }),
        "status never showed node-a gone and {stopped_job} led by node-b above term \
         {old_term}: {report:#}"
    );
    assert_eq!(
        report["nodes"][0]["jobs_held"],
        serde_json::json!(jobs),
        "{report:#}"
    );
    let text = status_text(&emu, &cfg);
    println!("--- after node-a stopped ---\n{text}");
    // The node table (older runs of node-a may still be listed under the jobs).
    let node_table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(node_table.len(), 2, "{text}");
    assert!(node_table[1].starts_with("node-b "), "{text}");
}

#[test]
fn status_unreachable_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&["alpha"]));
    // A port nobody listens on.
    let host = format!("127.0.0.1:{}", free_port());
    let env = [
        ("DATASTORE_EMULATOR_HOST".to_string(), host.clone()),
        ("DATASTORE_PROJECT_ID".to_string(), PROJECT_ID.to_string()),
    ];
    for json in [false, true] {
        let out = status(&cfg, json, &env);
        assert_eq!(out.code, Some(1), "json {json}; stderr:\n{}", out.stderr);
        assert!(
            out.took < Duration::from_secs(10),
            "took {:?}; stderr:\n{}",
            out.took,
            out.stderr
        );
        assert!(out.stdout.is_empty(), "stdout:\n{}", out.stdout);
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains(&host),
            "stderr:\n{}",
            out.stderr
        );
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn status_bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\nbogus = 1\n",
    );
    for json in [false, true] {
        let out = status(&cfg, json, &[]);
        assert_eq!(out.code, Some(2), "stderr:\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "stdout:\n{}", out.stdout);
        let expected = format!("error: {}:5:1: ", cfg.display());
        assert!(out.stderr.starts_with(&expected), "stderr:\n{}", out.stderr);
    }
    let missing = dir.path().join("missing.toml");
    let out = status(&missing, false, &[]);
    assert_eq!(out.code, Some(2), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read"),
        "stderr:\n{}",
        out.stderr
    );
}
