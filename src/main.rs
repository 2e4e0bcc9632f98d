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
    },
    /// Validate the jobs file and print each job's next fire times.
    Check {
        /// The jobs file.
        #[arg(short, long, default_value = "jobs.toml")]
        config: PathBuf,
    },
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match cronlease::config::load(&config) {
            Ok(cfg) => {
                print!("{}", cronlease::check::report(&cfg, chrono::Utc::now()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run {
            config,
            node_id,
            log_format,
        } => {
            let cfg = match cronlease::config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let node = node_id.unwrap_or_else(cronlease::app::random_node_id);
            cronlease::logging::init(log_format, &node);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cronlease::app::run(cfg, node)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", "{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
