//! Config errors through the real binary: `cronlease check` and `cronlease run` must both exit
//! with code 2, print `error: FILE:LINE:COL: message` naming the offending line, and start
//! nothing (`run` is given no store environment at all and must still exit at once).
//!
//! Each case is one TOML text; the offending line carries a `# <-` marker, and the expected
//! line number in the table is checked against that marker, so the table cannot drift.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;

/// How long a refusing `run` may take (it must not try to reach any store).
const PROMPT: Duration = Duration::from_secs(10);

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and no store environment; panics if it takes longer than
/// [`PROMPT`] (after killing it).
fn cronlease(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cronlease"))
        .args(args)
        .env_remove("DATASTORE_EMULATOR_HOST")
        .env_remove("DATASTORE_PROJECT_ID")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cronlease");
    let start = Instant::now();
    let exited = common::wait_until(PROMPT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect cronlease output");
    let outcome = Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        exited,
        "`cronlease {}` still running after {:?}; stdout:\n{}\nstderr:\n{}",
        args.join(" "),
        start.elapsed(),
        outcome.stdout,
        outcome.stderr
    );
    outcome
}

/// `check` and `run` on `file`: both exit 2, print nothing on stdout, and print one
/// `error: FILE...` line on stderr, which is returned (for each command).
fn refused(file: &Path) -> Vec<String> {
    let f = file.to_str().unwrap();
    let runs = [
        ("check", cronlease(&["check", "--config", f])),
        (
            "run",
            cronlease(&["run", "--config", f, "--log-format", "json"]),
        ),
    ];
    runs.into_iter()
        .map(|(cmd, o)| {
            assert_eq!(o.code, Some(2), "`{cmd}` exit code; stderr:\n{}", o.stderr);
            assert!(
                !o.stderr.contains("panicked"),
                "`{cmd}` panicked; stderr:\n{}",
                o.stderr
            );
            assert!(
                o.stdout.trim().is_empty(),
                "`{cmd}` printed on stdout:\n{}",
                o.stdout
            );
            let prefix = format!("error: {f}");
            let line = o.stderr.lines().find(|l| l.starts_with(&prefix));
            line.unwrap_or_else(|| panic!("`{cmd}`: no line starting {prefix:?} in:\n{}", o.stderr))
                .to_string()
        })
        .collect()
}

/// One bad config: the line the error must name and a fragment of its message.
struct Case {
    name: &'static str,
    line: usize,
    message: &'static str,
    toml: &'static str,
}

/// A valid job to pad cases with.
macro_rules! job {
    () => {
        "[[job]]\nname = \"ok\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\n"
    };
}

const CASES: &[Case] = &[
    Case {
        name: "a postgres schema that is not a plain name",
        line: 3,
        message: "schema \"Ops-Cron\" must be a plain PostgreSQL name",
        toml: concat!(
            r#"
[store]
url = "postgres://app@db:5432/ops"
schema = "Ops-Cron"  # <-
"#,
            job!()
        ),
    },
    Case {
        name: "a postgres url that does not parse, its password masked",
        line: 2,
        message: "postgres url \"postgres://app:***@db/ops?sslmode=sometimes\" cannot be used",
        toml: concat!(
            r#"
[store]
url = "postgres://app:hunter2@db/ops?sslmode=sometimes"  # <-
"#,
            job!()
        ),
    },
    Case {
        name: "unknown key in a job",
        line: 4,
        message: "unknown field",
        toml: r#"
[[job]]
name = "a"
schedule = "* * * * * *"
colour = "red"  # <-
say = "hi"
"#,
    },
    Case {
        name: "unknown key in [election]",
        line: 3,
        message: "unknown field",
        toml: concat!(
            r#"
[election]
lease = "3s"
leese = "4s"  # <-
"#,
            job!()
        ),
    },
    Case {
        name: "bad cron expression",
        line: 5,
        message: "cron",
        toml: r#"
[election]
lease = "3s"
[[job]]
name = "a"
schedule = "* * * *"  # <-
say = "hi"
"#,
    },
    Case {
        name: "unknown time zone",
        line: 4,
        message: "time zone",
        toml: r#"
[[job]]
name = "a"
schedule = "0 * * * * *"
timezone = "Mars/Olympus_Mons"  # <-
say = "hi"
"#,
    },
    Case {
        name: "duplicate job name (the second one)",
        line: 6,
        message: "duplicate",
        toml: r#"
[[job]]
name = "twin"
schedule = "* * * * * *"
say = "one"
[[job]]
name = "twin"  # <-
schedule = "* * * * * *"
say = "two"
"#,
    },
    Case {
        name: "empty job name",
        line: 2,
        message: "empty",
        toml: r#"
[[job]]
name = ""  # <-
schedule = "* * * * * *"
say = "hi"
"#,
    },
    Case {
        // Renew first, lease second: the lease is the offending value whichever of the two
        // keys an implementation chooses to blame (the one written last, or the lease).
        name: "lease not longer than renew",
        line: 3,
        message: "renew",
        toml: concat!(
            r#"
[election]
renew = "3s"
lease = "3s"  # <-
poll = "250ms"
"#,
            job!()
        ),
    },
    Case {
        name: "unparsable duration",
        line: 5,
        message: "duration",
        toml: r#"
[[job]]
name = "a"
schedule = "* * * * * *"
say = "hi"
pause = "soon"  # <-
"#,
    },
    Case {
        name: "no action",
        line: 2,
        message: "action",
        toml: r#"
[[job]]
name = "idle"  # <-
schedule = "* * * * * *"
timeout = "10s"
"#,
    },
    Case {
        name: "two actions",
        line: 5,
        message: "more than one action",
        toml: r#"
[[job]]
name = "a"
schedule = "* * * * * *"
say = "hi"
shell = "echo hi"  # <-
"#,
    },
    Case {
        name: "not TOML",
        line: 3,
        message: "expected",
        toml: r#"
[[job]]
name = "a"
this is not toml  # <-
"#,
    },
];

