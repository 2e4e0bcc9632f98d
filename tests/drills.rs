//! Fault drills: real `cronlease` processes against a real Datastore emulator (each test its own
//! emulator and port), with one fault injected each: skewed wall clocks, a store outage, a
//! network cut of one node, misbehaving jobs, and DST transitions. Lease 3 s, renew 500 ms,
//! poll 250 ms, as in tests/cluster.rs. Every drill asserts its guarantee and then reports what
//! it measured with `common::report` (set `CRONLEASE_DRILL_REPORT=FILE` to collect the lines).
//!
//! Wall clocks are faked with libfaketime (`scripts/deps.sh` installs it): `LD_PRELOAD`ed into a
//! node, it shifts what `clock_gettime(CLOCK_REALTIME)` (so chrono's `Utc::now`) returns, while
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` keeps the monotonic clock, on which the session and the
//! election judge time, real. A node logs its own wall clock in the `ts` field of every line.
//!
//! Exactly once is checked two ways, as in tests/cluster.rs: no two `tick_run` lines for one
//! (job, fire time) across the nodes' logs, and the store's `Run` records agree with those lines.
//! The one allowed difference: a claim that committed while its answer was lost (a cut or an
//! outage at that instant) is in the store but was not run; the node then logged `tick_skipped`
//! for that fire time, and the check requires exactly that.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use common::proxy::Proxy;
use common::{report, wait_until, write_config, Backend, Emulator, Node, Target};

const LEASE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_secs(1);
/// A node's store-call timeout here: the new leader's claim of its first tick is one such call,
/// which a loaded CI machine can stretch (as in tests/cluster.rs).
const CALL: Duration = Duration::from_secs(1);
/// `(lease + renew) / 2`: a leader that could not renew stops acting this long after the start
/// of its last successful heartbeat.
const RENEW_DEADLINE: Duration = Duration::from_millis(1750);
/// A lapse is noticed (and logged) when the node next looks at its session: at a tick (every
/// second here), at a poll (every 250 ms; a call to an unreachable store takes up to the store
/// timeout, 1 s, first) or after a heartbeat attempt. Ticks are refused from the deadline on
/// (every claim looks); only the log line can come this much later.
const NOTICE_SLACK: Duration = Duration::from_millis(1250);
const NAMESPACE: &str = "cronlease";

fn election_header() -> String {
    "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
     [node]\nshutdown_grace = \"5s\"\n"
        .to_string()
}

/// A `say` job every second.
fn every_second(name: &str) -> String {
    format!("\n[[job]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\nsay = \"{name} tick\"\n")
}

// ---------------------------------------------------------------------------------------------
// libfaketime

/// The libfaketime preload library (`/usr/lib/<arch>/faketime/libfaketime.so.1`). Fails the
/// test, naming the script that installs it, when it is missing.
fn libfaketime() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path().join("faketime/libfaketime.so.1"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.push(PathBuf::from("/usr/lib/faketime/libfaketime.so.1"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime not found (looked for /usr/lib/*/faketime/libfaketime.so.1): the \
                 clock drills need it; run scripts/deps.sh (it installs the faketime package)"
            )
        })
}

/// The environment of a node whose wall clock is faked: `how` is `("FAKETIME", spec)` or
/// `("FAKETIME_TIMESTAMP_FILE", path)`. The monotonic clock stays real; `FAKETIME_NO_CACHE`
/// makes a changed spec apply at once; `TZ=UTC` makes `@` dates UTC.
fn faked_env(lib: &Path, how: (&str, &str)) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        (how.0.into(), how.1.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("TZ".into(), "UTC".into()),
    ]
}

fn spawn_env(emu: &impl Target, cfg: &Path, id: &str, env: &[(String, String)]) -> Node {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::spawn_with_env(emu, cfg, id, &env)
}

// ---------------------------------------------------------------------------------------------
// Reading the nodes' logs

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{field} = {s:?}: {e}"))
        .with_timezone(&Utc)
}

/// One `tick_run` line.
#[derive(Debug, Clone)]
struct TickRun {
    job: String,
    fire_time: DateTime<Utc>,
    node: String,
    term: i64,
    /// The node's own wall clock when it logged the line.
    at: DateTime<Utc>,
    lateness_ms: i64,
}

fn tick_runs(nodes: &[&Node]) -> Vec<TickRun> {
    let mut out: Vec<TickRun> = nodes
        .iter()
        .flat_map(|n| n.events_named("tick_run"))
        .map(|e| TickRun {
            job: e["job"].as_str().unwrap().to_string(),
            fire_time: time(&e, "fire_time"),
            node: e["node"].as_str().unwrap().to_string(),
            term: e["term"].as_i64().unwrap(),
            at: time(&e, "ts"),
            lateness_ms: e["lateness_ms"].as_i64().unwrap_or(0),
        })
        .collect();
    out.sort_by_key(|t| (t.at, t.job.clone()));
    out
}

fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

/// Events named `event` that `node` logged after `after` (by its own clock).
fn events_after(node: &Node, event: &str, after: DateTime<Utc>) -> Vec<Value> {
    node.events_named(event)
        .into_iter()
        .filter(|e| time(e, "ts") > after)
        .collect()
}

/// The jobs `node` holds by its own log, up to `until` (by its clock) if given.
fn held_jobs(node: &Node, until: Option<DateTime<Utc>>) -> BTreeSet<String> {
    let mut held = BTreeSet::new();
    for e in node.events() {
        if until.is_some_and(|u| e.get("ts").is_some() && time(&e, "ts") > u) {
            break;
        }
        let job = e["job"].as_str().unwrap_or("").to_string();
        match e["event"].as_str() {
            Some("lease_acquired") => {
                held.insert(job);
            }
            Some("lease_released") | Some("lease_lost") => {
                held.remove(&job);
            }
            _ => {}
        }
    }
    held
}

/// (job, fire time) keys that more than one `tick_run` line claims, with who ran them.
fn duplicate_ticks(runs: &[TickRun]) -> Vec<String> {
    let mut by_key: BTreeMap<(String, DateTime<Utc>), Vec<&str>> = BTreeMap::new();
    for r in runs {
        by_key
            .entry((r.job.clone(), r.fire_time))
            .or_default()
            .push(&r.node);
    }
    by_key
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((job, t), v)| format!("{job}@{t} ran on {v:?}"))
        .collect()
}

/// Whole-second instants as compact ranges: "12:00:01-12:00:03, 12:00:07".
fn seconds_text(set: &BTreeSet<DateTime<Utc>>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + chrono::Duration::seconds(1))) {
            end = iter.next().unwrap();
        }
        let f = |t: DateTime<Utc>| t.format("%H:%M:%S").to_string();
        out.push(if end == start {
            f(start)
        } else {
            format!("{}-{}", f(start), f(end))
        });
    }
    if out.is_empty() {
        "none".to_string()
    } else {
        out.join(", ")
    }
}

fn ms(d: chrono::Duration) -> i64 {
    d.num_milliseconds()
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap()
}

/// SIGTERM every node at once and require a clean exit from each.
fn stop_all<'a>(nodes: impl IntoIterator<Item = &'a mut Node>) {
    let mut nodes: Vec<&mut Node> = nodes.into_iter().collect();
    for n in &nodes {
        n.signal(libc::SIGTERM);
    }
    for n in nodes.iter_mut() {
        let status = n
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} did not exit within 20 s of SIGTERM", n.id));
        assert!(
            status.success(),
            "{} exit status {status:?}: {}",
            n.id,
            n.stderr_text()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The store's view

/// What the store check found.
struct StoreCheck {
    /// Run records read (each a distinct (job, fire time): the key is `{job}@{unix seconds}`).
    records: usize,
    /// Records whose key appeared twice in the store's answer (cannot happen; counted anyway).
    duplicates: usize,
    /// Records of a claim whose answer was lost (the node logged `tick_skipped`, not `tick_run`).
    lost_answers: usize,
}

/// The store's `Run` records of `jobs` (in `namespace`) agree with the nodes' `tick_run` lines:
/// every line has its record (same node and term), and every record either has its line or is
/// a claim whose answer was lost (the node logged `tick_skipped` for it). Call after the nodes
/// stopped, so both sides are final.
fn check_store(emu: &impl Target, namespace: &str, jobs: &[&str], nodes: &[&Node]) -> StoreCheck {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(async {
        let store = emu.open_store(namespace).await;
        let mut all = Vec::new();
        for job in jobs {
            all.extend(store.runs(job).await.expect("read the runs"));
        }
        all
    });
    let runs = tick_runs(nodes);
    let skipped: BTreeSet<(String, DateTime<Utc>, String)> = nodes
        .iter()
        .flat_map(|n| n.events_named("tick_skipped"))
        .map(|e| {
            (
                e["job"].as_str().unwrap_or("").to_string(),
                time(&e, "fire_time"),
                e["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let open: Vec<_> = stored.iter().filter(|r| r.outcome == "running").collect();
    assert!(
        open.is_empty(),
        "the nodes stopped, yet runs are still `running` in the store: {open:?}"
    );
    let mut keys: BTreeMap<(String, DateTime<Utc>), (String, i64)> = BTreeMap::new();
    let mut duplicates = 0;
    // A claim made ahead by a node killed before the fire time: `lost`, never logged as run.
    let lost: BTreeSet<(String, DateTime<Utc>)> = stored
        .iter()
        .filter(|r| r.outcome == "lost")
        .map(|r| (r.job.clone(), r.fire_time))
        .collect();
    for r in &stored {
        if keys
            .insert((r.job.clone(), r.fire_time), (r.node.clone(), r.term))
            .is_some()
        {
            duplicates += 1;
        }
    }
    for r in &runs {
        match keys.get(&(r.job.clone(), r.fire_time)) {
            Some((node, term)) => assert!(
                *node == r.node && *term == r.term,
                "{}@{} ran on {} (term {}) but the store's run record says {node} (term {term})",
                r.job,
                r.fire_time,
                r.node,
                r.term
            ),
            None => panic!(
                "{}@{} ran on {} (term {}) but the store has no run record for it",
                r.job, r.fire_time, r.node, r.term
            ),
        }
    }
    let logged: BTreeSet<(String, DateTime<Utc>)> =
        runs.iter().map(|r| (r.job.clone(), r.fire_time)).collect();
    let mut lost_answers = 0;
    for ((job, t), (node, term)) in &keys {
        if logged.contains(&(job.clone(), *t)) || lost.contains(&(job.clone(), *t)) {
            continue;
        }
        assert!(
            skipped.contains(&(job.clone(), *t, node.clone())),
            "the store has a run record {job}@{t} by {node} (term {term}) that no node logged \
             as run nor as skipped"
        );
        lost_answers += 1;
    }
    StoreCheck {
        records: stored.len(),
        duplicates,
        lost_answers,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Clock skew

/// Three nodes whose wall clocks are 90 s ahead, 90 s behind and right. Leases are judged on the
/// monotonic clock and fire times are claimed per (job, fire time), so skew makes no second
/// leader: nobody takes a lease from a live holder, nobody loses one, and no fire time runs
/// twice. (Each node computes fire times from its own clock, so the fire times a job runs move
/// with its leader's clock; exactly once is per (job, fire time) key.)
#[test]
fn clock_skew_of_90_seconds_makes_no_second_leader() {
    let lib = libfaketime();
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["skew_a", "skew_b", "skew_c"];
    let mut body = election_header();
    for j in jobs {
        body.push_str(&every_second(j));
    }
    let cfg = write_config(dir.path(), &body);

    let clocks: [(&str, Option<&str>, i64); 3] = [
        ("node-ahead", Some("+90"), 90),
        ("node-behind", Some("-90"), -90),
        ("node-real", None, 0),
    ];
    let spawned_at = Utc::now();
    let mut nodes: Vec<Node> = clocks
        .iter()
        .map(|(id, spec, _)| match spec {
            Some(spec) => spawn_env(&emu, &cfg, id, &faked_env(&lib, ("FAKETIME", spec))),
            None => Node::spawn(&emu, &cfg, id),
        })
        .collect();

    // libfaketime reaches the node's Utc::now: its node_started line carries its own clock.
    let mut offsets = BTreeMap::new();
    for (node, (_, _, skew)) in nodes.iter().zip(clocks.iter()) {
        let ev = node
            .wait_for(Duration::from_secs(20), |e| e["event"] == "node_started")
            .unwrap_or_else(|| panic!("{} did not start", node.id));
        let seen = Utc::now();
        let ts = time(&ev, "ts");
        let skew = chrono::Duration::seconds(*skew);
        let slack = chrono::Duration::milliseconds(500);
        assert!(
            ts >= spawned_at + skew - slack && ts <= seen + skew + slack,
            "{}: node_started at {ts} by its clock; expected its clock {skew} off the real one \
             (between {} and {}): does libfaketime reach the binary?",
            node.id,
            spawned_at + skew,
            seen + skew
        );
        offsets.insert(node.id.clone(), ms(ts - seen) as f64 / 1000.0);
    }

    // Every node leads one job (fair share 1 of 3) ...
    let spread = |nodes: &[Node]| nodes.iter().all(|n| held_jobs(n, None).len() == 1);
    assert!(
        wait_until(Duration::from_secs(20), || spread(&nodes)),
        "the three jobs did not spread over the three nodes within 20 s: {:?}",
        nodes
            .iter()
            .map(|n| (n.id.clone(), held_jobs(n, None)))
            .collect::<Vec<_>>()
    );
    // ... then every job runs 15 more fire times.
    let count = |nodes: &[Node], job: &str| {
        tick_runs(&refs(nodes))
            .iter()
            .filter(|r| r.job == job)
            .count()
    };
    let settled: Vec<usize> = jobs.iter().map(|j| count(&nodes, j)).collect();
    assert!(
        wait_until(Duration::from_secs(25), || jobs
            .iter()
            .zip(&settled)
            .all(|(j, n)| count(&nodes, j) >= n + 15)),
        "the jobs did not each run 15 more fire times within 25 s"
    );
    // The skew is reported: the two skewed nodes say how far off they are (the median of two
    // peers, one right and one 180 s the other way, is 45 s off at least); the right one,
    // between a peer 90 s ahead and one 90 s behind, has a median of about zero and says
    // nothing.
    let mut reported = BTreeMap::new();
    for (node, (_, _, skew)) in nodes.iter().zip(clocks.iter()) {
        let said = node.events_named("clock_skew");
        if *skew == 0 {
            assert!(said.is_empty(), "{} reported skew: {said:?}", node.id);
            continue;
        }
        let e = said
            .first()
            .unwrap_or_else(|| panic!("{} ({skew} s off) never logged clock_skew", node.id));
        let off = e["offset_ms"].as_i64().unwrap();
        assert!(
            off.signum() == skew.signum() && off.abs() >= 44_000,
            "{} is {skew} s off but estimated {off} ms",
            node.id
        );
        reported.insert(node.id.clone(), off);
    }
    stop_all(nodes.iter_mut());

    let runs = tick_runs(&refs(&nodes));
    let dups = duplicate_ticks(&runs);
    assert!(dups.is_empty(), "fire times ran twice: {dups:?}");
    let store = check_store(&emu, NAMESPACE, &jobs, &refs(&nodes));
    assert_eq!(store.duplicates, 0);

    // All three were alive throughout: every lease was taken free (at start or after a
    // rebalancing release), none from a live holder, and none was lost.
    let mut takeovers = Vec::new();
    let mut acquired = 0;
    for n in &nodes {
        for e in n.events_named("lease_acquired") {
            acquired += 1;
            if e["previous"] != "free" {
                takeovers.push(e.to_string());
            }
        }
        let lost = n.events_named("lease_lost");
        assert!(lost.is_empty(), "{} lost a lease: {lost:?}", n.id);
        let lapsed = n.events_named("session_lapsed");
        assert!(lapsed.is_empty(), "{}'s session lapsed: {lapsed:?}", n.id);
    }
    assert!(
        takeovers.is_empty(),
        "leases taken from a live holder: {takeovers:?}"
    );
    // Each node claimed fire times from its own clock: on time by that clock.
    let max_lateness = runs.iter().map(|r| r.lateness_ms).max().unwrap_or(0);
    for r in &runs {
        assert!(
            (r.at - r.fire_time).num_milliseconds().abs() < 1000,
            "{}@{} logged at {} by {}'s clock: not near its own fire time",
            r.job,
            r.fire_time,
            r.at,
            r.node
        );
    }
    let per_node: BTreeMap<String, usize> = nodes
        .iter()
        .map(|n| (n.id.clone(), runs.iter().filter(|r| r.node == n.id).count()))
        .collect();
    for (id, n) in &per_node {
        assert!(*n > 0, "{id} never ran a tick");
    }
    report(
        "clock_skew",
        json!({
            "ticks_checked": store.records,
            "duplicate_runs": dups.len() + store.duplicates,
            "takeovers_from_live": takeovers.len(),
            "leases_acquired": acquired,
            "lost_answers": store.lost_answers,
            "max_lateness_ms": max_lateness,
            "offset_ahead_s": offsets["node-ahead"],
            "offset_behind_s": offsets["node-behind"],
            "estimated_offset_ahead_ms": reported["node-ahead"],
            "estimated_offset_behind_ms": reported["node-behind"],
            "ticks_ahead": per_node["node-ahead"],
            "ticks_behind": per_node["node-behind"],
            "ticks_real": per_node["node-real"],
        }),
    );
}

/// Skew meets a hand-over: a leader whose clock is 8 s ahead has run fire times up to 8 s in
/// the real future when it stops (SIGTERM) and a node with the right clock takes the job. That
/// node runs the earlier fire times nobody ran (the latest of them, caught up: so the take-over
/// must come before the old leader's first fire time in real time, which the 8 s leave room
/// for after its three ticks and a hand-over on a loaded machine; 5 s did not), its claims of the ones the old leader ran are
/// refused (`sitting_out`, reason `already_run`), and it runs on from there: every second once,
/// none twice.
#[test]
fn clock_skew_at_a_handover_reruns_no_fire_time() {
    let lib = libfaketime();
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let job = "handover";
    let cfg = write_config(dir.path(), &(election_header() + &every_second(job)));
    let ahead = spawn_env(
        &emu,
        &cfg,
        "node-ahead",
        &faked_env(&lib, ("FAKETIME", "+8")),
    );
    ahead
        .wait_for(Duration::from_secs(20), |e| e["event"] == "lease_acquired")
        .expect("node-ahead did not acquire the lease");
    let real = Node::spawn(&emu, &cfg, "node-real");
    let mut nodes = vec![ahead, real];
    nodes[1]
        .wait_for(Duration::from_secs(20), |e| {
            e["event"] == "sitting_out" && e["holder"] == "node-ahead"
        })
        .expect("node-real never sat out naming node-ahead");
    let before = nodes[0].events_named("tick_run").len();
    let ran = |n: &Node| n.events_named("tick_run").len();
    assert!(
        wait_until(Duration::from_secs(10), || ran(&nodes[0]) >= before + 3),
        "node-ahead did not run three ticks"
    );

    nodes[0].signal(libc::SIGTERM);
    let status = nodes[0]
        .wait_exit(Duration::from_secs(15))
        .expect("node-ahead exits after SIGTERM");
    assert!(status.success(), "node-ahead exit status {status:?}");
    let last_ahead = tick_runs(&[&nodes[0]])
        .iter()
        .map(|r| r.fire_time)
        .max()
        .unwrap();
    let mut first_real = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let real_runs = tick_runs(&[&nodes[1]]);
            first_real = real_runs.iter().map(|r| r.fire_time).min();
            real_runs
                .iter()
                .any(|r| r.fire_time >= last_ahead + chrono::Duration::seconds(3))
        }),
        "node-real did not run the job past node-ahead's last fire time {last_ahead}"
    );
    stop_all(nodes[1..].iter_mut());

    let runs = tick_runs(&refs(&nodes));
    let dups = duplicate_ticks(&runs);
    assert!(dups.is_empty(), "fire times ran twice: {dups:?}");
    let store = check_store(&emu, NAMESPACE, &[job], &refs(&nodes));
    let refused: Vec<DateTime<Utc>> = nodes[1]
        .events_named("sitting_out")
        .iter()
        .filter(|e| e["reason"] == "already_run")
        .map(|e| time(e, "fire_time"))
        .collect();
    assert!(
        !refused.is_empty(),
        "node-real's claims were never refused as already run: the drill did not exercise \
         the skew (node-ahead's last fire time {last_ahead}, node-real's first {first_real:?})"
    );
    // What node-real refused is exactly what node-ahead had run from node-real's first fire
    // time on, and from there every second ran once, on one node or the other.
    let first_real = first_real.unwrap();
    let last_real = tick_runs(&[&nodes[1]])
        .iter()
        .map(|r| r.fire_time)
        .max()
        .unwrap();
    let ahead_ran: BTreeSet<DateTime<Utc>> = tick_runs(&[&nodes[0]])
        .iter()
        .map(|r| r.fire_time)
        .collect();
    let refused_set: BTreeSet<DateTime<Utc>> = refused.iter().copied().collect();
    let expected: BTreeSet<DateTime<Utc>> = ahead_ran
        .iter()
        .copied()
        .filter(|t| *t >= first_real)
        .collect();
    assert_eq!(
        refused_set, expected,
        "node-real's refused claims vs node-ahead's runs from {first_real} on"
    );
    let all: BTreeSet<DateTime<Utc>> = runs.iter().map(|r| r.fire_time).collect();
    let mut t = first_real;
    while t <= last_real {
        assert!(all.contains(&t), "{t} ran on neither node");
        t += chrono::Duration::seconds(1);
    }
    let real_ran: BTreeSet<DateTime<Utc>> = tick_runs(&[&nodes[1]])
        .iter()
        .map(|r| r.fire_time)
        .collect();
    report(
        "clock_skew_handover",
        json!({
            "skew_s": 5,
            "already_run_refused": refused.len(),
            "duplicate_runs": dups.len() + store.duplicates,
            "ahead_ran": seconds_text(&ahead_ran),
            "real_refused": seconds_text(&refused_set),
            "real_ran": seconds_text(&real_ran),
            "ticks_checked": store.records,
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Store outage

/// The emulator (on disk) is stopped for 10 s and restarted on the same port. No node exits;
/// every leader stops acting within the renew deadline of its last successful heartbeat (so
/// before its lease could pass to anyone); ticks resume within one lease of the restart; no
/// fire time runs twice.
#[test]
fn store_outage_of_10_seconds_leaders_step_down_and_ticks_resume() {
    const OUTAGE: Duration = Duration::from_secs(10);
    let mut emu = Emulator::start_on_disk();
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["out_a", "out_b", "out_c"];
    let mut body = election_header();
    for j in jobs {
        body.push_str(&every_second(j));
    }
    let cfg = write_config(dir.path(), &body);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::spawn(&emu, &cfg, &format!("node-{i}")))
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let runs = tick_runs(&refs(&nodes));
            jobs.iter()
                .all(|j| runs.iter().filter(|r| r.job == *j).count() >= 3)
        }),
        "the jobs did not each tick three times within 30 s"
    );

    // The outage.
    let outage_start = Instant::now();
    let t_stop = Utc::now();
    // The leaders: who held leases when the store went away.
    let leaders: BTreeSet<String> = nodes
        .iter()
        .filter(|n| !held_jobs(n, Some(t_stop)).is_empty())
        .map(|n| n.id.clone())
        .collect();
    assert!(!leaders.is_empty(), "nobody held a lease before the outage");
    emu.stop();
    let t_down = Utc::now();
    assert!(!emu.is_running());

    // Every leader steps down: lease_lost within the renew deadline (+ the time to notice) of
    // its last successful heartbeat, which started before the emulator was gone.
    let bound = t_down + chrono(RENEW_DEADLINE + NOTICE_SLACK);
    let mut stop_acting_ms = 0;
    let mut after_gone_ms = i64::MIN;
    let mut after_error_ms = i64::MIN;
    for n in nodes.iter().filter(|n| leaders.contains(&n.id)) {
        let lost = n
            .wait_for(Duration::from_secs(6), |e| {
                e["event"] == "lease_lost" && time(e, "ts") > t_stop
            })
            .unwrap_or_else(|| panic!("leader {} logged no lease_lost in the outage", n.id));
        let at = time(&lost, "ts");
        assert!(
            at <= bound,
            "leader {} logged lease_lost at {at}, {} ms after the emulator was gone: later than \
             the renew deadline {RENEW_DEADLINE:?} + {NOTICE_SLACK:?}",
            n.id,
            ms(at - t_down)
        );
        stop_acting_ms = stop_acting_ms.max(ms(at - t_stop));
        after_gone_ms = after_gone_ms.max(ms(at - t_down));
        // From the first failed store call this leader saw: close to its last good heartbeat.
        if let Some(e) = events_after(n, "store_error", t_stop).first() {
            after_error_ms = after_error_ms.max(ms(at - time(e, "ts")));
        }
    }
    let first_error_ms = nodes
        .iter()
        .filter_map(|n| events_after(n, "store_error", t_stop).first().cloned())
        .map(|e| ms(time(&e, "ts") - t_stop))
        .min();

    // The stated outage: 10 s from the stop request, then the same port, the same data.
    assert!(wait_until(OUTAGE + Duration::from_secs(5), || {
        outage_start.elapsed() >= OUTAGE
    }));
    for n in nodes.iter_mut() {
        assert!(n.is_running(), "{} exited during the outage", n.id);
    }
    emu.restart();
    let t_up = Utc::now();

    // Ticks resume within one lease of the store being back.
    let mut first = None;
    wait_until(LEASE + Duration::from_secs(5), || {
        first = tick_runs(&refs(&nodes)).into_iter().find(|r| r.at > t_up);
        first.is_some()
    });
    let first = first.expect("no tick ran within 8 s after the store came back");
    let resume_ms = ms(first.at - t_up);
    assert!(
        resume_ms <= (LEASE + CALL).as_millis() as i64,
        "the first tick after the restart came {resume_ms} ms after it: more than one lease \
         and one store call"
    );
    let mut all_resumed_ms = 0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let runs = tick_runs(&refs(&nodes));
            let after: Vec<&TickRun> = runs.iter().filter(|r| r.at > t_up).collect();
            let done = jobs
                .iter()
                .all(|j| after.iter().filter(|r| r.job == *j).count() >= 3);
            if done {
                all_resumed_ms = jobs
                    .iter()
                    .filter_map(|j| after.iter().find(|r| r.job == *j))
                    .map(|r| ms(r.at - t_up))
                    .max()
                    .unwrap_or(0);
            }
            done
        }),
        "not every job ran three ticks within 15 s after the restart"
    );
    for n in nodes.iter_mut() {
        assert!(n.is_running(), "{} exited after the outage", n.id);
    }
    stop_all(nodes.iter_mut());

    let runs = tick_runs(&refs(&nodes));
    // Nothing ran from the leaders' deadline until the store was back.
    let quiet_from = t_down + chrono(RENEW_DEADLINE + NOTICE_SLACK);
    let during: Vec<&TickRun> = runs
        .iter()
        .filter(|r| r.at > quiet_from && r.at < t_up)
        .collect();
    assert!(during.is_empty(), "ticks ran during the outage: {during:?}");
    let dups = duplicate_ticks(&runs);
    assert!(dups.is_empty(), "fire times ran twice: {dups:?}");
    let store = check_store(&emu, NAMESPACE, &jobs, &refs(&nodes));
    assert_eq!(store.duplicates, 0);
    let lapsed: usize = nodes
        .iter()
        .map(|n| events_after(n, "session_lapsed", t_stop).len())
        .sum();
    report(
        "store_outage",
        json!({
            "outage_ms": ms(t_up - t_stop),
            "emulator_stop_ms": ms(t_down - t_stop),
            "first_store_error_ms": first_error_ms,
            "stop_acting_ms": stop_acting_ms,
            "stop_acting_after_gone_ms": after_gone_ms,
            "stop_acting_after_first_error_ms": after_error_ms,
            "resume_ms": resume_ms,
            "all_jobs_resumed_ms": all_resumed_ms,
            "leaders": leaders.len(),
            "sessions_lapsed": lapsed,
            "duplicate_runs": dups.len() + store.duplicates,
            "lost_answers": store.lost_answers,
            "ticks_checked": store.records,
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Network cut of the leader

/// Node A reaches the emulator through a proxy, B and C directly. A leads the one job; the
/// proxy cuts A off. A stops acting within the renew deadline, another node takes over after
/// the lease, nothing runs twice, and when the network is back A rejoins as a follower.
#[test]
fn network_cut_of_the_leader_fails_over_and_it_rejoins_as_a_follower() {
    const CUT: Duration = Duration::from_secs(6);
    let emu = Emulator::start();
    let proxy = Proxy::start(emu.port);
    let dir = tempfile::tempdir().unwrap();
    let job = "solo";
    let cfg = write_config(dir.path(), &(election_header() + &every_second(job)));

    let a_env = [("DATASTORE_EMULATOR_HOST", proxy.host())];
    let a_env: Vec<(&str, &str)> = a_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Node::spawn_with_env(&emu, &cfg, "node-a", &a_env);
    a.wait_for(Duration::from_secs(20), |e| e["event"] == "lease_acquired")
        .unwrap_or_else(|| panic!("node-a did not acquire the lease"));
    let first_session = a
        .wait_for(Duration::from_secs(1), |e| e["event"] == "session_started")
        .and_then(|e| e["session"].as_str().map(str::to_string))
        .expect("node-a logged session_started");
    let b = Node::spawn(&emu, &cfg, "node-b");
    let c = Node::spawn(&emu, &cfg, "node-c");
    let mut nodes = vec![a, b, c];
    // B and C watch A lead.
    for n in &nodes[1..] {
        n.wait_for(Duration::from_secs(20), |e| {
            e["event"] == "sitting_out" && e["holder"] == "node-a"
        })
        .unwrap_or_else(|| panic!("{} never sat out naming node-a", n.id));
    }
    let ran_before = nodes[0].events_named("tick_run").len();
    let ran = |n: &Node| n.events_named("tick_run").len();
    assert!(
        wait_until(Duration::from_secs(5), || ran(&nodes[0]) >= ran_before + 2),
        "node-a did not run two ticks with B and C watching"
    );
    assert!(
        proxy.open_connections() > 0,
        "node-a is not using the proxy"
    );

    // The cut.
    let cut_at = Instant::now();
    let t_cut = Utc::now();
    proxy.cut();

    let lost = nodes[0]
        .wait_for(Duration::from_secs(8), |e| {
            e["event"] == "lease_lost" && time(e, "ts") > t_cut
        })
        .expect("node-a did not log lease_lost after the cut");
    let cut_to_stop_ms = ms(time(&lost, "ts") - t_cut);
    assert!(
        cut_to_stop_ms <= (RENEW_DEADLINE + NOTICE_SLACK).as_millis() as i64,
        "node-a logged lease_lost {cut_to_stop_ms} ms after the cut: later than the renew \
         deadline {RENEW_DEADLINE:?} + {NOTICE_SLACK:?}"
    );
    let mut first = None;
    wait_until(LEASE * 3, || {
        first = tick_runs(&refs(&nodes))
            .into_iter()
            .find(|r| r.node != "node-a" && r.at > t_cut);
        first.is_some()
    });
    let first = first.expect("no other node ran the job within 9 s of the cut");
    let failover_gap_ms = ms(first.at - t_cut);
    let bound = LEASE + POLL + TICK + CALL;
    assert!(
        failover_gap_ms <= bound.as_millis() as i64,
        "failover after the cut took {failover_gap_ms} ms: more than lease + poll + tick + \
         call = {bound:?}"
    );
    let new_leader = first.node.clone();
    // The stated cut: 6 s, then the network is back.
    let cut_over = || cut_at.elapsed() >= CUT;
    assert!(wait_until(CUT + Duration::from_secs(5), cut_over));
    for n in nodes.iter_mut() {
        assert!(n.is_running(), "{} exited during the cut", n.id);
    }
    let t_restore = Utc::now();
    proxy.restore();

    // A rejoins: a new session, then sitting out under the new holder.
    let session = nodes[0]
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "session_started" && time(e, "ts") > t_restore
        })
        .expect("node-a did not start a new session after the network came back");
    assert_ne!(
        session["session"].as_str(),
        Some(first_session.as_str()),
        "node-a rejoined with its old session"
    );
    let sat = nodes[0]
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "sitting_out" && time(e, "ts") > t_restore
        })
        .expect("node-a did not sit out after rejoining");
    assert_eq!(
        sat["holder"], new_leader,
        "node-a sat out naming another holder: {sat}"
    );
    let rejoin_ms = ms(time(&sat, "ts") - t_restore);
    // Four more ticks: A stays a follower while the new holder lives.
    let before = tick_runs(&refs(&nodes)).len();
    let all_ran = |nodes: &[Node]| tick_runs(&refs(nodes)).len();
    assert!(
        wait_until(Duration::from_secs(10), || all_ran(&nodes) >= before + 4),
        "the cluster did not run four more ticks after node-a rejoined"
    );
    let t_end = Utc::now();
    let retaken: Vec<Value> = events_after(&nodes[0], "lease_acquired", t_cut)
        .into_iter()
        .filter(|e| time(e, "ts") < t_end)
        .collect();
    assert!(
        retaken.is_empty(),
        "node-a took the lease back while {new_leader} was alive: {retaken:?}"
    );
    let sat_after: Vec<Value> = events_after(&nodes[0], "sitting_out", t_restore)
        .into_iter()
        .filter(|e| time(e, "ts") < t_end)
        .collect();
    assert!(
        sat_after.iter().all(|e| e["holder"] == new_leader),
        "node-a's sitting_out lines after rejoining name other holders: {sat_after:?}"
    );
    let stats = proxy.stats();
    stop_all(nodes.iter_mut());

    let runs = tick_runs(&refs(&nodes));
    // A ran nothing from its deadline on (it could not reach the store at all).
    let a_late: Vec<&TickRun> = runs
        .iter()
        .filter(|r| r.node == "node-a" && r.at > t_cut + chrono(RENEW_DEADLINE))
        .collect();
    assert!(
        a_late.is_empty(),
        "node-a ran ticks after its renew deadline: {a_late:?}"
    );
    let taken = nodes
        .iter()
        .flat_map(|n| n.events_named("lease_acquired"))
        .find(|e| e["node"] == new_leader.as_str())
        .expect("the new leader logged lease_acquired");
    assert_eq!(
        taken["previous"], "node-a",
        "the new leader took the lease over from node-a: {taken}"
    );
    let dups = duplicate_ticks(&runs);
    assert!(dups.is_empty(), "fire times ran twice: {dups:?}");
    let store = check_store(&emu, NAMESPACE, &[job], &refs(&nodes));
    assert_eq!(store.duplicates, 0);
    report(
        "network_cut",
        json!({
            "cut_to_stop_ms": cut_to_stop_ms,
            "failover_gap_ms": failover_gap_ms,
            "takeover_from": taken["previous"],
            "duplicate_runs": dups.len() + store.duplicates,
            "lost_answers": store.lost_answers,
            "rejoined": true,
            "rejoin_ms": rejoin_ms,
            "ticks_checked": store.records,
            "proxy_connections": stats.accepted,
            "proxy_blackholed": stats.blackholed,
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Misbehaving jobs

/// Processes whose process group is `pgid` (zombies excluded): (pid, command line).
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse() == Ok(pgid) {
            let cmd = std::fs::read(e.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}

/// Live processes whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if !zombie && cmd.contains(marker) {
            out.push((pid, cmd));
        }
    }
    out
}

/// A field of /proc/PID/status in kB (e.g. VmHWM).
fn proc_status_kb(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// One node, a job every second, and beside it jobs that fail, hang, flood their output and
/// cannot start. Each gets its outcome; the hanging one's whole process group is killed at its
/// timeout; the steady job keeps its second; the node's memory stays bounded.
#[test]
fn job_faults_are_contained_and_the_steady_job_keeps_its_second() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // A marker no other process has: the hanging job's sleeps carry it in their argv.
    let nonce = (std::process::id() as u64 * 7919 + Utc::now().timestamp_subsec_micros() as u64)
        % 1_000_000;
    let marker = format!("29.{nonce:06}");
    // The hang and the flood fire once each (second-of-minute), a few seconds after start.
    let now = Utc::now().timestamp();
    let hang_second = (now + 6).rem_euclid(60);
    let flood_second = (now + 8).rem_euclid(60);
    let body = format!(
        "{header}\n\
         [[job]]\nname = \"steady\"\nschedule = \"* * * * * *\"\nsay = \"steady\"\n\n\
         [[job]]\nname = \"fails\"\nschedule = \"*/3 * * * * *\"\nshell = \"exit 3\"\n\n\
         [[job]]\nname = \"missing\"\nschedule = \"*/4 * * * * *\"\ncommand = [\"/nonexistent/cmd-xyz\"]\n\n\
         [[job]]\nname = \"hangs\"\nschedule = \"{hang_second} * * * * *\"\ntimeout = \"1s\"\n\
         shell = \"echo pgid=$$; sleep {marker} & sleep {marker}; echo never\"\n\n\
         [[job]]\nname = \"floods\"\nschedule = \"{flood_second} * * * * *\"\ntimeout = \"30s\"\n\
         shell = \"head -c 20000000 /dev/zero | tr '\\\\0' x | fold -w 1000\"\n",
        header = election_header(),
    );
    let cfg = write_config(dir.path(), &body);
    let mut node = Node::spawn(&emu, &cfg, "node-f");

    // The hanging job: its group while it runs, and nothing of it after its timeout.
    let pgid_line = node
        // If a slow start leads the job only after its second, it fires a minute later.
        .wait_for(Duration::from_secs(75), |e| {
            e["event"] == "job_output" && e["job"] == "hangs"
        })
        .expect("the hanging job printed nothing");
    let pgid: i32 = pgid_line["line"]
        .as_str()
        .and_then(|l| l.strip_prefix("pgid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line of the hanging job: {pgid_line}"));
    let members_running = group_members(pgid);
    let marked_running = with_marker(&marker).len();
    let hang_done = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "job_finished" && e["job"] == "hangs"
        })
        .expect("the hanging job did not finish");
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(3), || {
        left = group_members(pgid);
        left.extend(with_marker(&marker));
        left.is_empty()
    });
    assert!(
        gone,
        "processes of the timed-out job remain (group {pgid}): {left:?}"
    );
    assert!(
        marked_running >= 2,
        "while it ran, only {marked_running} processes carried the marker {marker} \
         (group {pgid}: {members_running:?})"
    );

    // The flood finishes, then the steady job runs on for three more seconds.
    let flood_done = node
        .wait_for(Duration::from_secs(100), |e| {
            e["event"] == "job_finished" && e["job"] == "floods"
        })
        .expect("the flooding job did not finish within 100 s");
    let after_flood = time(&flood_done, "ts");
    assert!(
        wait_until(Duration::from_secs(10), || {
            node.events_named("tick_run")
                .iter()
                .filter(|e| e["job"] == "steady" && time(e, "fire_time") > after_flood)
                .count()
                >= 3
        }),
        "the steady job did not run three times after the flood"
    );
    assert!(node
        .wait_for(Duration::from_secs(5), |e| e["event"] == "job_finished"
            && e["job"] == "fails")
        .is_some());
    assert!(node
        .wait_for(Duration::from_secs(5), |e| e["event"] == "job_finished"
            && e["job"] == "missing")
        .is_some());
    assert!(node.is_running(), "the node exited: {}", node.stderr_text());
    let hwm_kb = proc_status_kb(node.pid, "VmHWM").expect("read VmHWM of the node");
    let peak_rss_mb = hwm_kb as f64 / 1024.0;
    stop_all([&mut node]);

    let finished = node.events_named("job_finished");
    let outcomes = |job: &str| -> Vec<(String, Option<i64>)> {
        finished
            .iter()
            .filter(|e| e["job"] == job)
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap_or("").to_string(),
                    e["exit_code"].as_i64(),
                )
            })
            .collect()
    };
    let fails = outcomes("fails");
    assert!(
        fails.iter().all(|o| *o == ("failed".to_string(), Some(3))),
        "fails: {fails:?}"
    );
    let missing = outcomes("missing");
    assert!(
        !missing.is_empty() && missing.iter().all(|o| *o == ("failed".to_string(), None)),
        "missing: {missing:?}"
    );
    let start_error = node
        .events_named("job_error")
        .into_iter()
        .find(|e| e["job"] == "missing")
        .expect("no job_error for the missing command");
    let message = start_error["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("/nonexistent/cmd-xyz") && message.contains("No such file"),
        "unclear start error: {start_error}"
    );
    assert_eq!(hang_done["outcome"], "timeout", "hangs: {hang_done}");
    let hang_ms = hang_done["duration_ms"].as_i64().unwrap_or(0);
    assert!(
        (1000..4000).contains(&hang_ms),
        "the 1 s timeout ended the hanging job after {hang_ms} ms"
    );
    assert_eq!(flood_done["outcome"], "ok", "floods: {flood_done}");
    let flood_lines = node
        .events_named("job_output")
        .iter()
        .filter(|e| e["job"] == "floods")
        .count();
    assert_eq!(
        flood_lines, 20_000,
        "the flood's 20,000 lines of 1,000 bytes"
    );
    let flood_ms = flood_done["duration_ms"].as_i64().unwrap_or(0);
    let flood_started = node
        .events_named("tick_run")
        .into_iter()
        .find(|e| e["job"] == "floods")
        .map(|e| time(&e, "ts"))
        .expect("the flood's tick_run");

    // The steady job: every second from its first run to its last, on time.
    let steady: Vec<TickRun> = tick_runs(&[&node])
        .into_iter()
        .filter(|r| r.job == "steady")
        .collect();
    let fire_times: BTreeSet<DateTime<Utc>> = steady.iter().map(|r| r.fire_time).collect();
    let (first, last) = (*fire_times.first().unwrap(), *fire_times.last().unwrap());
    let max_gap_ms = fire_times
        .iter()
        .zip(fire_times.iter().skip(1))
        .map(|(a, b)| ms(*b - *a))
        .max()
        .unwrap_or(0);
    let missed = (last - first).num_seconds() + 1 - fire_times.len() as i64;
    let max_lateness = steady.iter().map(|r| r.lateness_ms).max().unwrap_or(0);
    // While the flood ran, the steady job kept running each second.
    let during_flood = fire_times
        .iter()
        .filter(|t| **t > flood_started && **t < after_flood)
        .count() as i64;
    let flood_seconds = (after_flood - flood_started).num_seconds();
    assert!(
        during_flood >= flood_seconds - 1,
        "the steady job ran {during_flood} times during the {flood_ms} ms flood"
    );
    assert!(
        max_gap_ms <= 2000,
        "the steady job skipped: a {max_gap_ms} ms gap between fire times run"
    );
    assert!(
        max_lateness < 1000,
        "the steady job ran {max_lateness} ms late"
    );
    assert!(
        peak_rss_mb < 200.0,
        "the node's peak RSS was {peak_rss_mb:.1} MB"
    );
    let dups = duplicate_ticks(&tick_runs(&[&node]));
    assert!(dups.is_empty(), "fire times ran twice: {dups:?}");
    let store = check_store(
        &emu,
        NAMESPACE,
        &["steady", "fails", "missing", "hangs", "floods"],
        &[&node],
    );
    report(
        "job_faults",
        json!({
            "fails": format!("failed, exit {}", fails[0].1.unwrap_or(-1)),
            "missing": format!("failed: {message}"),
            "hangs": format!("timeout after {hang_ms} ms; group emptied"),
            "hang_group_processes": members_running.len(),
            "floods": format!("ok, {flood_lines} lines in {flood_ms} ms"),
            "steady_ticks": fire_times.len(),
            "steady_ticks_during_flood": during_flood,
            "steady_missed": missed,
            "steady_max_gap_ms": max_gap_ms,
            "steady_max_lateness_ms": max_lateness,
            "peak_rss_mb": (peak_rss_mb * 10.0).round() / 10.0,
            "duplicate_runs": dups.len() + store.duplicates,
            "ticks_checked": store.records,
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// 5. DST transitions, on a node whose clock libfaketime sets just before them

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn offset_s(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

fn local(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// chrono-tz agrees that `tz` changes from `before` to `after` seconds east of UTC at `at`.
fn assert_transition(tz: Tz, at: DateTime<Utc>, before: i32, after: i32) {
    let got = (
        offset_s(tz, at - chrono::Duration::seconds(1)),
        offset_s(tz, at),
    );
    assert_eq!(
        got,
        (before, after),
        "{tz}: the UTC offset around {at} (chrono-tz)"
    );
}

/// One zone's node in a DST drill: its own namespace and config, its own fake clock.
struct Zone {
    name: &'static str,
    tz: Tz,
    node: Node,
    _dir: tempfile::TempDir,
}

fn zone_config(name: &str, tz: Tz, fixed: &str) -> String {
    format!(
        "[store]\nnamespace = \"dst-{name}\"\n\n{header}\n\
         [[job]]\nname = \"daily\"\nschedule = \"{fixed}\"\ntimezone = \"{tz}\"\nsay = \"daily\"\n\n\
         [[job]]\nname = \"hourly\"\nschedule = \"0 30 * * * *\"\ntimezone = \"{tz}\"\nsay = \"hourly\"\n\n\
         [[job]]\nname = \"second\"\nschedule = \"* * * * * *\"\ntimezone = \"{tz}\"\nsay = \"tick\"\n",
        header = election_header()
    )
}

/// Fire times of `job` on the zone's node, in order.
fn fired(z: &Zone, job: &str) -> Vec<DateTime<Utc>> {
    let mut v: Vec<DateTime<Utc>> = tick_runs(&[&z.node])
        .into_iter()
        .filter(|r| r.job == job)
        .map(|r| r.fire_time)
        .collect();
    v.sort();
    v
}

/// Wait until the zone's every-second job has run a fire time at or after `t`.
/// `z`'s node started (by its faked clock) within 11 s before `at` and took the `daily` lease
/// before `at`: the scenario is set up before the transition it is about.
fn started_leading_daily_before(z: &Zone, at: DateTime<Utc>) {
    let started = z
        .node
        .wait_for(Duration::from_secs(10), |e| e["event"] == "node_started")
        .unwrap_or_else(|| panic!("{} did not start", z.name));
    let ts = time(&started, "ts");
    assert!(
        ts > at - chrono::Duration::seconds(11) && ts < at,
        "{}: node_started at {ts} by its clock, expected just before {at}: does libfaketime \
         reach the binary?",
        z.name
    );
    let acquired = z
        .node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "lease_acquired" && e["job"] == "daily"
        })
        .unwrap_or_else(|| panic!("{} did not acquire the daily lease", z.name));
    assert!(
        time(&acquired, "ts") < at,
        "{}: the daily lease came only at {} by the node's clock, after {at}",
        z.name,
        acquired["ts"]
    );
}

fn wait_clock_past(z: &Zone, t: DateTime<Utc>, timeout: Duration) {
    assert!(
        wait_until(timeout, || fired(z, "second")
            .last()
            .is_some_and(|l| *l >= t)),
        "{}: the node's every-second job did not reach {t} within {timeout:?} (last: {:?})",
        z.name,
        fired(z, "second").last()
    );
}

/// The every-second job ran every second of [from, to].
fn assert_every_second(z: &Zone, from: DateTime<Utc>, to: DateTime<Utc>) {
    let got: BTreeSet<DateTime<Utc>> = fired(z, "second").into_iter().collect();
    let mut t = from;
    while t <= to {
        assert!(
            got.contains(&t),
            "{}: the every-second job did not run {t} ({})",
            z.name,
            local(z.tz, t)
        );
        t += chrono::Duration::seconds(1);
    }
}

fn fired_text(z: &Zone, job: &str) -> String {
    fired(z, job)
        .iter()
        .map(|t| format!("{} ({})", t.format("%H:%M:%SZ"), local(z.tz, *t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Spring forward: a daily job at a wall-clock time the transition skips fires once, right after
/// the gap (the instant of the transition: 03:00 local), as src/config/schedule.rs specifies. Berlin
/// jumps 02:00 CET -> 03:00 CEST at 2026-03-29 01:00 UTC; New York 02:00 EST -> 03:00 EDT at
/// 2026-03-08 07:00 UTC. Each node's clock starts (libfaketime `@`) 10 s before its transition.
#[test]
fn dst_spring_forward_fires_the_skipped_time_once_after_the_gap() {
    let cases = [
        (
            "berlin",
            chrono_tz::Europe::Berlin,
            "2026-03-29T01:00:00Z",
            3600,
            7200,
        ),
        (
            "new_york",
            chrono_tz::America::New_York,
            "2026-03-08T07:00:00Z",
            -18000,
            -14400,
        ),
    ];
    for (_, tz, at, before, after) in cases {
        assert_transition(tz, utc(at), before, after);
    }
    let lib = libfaketime();
    let emu = Emulator::start();
    let mut zones: Vec<Zone> = cases
        .iter()
        .map(|(name, tz, at, _, _)| {
            let dir = tempfile::tempdir().unwrap();
            let cfg = write_config(dir.path(), &zone_config(name, *tz, "0 30 2 * * *"));
            let start = utc(at) - chrono::Duration::seconds(10);
            let spec = format!("@{}", start.format("%Y-%m-%d %H:%M:%S"));
            let node = spawn_env(&emu, &cfg, name, &faked_env(&lib, ("FAKETIME", &spec)));
            Zone {
                name,
                tz: *tz,
                node,
                _dir: dir,
            }
        })
        .collect();

    for (z, (_, _, at, _, _)) in zones.iter().zip(cases.iter()) {
        let at = utc(at);
        started_leading_daily_before(z, at);
    }
    for (z, (_, _, at, _, _)) in zones.iter().zip(cases.iter()) {
        wait_clock_past(
            z,
            utc(at) + chrono::Duration::seconds(5),
            Duration::from_secs(25),
        );
    }
    stop_all(zones.iter_mut().map(|z| &mut z.node));

    let mut figures = serde_json::Map::new();
    let mut dups = 0;
    let mut checked = 0;
    for (z, (name, _, at, _, _)) in zones.iter().zip(cases.iter()) {
        let at = utc(at);
        // The skipped 02:30 fired once, at the transition: 03:00 local.
        let daily = fired(z, "daily");
        assert_eq!(
            daily,
            vec![at],
            "{name}: the daily 02:30 job fired at [{}], expected once at {at} ({})",
            fired_text(z, "daily"),
            local(z.tz, at)
        );
        assert!(
            local(z.tz, at).contains(" 03:00:00 "),
            "{}",
            local(z.tz, at)
        );
        // The node's clock ran through the gap second by second.
        let one = chrono::Duration::seconds(1);
        assert_every_second(
            z,
            at - chrono::Duration::seconds(5),
            at + chrono::Duration::seconds(5),
        );
        let runs = tick_runs(&[&z.node]);
        dups += duplicate_ticks(&runs).len();
        let store = check_store(
            &emu,
            &format!("dst-{name}"),
            &["daily", "hourly", "second"],
            &[&z.node],
        );
        dups += store.duplicates;
        checked += store.records;
        let lateness = runs
            .iter()
            .find(|r| r.job == "daily")
            .map(|r| r.lateness_ms)
            .unwrap_or(-1);
        figures.insert(
            format!("{name}_transition"),
            json!(format!("{} -> {}", local(z.tz, at - one), local(z.tz, at))),
        );
        figures.insert(
            format!("{name}_daily_0230_fired"),
            json!(fired_text(z, "daily")),
        );
        figures.insert(format!("{name}_daily_lateness_ms"), json!(lateness));
        figures.insert(
            format!("{name}_seconds_run"),
            json!(fired(z, "second").len()),
        );
    }
    assert_eq!(dups, 0, "fire times ran twice");
    figures.insert("duplicate_runs".into(), json!(dups));
    figures.insert("ticks_checked".into(), json!(checked));
    report("dst_spring_forward", Value::Object(figures));
}

/// Points a node's fake clock (a `FAKETIME_TIMESTAMP_FILE`) at `target` now: an offset in whole
/// seconds from the real clock, written atomically (the node re-reads the file on every call).
fn set_fake_clock(file: &Path, target: DateTime<Utc>) {
    let offset = (target - Utc::now()).num_seconds();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset:+}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Fall back: a daily job at a wall-clock time that occurs twice fires once, at the first
/// occurrence; an hourly job at minute 30 fires at both (it keeps its real-time cadence), as
/// src/config/schedule.rs specifies. Berlin repeats 02:00-02:59 (CEST, then CET from 2026-10-25 01:00
/// UTC); New York repeats 01:00-01:59 (EDT, then EST from 2026-11-01 06:00 UTC). One node per
/// zone, its clock read from a libfaketime timestamp file: it starts 10 s before the first
/// occurrence, and after it the test moves the clock on by an hour, to 8 s before the second
/// occurrence, in the same process.
#[test]
fn dst_fall_back_fires_a_repeated_time_once() {
    // (zone, tz, transition, offsets before/after, the daily job's wall-clock time, its first
    // occurrence)
    let cases = [
        (
            "berlin",
            chrono_tz::Europe::Berlin,
            "2026-10-25T01:00:00Z",
            7200,
            3600,
            "0 30 2 * * *",
            "2026-10-25T00:30:00Z",
        ),
        (
            "new_york",
            chrono_tz::America::New_York,
            "2026-11-01T06:00:00Z",
            -14400,
            -18000,
            "0 30 1 * * *",
            "2026-11-01T05:30:00Z",
        ),
    ];
    let hour = chrono::Duration::hours(1);
    for (_, tz, at, before, after, _, first) in cases {
        assert_transition(tz, utc(at), before, after);
        // The same wall-clock time, an hour apart.
        let (t1, t2) = (utc(first), utc(first) + hour);
        assert_eq!(
            t1.with_timezone(&tz).naive_local(),
            t2.with_timezone(&tz).naive_local()
        );
    }
    let lib = libfaketime();
    let emu = Emulator::start();
    let mut zones: Vec<(Zone, PathBuf)> = cases
        .iter()
        .map(|(name, tz, _, _, _, fixed, first)| {
            let dir = tempfile::tempdir().unwrap();
            let cfg = write_config(dir.path(), &zone_config(name, *tz, fixed));
            let clock = dir.path().join("faketime.rc");
            set_fake_clock(&clock, utc(first) - chrono::Duration::seconds(10));
            let env = faked_env(
                &lib,
                ("FAKETIME_TIMESTAMP_FILE", &clock.display().to_string()),
            );
            let node = spawn_env(&emu, &cfg, name, &env);
            (
                Zone {
                    name,
                    tz: *tz,
                    node,
                    _dir: dir,
                },
                clock,
            )
        })
        .collect();

    // First occurrence.
    for ((z, _), case) in zones.iter().zip(cases.iter()) {
        let t1 = utc(case.6);
        started_leading_daily_before(z, t1);
    }
    for ((z, _), case) in zones.iter().zip(cases.iter()) {
        wait_clock_past(
            z,
            utc(case.6) + chrono::Duration::seconds(3),
            Duration::from_secs(25),
        );
    }
    // An hour on: 8 s before the second occurrence.
    for ((_, clock), case) in zones.iter().zip(cases.iter()) {
        set_fake_clock(clock, utc(case.6) + hour - chrono::Duration::seconds(8));
    }
    for ((z, _), case) in zones.iter().zip(cases.iter()) {
        wait_clock_past(
            z,
            utc(case.6) + hour + chrono::Duration::seconds(3),
            Duration::from_secs(25),
        );
    }
    stop_all(zones.iter_mut().map(|(z, _)| &mut z.node));

    let mut figures = serde_json::Map::new();
    let mut dups = 0;
    let mut checked = 0;
    for ((z, _), case) in zones.iter().zip(cases.iter()) {
        let (name, t1) = (case.0, utc(case.6));
        let t2 = t1 + hour;
        let daily = fired(z, "daily");
        assert_eq!(
            daily,
            vec![t1],
            "{name}: the daily job ({}) fired at [{}], expected once, at {t1} ({}) and not at \
             {t2} ({})",
            case.5,
            fired_text(z, "daily"),
            local(z.tz, t1),
            local(z.tz, t2)
        );
        let hourly = fired(z, "hourly");
        assert_eq!(
            hourly,
            vec![t1, t2],
            "{name}: the hourly job at minute 30 fired at [{}], expected at both {t1} ({}) and \
             {t2} ({})",
            fired_text(z, "hourly"),
            local(z.tz, t1),
            local(z.tz, t2)
        );
        let s = chrono::Duration::seconds;
        // The node starts about 10 s before t1: on a loaded machine it may lead the every-second
        // job only a few seconds before t1, so the first window starts at its first run (which
        // must come by t1). An hour on it is settled: the whole window.
        let first = fired(z, "second").first().copied();
        assert!(
            first.is_some_and(|f| f <= t1),
            "{name}: the every-second job's first run was {first:?}, after {t1}"
        );
        assert_every_second(z, (t1 - s(5)).max(first.unwrap()), t1 + s(3));
        assert_every_second(z, t2 - s(5), t2 + s(3));
        let runs = tick_runs(&[&z.node]);
        dups += duplicate_ticks(&runs).len();
        let store = check_store(
            &emu,
            &format!("dst-{name}"),
            &["daily", "hourly", "second"],
            &[&z.node],
        );
        dups += store.duplicates;
        checked += store.records;
        figures.insert(format!("{name}_daily_fired"), json!(fired_text(z, "daily")));
        figures.insert(
            format!("{name}_daily_not_at"),
            json!(format!("{} ({})", t2.format("%H:%M:%SZ"), local(z.tz, t2))),
        );
        figures.insert(
            format!("{name}_hourly_fired"),
            json!(fired_text(z, "hourly")),
        );
        let lateness = runs
            .iter()
            .filter(|r| r.job != "second")
            .map(|r| r.lateness_ms)
            .max()
            .unwrap_or(-1);
        figures.insert(format!("{name}_max_lateness_ms"), json!(lateness));
    }
    assert_eq!(dups, 0, "fire times ran twice");
    figures.insert("duplicate_runs".into(), json!(dups));
    figures.insert("ticks_checked".into(), json!(checked));
    report("dst_fall_back", Value::Object(figures));
}

// ---------------------------------------------------------------------------------------------
// 8. Chaos: random faults, seeded

/// The kinds of fault the chaos drill draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// kill -9 of a node, restarted 1–2 s later.
    Kill,
    /// SIGSTOP for 1–5 s, then SIGCONT.
    Freeze,
    /// SIGTERM, then restarted once it exited.
    Term,
    /// The emulator stopped for 2–4 s (on disk: it comes back with its data).
    Outage,
    /// One node's connections to the store cut for 2–5 s (its proxy).
    Cut,
    /// A node restarted with its wall clock 30 s behind or ahead.
    Skew,
    /// The shared jobs file rewritten (ch_a's text changed, ch_extra added or removed): every
    /// node reloads, whatever state it is in.
    Reload,
    /// ch_b paused for 2–4 s with `cronlease pause`, then resumed: none of its fire times in
    /// between may run, now or later.
    Pause,
    /// `cronlease trigger ch_c`: it must run once (never twice), whatever strikes next.
    Trigger,
    /// `cronlease backfill ch_d` of the last 20 s: every fire time of the range ends up with a
    /// record, none runs twice.
    Backfill,
}

const FAULTS: [Fault; 10] = [
    Fault::Trigger,
    Fault::Backfill,
    Fault::Kill,
    Fault::Freeze,
    Fault::Term,
    Fault::Outage,
    Fault::Cut,
    Fault::Skew,
    Fault::Reload,
    Fault::Pause,
];

/// `cronlease pause|resume ch_b` against the store directly; true if it exited 0.
fn pause_cli(emu: &impl Target, cfg: &std::path::Path, verb: &str) -> bool {
    cli_ok(emu, cfg, &[verb, "ch_b"]).is_some()
}

/// `cronlease ARGS... --config CFG` against the store directly: its stdout if it exited 0.
fn cli_ok(emu: &impl Target, cfg: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = common::cli(emu, cfg, args);
    (out.code == Some(0)).then_some(out.stdout)
}

/// One node slot of the chaos drill: every process that ran under this id (for their logs),
/// the live one last, and its own proxy to the store (and its own jobs file: on PostgreSQL
/// its url names that proxy).
struct Slot {
    id: String,
    proxy: Proxy,
    cfg: PathBuf,
    runs: Vec<Node>,
    /// Per process in `runs`: how far its wall clock was set off (s), to read its `ts` fields.
    skews: Vec<i64>,
}

impl Slot {
    fn live(&mut self) -> &mut Node {
        self.runs.last_mut().expect("a process")
    }
}

/// The processes of running jobs started by node `id` (found by the `CRONLEASE_NODE` in their
/// environment and the drill's marker on their command line).
fn job_processes_of(id: &str, marker: &str) -> Vec<i32> {
    let want = format!("CRONLEASE_NODE={id}");
    with_marker(marker)
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// N nodes under seeded random faults (kill -9 + restart, SIGSTOP, SIGTERM + restart, a store
/// outage, a network cut, a restart with a skewed clock), one every 2–5 s, then healed and
/// stopped. Checks, from the logs and the store: no fire time ran twice; no run is left
/// `running`; every orphan of a killed node was closed within lease + poll (+ slack); no job
/// process outlived its node by more than about a second; no claimed tick was dropped by its
/// node's own hand-over; every node exits 0 on the final SIGTERM.
///
/// `CRONLEASE_CHAOS_SEED` replays a run (the seed is printed); `CRONLEASE_CHAOS_SECS` sets how
/// long faults are injected (default 30: about 50 s in all; scripts/reliability.sh soaks longer).
#[test]
fn chaos_random_faults_keep_the_run_records_right() {
    chaos(Backend::Datastore(Emulator::start_on_disk()));
}

#[test]
fn chaos_random_faults_keep_the_run_records_right_on_postgres() {
    chaos(Backend::postgres());
}

/// The store down for `down` (the fault's drawn length: a sleep, not a wait for an event),
/// then back on its port with its data.
fn outage(backend: &mut Backend, down: Duration) {
    match backend {
        Backend::Datastore(emu) => {
            emu.stop();
            std::thread::sleep(down);
            common::restart_on_port(emu);
        }
        Backend::Postgres(pg) => {
            pg.stop();
            std::thread::sleep(down);
            common::restart_on_port(pg);
        }
        _ => panic!("the chaos drill runs on Datastore and PostgreSQL"),
    }
}

fn chaos(mut emu: Backend) {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("CRONLEASE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let secs: u64 = std::env::var("CRONLEASE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("chaos: CRONLEASE_CHAOS_SEED={seed} CRONLEASE_CHAOS_SECS={secs}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lib = libfaketime();
    let marker = format!("3.{}{:06}", std::process::id(), seed % 1_000_000);

    let dir = tempfile::tempdir().unwrap();
    let jobs = ["ch_a", "ch_b", "ch_c", "ch_d", "ch_slow"];
    let mut body = election_header();
    // Every record kept for the checks, however long the soak (every second for an hour).
    let store_keys = "history = 4000";
    for j in &jobs[..4] {
        body.push_str(&every_second(j));
    }
    // A job whose runs are going when faults strike: its processes must die with their node,
    // and its records must end (lost, stopped, ok).
    // `sleep 13.NNN` outlives the drill's checks; the 3 s timeout (or its node) ends every
    // run: runs are always in flight, and the next tick is skipped behind them.
    body.push_str(&format!(
        "\n[[job]]\nname = \"ch_slow\"\nschedule = \"*/2 * * * * *\"\n\
         shell = \"sleep 1{marker}\"\ntimeout = \"3s\"\n"
    ));
    // The drill's own jobs file (one-shot commands, straight to the store).
    let cfg = write_config(dir.path(), &(emu.store_table_with(store_keys) + &body));
    // What Fault::Reload writes: ch_a's text flipped, ch_extra toggled.
    let mut reloads = 0usize;
    let variant = |n: usize| {
        let mut b = body.replace("say = \"ch_a tick\"", &format!("say = \"ch_a tick {n}\""));
        if n % 2 == 1 {
            b.push_str(&every_second("ch_extra"));
        }
        b
    };
    // (paused, resumed) instants of every Fault::Pause whose pause went through.
    let mut pauses: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    // The fire times of every trigger of ch_c the store took, and the ranges of every backfill
    // of ch_d it took.
    let mut triggers: Vec<DateTime<Utc>> = Vec::new();
    let mut backfills: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    const NODES: usize = 4;
    let mut slots: Vec<Slot> = (0..NODES)
        .map(|i| {
            let proxy = Proxy::start(emu.upstream_port());
            let id = format!("chaos-{i}");
            let sub = dir.path().join(&id);
            std::fs::create_dir_all(&sub).unwrap();
            let (table, env) = emu.through_proxy(&proxy.host(), store_keys);
            let slot_cfg = write_config(&sub, &(table + &body));
            let node = spawn_env(&emu, &slot_cfg, &id, &env);
            Slot {
                id,
                proxy,
                cfg: slot_cfg,
                runs: vec![node],
                skews: vec![0],
            }
        })
        .collect();
    let spawn = |emu: &Backend, slot: &Slot, skew: Option<i64>| -> Node {
        let (_, mut env) = emu.through_proxy(&slot.proxy.host(), store_keys);
        if let Some(s) = skew {
            env.extend(faked_env(&lib, ("FAKETIME", &format!("{s:+}"))));
        }
        spawn_env(emu, &slot.cfg, &slot.id, &env)
    };
    // Settled: every job ran.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let all: Vec<&Node> = slots.iter().flat_map(|s| s.runs.iter()).collect();
            let runs = tick_runs(&all);
            jobs.iter().all(|j| runs.iter().any(|r| r.job == *j))
        }),
        "the cluster did not settle within 30 s"
    );

    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    // (node id, when killed) of every kill -9, for the orphan and process checks.
    let mut kills: Vec<(String, DateTime<Utc>)> = Vec::new();
    // When each disruptive fault started and ended (its handling, restarts included): an
    // orphan's close may be delayed by the faults that strike after its node died.
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut stray_ms: Vec<i64> = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let i = rng.random_range(0..NODES);
        *faults
            .entry(format!("{fault:?}").to_lowercase())
            .or_default() += 1;
        eprintln!("chaos: {fault:?} on {}", slots[i].id);
        let fault_start = Utc::now();
        match fault {
            Fault::Kill => {
                let t = Utc::now();
                slots[i].live().kill9();
                let _ = slots[i].live().wait_exit(Duration::from_secs(5));
                kills.push((slots[i].id.clone(), t));
                // Its job processes die with it (the watchdog).
                let start = Instant::now();
                let gone = wait_until(Duration::from_millis(1500), || {
                    job_processes_of(&slots[i].id, &marker).is_empty()
                });
                assert!(
                    gone,
                    "seed {seed}: job processes of {} outlived it by 1.5 s: {:?}",
                    slots[i].id,
                    job_processes_of(&slots[i].id, &marker)
                );
                stray_ms.push(start.elapsed().as_millis() as i64);
                std::thread::sleep(Duration::from_millis(rng.random_range(1000..2000)));
                let node = spawn(&emu, &slots[i], None);
                slots[i].runs.push(node);
                slots[i].skews.push(0);
            }
            Fault::Freeze => {
                slots[i].live().stop();
                std::thread::sleep(Duration::from_millis(rng.random_range(1000..5000)));
                slots[i].live().cont();
            }
            Fault::Term => {
                slots[i].live().signal(libc::SIGTERM);
                let status = slots[i]
                    .live()
                    .wait_exit(Duration::from_secs(20))
                    .unwrap_or_else(|| panic!("seed {seed}: {} ignored SIGTERM", slots[i].id));
                let stderr = slots[i].live().stderr_text();
                assert!(
                    status.success(),
                    "seed {seed}: {} exited {status:?} on SIGTERM: {stderr}",
                    slots[i].id,
                );
                let node = spawn(&emu, &slots[i], None);
                slots[i].runs.push(node);
                slots[i].skews.push(0);
            }
            Fault::Outage => {
                let down = Duration::from_millis(rng.random_range(2000..4000));
                outage(&mut emu, down);
            }
            Fault::Cut => {
                slots[i].proxy.cut();
                std::thread::sleep(Duration::from_millis(rng.random_range(2000..5000)));
                slots[i].proxy.restore();
            }
            Fault::Reload => {
                reloads += 1;
                let body = variant(reloads);
                std::fs::write(&cfg, emu.store_table_with(store_keys) + &body).unwrap();
                for slot in &slots {
                    let (table, _) = emu.through_proxy(&slot.proxy.host(), store_keys);
                    std::fs::write(&slot.cfg, table + &body).unwrap();
                }
            }
            Fault::Pause => {
                if pause_cli(&emu, &cfg, "pause") {
                    let paused = Utc::now();
                    // The pause's drawn length (a fault's duration, like Freeze's), not a wait.
                    std::thread::sleep(Duration::from_millis(rng.random_range(2000..4000)));
                    let resuming = Utc::now();
                    // A store that just came back may refuse once: try until it answers.
                    let resumed =
                        wait_until(Duration::from_secs(10), || pause_cli(&emu, &cfg, "resume"));
                    assert!(resumed, "seed {seed}: cannot resume ch_b");
                    pauses.push((paused, resuming));
                }
            }
            Fault::Trigger => {
                if let Some(out) = cli_ok(&emu, &cfg, &["trigger", "ch_c"]) {
                    let fire = out
                        .split("(fire time ")
                        .nth(1)
                        .and_then(|rest| rest.split(')').next())
                        .unwrap_or_else(|| panic!("seed {seed}: no fire time in {out}"));
                    triggers.push(
                        DateTime::parse_from_rfc3339(fire)
                            .unwrap()
                            .with_timezone(&Utc),
                    );
                }
            }
            Fault::Backfill => {
                let to = Utc::now() - chrono::Duration::seconds(1);
                let from = to - chrono::Duration::seconds(20);
                let (f, t) = (from.to_rfc3339(), to.to_rfc3339());
                let args = ["backfill", "ch_d", "--from", f.as_str(), "--to", t.as_str()];
                if cli_ok(&emu, &cfg, &args).is_some_and(|out| out.contains("requested by")) {
                    backfills.push((from, to));
                }
            }
            Fault::Skew => {
                let t = Utc::now();
                slots[i].live().kill9();
                let _ = slots[i].live().wait_exit(Duration::from_secs(5));
                kills.push((slots[i].id.clone(), t));
                let skew = if rng.random_bool(0.5) { 30 } else { -30 };
                let node = spawn(&emu, &slots[i], Some(skew));
                slots[i].runs.push(node);
                slots[i].skews.push(skew);
            }
        }
        if !matches!(
            fault,
            Fault::Reload | Fault::Pause | Fault::Trigger | Fault::Backfill
        ) {
            spans.push((fault_start, Utc::now()));
        }
        // The gap to the next fault (drawn): faults are paced, not waited on.
        std::thread::sleep(Duration::from_millis(rng.random_range(2000..5000)));
    }

    // Healed: wait until no record is `running` for a process that is gone (the last
    // orphans closed), then stop all (which records the rest).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orphans_left = || {
        rt.block_on(async {
            let store = emu.open_store(NAMESPACE).await;
            let (Ok(running), Ok(nodes)) = (store.running_runs().await, store.nodes().await) else {
                return usize::MAX; // the store is still coming back
            };
            running
                .iter()
                .filter(|r| nodes.get(&r.node).is_none_or(|n| n.process != r.process))
                .count()
        })
    };
    let settled = wait_until(LEASE + POLL * 4 + Duration::from_secs(8), || {
        orphans_left() == 0
    });
    assert!(
        settled,
        "seed {seed}: orphans still running: {}",
        orphans_left()
    );
    // Every trigger and backfill was taken up and finished by some leader.
    let requests_left = || {
        rt.block_on(async {
            let store = emu.open_store(NAMESPACE).await;
            let jobs = ["ch_c".to_string(), "ch_d".to_string()];
            match store.leases(&jobs).await {
                Ok(leases) => leases.values().filter(|l| !l.requests.is_empty()).count(),
                Err(_) => usize::MAX,
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), || requests_left() == 0),
        "seed {seed}: requests still pending after the heal: {}",
        requests_left()
    );
    for slot in slots.iter_mut() {
        let running = slot.live().is_running();
        let stderr = slot.live().stderr_text();
        assert!(
            running,
            "seed {seed}: {} died on its own: {stderr}",
            slot.id
        );
    }
    stop_all(slots.iter_mut().map(|s| s.runs.last_mut().unwrap()));
    for slot in &slots {
        assert!(
            job_processes_of(&slot.id, &marker).is_empty(),
            "seed {seed}: job processes of {} outlived the graceful stop",
            slot.id
        );
    }

    let all: Vec<&Node> = slots.iter().flat_map(|s| s.runs.iter()).collect();
    let runs = tick_runs(&all);
    // 1. No fire time ran twice (a recovery is a second start of a lost run by design: none
    //    here, recover is off).
    let dups = duplicate_ticks(&runs);
    assert!(
        dups.is_empty(),
        "seed {seed}: fire times ran twice: {dups:?}"
    );
    // 2. Nothing left running, and the store agrees with the logs.
    // ch_extra comes and goes with Fault::Reload.
    let checked: Vec<&str> = jobs.iter().copied().chain(["ch_extra"]).collect();
    let store = check_store(&emu, NAMESPACE, &checked, &all);
    // 3. Every orphan of a killed node was closed within lease + poll (+ slack for a loaded
    //    machine and a store outage drawn meanwhile).
    let stored: Vec<cronlease::store::RunRecord> = rt.block_on(async {
        let store = emu.open_store(NAMESPACE).await;
        let mut all = Vec::new();
        for job in &checked {
            all.extend(store.runs(job).await.unwrap());
        }
        all
    });
    // run_lost lines with their `ts` moved to the real clock (a skewed node stamps its own).
    let lost: Vec<Value> = slots
        .iter()
        .flat_map(|s| s.runs.iter().zip(&s.skews))
        .flat_map(|(n, skew)| {
            n.events_named("run_lost").into_iter().map(move |mut e| {
                let real = time(&e, "ts") - chrono::Duration::seconds(*skew);
                e["ts"] = json!(real.to_rfc3339());
                e
            })
        })
        .collect();
    let mut close_ms = Vec::new();
    for r in stored.iter().filter(|r| r.outcome == "lost") {
        let closed = lost
            .iter()
            .find(|e| e["job"] == r.job.as_str() && time(e, "fire_time") == r.fire_time)
            .unwrap_or_else(|| panic!("seed {seed}: {r:?} is lost but nobody logged run_lost"));
        let died = kills
            .iter()
            .filter(|(id, t)| *id == r.node && *t <= time(closed, "ts"))
            .map(|(_, t)| *t)
            .max();
        if let Some(died) = died {
            // Less the time other faults struck between the death and the close (a cascade:
            // the next leader frozen, the store down): the bound is about one death.
            let closed_at = time(closed, "ts");
            let other_faults: i64 = spans
                .iter()
                .filter(|(a, b)| !(*a <= died && died <= *b))
                .map(|(a, b)| ms((*b).min(closed_at) - (*a).max(died)).max(0))
                .sum();
            close_ms.push(ms(closed_at - died) - other_faults);
            if ms(closed_at - died) - other_faults > 13_000 {
                eprintln!(
                    "chaos: late close of {}@{} (node {}, died {died}): {closed}",
                    r.job, r.fire_time, r.node
                );
                for s in &slots {
                    for (n, skew) in s.runs.iter().zip(&s.skews) {
                        for e in n.events() {
                            let ev = e["event"].as_str().unwrap_or("");
                            let interesting = (e["job"] == r.job.as_str()
                                && ["lease_acquired", "lease_lost", "lease_released", "run_lost"]
                                    .contains(&ev))
                                || ["node_started", "orphan_scan", "session_lapsed"].contains(&ev);
                            if interesting {
                                eprintln!(
                                    "chaos:   {} skew {skew}: {} {ev} {} {}",
                                    n.id, e["ts"], e["fire_time"], e["msg"]
                                );
                            }
                        }
                    }
                }
                eprintln!("chaos:   kills {kills:?}");
            }
        }
    }
    // For a loaded machine: two cores run four nodes, the emulator and the drill. Other
    // faults that struck after the death are already taken off each close above.
    let outage_slack = Duration::from_secs(10);
    let bound = (LEASE + POLL + outage_slack).as_millis() as i64;
    let worst_close = close_ms.iter().copied().max().unwrap_or(0);
    assert!(
        worst_close <= bound,
        "seed {seed}: an orphan was closed {worst_close} ms after its node died (bound {bound})"
    );
    // 6. Every trigger the store took left exactly one record (run, skipped or lost: never
    //    two, never none); every fire time of a backfilled range has a record. Only what is
    //    newer than the oldest kept record can be checked (a long soak prunes).
    let kept_since = |job: &str| {
        stored
            .iter()
            .filter(|r| r.job == job)
            .map(|r| r.fire_time)
            .min()
    };
    if let Some(oldest) = kept_since("ch_c") {
        for t in triggers.iter().filter(|t| **t >= oldest) {
            let n = stored
                .iter()
                .filter(|r| r.job == "ch_c" && r.fire_time == *t)
                .count();
            assert_eq!(n, 1, "seed {seed}: trigger of ch_c at {t} left {n} records");
        }
    }
    let ch_d = cronlease::config::schedule::Schedule::parse("* * * * * *", "UTC").unwrap();
    let mut unfilled = Vec::new();
    if let Some(oldest) = kept_since("ch_d") {
        for (from, to) in &backfills {
            for t in cronlease::ops::control::fire_times(&ch_d, *from, *to, 100) {
                if t >= oldest && !stored.iter().any(|r| r.job == "ch_d" && r.fire_time == t) {
                    unfilled.push(t);
                }
            }
        }
    }
    assert!(
        unfilled.is_empty(),
        "seed {seed}: fire times of a backfilled range without a record: {unfilled:?}"
    );
    // 5. Nothing of a pause ran (by a node with a true clock): no fire time of ch_b from a
    //    second after the pause went through to the resume, now or by a later catch-up.
    let mut in_pause = Vec::new();
    for (n, skew) in slots.iter().flat_map(|s| s.runs.iter().zip(&s.skews)) {
        if *skew != 0 {
            continue;
        }
        for e in n.events_named("tick_run") {
            let fire = time(&e, "fire_time");
            if e["job"] == "ch_b"
                && pauses
                    .iter()
                    .any(|(p, r)| fire > *p + chrono::Duration::seconds(1) && fire < *r)
            {
                in_pause.push(format!("{}@{fire}", n.id));
            }
        }
    }
    assert!(
        in_pause.is_empty(),
        "seed {seed}: fire times of a pause ran: {in_pause:?} (pauses {pauses:?})"
    );
    // 4. No tick dropped by its node's own hand-over: a `lease_lost` skip right after the
    //    same node released that job for rebalancing.
    let mut dropped = Vec::new();
    for n in &all {
        let released = n.events_named("lease_released");
        for skip in n.events_named("tick_skipped") {
            if skip["reason"] != "lease_lost" {
                continue;
            }
            let fire = time(&skip, "fire_time");
            let own = released.iter().any(|e| {
                e["job"] == skip["job"]
                    && e["reason"] == "rebalance"
                    && time(e, "ts") <= time(&skip, "ts")
                    && time(e, "ts") > fire - chrono::Duration::seconds(2)
            });
            if own {
                dropped.push(format!("{}@{}", skip["job"], fire));
            }
        }
    }
    assert!(
        dropped.is_empty(),
        "seed {seed}: claimed ticks dropped by a hand-over: {dropped:?}"
    );
    let median_close = {
        let mut v = close_ms.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let outcomes: BTreeMap<String, usize> = stored.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.outcome.clone()).or_default() += 1;
        m
    });
    report(
        "chaos",
        json!({
            "seed": seed.to_string(),
            "seconds": secs,
            "faults": faults,
            "faults_total": faults.values().sum::<usize>(),
            "ticks_checked": store.records,
            "duplicate_runs": dups.len() + store.duplicates,
            "runs_left_running": 0,
            "orphans_closed": stored.iter().filter(|r| r.outcome == "lost").count(),
            "orphans_timed": close_ms.len(),
            "orphan_close_max_ms": worst_close,
            "orphan_close_median_ms": median_close,
            "job_processes_gone_max_ms": stray_ms.iter().copied().max().unwrap_or(0),
            "ticks_dropped_by_handover": 0,
            "lost_answers": store.lost_answers,
            "reloads": reloads,
            "pauses": pauses.len(),
            "triggers": triggers.len(),
            "backfills": backfills.len(),
            "outcomes": outcomes,
        }),
    );
}
