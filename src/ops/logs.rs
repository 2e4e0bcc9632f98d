//! `cronlease logs JOB [FIRE_TIME | --last N]`: what a run printed (its kept output tail) with
//! a header line: fire time, outcome, exit code, node, term, duration, attempts. Read from the
//! store: it works whichever node ran the job, and after that node is gone. With `--follow`,
//! a run in progress is streamed from its node ([`crate::ops::follow`]).
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::node::output::cut_marker;
use crate::ops::control::{select_jobs, timed, ControlError};
use crate::ops::status::{describe_config, STORE_TIMEOUT};
use crate::store::{self, RunRecord, Store, StoreError};

/// The most runs `--last` shows.
pub const MAX_LAST: usize = 100;

/// Which runs to show.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// The run of this fire time.
    At(DateTime<Utc>),
    /// The newest N runs, oldest first.
    Last(usize),
}

/// The runs asked for, oldest first; a usage error if the job is not in the file, a refusal
/// if there is no such run.
pub async fn fetch(
    config: &Config,
    job: &str,
    which: Which,
) -> Result<Vec<RunRecord>, ControlError> {
    let store = open(config, job).await?;
    runs(&*store, job, which).await
}

/// The store, once `job` is known to be one of the file's (a usage error if not).
pub(crate) async fn open(config: &Config, job: &str) -> Result<Arc<dyn Store>, ControlError> {
    select_jobs(config, &[job.to_string()], false)?;
    store::connect(&config.store, STORE_TIMEOUT)
        .await
        .map_err(|source| ControlError::Connect {
            store: describe_config(&config.store),
            source,
        })
}

/// [`fetch`] on a connected store.
pub(crate) async fn runs(
    store: &dyn Store,
    job: &str,
    which: Which,
) -> Result<Vec<RunRecord>, ControlError> {
    let fail = |source: StoreError| ControlError::Store {
        store: store.describe(),
        source,
    };
    match which {
        Which::At(t) => match timed(store.get_run(job, t)).await.map_err(fail)? {
            Some(run) => Ok(vec![run]),
            None => Err(ControlError::Refused(format!(
                "{job}: no run at {} (pruned, never claimed, or another fire time: see \
                 `cronlease logs {job} --last 10`)",
                crate::node::tick::rfc3339(t)
            ))),
        },
        Which::Last(n) => {
            let mut runs = timed(store.recent_runs(job, n)).await.map_err(fail)?;
            if runs.is_empty() {
                return Err(ControlError::Refused(format!("{job}: no runs yet")));
            }
            runs.reverse();
            Ok(runs)
        }
    }
}

/// One run: its header line, then its kept output (with a marker when the start was cut).
pub fn render(run: &RunRecord) -> String {
    format!("{}\n{}", header(run), kept(run))
}

/// A run's header line (no newline): `== job @ fire time: outcome, ... ==`; for a run in
/// progress, which node runs it, under which term, since when.
pub fn header(run: &RunRecord) -> String {
    let mut header = format!(
        "== {} @ {}: {}",
        run.job,
        crate::node::tick::rfc3339(run.fire_time),
        run.outcome
    );
    if let Some(reason) = &run.reason {
        header.push_str(&format!(" ({reason})"));
    }
    if let Some(code) = run.exit_code {
        header.push_str(&format!(", exit code {code}"));
    }
    if run.outcome == store::RUNNING {
        header.push_str(&format!(
            " on {} (term {}) since {}",
            run.node,
            run.term,
            crate::node::tick::rfc3339(run.started_at)
        ));
    } else {
        header.push_str(&format!(", node {}, term {}", run.node, run.term));
        header.push_str(&crate::ops::control::took_and_attempts(run));
    }
    if let Some(t) = &run.trigger {
        header.push_str(&format!(", {} by {}", t.kind, t.by));
    }
    header.push_str(" ==");
    header
}

/// A run's kept output as printed under its header: the cut marker if bytes were dropped,
/// the tail, a final newline; `(no output kept)` if there is none.
pub fn kept(run: &RunRecord) -> String {
    let mut out = String::new();
    if run.output_cut > 0 {
        out.push_str(&cut_marker(run.output_cut));
        out.push('\n');
    }
    if run.output.is_empty() && run.output_cut == 0 {
        out.push_str("(no output kept)\n");
    } else {
        out.push_str(&run.output);
        if !run.output.ends_with('\n') && !run.output.is_empty() {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_renders_with_its_header_and_cut_marker() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let run = RunRecord {
            outcome: "failed".into(),
            exit_code: Some(2),
            started_at: at("2026-11-29T17:00:00.100Z"),
            finished_at: Some(at("2026-11-29T17:00:01.600Z")),
            output: "last line\n".into(),
            output_cut: 4096,
            ..RunRecord::claimed("backup", at("2026-11-29T17:00:00Z"), "n1", 3, "s", "p")
        };
        assert_eq!(
            render(&run),
            "== backup @ 2026-11-29T17:00:00Z: failed, exit code 2, node n1, term 3, 1.5 s, 1 attempt ==\n\
             [... 4096 earlier bytes of output not kept (output_limit) ...]\n\
             last line\n"
        );
    }
}
