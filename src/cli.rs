//! The command line: every subcommand and flag, in one place, so that the binary, the shell
//! completions and the man pages (`cronlease completions`, `cronlease __man`, both used by
//! scripts/package.sh) come from the same definitions.
//!
//! `--config` of every subcommand: the flag, else `$CRONLEASE_CONFIG`, else `./jobs.toml`, else
//! (on a packaged host, where an operator runs `cronlease status` from anywhere)
//! [`PACKAGED_CONFIG`].
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

use crate::ops::logging::LogFormat;

/// The jobs file of the Debian package's service.
pub const PACKAGED_CONFIG: &str = "/etc/cronlease/jobs.toml";

/// The end of `cronlease --help` and of cronlease(1).
const AFTER_HELP: &str = "\
Exit status: 0 on success or after a graceful stop (SIGTERM, SIGINT); 2 for a bad or missing \
jobs file or bad usage (nothing is started); 1 for any other error.

Files: /etc/cronlease/jobs.toml (the packaged service's jobs and store), \
/etc/default/cronlease (its environment), /var/lib/cronlease (its state directory: the file \
store's default). The jobs file's reference: /usr/share/doc/cronlease/README.md.

Signals to `cronlease run`: SIGHUP re-reads the jobs file (so does a change on disk); SIGTERM \
hands the node's leases over and lets running jobs finish for shutdown_grace; a second one \
kills them.";

/// `-c/--config FILE` (or `$CRONLEASE_CONFIG`) of every subcommand that reads the jobs file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// The jobs file, also from $CRONLEASE_CONFIG [default: ./jobs.toml, else
    /// /etc/cronlease/jobs.toml when only that exists]
    #[arg(short, long, env = "CRONLEASE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file to read.
    pub fn path(&self) -> PathBuf {
        config_path(self.config.clone(), &|p: &Path| p.exists())
    }
}

fn config_path(given: Option<PathBuf>, exists: &dyn Fn(&Path) -> bool) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from("jobs.toml");
        if !exists(&local) && exists(Path::new(PACKAGED_CONFIG)) {
            PathBuf::from(PACKAGED_CONFIG)
        } else {
            local
        }
    })
}

/// The command line without its hidden (internal) subcommands: clap_complete would otherwise
/// offer `__watchdog` to a user's tab key.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let mut public = clap::Command::new("cronlease")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .after_long_help(AFTER_HELP)
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    public
}

/// `cronlease completions SHELL`: the script for `shell`, to `out`. Hidden commands stay out.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut public_command(), "cronlease", out);
}

/// `cronlease __man DIR`: `cronlease.1` and `cronlease-<subcommand>.1` for each visible
/// subcommand, roff, not yet compressed (the package compresses them).
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(public_command(), dir)
}

#[derive(Parser)]
#[command(
    name = "cronlease",
    version,
    about = "A leader-gated distributed cron scheduler",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The HTTP interface of `cronlease run` (README: "Securing the HTTP interface").
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Serve the dashboard, /healthz, /readyz, /status, /metrics and run output on this
    /// address, e.g. 127.0.0.1:9100. No listener without it. An address other than loopback
    /// needs a token (or --http-public-read).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// The tokens: lines `read TOKEN` and `operate TOKEN` (one bare line: an operate token);
    /// else CRONLEASE_HTTP_TOKEN (an operate token). With tokens, every endpoint but health,
    /// readiness and the dashboard's page needs one. Re-read on SIGHUP and when it changes.
    #[arg(long, value_name = "PATH", requires = "http")]
    pub http_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate (PEM, the chain after it); with --http-tls-key.
    /// Re-read on SIGHUP and when it changes.
    #[arg(long, value_name = "FILE", requires_all = ["http", "http_tls_key"])]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["http", "http_tls_cert"])]
    pub http_tls_key: Option<PathBuf>,
    /// Trust this CA (PEM) too when relaying another node's live output over HTTPS.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub http_tls_ca: Option<PathBuf>,
    /// How the other nodes and `cronlease logs --follow` reach this node's --http, published
    /// in its record, e.g. node1.internal:9100 or $(POD_IP):9100 (default: the --http
    /// address). Over TLS, a name its certificate holds.
    #[arg(long, value_name = "HOST:PORT", requires = "http")]
    pub http_advertise: Option<String>,
    /// Serve reads (status, runs, output) without a token, on purpose; writes still need an
    /// operate token.
    #[arg(long, requires = "http")]
    pub http_public_read: bool,
    /// Serve /metrics without a token (for a scraper that cannot send one).
    #[arg(long, requires = "http")]
    pub http_public_metrics: bool,
    /// On a loopback --http: also serve requests whose Host is NAME (repeatable); others are
    /// refused (DNS rebinding).
    #[arg(long = "http-allowed-host", value_name = "NAME", requires = "http")]
    pub http_allowed_hosts: Vec<String>,
}