/// The case's text without its leading newline, so that line 1 is the first line written.
fn text(case: &Case) -> &'static str {
    case.toml.strip_prefix('\n').unwrap_or(case.toml)
}

#[test]
fn the_table_marks_the_lines_it_expects() {
    for case in CASES {
        let marked: Vec<usize> = text(case)
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("# <-"))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(
            marked,
            vec![case.line],
            "case {:?}: marked lines",
            case.name
        );
    }
}

#[test]
fn bad_configs_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let file = common::write_config(dir.path(), text(case));
        // Catch each case's panic so one report lists every failing case.
        let result = std::panic::catch_unwind(|| {
            for err in refused(&file) {
                let rest = &err[format!("error: {}:", file.display()).len()..];
                let mut parts = rest.splitn(3, ':');
                let line: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let column: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let message = parts.next().unwrap_or("");
                assert!(
                    line == case.line && column >= 1,
                    "expected line {} in {err:?}",
                    case.line
                );
                assert!(
                    message.contains(case.message),
                    "expected {:?} in the message of {err:?}",
                    case.message
                );
            }
        });
        if let Err(e) = result {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    for err in refused(&missing) {
        assert!(
            err.to_lowercase().contains("no such file"),
            "expected 'No such file' in {err:?}"
        );
    }
}

#[test]
fn a_directory_as_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for err in refused(dir.path()) {
        assert!(
            err.to_lowercase().contains("directory"),
            "expected 'directory' in {err:?}"
        );
    }
}

#[test]
fn a_path_through_a_file_exits_2() {
    // A path component is a regular file: the OS says ENOTDIR ("Not a directory").
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_config(dir.path(), job!());
    let through = file.join("jobs.toml");
    for err in refused(&through) {
        assert!(
            err.to_lowercase().contains("not a directory"),
            "expected 'Not a directory' in {err:?}"
        );
    }
}

#[test]
fn an_unreadable_file_exits_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_config(dir.path(), job!());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    // With CAP_DAC_OVERRIDE (root) a mode-000 file is still readable: nothing to test then.
    if std::fs::read(&file).is_ok() {
        eprintln!(
            "SKIPPED an_unreadable_file_exits_2: this process can read a mode-000 file \
             (running as root?), so the binary could too"
        );
        return;
    }
    for err in refused(&file) {
        assert!(
            err.to_lowercase().contains("permission denied"),
            "expected 'Permission denied' in {err:?}"
        );
    }
}

#[test]
fn a_file_over_the_size_limit_exits_2() {
    let limit = cronlease::config::MAX_FILE_BYTES as usize;
    let dir = tempfile::tempdir().unwrap();
    // A valid config padded with a comment: valid but for its size.
    let mut text = String::from(job!());
    text.push('#');
    text.push_str(&"x".repeat(limit - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), limit);
    // Exactly at the limit it is accepted...
    let file = common::write_config(dir.path(), &text);
    let o = cronlease(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(
        o.code,
        Some(0),
        "a file of exactly {limit} bytes; stderr:\n{}",
        o.stderr
    );
    // ... one byte more and it is refused before it is parsed.
    text.insert(text.len() - 1, 'x');
    let file = common::write_config(dir.path(), &text);
    for err in refused(&file) {
        assert!(
            err.contains("larger than 16 MiB"),
            "expected 'larger than 16 MiB' in {err:?}"
        );
    }
}

#[test]
fn check_lists_each_job_with_three_fire_times() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_config(
        dir.path(),
        r#"
[store]
namespace = "cronlease"
[election]
lease = "3s"
renew = "1s"
poll = "250ms"
[node]
shutdown_grace = "5s"

[[job]]
name = "every_second"
schedule = "* * * * * *"
timezone = "UTC"
timeout = "10s"
say = "hello"
repeat = 2
pause = "1s"

[[job]]
name = "berlin_nightly"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
command = ["echo", "hi"]

[[job]]
name = "shell_job"
schedule = "*/10 * * * * *"
shell = "echo hi"
"#,
    );
    let o = cronlease(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "stderr:\n{}", o.stderr);
    for job in ["every_second", "berlin_nightly", "shell_job"] {
        let lines: Vec<&str> = o.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(job))
            .unwrap_or_else(|| panic!("job {job} not listed in:\n{}", o.stdout));
        // The fire times: the lines after the job's own, up to the next job, that start with
        // an RFC 3339 time.
        let fires = lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with(char::is_whitespace))
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
            })
            .count();
        assert_eq!(fires, 3, "fire times of {job} in:\n{}", o.stdout);
    }
}

