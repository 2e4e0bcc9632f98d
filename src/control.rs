//! The control plane: operator commands that steer a running cluster through the store.
//!
//! `cronlease pause JOB... [--note TEXT] | --all` and `cronlease resume JOB... | --all` write
//! the pause into each job's lease record ([`Store::set_pause`]). Nothing has to reach the
//! nodes: the job's leader claims every tick in a transaction that reads that record, so the
//! first tick after the pause committed is refused (`tick_paused`), on whichever node leads,
//! across failovers. The leader then asks every node to re-read the leases, so their log
//! lines and `/status` say the job is paused within a poll. A paused job's fire times are not
//! run and never caught up, not after a resume and not by a new leader.
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::status::{describe_config, STORE_TIMEOUT};
use crate::store::{self, Pause, StoreError};

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The command names something the jobs file does not have (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to the store, {store}: {source}")]
    Connect { store: String, source: StoreError },
    #[error("{store}: {source}")]
    Store { store: String, source: StoreError },
}

/// `user@host` of whoever runs the command (`$USER`, else `$LOGNAME`, else the uid).
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// The jobs a command names: `all` for every job of the file, else each name, which must be
/// one of the file's jobs.
pub fn select_jobs(
    config: &Config,
    names: &[String],
    all: bool,
) -> Result<Vec<String>, ControlError> {
    let known: Vec<String> = config.jobs.iter().map(|j| j.name.clone()).collect();
    if all {
        if !names.is_empty() {
            return Err(ControlError::Usage(
                "give job names or --all, not both".into(),
            ));
        }
        return Ok(known);
    }
    if names.is_empty() {
        return Err(ControlError::Usage(
            "name at least one job, or --all".into(),
        ));
    }
    for name in names {
        if !known.contains(name) {
            return Err(ControlError::Usage(format!(
                "{}: no job named {name:?} (jobs: {})",
                config.source.display(),
                known.join(", ")
            )));
        }
    }
    Ok(names.to_vec())
}

/// What one pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Paused(Pause),
    AlreadyPaused(Option<Pause>),
    Resumed,
    NotPaused,
}

/// Pause (`Some(pause)`) or resume (`None`) each of `jobs`; a line per job.
pub async fn set_pause(
    config: &Config,
    jobs: &[String],
    pause: Option<Pause>,
) -> Result<Vec<(String, Outcome)>, ControlError> {
    let store = store::connect(&config.store, STORE_TIMEOUT)
        .await
        .map_err(|source| ControlError::Connect {
            store: describe_config(&config.store),
            source,
        })?;
    let fail = |source| ControlError::Store {
        store: store.describe(),
        source,
    };
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let changed = timed(store.set_pause(job, pause.as_ref()))
            .await
            .map_err(fail)?;
        let outcome = match (&pause, changed) {
            (Some(p), true) => Outcome::Paused(p.clone()),
            (Some(_), false) => {
                let lease = timed(store.leases(std::slice::from_ref(job)))
                    .await
                    .map_err(fail)?;
                Outcome::AlreadyPaused(lease.get(job).and_then(|l| l.paused.clone()))
            }
            (None, true) => Outcome::Resumed,
            (None, false) => Outcome::NotPaused,
        };
        out.push((job.clone(), outcome));
    }
    Ok(out)
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {STORE_TIMEOUT:?}"
            )))
        })
}

/// One line per job for the terminal.
pub fn render(results: &[(String, Outcome)]) -> String {
    let at = |t: DateTime<Utc>| crate::tick::rfc3339(t);
    let note = |p: &Pause| {
        if p.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.note)
        }
    };
    let mut out = String::new();
    for (job, outcome) in results {
        let line = match outcome {
            Outcome::Paused(p) => format!("{job}: paused by {} at {}{}", p.by, at(p.at), note(p)),
            Outcome::AlreadyPaused(Some(p)) => format!(
                "{job}: already paused by {} since {}{}",
                p.by,
                at(p.at),
                note(p)
            ),
            Outcome::AlreadyPaused(None) => format!("{job}: already paused"),
            Outcome::Resumed => format!("{job}: resumed (fire times from the pause are not run)"),
            Outcome::NotPaused => format!("{job}: was not paused"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_checked_against_the_file() {
        let config = crate::config::parse(
            "jobs.toml",
            "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"a\"\n\
             [[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"b\"\n",
        )
        .unwrap();
        assert_eq!(select_jobs(&config, &[], true).unwrap(), ["a", "b"]);
        assert_eq!(select_jobs(&config, &["b".into()], false).unwrap(), ["b"]);
        let e = select_jobs(&config, &["c".into()], false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "jobs.toml: no job named \"c\" (jobs: a, b)");
        assert!(select_jobs(&config, &[], false).is_err());
        assert!(select_jobs(&config, &["a".into()], true).is_err());
        assert!(who().contains('@'));
    }

    #[test]
    fn lines_say_who_when_and_why() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T17:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = Pause {
            by: "ops@box".into(),
            at,
            note: "db migration".into(),
        };
        let out = render(&[
            ("a".into(), Outcome::Paused(p.clone())),
            ("b".into(), Outcome::AlreadyPaused(Some(p))),
            ("c".into(), Outcome::NotPaused),
        ]);
        assert_eq!(
            out,
            "a: paused by ops@box at 2026-11-29T17:00:00Z (db migration)\n\
             b: already paused by ops@box since 2026-11-29T17:00:00Z (db migration)\n\
             c: was not paused\n"
        );
    }
}