impl HttpArgs {
    pub fn options(self) -> crate::ops::http_options::HttpOptions {
        crate::ops::http_options::HttpOptions {
            addr: self.http,
            token_file: self.http_token_file,
            tls_cert: self.http_tls_cert,
            tls_key: self.http_tls_key,
            tls_ca: self.http_tls_ca,
            advertise: self.http_advertise,
            access: crate::ops::http_auth::AccessOptions {
                public_read: self.http_public_read,
                public_metrics: self.http_public_metrics,
                allowed_hosts: self.http_allowed_hosts,
            },
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run one node: take part in every job's election and run the ticks of the jobs it leads.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// This node's id (default: a random name).
        #[arg(long)]
        node_id: Option<String>,
        /// Log format: human-readable lines, or one flat JSON object per line.
        #[arg(long, value_enum, default_value = "pretty")]
        log_format: LogFormat,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Validate the jobs file and print each job's next fire times.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// List the fire times after this instant instead of now (RFC 3339, e.g.
        /// 2026-03-29T00:00:00Z or 2026-03-29T01:30:00+01:00).
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// How many fire times to list per job.
        #[arg(long, value_name = "N", default_value_t = crate::ops::check::NEXT_FIRES,
              value_parser = parse_count)]
        count: usize,
    },
    /// Show every job's lease, the registered nodes and each job's last runs, from the store.
    Status {
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Resume paused jobs: they run again from their next fire time.
    Resume {
        /// The jobs to resume.
        jobs: Vec<String>,
        /// Every job of the file.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
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
        /// With --follow: the token to read the node with, from a token file (the first read
        /// token, else the first operate token); else CRONLEASE_HTTP_TOKEN.
        #[arg(long, value_name = "PATH", requires = "follow")]
        http_token_file: Option<PathBuf>,
        /// With --follow: trust this CA (PEM) too when the node serves HTTPS.
        #[arg(long, value_name = "FILE", requires = "follow")]
        http_tls_ca: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a shell completion script, e.g. `cronlease completions bash >
    /// /etc/bash_completion.d/cronlease` (the Debian package installs them).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Internal: the job watchdog a node starts (see cronlease::node::watchdog).
    #[command(name = "__watchdog", hide = true)]
    Watchdog,
    /// Internal: write the man pages (cronlease.1 and one per subcommand) into DIR.
    #[command(name = "__man", hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

pub fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("{e}: expected an RFC 3339 instant such as 2026-03-29T00:59:59Z or 2026-03-29T01:59:59+01:00")
        })
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".into()),
        Err(e) => Err(format!("{e}: expected a duration such as 30s, 10m or 1h")),
    }
}

pub fn parse_last(text: &str) -> Result<usize, String> {
    let max = crate::ops::logs::MAX_LAST;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {max}")),
    }
}

pub fn parse_count(text: &str) -> Result<usize, String> {
    let max = crate::ops::check::MAX_FIRES;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_the_flag_else_local_else_packaged() {
        let nothing = |_: &Path| false;
        let only_packaged = |p: &Path| p == Path::new(PACKAGED_CONFIG);
        let both = |_: &Path| true;
        let given = Some(PathBuf::from("/srv/jobs.toml"));
        assert_eq!(
            config_path(given.clone(), &only_packaged),
            PathBuf::from("/srv/jobs.toml")
        );
        assert_eq!(config_path(None, &nothing), PathBuf::from("jobs.toml"));
        assert_eq!(config_path(None, &both), PathBuf::from("jobs.toml"));
        assert_eq!(
            config_path(None, &only_packaged),
            PathBuf::from(PACKAGED_CONFIG)
        );
    }

    #[test]
    fn the_flag_names_the_config() {
        let cli = Cli::try_parse_from(["cronlease", "check", "-c", "a.toml"]).unwrap();
        let Command::Check { config, .. } = cli.command else {
            panic!("not check")
        };
        assert_eq!(config.path(), PathBuf::from("a.toml"));
    }

    #[test]
    fn completions_name_every_visible_command_and_no_hidden_one() {
        let mut bash = Vec::new();
        completions(clap_complete::Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        for name in [
            "run",
            "check",
            "status",
            "pause",
            "resume",
            "trigger",
            "backfill",
            "logs",
            "completions",
        ] {
            assert!(bash.contains(name), "{name} missing");
        }
        assert!(!bash.contains("__watchdog") && !bash.contains("__man"));
    }

    #[test]
    fn a_man_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        for page in [
            "cronlease.1",
            "cronlease-run.1",
            "cronlease-check.1",
            "cronlease-logs.1",
        ] {
            assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
        }
        assert!(pages.iter().all(|p| !p.contains("__")), "{pages:?}");
        let run = std::fs::read_to_string(dir.path().join("cronlease-run.1")).unwrap();
        assert!(
            run.contains("CRONLEASE_CONFIG"),
            "the env of --config is documented"
        );
        let top = std::fs::read_to_string(dir.path().join("cronlease.1")).unwrap();
        assert!(top.contains("Exit status") && top.contains("/etc/cronlease/jobs.toml"));
    }
}
