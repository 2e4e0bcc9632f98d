//! `cronlease trigger` and `cronlease backfill` with real nodes on a real emulator (lease 3 s,
//! renew 500 ms, poll 250 ms): a trigger runs once on the leader, while paused too, waits in
//! the store while no node runs and expires, never runs twice across a frozen or killed
//! leader; `--wait` exits 0 for ok and 1 otherwise; a backfill runs exactly the fire times no
//! node ran, oldest first, and refuses what it cannot do.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::{cli as cronlease, wait_until, write_config, Backend, Emulator, Node, Target};

const TIMING: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n";

/// Jobs that never fire on their own during a test (once a year), one that fails, a slow one,
/// and a disabled one.
const MANUAL_JOBS: &str = "[[job]]\nname = \"job\"\nschedule = \"0 0 1 1 *\"\nsay = \"hi\"\n\n\
    [[job]]\nname = \"fail\"\nschedule = \"0 0 1 1 *\"\ncommand = [\"false\"]\n\n\
    [[job]]\nname = \"slow\"\nschedule = \"0 0 1 1 *\"\nshell = \"sleep 4\"\n\n\
    [[job]]\nname = \"off\"\nschedule = \"0 0 1 1 *\"\nsay = \"off\"\nenabled = false\n";

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The `tick_run` events of `job` on these nodes: (fire time, trigger kind or "").
fn runs(nodes: &[&Node], job: &str) -> Vec<(DateTime<Utc>, String)> {
    let mut v: Vec<(DateTime<Utc>, String)> = nodes
        .iter()
        .flat_map(|n| n.events_named("tick_run"))
        .filter(|e| e["job"] == job)
        .map(|e| {
            (
                time(&e["fire_time"]),
                e["trigger"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn manual_runs(nodes: &[&Node], job: &str) -> usize {
    runs(nodes, job)
        .iter()
        .filter(|(_, k)| k == "manual")
        .count()
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

/// Wait until every job of the file but `off` has a leader; returns `job`'s.
fn leader_of(emu: &impl Target, cfg: &Path, job: &str) -> String {
    let mut leader = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            leader = job_status(emu, cfg, job)["leader"]
                .as_str()
                .map(String::from);
            leader.is_some()
        }),
        "{job} has no leader"
    );
    leader.unwrap()
}

#[test]
fn a_trigger_runs_once_on_the_leader_even_while_paused_and_wait_tells_the_outcome() {
    trigger_once(Backend::datastore());
}

#[test]
fn a_trigger_runs_once_on_the_leader_even_while_paused_and_wait_tells_the_outcome_on_postgres() {
    trigger_once(Backend::postgres());
}

fn trigger_once(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{}{TIMING}{MANUAL_JOBS}", emu.store_table()),
    );
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let n2 = Node::spawn(&emu, &cfg, "n2");
    leader_of(&emu, &cfg, "job");
    leader_of(&emu, &cfg, "fail");

    let asked = Instant::now();
    let out = cronlease(&emu, &cfg, &["trigger", "job", "--wait"]);
    let took = asked.elapsed();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("job: run requested by ops@"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("job: ok on n"), "{}", out.stdout);
    eprintln!("trigger --wait of a `say` job took {took:?}");
    assert_eq!(manual_runs(&[&n1, &n2], "job"), 1);
    let st = job_status(&emu, &cfg, "job");
    assert_eq!(st["triggers"], serde_json::json!([]), "{st}");
    let run = &st["runs"][0];
    assert_eq!(run["trigger"], "manual", "{st}");
    assert!(
        run["triggered_by"].as_str().unwrap().starts_with("ops@"),
        "{st}"
    );
    assert_ne!(
        time(&run["fire_time"]).timestamp_subsec_millis(),
        0,
        "a manual fire time is never a whole second: {st}"
    );
    assert!(cronlease(&emu, &cfg, &["status"])
        .stdout
        .contains("[manual by ops@"));

    // A failing run: exit 1, and the outcome printed.
    let out = cronlease(&emu, &cfg, &["trigger", "fail", "--wait"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("fail: failed, exit code 1"),
        "{}",
        out.stdout
    );

    // A run of `slow` is going: a trigger is skipped behind it (its overlap policy), unless
    // `--overlap allow`.
    assert_eq!(cronlease(&emu, &cfg, &["trigger", "slow"]).code, Some(0));
    assert!(
        wait_until(Duration::from_secs(10), || manual_runs(&[&n1, &n2], "slow")
            == 1),
        "slow did not start"
    );
    let out = cronlease(&emu, &cfg, &["trigger", "slow", "--wait"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("slow: skipped (overlap)"),
        "{}",
        out.stdout
    );
    let out = cronlease(
        &emu,
        &cfg,
        &["trigger", "slow", "--wait", "--overlap", "allow"],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("slow: ok on n"), "{}", out.stdout);
    assert_eq!(manual_runs(&[&n1, &n2], "slow"), 2);

    // Paused: a trigger still runs (the operator asked for it).
    assert_eq!(cronlease(&emu, &cfg, &["pause", "job"]).code, Some(0));
    let out = cronlease(&emu, &cfg, &["trigger", "job", "--wait"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(manual_runs(&[&n1, &n2], "job"), 2);

    // Bad input: one line, exit 2, nothing stored.
    for (args, says) in [
        (vec!["trigger", "nosuch"], "no job named \"nosuch\""),
        (vec!["trigger", "off"], "is disabled"),
        (vec!["trigger", "job", "--timeout", "0s"], "above zero"),
        (vec!["trigger", "job", "--overlap", "skip"], "invalid value"),
    ] {
        let out = cronlease(&emu, &cfg, &args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert_eq!(
        job_status(&emu, &cfg, "off")["triggers"],
        serde_json::json!([])
    );
}

#[test]
fn a_trigger_waits_in_the_store_for_a_node_and_expires() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &format!("{TIMING}{MANUAL_JOBS}"));

    // No node: --wait gives up at the timeout, withdraws the request, exit 1.
    let out = cronlease(&emu, &cfg, &["trigger", "job", "--wait", "--timeout", "2s"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no node is running"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("not run: no node took the request before it expired"),
        "{}",
        out.stderr
    );
    assert_eq!(
        job_status(&emu, &cfg, "job")["triggers"],
        serde_json::json!([])
    );

    // Without --wait: queued, shown by status, run once when a node comes.
    let out = cronlease(&emu, &cfg, &["trigger", "job"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("the request waits in the store until"),
        "{}",
        out.stdout
    );
    let st = job_status(&emu, &cfg, "job");
    assert_eq!(st["triggers"].as_array().unwrap().len(), 1, "{st}");
    assert!(cronlease(&emu, &cfg, &["status"])
        .stdout
        .contains("TRIGGERED by ops@"));
    let n1 = Node::spawn(&emu, &cfg, "n1");
    assert!(
        wait_until(Duration::from_secs(20), || manual_runs(&[&n1], "job") == 1),
        "the queued trigger did not run"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        job_status(&emu, &cfg, "job")["triggers"] == serde_json::json!([])
    }));
    assert_eq!(manual_runs(&[&n1], "job"), 1);

    // An expired request is dropped by the leader, unrun.
    let n1_expired = || n1.events_named("trigger_expired").len();
    let out = cronlease(&emu, &cfg, &["trigger", "slow", "--timeout", "1ms"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        wait_until(Duration::from_secs(10), || n1_expired() == 1),
        "the expired trigger was not dropped"
    );
    assert_eq!(manual_runs(&[&n1], "slow"), 0);
}

#[test]
fn a_trigger_never_runs_twice_across_a_frozen_or_killed_leader() {
    trigger_never_twice(Backend::datastore());
}

#[test]
fn a_trigger_never_runs_twice_across_a_frozen_or_killed_leader_on_postgres() {
    trigger_never_twice(Backend::postgres());
}

fn trigger_never_twice(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{}{TIMING}{MANUAL_JOBS}", emu.store_table()),
    );
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let n2 = Node::spawn(&emu, &cfg, "n2");
    let first = leader_of(&emu, &cfg, "slow");
    let (frozen, other) = if first == "n1" {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };

    // The leader is frozen when the request comes: the other node takes the lease over and
    // runs it; the frozen one, thawed, does not.
    frozen.stop();
    let out = cronlease(&emu, &cfg, &["trigger", "slow"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        wait_until(Duration::from_secs(20), || manual_runs(&[other], "slow")
            == 1),
        "the trigger did not run on the new leader"
    );
    frozen.cont();
    assert!(
        other
            .wait_for(Duration::from_secs(15), |e| e["event"] == "job_finished"
                && e["job"] == "slow")
            .is_some(),
        "the triggered run did not finish"
    );
    assert_eq!(
        job_status(&emu, &cfg, "slow")["triggers"],
        serde_json::json!([])
    );

    // The leader is killed while the triggered run goes: the run is closed as lost, never
    // run again.
    let out = cronlease(&emu, &cfg, &["trigger", "slow"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let leader = leader_of(&emu, &cfg, "slow");
    let killed = if leader == other.id { other } else { frozen };
    // `other` ran the first trigger already.
    let before = usize::from(killed.id == other.id);
    assert!(
        wait_until(Duration::from_secs(10), || manual_runs(&[killed], "slow")
            > before),
        "the second trigger did not start on {}",
        killed.id
    );
    killed.kill9();
    assert!(
        wait_until(Duration::from_secs(30), || {
            job_status(&emu, &cfg, "slow")["runs"][0]["outcome"] == "lost"
        }),
        "the killed run was not closed as lost"
    );
    // Killed between its claim and its removal of the request, the old leader may leave the
    // request pending: the new leader's claim finds the run and only removes it.
    assert!(
        wait_until(Duration::from_secs(10), || job_status(&emu, &cfg, "slow")
            ["triggers"]
            == serde_json::json!([])),
        "the request was never cleared: {}",
        job_status(&emu, &cfg, "slow")
    );
    assert_eq!(
        manual_runs(&[&n1, &n2], "slow"),
        2,
        "each trigger ran once: {:?}",
        runs(&[&n1, &n2], "slow")
    );
}

#[test]
fn a_backfill_runs_exactly_the_fire_times_no_node_ran() {
    backfill_exactly(Backend::datastore());
}

#[test]
fn a_backfill_runs_exactly_the_fire_times_no_node_ran_on_postgres() {
    backfill_exactly(Backend::postgres());
}

fn backfill_exactly(emu: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}{TIMING}\
             [[job]]\nname = \"every\"\nschedule = \"* * * * * *\"\nsay = \"tick\"\ncatch_up = \"none\"\n",
            emu.store_table_with("history = 500")
        ),
    );
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let n2 = Node::spawn(&emu, &cfg, "n2");
    assert!(wait_until(Duration::from_secs(30), || runs(
        &[&n1, &n2],
        "every"
    )
    .len()
        >= 3));

    // A gap: paused for a few seconds.
    assert_eq!(cronlease(&emu, &cfg, &["pause", "every"]).code, Some(0));
    let paused_at = Utc::now();
    assert!(wait_until(Duration::from_secs(10), || Utc::now()
        > paused_at + chrono::Duration::seconds(5)));
    assert_eq!(cronlease(&emu, &cfg, &["resume", "every"]).code, Some(0));
    let resumed_at = Utc::now();
    assert!(wait_until(Duration::from_secs(10), || runs(
        &[&n1, &n2],
        "every"
    )
    .iter()
    .any(|(t, _)| *t > resumed_at + chrono::Duration::seconds(1))));

    let from = paused_at - chrono::Duration::seconds(3);
    let to = resumed_at + chrono::Duration::seconds(1);
    let (from_s, to_s) = (from.to_rfc3339(), to.to_rfc3339());
    let ran: BTreeSet<DateTime<Utc>> = runs(&[&n1, &n2], "every")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| (from..=to).contains(t))
        .collect();

    // --dry-run lists exactly the missing ones and changes nothing.
    let out = cronlease(
        &emu,
        &cfg,
        &[
            "backfill",
            "every",
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--dry-run",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listed: BTreeSet<DateTime<Utc>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| time(&Value::String(l.trim().to_string())))
        .collect();
    let mut every_second = BTreeSet::new();
    let mut t = from
        .with_timezone(&Utc)
        .checked_add_signed(chrono::Duration::milliseconds(
            1000 - i64::from(from.timestamp_subsec_millis()),
        ))
        .unwrap();
    t = DateTime::from_timestamp(t.timestamp(), 0).unwrap();
    while t <= to {
        every_second.insert(t);
        t += chrono::Duration::seconds(1);
    }
    let missing: BTreeSet<DateTime<Utc>> = every_second.difference(&ran).copied().collect();
    assert!(missing.len() >= 4, "the pause left a gap: {missing:?}");
    assert_eq!(listed, missing, "{}", out.stdout);
    assert!(job_status(&emu, &cfg, "every")["backfill"].is_null());

    // The backfill runs them, oldest first, each once, while the schedule goes on.
    let out = cronlease(
        &emu,
        &cfg,
        &["backfill", "every", "--from", &from_s, "--to", &to_s],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{} not run yet", missing.len())),
        "{}",
        out.stdout
    );
    let backfilled = || -> Vec<DateTime<Utc>> {
        let mut v: Vec<(usize, DateTime<Utc>)> = Vec::new();
        for n in [&n1, &n2] {
            for (i, e) in n.events_named("tick_run").iter().enumerate() {
                if e["job"] == "every" && e["trigger"] == "backfill" {
                    v.push((i, time(&e["fire_time"])));
                }
            }
        }
        v.into_iter().map(|(_, t)| t).collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || backfilled().len()
            >= missing.len()),
        "backfilled {:?} of {missing:?}",
        backfilled()
    );
    assert!(wait_until(Duration::from_secs(10), || job_status(
        &emu, &cfg, "every"
    )["backfill"]
        .is_null()));
    let done = backfilled();
    let set: BTreeSet<DateTime<Utc>> = done.iter().copied().collect();
    assert_eq!(set, missing, "exactly the missing fire times");
    assert_eq!(done.len(), missing.len(), "each once: {done:?}");
    let mut sorted = done.clone();
    sorted.sort();
    assert_eq!(done, sorted, "oldest first");
    // Now every second of the range ran exactly once.
    let all: Vec<DateTime<Utc>> = runs(&[&n1, &n2], "every")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| (from..=to).contains(t))
        .collect();
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>(), every_second);
    assert_eq!(all.len(), every_second.len(), "no fire time twice");

    // Again: nothing left to do.
    let out = cronlease(
        &emu,
        &cfg,
        &["backfill", "every", "--from", &from_s, "--to", &to_s],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("nothing to backfill"), "{}", out.stdout);

    // Refused: too many, a reversed range, a future start.
    let hours_ago = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let now = Utc::now().to_rfc3339();
    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (args, says) in [
        (
            vec!["backfill", "every", "--from", &hours_ago, "--to", &now],
            "more than 1000 fire times",
        ),
        (
            vec!["backfill", "every", "--from", &now, "--to", &hours_ago],
            "is after --to",
        ),
        (
            vec!["backfill", "every", "--from", &later, "--to", &later],
            "in the future",
        ),
        (vec!["backfill", "every", "--from", &now], "--to"),
        (
            vec!["backfill", "nosuch", "--from", &now, "--to", &now],
            "no job named",
        ),
    ] {
        let out = cronlease(&emu, &cfg, &args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn a_backfill_is_one_at_a_time_cancellable_and_never_past_the_pruned_history() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{TIMING}[store]\nhistory = 3\n\n\
             [[job]]\nname = \"slow\"\nschedule = \"0 * * * * *\"\nshell = \"sleep 3\"\ncatch_up = \"none\"\n\n\
             [[job]]\nname = \"every\"\nschedule = \"* * * * * *\"\nsay = \"tick\"\n"
        ),
    );
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let started = Utc::now();
    leader_of(&emu, &cfg, "slow");

    // Ten past minutes of `slow`, none of which ran (the cluster was not up): the ten whole
    // minutes before this one (a range of `started` - 10 min covered nine when the test began
    // in a minute's first second).
    let minute = started
        - chrono::Duration::seconds(started.timestamp() % 60)
        - chrono::Duration::nanoseconds(started.timestamp_subsec_nanos() as i64);
    let from = (minute - chrono::Duration::minutes(10)).to_rfc3339();
    let to = (minute - chrono::Duration::seconds(1)).to_rfc3339();
    let out = cronlease(
        &emu,
        &cfg,
        &["backfill", "slow", "--from", &from, "--to", &to],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("10 fire times, 10 not run yet"),
        "{}",
        out.stdout
    );
    assert!(
        wait_until(Duration::from_secs(15), || runs(&[&n1], "slow")
            .iter()
            .any(|(_, k)| k == "backfill")),
        "the backfill did not start"
    );
    // A second one for the same job is refused; status shows the progress.
    let out = cronlease(
        &emu,
        &cfg,
        &["backfill", "slow", "--from", &from, "--to", &to],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("already in progress"), "{}", out.stderr);
    assert!(cronlease(&emu, &cfg, &["status"])
        .stdout
        .contains("BACKFILL "));
    assert_eq!(job_status(&emu, &cfg, "slow")["backfill"]["total"], 10);
    // One at a time: never two backfill runs going at once (job_finished comes between).
    let out = cronlease(&emu, &cfg, &["backfill", "slow", "--cancel"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("cancelled"), "{}", out.stdout);
    let cancelled_at = runs(&[&n1], "slow").len();
    // Whatever was going finishes; nothing new starts.
    assert!(wait_until(Duration::from_secs(10), || {
        n1.events_named("job_finished")
            .iter()
            .filter(|e| e["job"] == "slow")
            .count()
            >= cancelled_at
    }));
    assert!(
        (1..=2).contains(&cancelled_at),
        "one at a time, 3 s each: {:?}",
        runs(&[&n1], "slow")
    );
    assert!(job_status(&emu, &cfg, "slow")["backfill"].is_null());
    let out = cronlease(&emu, &cfg, &["backfill", "slow", "--cancel"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("no backfill in progress"),
        "{}",
        out.stderr
    );
    assert_eq!(runs(&[&n1], "slow").len(), cancelled_at);

    // `every` keeps 3 runs: its older history is pruned, so a backfill there is refused.
    assert!(wait_until(Duration::from_secs(20), || runs(
        &[&n1],
        "every"
    )
    .len()
        >= 8));
    let early = (started - chrono::Duration::seconds(5)).to_rfc3339();
    let now = Utc::now().to_rfc3339();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let out = cronlease(
                &emu,
                &cfg,
                &[
                    "backfill",
                    "every",
                    "--from",
                    &early,
                    "--to",
                    &now,
                    "--dry-run",
                ],
            );
            out.code == Some(2) && out.stderr.contains("was pruned")
        }),
        "a backfill into pruned history was not refused"
    );
}
