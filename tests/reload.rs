//! Reloading jobs.toml without a restart, with real nodes on a real emulator (lease 3 s, renew
//! 500 ms, poll 250 ms): a file rewritten in place, replaced by a rename or announced with
//! SIGHUP is applied as a diff (unchanged and changed jobs keep their lease and term, a new job
//! runs, a removed one stops and its lease is handed back after its run), and a bad file, or
//! one that changes `[election]`, is refused while the node keeps its jobs.
mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::{wait_until, write_config, Emulator, Node};

const HEADER: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
                      [node]\nshutdown_grace = \"10s\"\n";

fn job(name: &str, schedule: &str, say: &str) -> String {
    format!("\n[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nsay = \"{say}\"\n")
}

/// Replace the file the way editors and `sed -i` do: write a new file, rename it over.
fn replace_by_rename(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("ts of {v}: {e}"))
        .with_timezone(&Utc)
}

fn fire(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["fire_time"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("fire_time of {v}: {e}"))
        .with_timezone(&Utc)
}

fn runs_of(node: &Node, job: &str) -> Vec<Value> {
    node.events_named("tick_run")
        .into_iter()
        .filter(|e| e["job"] == job)
        .collect()
}

/// Waits for the `n`th (1-based) event named `event` and returns it.
fn nth_event(node: &Node, event: &str, n: usize) -> Value {
    assert!(
        wait_until(Duration::from_secs(15), || node.events_named(event).len()
            >= n),
        "no {event} #{n} within 15 s; output:\n{}",
        node.output_text()
    );
    node.events_named(event)[n - 1].clone()
}

