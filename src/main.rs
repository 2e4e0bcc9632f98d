//! The `cronlease` binary: parse the command line, set up logs, hand over to the library.
//!
//! Exit codes: 0 on success or a graceful stop, 2 on a bad configuration, 1 on any other error.
use std::process::ExitCode;

use clap::Parser;
use cronlease::cli::{Cli, Command};

const EXIT_CONFIG: u8 = 2;

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
    // Before any thread exists and before the config is parsed (crate::node::heap).
    cronlease::node::heap::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, at, count } => match cronlease::config::load(&config.path()) {
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
        Command::Status { config, json } => status(&config.path(), json),
        Command::Pause {
            jobs,
            all,
            note,
            config,
        } => pause(&config.path(), &jobs, all, Some(note)),
        Command::Resume { jobs, all, config } => pause(&config.path(), &jobs, all, None),
        Command::Trigger {
            job,
            wait,
            timeout,
            overlap,
            config,
        } => trigger(
            &config.path(),
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
            backfill(&config.path(), &job, action)
        }
        Command::Logs {
            job,
            fire_time,
            last,
            follow,
            http_token_file,
            http_tls_ca,
            config,
        } => {
            let follow = match follow.then(|| follow_reader(http_token_file, http_tls_ca)) {
                None => None,
                Some(Ok(reader)) => Some(reader),
                Some(Err(e)) => {
                    err(&format!("error: {e}"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            logs(&config.path(), &job, fire_time, last, follow)
        }
        Command::Watchdog => ExitCode::from(cronlease::node::watchdog::serve()),
        Command::Completions { shell } => {
            cronlease::cli::completions(shell, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match cronlease::cli::man_pages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                err(&format!(
                    "error: cannot write man pages to {}: {e}",
                    dir.display()
                ));
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            node_id,
            log_format,
            http,
        } => {
            let config = config.path();
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
            // Likewise a job's env naming one.
            if let Err(e) = cronlease::config::context::check_environment(
                &cfg.jobs,
                cronlease::notify::environment,
            ) {
                err(&format!("error: {}: {e}", config.display()));
                return ExitCode::from(EXIT_CONFIG);
            }
            let node = node_id.unwrap_or_else(cronlease::node::app::random_node_id);
            cronlease::ops::logging::init(log_format, &node);
            // Every --http* option checked and its files loaded before anything starts.
            let http = match cronlease::ops::http_options::prepare(
                http.options(),
                std::env::var("CRONLEASE_HTTP_TOKEN").ok(),
            ) {
                Ok(h) => h,
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
                sd_notify,
            };
            let code = match runtime.block_on(cronlease::node::app::run(cfg, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", "{e:#}");
                    err(&format!("error: {e:#}"));
                    ExitCode::FAILURE
                }
            };
            // The last lines (`node_stopped`) are still in the log writer's queue.
            cronlease::ops::logging::flush(std::time::Duration::from_secs(5));
            code
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

/// How `logs --follow` reads a node: its token (`--http-token-file`, else
/// `CRONLEASE_HTTP_TOKEN`) and `--http-tls-ca`.
fn follow_reader(
    token_file: Option<std::path::PathBuf>,
    tls_ca: Option<std::path::PathBuf>,
) -> Result<cronlease::ops::follow::Reader, String> {
    let tokens = cronlease::ops::token::Tokens::load(
        token_file.as_deref(),
        std::env::var("CRONLEASE_HTTP_TOKEN").ok(),
    )
    .map_err(|e| e.to_string())?;
    let extra_roots = match tls_ca {
        Some(path) => cronlease::ops::http_tls::extra_roots(&path).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    Ok(cronlease::ops::follow::Reader {
        token: tokens.map(|t| t.for_client()),
        extra_roots,
    })
}

/// `cronlease logs`: exit 0 when the (last) run shown ended `ok`, 1 otherwise (or no such run,
/// or a store error, or, with `--follow`, a run not seen to end), 2 for usage errors.
fn logs(
    config: &std::path::Path,
    job: &str,
    fire_time: Option<chrono::DateTime<chrono::Utc>>,
    last: Option<usize>,
    follow: Option<cronlease::ops::follow::Reader>,
) -> ExitCode {
    use cronlease::ops::logs::{self, Which};
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Some(reader) = follow {
        let runtime = match one_shot_runtime() {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let mut stdout = std::io::stdout();
        let mut note = |line: &str| err(line);
        let followed =
            cronlease::ops::follow::follow(&cfg, job, fire_time, &reader, &mut stdout, &mut note);
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
