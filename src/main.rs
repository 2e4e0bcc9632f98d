//! The `cronlease` binary: parse the command line, set up logs, hand over to the library.
//!
//! Exit codes: 0 on success or a graceful stop, 2 on a bad configuration, 1 on any other error.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cronlease::ops::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "cronlease",
    version,
    about = "A leader-gated distributed cron scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: take part in every job's election and run the ticks of the jobs it leads.
    Run {
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
        /// This node's id (default: a random name).
        #[arg(long)]
        node_id: Option<String>,
        /// Log format: human-readable lines, or one flat JSON object per line.
        #[arg(long, value_enum, default_value = "pretty")]
        log_format: LogFormat,
        /// Serve /healthz, /readyz, /status and /metrics on this address, e.g. 127.0.0.1:9100.
        /// No listener without it.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// A file whose first line is the bearer token that unlocks the HTTP write endpoints
        /// (pause, resume, trigger); else CRONLEASE_HTTP_TOKEN; without either they answer 403.
        #[arg(long, value_name = "PATH")]
        http_token_file: Option<PathBuf>,
    },
    /// Validate the jobs file and print each job's next fire times.
    Check {
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
        /// List the fire times after this instant instead of now (RFC 3339, e.g.
        /// 2026-03-29T00:00:00Z or 2026-03-29T01:30:00+01:00).
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// How many fire times to list per job.
        #[arg(long, value_name = "N", default_value_t = cronlease::ops::check::NEXT_FIRES,
              value_parser = parse_count)]
        count: usize,
    },
    /// Show every job's lease, the registered nodes and each job's last runs, from the store.
    Status {
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
        /// Print one JSON document instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Pause jobs: their fire times are not run (and never caught up) until they are resumed.
    Pause {
        /// The jobs to pause.
        jobs: Vec<String>,
        /// Every job of the file.
        #[arg(long)]
        all: bool,
        /// Why, for `status` and the nodes' logs.
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
    /// Resume paused jobs: they run again from their next fire time.
    Resume {
        /// The jobs to resume.
        jobs: Vec<String>,
        /// Every job of the file.
        #[arg(long)]
        all: bool,
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
    /// Run a job now, once, on its leader (even while paused); with --wait, follow it to its
    /// end and exit 0 if it ended ok, 1 otherwise.
    Trigger {
        /// The job to run.
        job: String,
        /// Wait for the run's outcome and print it.
        #[arg(long)]
        wait: bool,
        /// Drop the request if no node has started it within this time (e.g. 30s, 1h).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// `allow`: run even while a run of the job is going, whatever its overlap policy.
        #[arg(long, value_name = "POLICY", value_parser = ["allow"])]
        overlap: Option<String>,
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
    /// Run the fire times of a past range that no node ran, oldest first, one at a time.
    Backfill {
        /// The job to backfill.
        job: String,
        /// The first instant of the range (RFC 3339, included).
        #[arg(long, value_name = "TIME", value_parser = parse_instant,
              required_unless_present = "cancel")]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// The last instant of the range (RFC 3339, included).
        #[arg(long, value_name = "TIME", value_parser = parse_instant,
              required_unless_present = "cancel")]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// List the fire times it would run, and change nothing.
        #[arg(long, conflicts_with = "cancel")]
        dry_run: bool,
        /// Stop the job's backfill in progress (a run already going finishes).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        cancel: bool,
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
    /// Print what a job's runs printed (their kept output) with a header per run; exit 0 when
    /// the (last) run shown ended ok, 1 otherwise. With --follow, a run in progress live.
    Logs {
        /// The job.
        job: String,
        /// The run of this fire time (RFC 3339); default: the newest run.
        #[arg(value_name = "FIRE_TIME", value_parser = parse_instant, conflicts_with = "last")]
        fire_time: Option<chrono::DateTime<chrono::Utc>>,
        /// The newest N runs, oldest first.
        #[arg(long, value_name = "N", value_parser = parse_last)]
        last: Option<usize>,
        /// A run in progress: stream its output live from its node's --http endpoint until it
        /// ends, then print its outcome.
        #[arg(short, long, conflicts_with = "last")]
        follow: bool,
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
    /// Internal: the job watchdog a node starts (see cronlease::node::watchdog).
    #[command(name = "__watchdog", hide = true)]
    Watchdog,
}

const EXIT_CONFIG: u8 = 2;

fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("{e}: expected an RFC 3339 instant such as 2026-03-29T00:59:59Z or 2026-03-29T01:59:59+01:00")
        })
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".into()),
        Err(e) => Err(format!("{e}: expected a duration such as 30s, 10m or 1h")),
    }
}

