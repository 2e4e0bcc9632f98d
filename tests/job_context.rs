//! What a job's process runs with (src/config/context.rs, src/node/exec.rs), through the real
//! binary on a real emulator: jobs that fire once a year, run on demand with
//! `cronlease trigger --wait`, and print what they see.
//!
//! - env: `[defaults]` and the job's table merge key by key, the env file comes under `env`,
//!   `${VAR}` reads the node's environment, CRONLEASE_* stay cronlease's; the env file is read
//!   at every run (a rotated value shows at the next run), and a missing or malformed one ends
//!   the run `failed` with the reason, never with a value of the file in any log line; a node
//!   without a `${VAR}` refuses to start (exit 2).
//! - As root: `working_dir`, `user = "nobody"` (uid, HOME, USER, LOGNAME, as cron sets them),
//!   `limits.nofile` and `nice`; a job of `nobody` that times out is ended with its whole
//!   process group; `limits.memory` fails an allocation past it; `limits.cpu` ends a spinning
//!   job as `timeout` (SIGXCPU in the reason); a missing working directory ends the run
//!   `failed` with the reason.
//! - Not root: `check` refuses a job that names another user, with file:line:col.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{cli, runs_newest_first as runs, wait_until, write_config, Emulator, Node};
use cronlease::store::RunRecord;

const HEAD: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n";
/// Once a year: the jobs run only when triggered.
const YEARLY: &str = "schedule = \"0 0 1 1 *\"\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `cronlease trigger JOB --wait`; the new run's record.
fn trigger(emu: &Emulator, cfg: &Path, job: &str) -> RunRecord {
    let before = runs(emu, job).len();
    let out = cli(emu, cfg, &["trigger", job, "--wait", "--timeout", "60s"]);
    assert!(
        out.code.is_some(),
        "trigger {job}: {}\n{}",
        out.stdout,
        out.stderr
    );
    let mut found = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            found = runs(emu, job);
            found.len() > before && found[0].finished_at.is_some()
        }),
        "no finished run of {job}: {found:?}\n{}\n{}",
        out.stdout,
        out.stderr
    );
    found.remove(0)
}

