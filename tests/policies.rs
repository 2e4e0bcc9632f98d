//! Per-job scheduling policies end to end: overlap (skip, replace, allow), retries, and
//! catch-up after a failover. Real `cronlease` processes against a real Datastore emulator,
//! each test on its own emulator; lease 3 s, renew 500 ms, poll 250 ms, as in `cluster.rs`.
//! The logs say what each node did, the store's `Run` records say what was claimed and how it
//! ended; the tests check both.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronlease::store::{RunRecord, Store};
use serde_json::Value;

use common::{http, wait_until, write_config, Emulator, Node};

/// Election and node settings of every test here.
const HEAD: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
                    [node]\nshutdown_grace = \"5s\"\n";
/// How long a node may take to start, lead and run its first tick (the emulator is up).
const FIRST_TICK: Duration = Duration::from_secs(20);

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"));
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The events named `event` of `job`.
fn events(node: &Node, event: &str, job: &str) -> Vec<Value> {
    node.events_named(event)
        .into_iter()
        .filter(|e| e["job"] == job)
        .collect()
}

/// Every `Run` record of `job`, oldest fire time first.
fn store_runs(emu: &Emulator, job: &str) -> Vec<RunRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = emu.store("cronlease").await;
        store.runs(job).await.expect("read the runs")
    })
}

/// One run on one node, from its `tick_run` to its `job_finished` line (`end` is `None` while
/// it runs).
#[derive(Debug, Clone)]
struct Span {
    fire_time: DateTime<Utc>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    outcome: Option<String>,
}

fn spans(node: &Node, job: &str) -> Vec<Span> {
    let finished: BTreeMap<DateTime<Utc>, Value> = events(node, "job_finished", job)
        .into_iter()
        .map(|e| (time(&e, "fire_time"), e))
        .collect();
    let mut out: Vec<Span> = events(node, "tick_run", job)
        .iter()
        .map(|e| {
            let fire_time = time(e, "fire_time");
            let done = finished.get(&fire_time);
            Span {
                fire_time,
                start: time(e, "ts"),
                end: done.map(|d| time(d, "ts")),
                outcome: done.map(|d| d["outcome"].as_str().unwrap().to_string()),
            }
        })
        .collect();
    out.sort_by_key(|s| s.start);
    out
}

/// The number of finished runs of `job` on `node`.
fn finished(node: &Node, job: &str) -> usize {
    events(node, "job_finished", job).len()
}

