//! `cronlease check`: a validated config, described.
use std::fmt::Write as _;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use humantime::format_duration;

use crate::config::context::ExecContext;
use crate::config::schedule::{DaysRule, Schedule};
use crate::config::{Action, Config, Job};

/// How many upcoming fire times `check` lists per job unless `--count` says otherwise.
pub const NEXT_FIRES: usize = 3;
/// The most fire times `--count` may ask for per job.
pub const MAX_FIRES: usize = 10_000;
/// Longer `say` texts and shell scripts are cut to this many characters in the summary.
const MAX_SHOWN_CHARS: usize = 60;

/// The report: every job with its next `count` fire times strictly after `now`.
pub fn report(config: &Config, now: DateTime<Utc>, count: usize) -> String {
    let mut out = String::new();
    let e = &config.election;
    let n = config.jobs.len();
    let _ = writeln!(
        out,
        "{}: {n} {}; lease {}, renew {} (deadline {}), poll {}",
        config.source.display(),
        if n == 1 { "job" } else { "jobs" },
        format_duration(e.lease),
        format_duration(e.renew),
        format_duration(e.renew_deadline()),
        format_duration(e.poll),
    );
    for job in &config.jobs {
        let _ = writeln!(out, "{}", header(job));
        for line in context_lines(&job.context) {
            let _ = writeln!(out, "  {line}");
        }
        for note in schedule_notes(&job.schedule, now) {
            let _ = writeln!(out, "  # {note}");
        }
        let fires = job.schedule.upcoming(now, count);
        if fires.is_empty() {
            let _ = writeln!(out, "  (no upcoming fire times)");
        }
        for t in fires {
            let _ = write!(
                out,
                "  {} ({})",
                t.to_rfc3339_opts(SecondsFormat::Secs, true),
                t.with_timezone(&job.schedule.tz)
                    .format("%Y-%m-%d %H:%M:%S %Z"),
            );
            // With a jitter, when the run starts (the same on every node).
            if job.policy.jitter.is_some() {
                let delay = crate::node::tick::start_delay(job, t);
                let start = t + chrono::Duration::from_std(delay).unwrap_or_default();
                let _ = write!(
                    out,
                    ", starts {} (+{})",
                    start.to_rfc3339_opts(SecondsFormat::Millis, true),
                    format_duration(Duration::from_millis(delay.as_millis() as u64))
                );
            }
            out.push('\n');
        }
    }
    out
}

/// The job's execution context, one line per kind of key (env keys without their values), and
/// a warning for an env file or working directory this host does not have (a run there fails).
fn context_lines(ctx: &ExecContext) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(id) = &ctx.identity {
        lines.push(format!("runs as {}", id.describe()));
    }
    if let Some(dir) = &ctx.working_dir {
        lines.push(format!("working_dir {}", dir.display()));
        if !dir.is_dir() {
            lines.push(format!(
                "! working_dir {} is not a directory on this host: runs here fail",
                dir.display()
            ));
        }
    }
    if !ctx.env.is_empty() {
        let keys: Vec<&str> = ctx.env.iter().map(|(k, _)| k.as_str()).collect();
        lines.push(format!("env {}", keys.join(", ")));
    }
    if let Some(file) = &ctx.env_file {
        lines.push(format!("env_file {} (read at every run)", file.display()));
        if let Err(e) = std::fs::metadata(file) {
            lines.push(format!(
                "! env_file {}: {}: runs here fail until it is there",
                file.display(),
                e.raw_os_error().map_or_else(
                    || e.to_string(),
                    |c| nix::errno::Errno::from_raw(c).desc().to_string()
                )
            ));
        }
    }
    if !ctx.limits.is_empty() {
        lines.push(format!("limits {}", ctx.limits.describe()));
    }
    if let Some(n) = ctx.nice {
        lines.push(format!("nice {n}"));
    }
    lines
}

/// What an operator may not expect from a schedule: how the day fields combine when both
/// restrict the days, and the DST rule when the zone changes its offset.
fn schedule_notes(schedule: &Schedule, now: DateTime<Utc>) -> Vec<&'static str> {
    let mut notes = Vec::new();
    match schedule.days_rule {
        Some(DaysRule::Either) => notes.push(
            "days: day-of-month OR day-of-week (both restricted: Linux cron runs on days \
             matching either)",
        ),
        Some(DaysRule::Both) => notes.push(
            "days: day-of-month AND day-of-week (one starts with *: Linux cron runs on days \
             matching both; Kubernetes CronJob would run on either)",
        ),
        None => {}
    }
    // Two years ahead: zones with DST change twice a year.
    if schedule.offset_changes_within(now, chrono::Duration::days(2 * 366)) {
        notes.push(if schedule.fixed_time {
            "DST: fixed time: a time skipped by spring-forward runs once right after the gap; \
             a repeated time runs once"
        } else {
            "DST: interval (* in second, minute or hour): runs at every real instant that \
             matches, none in a spring-forward gap, both in a repeated hour"
        });
    }
    notes
}