/// The output lines of the node's runs of `job`, in order.
fn lines(node: &Node, job: &str) -> Vec<String> {
    node.events_named("job_output")
        .iter()
        .filter(|e| e["job"] == job)
        .map(|e| e["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn env_layers_and_the_env_file_is_read_at_every_run() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("job.env");
    std::fs::write(&env_file, "# rotated by hand\nC=from-file\nD=from-file-1\n").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{HEAD}[defaults]\nenv = {{ A = \"from-defaults\", B = \"from-defaults\" }}\n\n\
             [[job]]\nname = \"envy\"\n{YEARLY}\
             shell = \"echo A=$A B=$B C=$C D=$D JOB=$CRONLEASE_JOB\"\n\
             env = {{ B = \"from-job\", C = \"${{CTX_TEST_VAR}}-x\" }}\n\
             env_file = \"{}\"\n",
            env_file.display()
        ),
    );
    // A node that lacks the variable refuses to start.
    let mut bare = Node::spawn(&emu, &cfg, "bare");
    let status = bare
        .wait_exit(Duration::from_secs(20))
        .expect("it did not exit");
    assert_eq!(status.code(), Some(2), "{}", bare.stderr_text());
    assert!(
        bare.stderr_text()
            .contains("job \"envy\": env C uses ${CTX_TEST_VAR}"),
        "{}",
        bare.stderr_text()
    );

    let node = Node::spawn_with_env(&emu, &cfg, "n1", &[("CTX_TEST_VAR", "from-node")]);
    assert_eq!(trigger(&emu, &cfg, "envy").outcome, "ok");
    assert_eq!(
        lines(&node, "envy"),
        ["A=from-defaults B=from-job C=from-node-x D=from-file-1 JOB=envy"]
    );

    // Rotated: the next run sees the new value, without a restart.
    std::fs::write(&env_file, "D=from-file-2\n").unwrap();
    assert_eq!(trigger(&emu, &cfg, "envy").outcome, "ok");
    assert_eq!(
        lines(&node, "envy").last().unwrap(),
        "A=from-defaults B=from-job C=from-node-x D=from-file-2 JOB=envy"
    );

    // Malformed: failed, the line named, its value nowhere.
    std::fs::write(&env_file, "D=ok\nthis line holds topsecret-4711\n").unwrap();
    let run = trigger(&emu, &cfg, "envy");
    assert_eq!(run.outcome, "failed");
    let reason = run.reason.unwrap_or_default();
    assert!(reason.contains("line 2: not KEY=value"), "{reason}");
    // Missing: failed, with the reason.
    std::fs::remove_file(&env_file).unwrap();
    let run = trigger(&emu, &cfg, "envy");
    assert_eq!(run.outcome, "failed");
    let reason = run.reason.unwrap_or_default();
    assert!(
        reason.contains("cannot read it: No such file or directory"),
        "{reason}"
    );
    assert!(
        !node.output_text().contains("topsecret-4711"),
        "a value of the env file reached the log"
    );
    let status = cli(&emu, &cfg, &["status", "--json"]);
    assert!(!status.stdout.contains("topsecret"), "{}", status.stdout);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["jobs"][0]["action"], "shell", "{}", status.stdout);
    // check names the keys, never the values, and warns of the missing file.
    let check = cli(&emu, &cfg, &["check"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(check.stdout.contains("  env A, B, C\n"), "{}", check.stdout);
    assert!(
        check.stdout.contains("! env_file") && check.stdout.contains("No such file"),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains("from-job"), "{}", check.stdout);
}

/// A directory `nobody` may enter.
fn open_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for p in [parent, d.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    d
}

#[test]
fn working_dir_user_limits_and_nice_shape_the_process() {
    if !is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let work = open_dir(dir.path(), "work");
    let marker = format!("{}.{}", 30, std::process::id() % 1_000_000);
    // Root's alone: nobody may not start there.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{HEAD}[[job]]\nname = \"who\"\n{YEARLY}\
             shell = \"pwd; id -un; id -u; echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME; ulimit -n; nice; \
             echo SECRET=${{NODE_SECRET:-none}} SHELL=$SHELL\"\n\
             working_dir = \"{work}\"\nuser = \"nobody\"\nlimits = {{ nofile = 64 }}\nnice = 7\n\n\
             [[job]]\nname = \"stuck\"\n{YEARLY}user = \"nobody\"\ntimeout = \"1s\"\n\
             shell = \"sleep {marker} & sleep {marker}\"\n\n\
             [[job]]\nname = \"hog\"\n{YEARLY}limits = {{ memory = \"64MiB\" }}\n\
             shell = \"head -c 300000000 /dev/zero | tail -n 1 > /dev/null\"\n\n\
             [[job]]\nname = \"spin\"\n{YEARLY}limits = {{ cpu = \"1s\" }}\ntimeout = \"60s\"\n\
             shell = \"while :; do :; done\"\n\n\
             [[job]]\nname = \"gone\"\n{YEARLY}working_dir = \"{gone}\"\nshell = \"pwd\"\n\n\
             [[job]]\nname = \"grouped\"\n{YEARLY}user = \"nobody\"\ngroup = \"nogroup\"\n\
             shell = \"id -gn; id -Gn\"\n\n\
             [[job]]\nname = \"locked\"\n{YEARLY}working_dir = \"{locked}\"\nuser = \"nobody\"\n\
             shell = \"pwd\"\n",
            work = work.display(),
            gone = dir.path().join("not-there").display(),
            locked = locked.display(),
        ),
    );
    // The node's own secrets do not reach a job run as another user.
    let mut node = Node::spawn_with_env(&emu, &cfg, "n1", &[("NODE_SECRET", "s3cret")]);

    assert_eq!(trigger(&emu, &cfg, "who").outcome, "ok");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        lines(&node, "who"),
        [
            work.display().to_string(),
            "nobody".to_string(),
            nobody.uid.to_string(),
            format!("HOME={} USER=nobody LOGNAME=nobody", nobody.dir.display()),
            "64".to_string(),
            "7".to_string(),
            "SECRET=none SHELL=/bin/sh".to_string(),
        ]
    );

    // `group` names the primary group; the supplementary ones are the user's own.
    assert_eq!(trigger(&emu, &cfg, "grouped").outcome, "ok");
    assert_eq!(lines(&node, "grouped"), ["nogroup", "nogroup"]);

    // Timed out as nobody: the whole group ends, as for a root job.
    let run = trigger(&emu, &cfg, "stuck");
    assert_eq!(run.outcome, "timeout");
    assert!(
        wait_until(Duration::from_secs(10), || !processes_with(&marker)),
        "sleep {marker} still runs after the timeout"
    );

    let run = trigger(&emu, &cfg, "hog");
    assert_eq!(run.outcome, "failed", "{run:?}");
    assert!(
        lines(&node, "hog")
            .iter()
            .any(|l| l.contains("memory exhausted")),
        "{:?}",
        lines(&node, "hog")
    );

    let run = trigger(&emu, &cfg, "spin");
    assert_eq!(run.outcome, "timeout", "{run:?}");
    let reason = run.reason.unwrap_or_default();
    assert!(reason.contains("SIGXCPU"), "{reason}");

    let run = trigger(&emu, &cfg, "gone");
    assert_eq!(run.outcome, "failed");
    let reason = run.reason.unwrap_or_default();
    assert!(
        reason.contains("working_dir") && reason.contains("No such file or directory"),
        "{reason}"
    );
    let run = trigger(&emu, &cfg, "locked");
    assert_eq!(run.outcome, "failed");
    let reason = run.reason.unwrap_or_default();
    assert!(reason.contains("Permission denied"), "{reason}");
    assert!(node.is_running(), "the node died");
}

