//! The `cronlease` binary: parse the command line, set up logs, hand over to the library.
//!
//! Exit codes: 0 on success or a graceful stop, 2 on a bad configuration, 1 on any other error.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cronlease::logging::LogFormat;

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
        #[arg(long, value_name = "N", default_value_t = cronlease::check::NEXT_FIRES,
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
    /// Internal: the job watchdog a node starts (see cronlease::watchdog).
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

fn parse_count(text: &str) -> Result<usize, String> {
    let max = cronlease::check::MAX_FIRES;
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
                out(&cronlease::check::report(&cfg, from, count));
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
        Command::Watchdog => ExitCode::from(cronlease::watchdog::serve()),
        Command::Run {
            config,
            node_id,
            log_format,
            http,
        } => {
            let cfg = match cronlease::config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    err(&format!("error: {e}"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let node = node_id.unwrap_or_else(cronlease::app::random_node_id);
            cronlease::logging::init(log_format, &node);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    err(&format!("error: cannot start the async runtime: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            let options = cronlease::app::RunOptions { node, http };
            match runtime.block_on(cronlease::app::run(cfg, options)) {
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
    let cfg = match cronlease::config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match one_shot_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match runtime.block_on(cronlease::status::fetch(&cfg)) {
        Ok(report) => report,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        match cronlease::status::to_json(&report) {
            Ok(text) => text,
            Err(e) => {
                err(&format!("error: cannot encode the status as JSON: {e}"));
                return ExitCode::FAILURE;
            }
        }
    } else {
        cronlease::status::render(&report)
    };
    // A closed stdout (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// `cronlease pause` / `resume` (`note: None`): one attempt at the store; exit 2 for a bad
/// config or job name, 1 if the store cannot be reached.
fn pause(config: &std::path::Path, jobs: &[String], all: bool, note: Option<String>) -> ExitCode {
    use cronlease::control::{self, ControlError};
    let cfg = match cronlease::config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
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