/// `name: "expr" in Zone, action[, timeout T]`
fn header(job: &Job) -> String {
    let mut line = format!(
        "{}: {:?} in {}, {}",
        job.name,
        job.schedule.expr,
        job.schedule.tz.name(),
        action_summary(&job.action)
    );
    if let Some(t) = job.timeout {
        let _ = write!(line, ", timeout {}", format_duration(t));
    }
    if !job.enabled {
        line.push_str(", DISABLED (enabled = false)");
    }
    // Policies, where they differ from the defaults.
    let p = &job.policy;
    let d = crate::config::Policy::default();
    if p.overlap != d.overlap {
        let _ = write!(line, ", overlap {}", p.overlap.as_str());
    }
    if p.retries > 0 {
        let _ = write!(
            line,
            ", retries {} (backoff {})",
            p.retries,
            format_duration(p.retry_backoff)
        );
    }
    if let Some(j) = p.jitter {
        let _ = write!(line, ", jitter {}", format_duration(j));
    }
    if p.catch_up != d.catch_up || p.starting_deadline.is_some() {
        let _ = write!(line, ", catch-up {}", p.catch_up.as_str());
        if let Some(dl) = p.starting_deadline {
            let _ = write!(line, " within {}", format_duration(dl));
        }
    }
    line
}

/// `say "…" x5, pause 1s` / `command ["a", "b"]` / `shell "…"`
pub fn action_summary(action: &Action) -> String {
    match action {
        Action::Say {
            text,
            repeat,
            pause,
        } => {
            let mut s = format!("say {:?} x{repeat}", shorten(text));
            if *repeat > 1 {
                let _ = write!(s, ", pause {}", format_duration(*pause));
            }
            s
        }
        Action::Command { argv } => format!("command {argv:?}"),
        Action::Shell { script } => format!("shell {:?}", shorten(script)),
        Action::Http(h) => format!(
            "http {} {} (expect {}, timeout {})",
            h.method,
            h.shown_url(),
            h.expect.describe(),
            format_duration(h.timeout)
        ),
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_SHOWN_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_SHOWN_CHARS - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[election]
lease = "10s"
renew = "2s"
poll = "1s"

[[job]]
name = "go_preacher"
schedule = "*/10 * * * * *"
timezone = "Europe/Berlin"
say = "Go is the best modern programming language"
repeat = 5
pause = "1s"

[[job]]
name = "backup"
schedule = "0 */5 * * * *"
command = ["/usr/bin/env", "sh", "-c", "echo backing up"]
timeout = "2m"

[[job]]
name = "nightly"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
shell = "echo this is a rather long shell script that goes on and on and on"
"#;

    #[test]
    fn report_lists_jobs_and_next_fire_times() {
        let config = crate::config::parse("jobs.toml", CONFIG).unwrap();
        // The day before Berlin springs forward: the nightly 02:30 runs at 03:00 CEST.
        let now = DateTime::parse_from_rfc3339("2025-03-29T01:29:55Z")
            .unwrap()
            .with_timezone(&Utc);
        let expected = "\
jobs.toml: 3 jobs; lease 10s, renew 2s (deadline 6s), poll 1s
go_preacher: \"*/10 * * * * *\" in Europe/Berlin, say \"Go is the best modern programming language\" x5, pause 1s
  # DST: interval (* in second, minute or hour): runs at every real instant that matches, none in a spring-forward gap, both in a repeated hour
  2025-03-29T01:30:00Z (2025-03-29 02:30:00 CET)
  2025-03-29T01:30:10Z (2025-03-29 02:30:10 CET)
  2025-03-29T01:30:20Z (2025-03-29 02:30:20 CET)
backup: \"0 */5 * * * *\" in UTC, command [\"/usr/bin/env\", \"sh\", \"-c\", \"echo backing up\"], timeout 2m
  2025-03-29T01:30:00Z (2025-03-29 01:30:00 UTC)
  2025-03-29T01:35:00Z (2025-03-29 01:35:00 UTC)
  2025-03-29T01:40:00Z (2025-03-29 01:40:00 UTC)
nightly: \"30 2 * * *\" in Europe/Berlin, shell \"echo this is a rather long shell script that goes on and on…\"
  # DST: fixed time: a time skipped by spring-forward runs once right after the gap; a repeated time runs once
  2025-03-29T01:30:00Z (2025-03-29 02:30:00 CET)
  2025-03-30T01:00:00Z (2025-03-30 03:00:00 CEST)
  2025-03-31T00:30:00Z (2025-03-31 02:30:00 CEST)
";
        assert_eq!(report(&config, now, NEXT_FIRES), expected);
    }

    #[test]
    fn policies_that_differ_from_the_defaults_are_shown() {
        let text = "[[job]]\nname = \"a\"\nschedule = \"0 0 12 * * *\"\nsay = \"hi\"\n\
                    overlap = \"replace\"\nretries = 2\ncatch_up = \"all\"\nstarting_deadline = \"1h\"\n";
        let config = crate::config::parse("j.toml", text).unwrap();
        let out = report(&config, Utc::now(), NEXT_FIRES);
        assert!(
            out.contains(
                "say \"hi\" x1, overlap replace, retries 2 (backoff 1s), catch-up all within 1h"
            ),
            "{out}"
        );
    }

    #[test]
    fn one_job_and_repeat_once() {
        let config = crate::config::parse(
            "j.toml",
            "[[job]]\nname = \"a\"\nschedule = \"0 0 12 * * *\"\nsay = \"hi\"\n",
        )
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = report(&config, now, NEXT_FIRES);
        assert!(
            r.starts_with("j.toml: 1 job; lease 10s, renew 2s (deadline 6s), poll 1s\n"),
            "{r}"
        );
        assert!(
            r.contains("a: \"0 0 12 * * *\" in UTC, say \"hi\" x1\n"),
            "{r}"
        );
        assert_eq!(r.lines().count(), 5);
    }
}