/// SIGTERM, then wait for a clean exit (the store then holds every final record).
fn stop_gracefully(node: &mut Node) {
    node.signal(libc::SIGTERM);
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

/// Every fire time from the first record to the last has one (each tick was claimed).
fn assert_contiguous(runs: &[RunRecord]) {
    for pair in runs.windows(2) {
        assert_eq!(
            (pair[1].fire_time - pair[0].fire_time).num_seconds(),
            1,
            "a fire time between {} and {} has no record",
            pair[0].fire_time,
            pair[1].fire_time
        );
    }
}

fn one_node(dir: &Path, emu: &Emulator, body: &str, id: &str) -> Node {
    let cfg = write_config(dir, &format!("{HEAD}{body}"));
    Node::spawn(emu, &cfg, id)
}

#[test]
fn overlap_skip_never_runs_two_at_once_and_records_the_skipped_ticks() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // Every second, 2.5 s long: two of every three ticks fall into a running run. The policy
    // comes from [defaults] here.
    let mut node = one_node(
        dir.path(),
        &emu,
        "\n[defaults]\noverlap = \"skip\"\n\n[[job]]\nname = \"slow\"\n\
         schedule = \"* * * * * *\"\nshell = \"echo start; sleep 2.5; echo end\"\n",
        "skip-1",
    );
    assert!(
        wait_until(FIRST_TICK + Duration::from_secs(10), || finished(
            &node, "slow"
        ) >= 3),
        "three runs did not finish"
    );
    stop_gracefully(&mut node);

    // Never two at once: each run starts after the previous one finished.
    let spans = spans(&node, "slow");
    assert!(spans.len() >= 3, "{spans:?}");
    for pair in spans.windows(2) {
        let end = pair[0].end.expect("a run before the last one finished");
        assert!(
            pair[1].start >= end,
            "{:?} started while {:?} still ran",
            pair[1],
            pair[0]
        );
    }
    for s in &spans {
        assert_eq!(s.outcome.as_deref(), Some("ok"), "{s:?}");
    }
    // The job's own output agrees: start/end lines alternate.
    let lines: Vec<String> = events(&node, "job_output", "slow")
        .iter()
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let want = if i % 2 == 0 { "start" } else { "end" };
        assert_eq!(line, want, "output line {i} of {lines:?}");
    }

    // Skipped ticks: logged with the running run's fire time, recorded as `skipped`.
    let skipped = events(&node, "tick_skipped", "slow");
    assert!(skipped.len() >= 2, "only {} skipped ticks", skipped.len());
    let ran: BTreeSet<DateTime<Utc>> = spans.iter().map(|s| s.fire_time).collect();
    for e in &skipped {
        assert_eq!(e["reason"], "overlap", "{e}");
        let running = time(e, "running_fire_time");
        assert!(ran.contains(&running), "{e} names a run that did not run");
        // (Normally older; a caught-up fire time can also meet a newer run.)
        assert_ne!(running, time(e, "fire_time"), "{e}");
    }
    let runs = store_runs(&emu, "slow");
    let skipped_times: BTreeSet<DateTime<Utc>> =
        skipped.iter().map(|e| time(e, "fire_time")).collect();
    for r in &runs {
        if skipped_times.contains(&r.fire_time) {
            assert_eq!(r.outcome, "skipped", "{r:?}");
            assert_eq!(r.attempts, 0, "{r:?}");
            assert!(r.finished_at.is_some(), "{r:?}");
        } else {
            assert!(
                ran.contains(&r.fire_time),
                "{r:?} neither ran nor was skipped"
            );
            assert_eq!((r.outcome.as_str(), r.attempts), ("ok", 1), "{r:?}");
        }
    }
    assert_eq!(
        runs.iter().filter(|r| r.outcome == "skipped").count(),
        skipped.len()
    );
    // The leader kept claiming every tick, run or not.
    assert_contiguous(&runs);
}

/// Whether process `pid` lives: exists and is not a zombie (an orphan's zombie lingers where
/// pid 1 does not reap, as in some containers).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) state ...`; comm may contain spaces and parentheses.
        Ok(stat) => stat.rfind(')').is_some_and(|i| {
            !matches!(
                stat[i + 1..].split_whitespace().next(),
                Some("Z" | "X" | "x")
            )
        }),
        Err(_) => false,
    }
}