#[test]
fn a_changed_file_is_applied_as_a_diff_and_a_bad_one_is_refused() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let first = format!(
        "{HEADER}{}{}{}",
        job("keep", "* * * * * *", "keep"),
        job("gone", "* * * * * *", "gone"),
        job("change", "* * * * * *", "old"),
    );
    let cfg = write_config(dir.path(), &first);
    let node = Node::spawn(&emu, &cfg, "n1");
    for j in ["keep", "gone", "change"] {
        assert!(
            wait_until(Duration::from_secs(20), || !runs_of(&node, j).is_empty()),
            "{j} never ran; output:\n{}",
            node.output_text()
        );
    }
    let term = |j: &str| runs_of(&node, j).last().unwrap()["term"].clone();
    let (keep_term, change_term) = (term("keep"), term("change"));

    // 1. Replaced by a rename: gone removed, change changed, fresh added.
    let second = format!(
        "{HEADER}{}{}{}",
        job("keep", "* * * * * *", "keep"),
        job("change", "* * * * * *", "new"),
        job("fresh", "* * * * * *", "fresh"),
    );
    replace_by_rename(&cfg, &second);
    let reloaded = nth_event(&node, "config_reloaded", 1);
    assert_eq!(reloaded["trigger"], "file_changed", "{reloaded}");
    let list = |f: &str| reloaded[f].as_str().unwrap_or_default().to_string();
    assert_eq!(list("added"), "fresh", "{reloaded}");
    assert_eq!(list("removed"), "gone", "{reloaded}");
    assert_eq!(list("changed"), "change", "{reloaded}");
    assert!(
        list("msg").ends_with("reloaded: added fresh; removed gone; changed change"),
        "{reloaded}"
    );
    let at = ts(&reloaded);
    // The new job runs; the changed one says its new text under the same term.
    assert!(
        wait_until(Duration::from_secs(15), || !runs_of(&node, "fresh")
            .is_empty()),
        "fresh never ran; output:\n{}",
        node.output_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || node
            .events_named("job_output")
            .iter()
            .any(|e| e["job"] == "change" && e["line"] == "new")),
        "change never said its new text"
    );
    // The removed job's lease is handed back (it had no run going).
    let released = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "lease_released" && e["job"] == "gone"
        })
        .expect("the lease of the removed job is released");
    assert_eq!(released["reason"], "removed");
    // Two more seconds of ticks: unchanged and changed jobs keep their term; nothing of the
    // removed job runs for a fire time after the reload (one handed over just before may).
    let later = at + chrono::Duration::seconds(3);
    assert!(wait_until(Duration::from_secs(10), || runs_of(
        &node, "keep"
    )
    .iter()
    .any(|e| fire(e) > later)));
    assert_eq!(term("keep"), keep_term);
    assert_eq!(term("change"), change_term);
    let late_gone: Vec<Value> = runs_of(&node, "gone")
        .into_iter()
        .filter(|e| fire(e) > at + chrono::Duration::seconds(1))
        .collect();
    assert!(late_gone.is_empty(), "removed job still ran: {late_gone:?}");
    assert!(node.events_named("lease_lost").is_empty());

    // 2. A bad file written in place: refused with file:line:col, the jobs keep running.
    std::fs::write(
        &cfg,
        format!("{second}\n[[job]]\nname = \"broken\"\nschedule = \"61 * * * *\"\nsay = \"x\"\n"),
    )
    .unwrap();
    let rejected = nth_event(&node, "config_rejected", 1);
    let error = rejected["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("jobs.toml:") && error.contains("bad cron expression"),
        "{rejected}"
    );
    let after_reject = ts(&rejected) + chrono::Duration::seconds(1);
    assert!(
        wait_until(Duration::from_secs(10), || runs_of(&node, "fresh")
            .iter()
            .any(|e| fire(e) > after_reject)),
        "jobs stopped after a rejected file"
    );
    assert!(runs_of(&node, "broken").is_empty());

    // 3. [election] changed: refused, saying a restart is needed.
    std::fs::write(&cfg, second.replace("poll = \"250ms\"", "poll = \"300ms\"")).unwrap();
    let rejected = nth_event(&node, "config_rejected", 2);
    assert!(
        rejected["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[election] changed"),
        "{rejected}"
    );

    // 4. SIGHUP with the good file back: applied (the file's content is the second one
    //    again, but the node was never told otherwise, so nothing changed).
    std::fs::write(&cfg, &second).unwrap();
    node.signal(libc::SIGHUP);
    let unchanged = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "config_unchanged" && e["trigger"] == "sighup"
        })
        .expect("SIGHUP re-reads the file");
    assert!(unchanged["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("no job changed"));
    // The node was never unready: it still leads everything it had.
    assert_eq!(term("keep"), keep_term);
}

#[test]
fn a_removed_job_finishes_its_run_then_hands_its_lease_back() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let long = "\n[[job]]\nname = \"long\"\nschedule = \"*/5 * * * * *\"\n\
                shell = \"echo started; sleep 3; echo done\"\n";
    let body = format!("{HEADER}{}{long}", job("other", "* * * * * *", "x"));
    let cfg = write_config(dir.path(), &body);
    let node = Node::spawn(&emu, &cfg, "n1");
    let started = node
        .wait_for(Duration::from_secs(30), |e| {
            e["event"] == "job_output" && e["job"] == "long" && e["line"] == "started"
        })
        .expect("long starts a run");
    // Removed while its run goes on (written in place this time).
    std::fs::write(
        &cfg,
        format!("{HEADER}{}", job("other", "* * * * * *", "x")),
    )
    .unwrap();
    let retiring = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "job_retiring" && e["job"] == "long"
        })
        .expect("the removed job waits for its run");
    assert_eq!(retiring["runs"], 1, "{retiring}");
    let done = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "job_finished"
                && e["job"] == "long"
                && e["fire_time"] == started["fire_time"]
        })
        .expect("the run finishes");
    assert_eq!(done["outcome"], "ok", "{done}");
    let released = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "lease_released" && e["job"] == "long"
        })
        .expect("then the lease is released");
    assert!(ts(&released) >= ts(&done), "released before the run ended");
    // It is not scheduled any more.
    assert!(wait_until(Duration::from_secs(8), || runs_of(
        &node, "other"
    )
    .len()
        > 8));
    let runs = runs_of(&node, "long");
    assert_eq!(runs.len(), 1, "{runs:?}");
}