/// Whether a live process has `marker` in its command line.
fn processes_with(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmd).contains(marker)
        })
}

#[test]
fn a_node_not_run_as_root_refuses_a_job_of_another_user() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let open = open_dir(dir.path(), "cfg");
    let cfg = open.join("jobs.toml");
    std::fs::write(
        &cfg,
        "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nshell = \"id\"\nuser = \"root\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cronlease"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:5:8: user needs a node run as root",
            cfg.display()
        )),
        "{stderr}"
    );
}

#[test]
fn jitter_delays_each_run_the_same_on_every_node() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{HEAD}[[job]]\nname = \"spread\"\nschedule = \"*/5 * * * * *\"\njitter = \"4s\"\n\
             shell = \"echo $CRONLEASE_FIRE_TIME\"\n"
        ),
    );
    let n1 = Node::spawn(&emu, &cfg, "n1");
    let n2 = Node::spawn(&emu, &cfg, "n2");
    let nodes = [&n1, &n2];
    let runs = || -> Vec<serde_json::Value> {
        nodes
            .iter()
            .flat_map(|n| n.events_named("tick_run"))
            .filter(|e| e["job"] == "spread")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(40), || runs().len() >= 4),
        "{}\n{}",
        n1.output_text(),
        n2.output_text()
    );
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let runs = runs();
    let first = time(&runs[0]["fire_time"]);
    // What `check` says each run's start is, from the first fire time on.
    let at = (first - chrono::Duration::seconds(1)).to_rfc3339();
    let check = cli(&emu, &cfg, &["check", "--at", &at, "--count", "20"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    for run in &runs {
        let fire = time(&run["fire_time"]);
        let delay = run["delay_ms"].as_u64().expect("tick_run has delay_ms");
        assert!(delay <= 4000, "{run}");
        // The fire time itself is the scheduled instant, as is the job's CRONLEASE_FIRE_TIME.
        assert_eq!(fire.timestamp_subsec_millis(), 0, "{run}");
        let started = time(&run["ts"]);
        let after = (started - fire).num_milliseconds();
        assert!(
            after >= delay as i64 && after < delay as i64 + 1500,
            "started {after} ms after its fire time, delay {delay} ms: {run}"
        );
        // check --at shows the same start.
        let start = fire + chrono::Duration::milliseconds(delay as i64);
        let line = format!(
            "{}, starts {}",
            fire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .replace("+00:00", "Z"),
            start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let shown = check
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&line[..20]))
            .unwrap_or_default();
        assert!(
            shown.contains(&format!(
                ", starts {}",
                start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )),
            "check shows {shown:?} for {run}"
        );
    }
    // The follower sat out at the same delayed instant: it computed the same delay.
    let leader = runs[0]["node"].as_str().unwrap().to_string();
    let follower = if leader == "n1" { &n2 } else { &n1 };
    let sat: Vec<serde_json::Value> = follower
        .events_named("sitting_out")
        .into_iter()
        .filter(|e| e["job"] == "spread" && e["holder"] == leader.as_str())
        .collect();
    let mut compared = 0;
    for run in &runs {
        if let Some(s) = sat.iter().find(|s| s["fire_time"] == run["fire_time"]) {
            let d = (time(&s["ts"]) - time(&run["ts"])).num_milliseconds().abs();
            assert!(
                d < 1000,
                "sat out {d} ms away from the leader's start: {s} / {run}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 2, "{sat:?}");
}