#[test]
fn overlap_replace_stops_the_running_run_and_starts_the_new_one() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    // Every second, 30 s long: every tick replaces the previous run. Each run notes the pids
    // of its shell and its sleep.
    let body = format!(
        "\n[[job]]\nname = \"latest\"\nschedule = \"* * * * * *\"\noverlap = \"replace\"\n\
         shell = 'echo start; sleep 30 & echo \"$$ $!\" > \"{}/$CRONLEASE_FIRE_TIME\"; wait'\n",
        pids.display()
    );
    let mut node = one_node(dir.path(), &emu, &body, "replace-1");
    let replaced = |node: &Node| {
        events(node, "job_finished", "latest")
            .iter()
            .filter(|e| e["outcome"] == "replaced")
            .count()
    };
    assert!(
        wait_until(FIRST_TICK + Duration::from_secs(10), || replaced(&node)
            >= 3),
        "three runs were not replaced"
    );
    // A replaced run's processes are gone by the time it is reported.
    for e in events(&node, "job_finished", "latest") {
        let file = pids.join(e["fire_time"].as_str().unwrap());
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            assert!(!alive(pid), "{pid} of the run {e} still lives");
        }
    }
    stop_gracefully(&mut node);

    let spans = spans(&node, "latest");
    assert!(spans.len() >= 4, "{spans:?}");
    // Each run but the last was replaced by the next one, which started after it ended.
    for pair in spans.windows(2) {
        assert_eq!(pair[0].outcome.as_deref(), Some("replaced"), "{pair:?}");
        assert!(pair[1].start >= pair[0].end.unwrap(), "{pair:?}");
        assert!(pair[1].fire_time > pair[0].fire_time, "{pair:?}");
    }
    // The last one was still running at SIGTERM and was killed after the shutdown grace.
    assert_eq!(spans.last().unwrap().outcome.as_deref(), Some("killed"));
    // Each replacing tick named the run it replaced.
    let replacing = events(&node, "job_replacing", "latest");
    for pair in spans.windows(2) {
        assert!(
            replacing
                .iter()
                .any(|e| time(e, "fire_time") == pair[1].fire_time
                    && time(e, "replaced_fire_time") == pair[0].fire_time),
            "no job_replacing of {} by {}",
            pair[0].fire_time,
            pair[1].fire_time
        );
    }
    // Every run started (printed its first line).
    let started: BTreeSet<DateTime<Utc>> = events(&node, "job_output", "latest")
        .iter()
        .filter(|e| e["line"] == "start")
        .map(|e| time(e, "fire_time"))
        .collect();
    for s in &spans {
        assert!(started.contains(&s.fire_time), "{s:?} never started");
    }

    let runs = store_runs(&emu, "latest");
    let by_time: BTreeMap<DateTime<Utc>, &RunRecord> =
        runs.iter().map(|r| (r.fire_time, r)).collect();
    for s in &spans {
        let r = by_time[&s.fire_time];
        assert_eq!(Some(r.outcome.as_str()), s.outcome.as_deref(), "{r:?}");
        assert_eq!(r.exit_code, None, "ended by a signal: {r:?}");
        assert_eq!(r.attempts, 1);
    }
}

#[test]
fn overlap_allow_runs_alongside() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = one_node(
        dir.path(),
        &emu,
        "\n[[job]]\nname = \"wide\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
         shell = \"sleep 2.5\"\n",
        "allow-1",
    );
    assert!(
        wait_until(FIRST_TICK + Duration::from_secs(10), || finished(
            &node, "wide"
        ) >= 3),
        "three runs did not finish"
    );
    stop_gracefully(&mut node);

    let spans = spans(&node, "wide");
    // A run started while the one before it still ran, every time.
    let overlapping = spans
        .windows(2)
        .filter(|p| p[0].end.is_some_and(|end| p[1].start < end))
        .count();
    assert!(
        overlapping >= 2 && overlapping == spans.len() - 1,
        "{overlapping} overlaps in {spans:?}"
    );
    assert!(events(&node, "tick_skipped", "wide").is_empty());
    let runs = store_runs(&emu, "wide");
    assert_eq!(runs.len(), spans.len());
    assert!(runs.iter().all(|r| r.outcome == "ok"), "{runs:?}");
    assert_contiguous(&runs);
}