/// A Kubernetes ConfigMap volume: `jobs.toml -> ..data/jobs.toml`, and an update swaps the
/// `..data` symlink to a new timestamped directory in one rename.
#[test]
fn a_configmap_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version = |name: &str, body: &str| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("jobs.toml"), body).unwrap();
    };
    version(
        "..2026_11_29_1",
        &format!("{HEADER}{}", job("a", "* * * * * *", "a")),
    );
    symlink("..2026_11_29_1", d.join("..data")).unwrap();
    symlink("..data/jobs.toml", d.join("jobs.toml")).unwrap();
    let node = Node::spawn(&emu, &d.join("jobs.toml"), "n1");
    assert!(wait_until(Duration::from_secs(20), || !runs_of(&node, "a").is_empty()));
    version(
        "..2026_11_29_2",
        &format!(
            "{HEADER}{}{}",
            job("a", "* * * * * *", "a"),
            job("b", "* * * * * *", "b")
        ),
    );
    symlink("..2026_11_29_2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let reloaded = nth_event(&node, "config_reloaded", 1);
    assert_eq!(reloaded["added"], "b", "{reloaded}");
    assert!(wait_until(Duration::from_secs(15), || !runs_of(&node, "b").is_empty()));
}

/// `enabled = false` by reload stops the job and hands its lease back; switching it on again
/// runs it from then on, without catching up the fire times from while it was off.
#[test]
fn switching_a_job_off_and_on_by_reload() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let on = format!(
        "{HEADER}\n[defaults]\ncatch_up = \"all\"\nstarting_deadline = \"1m\"\n{}{}",
        job("keep", "* * * * * *", "keep"),
        job("flip", "* * * * * *", "flip")
    );
    let off = on.replace("say = \"flip\"", "say = \"flip\"\nenabled = false");
    let cfg = write_config(dir.path(), &on);
    let node = Node::spawn(&emu, &cfg, "n1");
    assert!(wait_until(Duration::from_secs(20), || !runs_of(
        &node, "flip"
    )
    .is_empty()));
    std::fs::write(&cfg, &off).unwrap();
    let reloaded = nth_event(&node, "config_reloaded", 1);
    assert_eq!(reloaded["changed"], "flip", "{reloaded}");
    let released = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "lease_released" && e["job"] == "flip"
        })
        .expect("the lease of a job switched off is handed back");
    let off_at = ts(&released);
    // Off for a few seconds while keep runs.
    let seen = runs_of(&node, "keep").len();
    assert!(wait_until(Duration::from_secs(10), || runs_of(
        &node, "keep"
    )
    .len()
        >= seen + 4));
    let on_at = Utc::now();
    std::fs::write(&cfg, &on).unwrap();
    nth_event(&node, "config_reloaded", 2);
    assert!(
        wait_until(Duration::from_secs(15), || runs_of(&node, "flip")
            .iter()
            .any(|e| fire(e) > on_at)),
        "flip did not run again"
    );
    let during: Vec<Value> = runs_of(&node, "flip")
        .into_iter()
        .filter(|e| fire(e) > off_at && fire(e) < on_at)
        .collect();
    assert!(
        during.is_empty(),
        "fire times from while it was off ran: {during:?}"
    );
}

/// An edit made while the node is still reaching the store (here: cut off from it) is applied
/// as soon as the node runs, not lost until the next edit.
#[test]
fn an_edit_made_while_the_node_starts_is_applied() {
    let emu = Emulator::start();
    let proxy = common::proxy::Proxy::start(emu.port);
    proxy.cut();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{HEADER}{}", job("a", "* * * * * *", "a")),
    );
    let host = proxy.host();
    let node = Node::spawn_with_env(
        &emu,
        &cfg,
        "n1",
        &[("DATASTORE_EMULATOR_HOST", host.as_str())],
    );
    node.wait_for(Duration::from_secs(15), |e| e["event"] == "store_error")
        .expect("the node retries while the store is cut off");
    std::fs::write(
        &cfg,
        format!(
            "{HEADER}{}{}",
            job("a", "* * * * * *", "a"),
            job("b", "* * * * * *", "b")
        ),
    )
    .unwrap();
    proxy.restore();
    let reloaded = nth_event(&node, "config_reloaded", 1);
    assert_eq!(reloaded["added"], "b", "{reloaded}");
    assert!(wait_until(Duration::from_secs(15), || !runs_of(&node, "b").is_empty()));
}
