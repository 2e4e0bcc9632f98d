//! A run's output kept with its record, with real nodes on a real emulator: cut at the job's
//! `output_limit` with a marker, refreshed while a long run goes, and shown by
//! `cronlease logs` (exit 0 for an ok run, 1 otherwise, 2 for usage errors); a run in
//! progress followed live (`logs --follow`) from its node's `/runs/{job}/{fire_time}/output`.
mod common;

use std::time::Duration;

use common::{cli as cronlease, http, wait_until, write_config, Emulator, Node};

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"chatty\"\nschedule = \"0 0 1 1 *\"\noutput_limit = \"1KiB\"\n\
    shell = \"for i in $(seq 1 300); do echo line $i; done\"\n\n\
    [[job]]\nname = \"quiet\"\nschedule = \"0 0 1 1 *\"\nsay = \"hello\"\n\n\
    [[job]]\nname = \"fail\"\nschedule = \"0 0 1 1 *\"\nshell = \"echo oops >&2; exit 3\"\n\n\
    [[job]]\nname = \"long\"\nschedule = \"0 0 1 1 *\"\noutput_refresh = \"1s\"\n\
    shell = \"echo started; while [ ! -e GO ]; do sleep 0.1; done; echo done\"\n";

#[test]
fn a_runs_output_is_kept_cut_at_its_limit_and_shown_by_logs() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // `long` runs until the test says so (the file `go`).
    let go = dir.path().join("go");
    let cfg = write_config(dir.path(), &CONFIG.replace("GO", &go.display().to_string()));
    let _n1 = Node::spawn(&emu, &cfg, "n1");
    let _n2 = Node::spawn(&emu, &cfg, "n2");
    for job in ["chatty", "quiet"] {
        let out = cronlease(&emu, &cfg, &["trigger", job, "--wait"]);
        assert_eq!(out.code, Some(0), "{job}: {}\n{}", out.stdout, out.stderr);
    }

    // Cut at 1 KiB, with a marker; the tail ends with the last line.
    let out = cronlease(&emu, &cfg, &["logs", "chatty"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("== chatty @ ") && header.contains(": ok, exit code 0"),
        "{header}"
    );
    let marker = lines.next().unwrap();
    assert!(
        marker.starts_with("[... ") && marker.contains("earlier bytes of output not kept"),
        "{marker}"
    );
    let kept: Vec<&str> = lines.collect();
    assert_eq!(kept.last(), Some(&"line 300"));
    let kept_bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
    assert!(kept_bytes <= 1024, "{kept_bytes} bytes kept");
    let total: usize = (1..=300).map(|i| format!("line {i}\n").len()).sum();
    let cut: usize = marker
        .trim_start_matches("[... ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cut + kept_bytes >= total - 12 && cut + kept_bytes <= total,
        "cut {cut} + kept {kept_bytes} vs {total}"
    );

    let out = cronlease(&emu, &cfg, &["logs", "quiet"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.ends_with("==\nhello\n"), "{}", out.stdout);

    // A failed run: its stderr is kept too, and logs exits 1.
    let out = cronlease(&emu, &cfg, &["trigger", "fail", "--wait"]);
    assert_eq!(out.code, Some(1));
    let out = cronlease(&emu, &cfg, &["logs", "fail", "--last", "5"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stdout.contains(": failed, exit code 3") && out.stdout.contains("\noops\n"),
        "{}",
        out.stdout
    );

    // A long run: its tail is in the store while it goes (output_refresh = 1s).
    let out = cronlease(&emu, &cfg, &["trigger", "long"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = cronlease(&emu, &cfg, &["logs", "long"]).stdout;
            seen.contains(": running on n") && seen.contains("\nstarted\n")
        }),
        "the running run's tail was not written while it went: {seen}"
    );
    // Its node serves no HTTP: --follow says so, shows the stored tail, and exits 1 (the run
    // has not ended ok, as far as it can tell).
    let out = cronlease(&emu, &cfg, &["logs", "long", "--follow"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(": running on n") && out.stdout.ends_with("==\nstarted\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("serves no HTTP (start it with --http ADDR"),
        "{}",
        out.stderr
    );
    std::fs::write(&go, "").unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        cronlease(&emu, &cfg, &["logs", "long"])
            .stdout
            .ends_with("started\ndone\n")
    }));

    // Usage errors.
    let out = cronlease(&emu, &cfg, &["logs", "nosuch"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = cronlease(&emu, &cfg, &["logs", "quiet", "--last", "0"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = cronlease(&emu, &cfg, &["logs", "quiet", "--last", "2", "--follow"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = cronlease(&emu, &cfg, &["logs", "quiet", "2020-01-01T00:00:00Z"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("no run at"), "{}", out.stderr);
}

const LIVE: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"slow\"\nschedule = \"0 0 1 1 *\"\n\
    shell = \"for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done\"\n\n\
    [[job]]\nname = \"slowfail\"\nschedule = \"0 0 1 1 *\"\n\
    shell = \"for i in 1 2 3 4 5 6; do echo step $i; sleep 0.5; done; exit 3\"\n";

/// Trigger `job` and wait until its run is going (its record says `running`).
fn start_run(emu: &Emulator, cfg: &std::path::Path, job: &str) {
    let out = cronlease(emu, cfg, &["trigger", job]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = cronlease(emu, cfg, &["logs", job]).stdout;
            seen.contains(": running on web")
        }),
        "{job} did not start: {seen}"
    );
}

#[test]
fn logs_follow_streams_a_run_from_its_node_then_its_outcome() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), LIVE);
    let (node, port) = Node::spawn_with_http(&emu, &cfg, "web", &[]);
    let get = |path: &str| {
        http(port, "GET", path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    assert!(
        wait_until(Duration::from_secs(20), || http(
            port,
            "GET",
            "/readyz",
            Duration::from_secs(2)
        )
        .is_ok_and(|(c, _)| c == 200)),
        "never ready: {}",
        node.stderr_text()
    );

    // Started while the run goes: the header (who runs it), every line once and in order
    // (those before the start from the kept tail, the rest live), then the outcome.
    start_run(&emu, &cfg, "slow");
    let out = cronlease(&emu, &cfg, &["logs", "slow", "--follow"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stderr, "");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}", out.stdout);
    assert!(
        lines[0].starts_with("== slow @ ") && lines[0].contains(": running on web (term "),
        "{}",
        lines[0]
    );
    let expected: Vec<String> = (1..=6).map(|i| format!("line {i}")).collect();
    assert_eq!(lines[1..7], expected, "{}", out.stdout);
    assert!(
        lines[7].contains(": ok, exit code 0, node web, term ")
            && lines[7].ends_with(", 1 attempt, manual by ops@vm =="),
        "{}",
        lines[7]
    );

    // A run that fails: its lines, its outcome, exit 1.
    start_run(&emu, &cfg, "slowfail");
    let out = cronlease(&emu, &cfg, &["logs", "slowfail", "--follow"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}", out.stdout);
    assert!(lines[0].contains(": running on web (term "), "{}", lines[0]);
    let expected: Vec<String> = (1..=6).map(|i| format!("step {i}")).collect();
    assert_eq!(lines[1..7], expected, "{}", out.stdout);
    assert!(
        lines[7].contains(": failed, exit code 3, node web, term "),
        "{}",
        lines[7]
    );

    // An ended run is shown as without --follow.
    let out = cronlease(&emu, &cfg, &["logs", "slow", "--follow"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, cronlease(&emu, &cfg, &["logs", "slow"]).stdout);

    // The endpoint itself: no such run going on this node (ended, or never): 404 and why; a
    // fire time that is neither RFC 3339 nor unix seconds: 400.
    let fire = out.stdout["== slow @ ".len()..].split(": ").next().unwrap();
    let (status, body) = get(&format!("/runs/slow/{fire}/output"));
    assert_eq!(status, 404, "{body}");
    assert!(
        body.starts_with("no run of slow at ") && body.contains(" is going on node web"),
        "{body}"
    );
    assert_eq!(get("/runs/slow/1800000000/output").0, 404);
    assert_eq!(get("/runs/nosuch/1800000000.250/output").0, 404);
    let (status, body) = get("/runs/slow/yesterday/output");
    assert_eq!(status, 400, "{body}");
}

const DYING: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"slow\"\nschedule = \"0 0 1 1 *\"\n\
    shell = \"for i in $(seq 1 40); do echo line $i; sleep 0.5; done\"\n";

#[test]
fn logs_follow_falls_back_to_the_store_when_the_node_dies_mid_run() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), DYING);
    let (web, _port) = Node::spawn_with_http(&emu, &cfg, "web", &[]);
    assert!(
        web.wait_for(Duration::from_secs(20), |e| e["event"] == "lease_acquired")
            .is_some(),
        "web never led: {}",
        web.stderr_text()
    );
    // The next leader, which closes the dead node's run as lost.
    let _spare = Node::spawn(&emu, &cfg, "spare");
    start_run(&emu, &cfg, "slow");
    let args: Vec<String> = ["logs", "slow", "--follow", "--config"]
        .iter()
        .map(|s| s.to_string())
        .chain([cfg.display().to_string()])
        .collect();
    let mut follow = Node::spawn_args("follow", &args, &emu.env());
    assert!(
        wait_until(Duration::from_secs(10), || follow
            .raw_lines()
            .contains(&"line 3".to_string())),
        "not streaming: {}\n{}",
        follow.output_text(),
        follow.stderr_text()
    );
    web.kill9();
    let status = follow.wait_exit(Duration::from_secs(60));
    let (stdout, stderr) = (follow.output_text(), follow.stderr_text());
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("broke off"), "{stderr}");
    // The lines streamed before the death, each once and in order, then the outcome.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains(": running on web (term "), "{stdout}");
    let shown = &lines[1..lines.len() - 1];
    assert!(shown.len() >= 3, "{stdout}");
    for (i, line) in shown.iter().enumerate() {
        assert_eq!(*line, format!("line {}", i + 1), "{stdout}");
    }
    assert!(
        lines
            .last()
            .unwrap()
            .contains(": lost (heartbeat_stopped), node web"),
        "{stdout}"
    );
}