#[test]
fn retries_rerun_a_failed_attempt_under_the_same_claim() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("counts");
    std::fs::create_dir(&counts).unwrap();
    // `flaky` fails its first two attempts of every fire time and succeeds on the third;
    // `broken` always fails and runs out of retries ([defaults]: 2, 100 ms apart).
    let body = format!(
        "\n[defaults]\nretries = 2\nretry_backoff = \"100ms\"\n\n\
         [[job]]\nname = \"flaky\"\nschedule = \"*/5 * * * * *\"\nretries = 3\n\
         retry_backoff = \"200ms\"\n\
         shell = 'f=\"{}/$CRONLEASE_FIRE_TIME\"; n=$(( $(cat \"$f\" 2>/dev/null || echo 0) + 1 )); \
         echo $n > \"$f\"; echo attempt $n; [ $n -ge 3 ]'\n\n\
         [[job]]\nname = \"broken\"\nschedule = \"*/5 * * * * *\"\nshell = \"exit 4\"\n",
        counts.display()
    );
    let cfg = write_config(dir.path(), &format!("{HEAD}{body}"));
    let (mut node, port) = Node::spawn_with_http(&emu, &cfg, "retry-1", &[]);
    assert!(
        wait_until(FIRST_TICK + Duration::from_secs(5), || {
            finished(&node, "flaky") >= 1 && finished(&node, "broken") >= 1
        }),
        "the jobs did not finish a run"
    );
    let metrics = http(port, "GET", "/metrics", Duration::from_secs(5))
        .expect("GET /metrics")
        .1;

    // flaky: ok on the third attempt, two job_retry events with doubling backoff.
    let done = events(&node, "job_finished", "flaky")[0].clone();
    let fire = done["fire_time"].as_str().unwrap().to_string();
    assert_eq!(done["outcome"], "ok", "{done}");
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    let retries: Vec<Value> = events(&node, "job_retry", "flaky")
        .into_iter()
        .filter(|e| e["fire_time"] == fire.as_str())
        .collect();
    let shape: Vec<(i64, i64, i64, &str)> = retries
        .iter()
        .map(|e| {
            (
                e["attempt"].as_i64().unwrap(),
                e["of"].as_i64().unwrap(),
                e["backoff_ms"].as_i64().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shape, [(2, 4, 200, "failed"), (3, 4, 400, "failed")]);
    assert_eq!(
        std::fs::read_to_string(counts.join(&fire)).unwrap().trim(),
        "3"
    );
    // One claim: one tick_run for the fire time, its output from three attempts.
    let tick_runs = events(&node, "tick_run", "flaky")
        .iter()
        .filter(|e| e["fire_time"] == fire.as_str())
        .count();
    assert_eq!(tick_runs, 1);
    // The retries waited their backoff: attempt 3 printed at least 600 ms after attempt 1.
    let outputs: Vec<Value> = events(&node, "job_output", "flaky")
        .into_iter()
        .filter(|e| e["fire_time"] == fire.as_str())
        .collect();
    let lines: Vec<&str> = outputs
        .iter()
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["attempt 1", "attempt 2", "attempt 3"]);
    let waited = time(&outputs[2], "ts") - time(&outputs[0], "ts");
    assert!(waited >= chrono::Duration::milliseconds(600), "{waited}");

    // broken: [defaults] gives it two retries; the last attempt's outcome is the run's.
    let done = events(&node, "job_finished", "broken")[0].clone();
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["exit_code"], 4, "{done}");
    let broken_fire = done["fire_time"].as_str().unwrap().to_string();
    let shape: Vec<(i64, i64, i64)> = events(&node, "job_retry", "broken")
        .iter()
        .filter(|e| e["fire_time"] == broken_fire.as_str())
        .map(|e| {
            (
                e["attempt"].as_i64().unwrap(),
                e["of"].as_i64().unwrap(),
                e["backoff_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shape, [(2, 3, 100), (3, 3, 200)]);
    for job in ["flaky", "broken"] {
        let sample = format!("cronlease_job_retries_total{{job=\"{job}\"}} ");
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&sample)?.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{metrics}"));
        assert!(value >= 2.0, "{sample}{value}");
    }
    stop_gracefully(&mut node);

    let runs = store_runs(&emu, "flaky");
    let r = runs
        .iter()
        .find(|r| {
            r.fire_time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                == fire
        })
        .expect("the run is recorded");
    assert_eq!(
        (r.outcome.as_str(), r.attempts, r.exit_code),
        ("ok", 3, Some(0))
    );
    let runs = store_runs(&emu, "broken");
    let r = runs
        .iter()
        .find(|r| {
            r.fire_time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                == broken_fire
        })
        .expect("the run is recorded");
    assert_eq!(
        (r.outcome.as_str(), r.attempts, r.exit_code),
        ("failed", 3, Some(4))
    );
}

#[test]
fn catch_up_all_runs_every_missed_fire_time_once_after_a_failover() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{HEAD}\n[defaults]\ncatch_up = \"all\"\nstarting_deadline = \"10s\"\n\n\
             [[job]]\nname = \"steady\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
             shell = \"echo $CRONLEASE_FIRE_TIME\"\n"
        ),
    );
    // The first node leads; the second watches it.
    let first = Node::spawn(&emu, &cfg, "first");
    assert!(
        first
            .wait_for(FIRST_TICK, |e| e["event"] == "tick_run")
            .is_some(),
        "the first node never ran the job"
    );
    let mut second = Node::spawn(&emu, &cfg, "second");
    assert!(
        second
            .wait_for(FIRST_TICK, |e| e["event"] == "sitting_out"
                && e["holder"] == "first")
            .is_some(),
        "the second node never saw the first one lead"
    );
    let before = events(&first, "tick_run", "steady").len();
    assert!(wait_until(Duration::from_secs(5), || events(
        &first, "tick_run", "steady"
    )
    .len()
        >= before + 2));

    // Freeze the leader: its lease expires and the second node takes over.
    first.stop();
    let acquired = second
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "lease_acquired" && e["job"] == "steady"
        })
        .expect("the second node never acquired the lease");
    let acquired_at = time(&acquired, "ts");
    let term = acquired["term"].as_i64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            events(&second, "job_finished", "steady")
                .iter()
                .filter(|e| time(e, "fire_time") > acquired_at)
                .count()
                >= 2
        }),
        "the second node did not go on ticking"
    );
    // Wake the old leader: it is fenced; then end it.
    first.cont();
    assert!(
        first
            .wait_for(Duration::from_secs(5), |e| e["event"] == "lease_lost")
            .is_some(),
        "the woken node did not notice it lost the lease"
    );
    first.kill9();
    stop_gracefully(&mut second);

    // The second node caught up the missed fire times, oldest first, all young enough.
    let caught: Vec<DateTime<Utc>> = events(&second, "catch_up", "steady")
        .iter()
        .map(|e| time(e, "fire_time"))
        .collect();
    eprintln!(
        "lease acquired at {acquired_at} (term {term}); caught up {} fire times: {caught:?}",
        caught.len()
    );
    assert!(caught.len() >= 2, "caught up only {caught:?}");
    assert!(caught.windows(2).all(|p| p[0] < p[1]), "{caught:?}");
    for t in &caught {
        assert!(*t <= acquired_at, "{t} is not a missed fire time");
        assert!(
            acquired_at - *t < chrono::Duration::seconds(10),
            "{t} is older than the starting deadline"
        );
    }

    // No fire time ran twice (logs of both nodes), and every one from the first node's first
    // run to the second node's last has exactly one record: the gap was filled.
    let mut seen = BTreeMap::new();
    for node in [&first, &second] {
        for e in events(node, "tick_run", "steady") {
            if let Some(other) = seen.insert(time(&e, "fire_time"), node.id.clone()) {
                panic!("{} ran on {other} and on {}", e["fire_time"], node.id);
            }
        }
    }
    let runs = store_runs(&emu, "steady");
    let distinct: BTreeSet<DateTime<Utc>> = runs.iter().map(|r| r.fire_time).collect();
    assert_eq!(distinct.len(), runs.len());
    assert_contiguous(&runs);
    let last_first = runs
        .iter()
        .filter(|r| r.node == "first")
        .map(|r| r.fire_time)
        .max()
        .unwrap();
    for r in runs.iter().filter(|r| r.fire_time > last_first) {
        assert_eq!(r.node, "second", "{r:?}");
        assert_eq!(r.term, term, "{r:?}");
        assert_eq!(r.outcome, "ok", "{r:?}");
    }
    // The caught-up fire times ran there, and they are the gap the frozen leader left.
    assert!(caught[0] > last_first, "{caught:?} after {last_first}");
    for t in &caught {
        assert_eq!(seen.get(t).map(String::as_str), Some("second"), "{t}");
    }
}