/// `check --at TIME --count N` lists the fire times after a given instant (no faked clock):
/// the issue's examples around Berlin's 2026 changes, through the real binary.
#[test]
fn check_at_a_given_instant_shows_the_dst_rule() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_config(
        dir.path(),
        r#"
[[job]]
name = "quarter_past_two"
schedule = "15 2 * * *"
timezone = "Europe/Berlin"
say = "x"

[[job]]
name = "two_and_half_past"
schedule = "0,30 2 * * *"
timezone = "Europe/Berlin"
say = "x"

[[job]]
name = "odd_saturdays"
schedule = "0 16 */2 * sat"
say = "x"
"#,
    );
    let f = file.to_str().unwrap();
    // One second before the gap: the day's 02:15 runs at 03:00 CEST, right after it.
    let o = cronlease(&[
        "check",
        "-c",
        f,
        "--at",
        "2026-03-29T00:59:59Z",
        "--count",
        "2",
    ]);
    assert_eq!(o.code, Some(0), "stderr:\n{}", o.stderr);
    let want = "\
quarter_past_two: \"15 2 * * *\" in Europe/Berlin, say \"x\" x1
  # DST: fixed time: a time skipped by spring-forward runs once right after the gap; a repeated time runs once
  2026-03-29T01:00:00Z (2026-03-29 03:00:00 CEST)
  2026-03-30T00:15:00Z (2026-03-30 02:15:00 CEST)
two_and_half_past: \"0,30 2 * * *\" in Europe/Berlin, say \"x\" x1
  # DST: fixed time: a time skipped by spring-forward runs once right after the gap; a repeated time runs once
  2026-03-29T01:00:00Z (2026-03-29 03:00:00 CEST)
  2026-03-30T00:00:00Z (2026-03-30 02:00:00 CEST)
odd_saturdays: \"0 16 */2 * sat\" in UTC, say \"x\" x1
  # days: day-of-month AND day-of-week (one starts with *: Linux cron runs on days matching both; Kubernetes CronJob would run on either)
  2026-04-11T16:00:00Z (2026-04-11 16:00:00 UTC)
  2026-04-25T16:00:00Z (2026-04-25 16:00:00 UTC)
";
    assert!(o.stdout.ends_with(want), "got:\n{}", o.stdout);
    // An offset in --at is honoured; the count is bounded; a bad instant is a usage error.
    let o = cronlease(&["check", "-c", f, "--at", "2026-03-29T01:59:59+01:00"]);
    assert!(
        o.stdout
            .contains("  2026-03-29T01:00:00Z (2026-03-29 03:00:00 CEST)"),
        "{}",
        o.stdout
    );
    for bad in [
        ["--at", "tomorrow"],
        ["--count", "0"],
        ["--count", "100001"],
    ] {
        let o = cronlease(&["check", "-c", f, bad[0], bad[1]]);
        assert_eq!(o.code, Some(2), "{bad:?}: {}", o.stderr);
        assert!(
            o.stdout.is_empty() && o.stderr.contains(bad[0]),
            "{bad:?}: {}",
            o.stderr
        );
    }
}

/// Crontab idioms users bring from Linux are accepted; what stays refused says what to write.
#[test]
fn crontab_idioms_are_accepted_and_refusals_say_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for expr in ["@midnight", "0 0 * * 7L", "0 18 LW * *", "0 0 * * *,0"] {
        let file = common::write_config(
            dir.path(),
            &format!("[[job]]\nname = \"a\"\nschedule = \"{expr}\"\nsay = \"x\"\n"),
        );
        let o = cronlease(&["check", "-c", file.to_str().unwrap()]);
        assert_eq!(o.code, Some(0), "{expr}: {}", o.stderr);
    }
    let file = common::write_config(
        dir.path(),
        "[[job]]\nname = \"a\"\nschedule = \"0 9 * * FRI-MON\"\nsay = \"x\"\n",
    );
    let o = cronlease(&["check", "-c", file.to_str().unwrap()]);
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr.contains(":3:12: ")
            && o.stderr.contains("the range FRI-MON wraps around")
            && o.stderr.contains("write FRI-SAT,SUN-MON"),
        "{}",
        o.stderr
    );
}
