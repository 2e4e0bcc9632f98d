//! Pause and resume through the store, and `enabled = false`, with real nodes on a real
//! emulator (lease 3 s, renew 500 ms, poll 250 ms): a paused job's fire times are not run, not
//! by a new leader after a kill -9 and not caught up after the resume; every node says it is
//! paused; `status` shows who paused it, since when and why; a disabled job never runs.
mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::{cli as cronlease, wait_until, write_config, Backend, Node, Target};

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [defaults]\ncatch_up = \"all\"\nstarting_deadline = \"1m\"\n\n\
    [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nsay = \"tick\"\n\n\
    [[job]]\nname = \"other\"\nschedule = \"* * * * * *\"\nsay = \"other\"\n\n\
    [[job]]\nname = \"off\"\nschedule = \"* * * * * *\"\nsay = \"off\"\nenabled = false\n";

fn fire(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["fire_time"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn runs(nodes: &[&Node], job: &str) -> Vec<DateTime<Utc>> {
    let mut v: Vec<DateTime<Utc>> = nodes
        .iter()
        .flat_map(|n| n.events_named("tick_run"))
        .filter(|e| e["job"] == job)
        .map(|e| fire(&e))
        .collect();
    v.sort();
    v
}

fn job_status(emu: &impl Target, cfg: &Path, job: &str) -> Value {
    let out = cronlease(emu, cfg, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == job)
        .cloned()
        .unwrap()
}

#[test]
fn a_paused_job_is_not_run_nor_caught_up_and_everyone_says_so() {
    paused_job(Backend::datastore());
}

#[test]
fn a_paused_job_is_not_run_nor_caught_up_and_everyone_says_so_on_postgres() {
    paused_job(Backend::postgres());
}

fn paused_job(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &(emu.store_table() + CONFIG));
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let n2 = Node::spawn(&emu, &cfg, "n2");
    assert!(
        wait_until(Duration::from_secs(30), || !runs(&[&n1, &n2], "tick")
            .is_empty()),
        "tick never ran"
    );

    // Pause: refused for an unknown job (exit 2), done for tick.
    let bad = cronlease(&emu, &cfg, &["pause", "nosuch"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("no job named \"nosuch\""),
        "{}",
        bad.stderr
    );
    let paused_at = Utc::now();
    let out = cronlease(&emu, &cfg, &["pause", "tick", "--note", "db migration"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("tick: paused by ops@") && out.stdout.contains("(db migration)"),
        "{}",
        out.stdout
    );
    let again = cronlease(&emu, &cfg, &["pause", "tick", "--note", "other"]);
    assert!(
        again.stdout.contains("already paused by ops@"),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("(db migration)"), "{}", again.stdout);

    // The leader refuses the next tick, and then every node says the job is paused.
    let leader_line = |n: &Node| {
        n.events_named("tick_paused")
            .into_iter()
            .find(|e| e["job"] == "tick")
    };
    assert!(
        wait_until(Duration::from_secs(5), || leader_line(&n1).is_some()
            || leader_line(&n2).is_some()),
        "no tick_paused line"
    );
    let follower_says = |n: &Node| {
        n.events_named("sitting_out")
            .iter()
            .any(|e| e["job"] == "tick" && e["paused"] == true)
            || leader_line(n).is_some()
    };
    assert!(
        wait_until(Duration::from_secs(5), || follower_says(&n1)
            && follower_says(&n2)),
        "not every node says tick is paused"
    );
    let line = leader_line(&n1).or_else(|| leader_line(&n2)).unwrap();
    assert!(line["msg"].as_str().unwrap().contains("paused"), "{line}");
    // status shows who, since when, why; the disabled job is marked too.
    let st = job_status(&emu, &cfg, "tick");
    assert_eq!(st["paused"]["note"], "db migration", "{st}");
    assert!(
        st["paused"]["by"].as_str().unwrap().starts_with("ops@"),
        "{st}"
    );
    assert_eq!(job_status(&emu, &cfg, "off")["enabled"], false);
    let text = cronlease(&emu, &cfg, &["status"]).stdout;
    assert!(
        text.contains("PAUSED since ") && text.contains(": db migration (cronlease resume tick)"),
        "{text}"
    );

    // The leader of tick dies; the new leader takes over (catch_up = all) and runs nothing.
    let (dead, alive) = if leader_line(&n1).is_some() {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };
    dead.kill9();
    assert!(
        alive
            .wait_for(Duration::from_secs(15), |e| e["event"] == "lease_acquired"
                && e["job"] == "tick")
            .is_some(),
        "nobody took tick over"
    );
    // Another job keeps running meanwhile.
    let before = runs(&[alive], "other").len();
    assert!(wait_until(Duration::from_secs(10), || runs(
        &[alive],
        "other"
    )
    .len()
        >= before + 3));

    // Resume: runs again from the next fire time; nothing from the pause is run.
    let resumed_at = Utc::now();
    let out = cronlease(&emu, &cfg, &["resume", "tick"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("tick: resumed"), "{}", out.stdout);
    assert!(
        wait_until(Duration::from_secs(10), || runs(&[alive], "tick")
            .iter()
            .any(|t| *t > resumed_at)),
        "tick did not run after the resume"
    );
    let again = cronlease(&emu, &cfg, &["resume", "tick"]);
    assert!(again.stdout.contains("was not paused"), "{}", again.stdout);
    assert!(job_status(&emu, &cfg, "tick")["paused"].is_null());
    let window =
        paused_at + chrono::Duration::seconds(2)..resumed_at - chrono::Duration::seconds(1);
    let all: Vec<DateTime<Utc>> = runs(&[dead, alive], "tick");
    let in_pause: Vec<_> = all.iter().filter(|t| window.contains(t)).collect();
    assert!(
        in_pause.is_empty(),
        "fire times of the pause ran: {in_pause:?}"
    );
    // The disabled job never ran and was never contested.
    for n in [dead, alive] {
        assert!(runs(&[n], "off").is_empty());
        assert!(n
            .events_named("lease_acquired")
            .iter()
            .all(|e| e["job"] != "off"));
    }
}