fn parse_last(text: &str) -> Result<usize, String> {
    let max = cronlease::ops::logs::MAX_LAST;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {max}")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    let max = cronlease::ops::check::MAX_FIRES;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {max}")),
    }
}

/// Print to stdout; a closed stdout (`cronlease check | head -1`) is not an error worth a
/// panic: what was not read is simply not printed.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// One line to stderr, ignoring a closed stderr (the exit code still says what happened).
fn err(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, at, count } => match cronlease::config::load(&config) {
            Ok(cfg) => {
                let from = at.unwrap_or_else(chrono::Utc::now);
                out(&cronlease::ops::check::report(&cfg, from, count));
                ExitCode::SUCCESS
            }
            Err(e) => {
                err(&format!("error: {e}"));
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Status { config, json } => status(&config, json),
        Command::Pause {
            jobs,
            all,
            note,
            config,
        } => pause(&config, &jobs, all, Some(note)),
        Command::Resume { jobs, all, config } => pause(&config, &jobs, all, None),
        Command::Trigger {
            job,
            wait,
            timeout,
            overlap,
            config,
        } => trigger(
            &config,
            &job,
            cronlease::ops::control::TriggerOptions {
                timeout,
                allow_overlap: overlap.is_some(),
                wait,
            },
        ),
        Command::Backfill {
            job,
            from,
            to,
            dry_run,
            cancel,
            config,
        } => {
            use cronlease::ops::control::BackfillAction;
            let action = match (cancel, from, to) {
                (true, _, _) => BackfillAction::Cancel,
                (false, Some(from), Some(to)) => BackfillAction::Start { from, to, dry_run },
                _ => {
                    err("error: give --from and --to, or --cancel");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            backfill(&config, &job, action)
        }
        Command::Logs {
            job,
            fire_time,
            last,
            follow,
            config,
        } => logs(&config, &job, fire_time, last, follow),
        Command::Watchdog => ExitCode::from(cronlease::node::watchdog::serve()),
        Command::Run {
            config,
            node_id,
            log_format,
            http,
            http_token_file,
        } => {
            let cfg = match cronlease::config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    err(&format!("error: {e}"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            // A webhook header naming a variable this node lacks: a config error, before start.
            if let Err(e) = cronlease::notify::resolve(&cfg.notify, cronlease::notify::environment)
            {
                err(&format!("error: {}: {e}", config.display()));
                return ExitCode::from(EXIT_CONFIG);
            }
            let node = node_id.unwrap_or_else(cronlease::node::app::random_node_id);
            cronlease::ops::logging::init(log_format, &node);
            let token = match cronlease::ops::token::HttpToken::load(
                http_token_file.as_deref(),
                std::env::var("CRONLEASE_HTTP_TOKEN").ok(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    err(&format!("error: {e}"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            // Jobs and notification commands inherit this process's environment: one that
            // prints it must not hand the token to whoever reads its output. Removed while
            // this process has one thread (before the runtime).
            std::env::remove_var("CRONLEASE_HTTP_TOKEN");
            // The same for systemd's variables: a job running `systemd-notify` must not speak
            // for the node (say it is ready, stopping, alive). Read, then removed, here.
            let sd_notify = cronlease::ops::sd_notify::SdNotify::from_env();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    err(&format!("error: cannot start the async runtime: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            let options = cronlease::node::app::RunOptions {
                node,
                http,
                token,
                sd_notify,
            };
            match runtime.block_on(cronlease::node::app::run(cfg, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", "{e:#}");
                    err(&format!("error: {e:#}"));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The jobs file, or exit 2 with its error (`file:line:col`).
fn load_config(config: &std::path::Path) -> Result<cronlease::config::Config, ExitCode> {
    cronlease::config::load(config).map_err(|e| {
        err(&format!("error: {e}"));
        ExitCode::from(EXIT_CONFIG)
    })
}

/// A single-threaded runtime for the one-shot commands (`status`, `pause`, `resume`).
fn one_shot_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            err(&format!("error: cannot start the async runtime: {e}"));
            ExitCode::FAILURE
        })
}

/// `cronlease status`: one attempt at the store, no retries; exit 1 if it cannot be read.
fn status(config: &std::path::Path, json: bool) -> ExitCode {
    use std::io::Write as _;
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match runtime.block_on(cronlease::ops::status::fetch(&cfg)) {
        Ok(report) => report,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        match cronlease::ops::status::to_json(&report) {
            Ok(text) => text,
            Err(e) => {
                err(&format!("error: cannot encode the status as JSON: {e}"));
                return ExitCode::FAILURE;
            }
        }
    } else {
        cronlease::ops::status::render(&report)
    };
    // A closed stdout (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// `cronlease pause` / `resume` (`note: None`): one attempt at the store; exit 2 for a bad
/// config or job name, 1 if the store cannot be reached.
fn pause(config: &std::path::Path, jobs: &[String], all: bool, note: Option<String>) -> ExitCode {
    use cronlease::ops::control::{self, ControlError};
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let jobs = match control::select_jobs(&cfg, jobs, all) {
        Ok(jobs) => jobs,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let pause = note.map(|note| cronlease::store::Pause {
        by: control::who(),
        at: chrono::Utc::now(),
        note,
    });
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(control::set_pause(&cfg, &jobs, pause)) {
        Ok(results) => {
            out(&control::render(&results));
            ExitCode::SUCCESS
        }
        Err(e @ ControlError::Usage(_)) => {
            err(&format!("error: {e}"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            err(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The exit code and message for a control command's error: 2 for usage, 1 otherwise.
fn control_failed(e: cronlease::ops::control::ControlError) -> ExitCode {
    err(&format!("error: {e}"));
    match e {
        cronlease::ops::control::ControlError::Usage(_) => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::FAILURE,
    }
}

/// `cronlease trigger`: exit 0 when stored (or, with `--wait`, when the run ended `ok`), 1 when
/// it ended otherwise, expired, or the store failed, 2 for usage errors.
fn trigger(
    config: &std::path::Path,
    job: &str,
    options: cronlease::ops::control::TriggerOptions,
) -> ExitCode {
    use cronlease::ops::control::{self, TriggerEnd};
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Err(e) = control::select_enabled_job(&cfg, job) {
        return control_failed(e);
    }
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut say = |line: &str| out(&format!("{line}\n"));
    match runtime.block_on(control::trigger(&cfg, job, &options, &mut say)) {
        Ok(TriggerEnd::Queued) => ExitCode::SUCCESS,
        Ok(TriggerEnd::Finished(run)) => {
            out(&format!("{}\n", control::run_line(&run)));
            if run.outcome == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(TriggerEnd::Expired(why)) => {
            err(&format!("error: {why}"));
            ExitCode::FAILURE
        }
        Err(e) => control_failed(e),
    }
}

/// `cronlease backfill`: exit 0 when requested (or listed, or cancelled), 2 for usage errors
/// (a range too long, pruned, or overlapping a backfill in progress), 1 for store errors.
fn backfill(
    config: &std::path::Path,
    job: &str,
    action: cronlease::ops::control::BackfillAction,
) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(cronlease::ops::control::backfill(&cfg, job, &action)) {
        Ok(text) => {
            out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => control_failed(e),
    }
}

/// `cronlease logs`: exit 0 when the (last) run shown ended `ok`, 1 otherwise (or no such run,
/// or a store error, or, with `--follow`, a run not seen to end), 2 for usage errors.
fn logs(
    config: &std::path::Path,
    job: &str,
    fire_time: Option<chrono::DateTime<chrono::Utc>>,
    last: Option<usize>,
    follow: bool,
) -> ExitCode {
    use cronlease::ops::logs::{self, Which};
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if follow {
        let runtime = match one_shot_runtime() {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let mut stdout = std::io::stdout();
        let mut note = |line: &str| err(line);
        let followed = cronlease::ops::follow::follow(&cfg, job, fire_time, &mut stdout, &mut note);
        return match runtime.block_on(followed) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => control_failed(e),
        };
    }
    let which = match fire_time {
        Some(t) => Which::At(t),
        None => Which::Last(last.unwrap_or(1)),
    };
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(logs::fetch(&cfg, job, which)) {
        Ok(runs) => {
            for run in &runs {
                out(&logs::render(run));
            }
            if runs.last().is_some_and(|r| r.outcome == "ok") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => control_failed(e),
    }
}
