//! The control plane: operator commands that steer a running cluster through the store.
//!
//! None of them talks to a node: each writes the store (the job's lease record, with the
//! control epoch moved in the same atomic write), and every node notices at its next poll.
//!
//! `cronlease pause JOB... [--note TEXT] | --all` and `cronlease resume JOB... | --all` write
//! the pause into each job's lease record ([`Store::set_pause`]). Nothing has to reach the
//! nodes: the job's leader claims every tick in a transaction that reads that record, so the
//! first tick after the pause committed is refused (`tick_paused`), on whichever node leads,
//! across failovers. The leader then asks every node to re-read the leases, so their log
//! lines and `/status` say the job is paused within a poll. A paused job's fire times are not
//! run and never caught up, not after a resume and not by a new leader.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::ops::status::{describe_config, STORE_TIMEOUT};
use crate::store::{
    self, BackfillRequest, Pause, RequestChange, RunRecord, Store, StoreError, TriggerRequest,
    MAX_PENDING_TRIGGERS,
};

/// `cronlease trigger --timeout` when not given.
pub const DEFAULT_TRIGGER_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most fire times one backfill may ask for.
pub const MAX_BACKFILL: usize = 1000;
/// How often `--wait` looks at the store.
const WAIT_POLL: Duration = Duration::from_millis(250);

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
    /// The store refused what was asked, as things stand (exit 1).
    #[error("{0}")]
    Refused(String),
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

/// The one job a command names: in the file, and enabled there.
pub fn select_enabled_job<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a crate::config::Job, ControlError> {
    select_jobs(config, &[name.to_string()], false)?;
    let job = config
        .jobs
        .iter()
        .find(|j| j.name == name)
        .expect("selected");
    if !job.enabled {
        return Err(ControlError::Usage(format!(
            "{}: job {name:?} is disabled (enabled = false): it never runs; enable it first",
            config.source.display()
        )));
    }
    Ok(job)
}

async fn connect(config: &Config) -> Result<Arc<dyn Store>, ControlError> {
    store::connect(&config.store, STORE_TIMEOUT)
        .await
        .map_err(|source| ControlError::Connect {
            store: describe_config(&config.store),
            source,
        })
}

fn store_error(store: &Arc<dyn Store>) -> impl Fn(StoreError) -> ControlError + '_ {
    move |source| ControlError::Store {
        store: store.describe(),
        source,
    }
}

/// A trigger's fire time for a request made at `now`: to the millisecond, never a whole
/// second (those are the schedule's).
pub fn trigger_fire_time(now: DateTime<Utc>) -> DateTime<Utc> {
    let ms = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    if ms.timestamp_subsec_millis() == 0 {
        ms + chrono::Duration::milliseconds(1)
    } else {
        ms
    }
}

/// What `cronlease trigger` asks for.
#[derive(Debug, Clone)]
pub struct TriggerOptions {
    pub timeout: Duration,
    pub allow_overlap: bool,
    pub wait: bool,
}

/// How a `cronlease trigger` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerEnd {
    /// Stored, not followed (no `--wait`).
    Queued,
    /// Followed to its end: the run's record.
    Finished(Box<RunRecord>),
    /// Nobody ran it before it expired (or the leader dropped it).
    Expired(String),
}

/// `cronlease trigger JOB`: store the request; with `wait`, follow it to its end. Lines for
/// the terminal go to `say` as they happen.
pub async fn trigger(
    config: &Config,
    job: &str,
    options: &TriggerOptions,
    say: &mut dyn FnMut(&str),
) -> Result<TriggerEnd, ControlError> {
    let timeout = chrono::Duration::from_std(options.timeout)
        .map_err(|_| ControlError::Usage("--timeout is too long".into()))?;
    let store = connect(config).await?;
    let fail = store_error(&store);
    let request = request_trigger(&*store, job, &who(), timeout, options.allow_overlap).await?;
    let fire = crate::node::tick::rfc3339(request.fire_time);
    say(&format!(
        "{job}: run requested by {} (fire time {fire}); it expires at {}",
        request.by,
        crate::node::tick::rfc3339(request.expires_at)
    ));
    let live = live_nodes(&*store, config).await.map_err(&fail)?;
    if live == 0 {
        say(&format!(
            "{job}: no node is running: the request waits in the store until {}",
            crate::node::tick::rfc3339(request.expires_at)
        ));
    }
    if !options.wait {
        return Ok(TriggerEnd::Queued);
    }
    follow(&*store, job, &request, say).await.map_err(&fail)
}

/// Store a request to run `job` now, made by `by`, expiring after `timeout` (the job must be
/// one of the file's enabled jobs: the caller checks). What `cronlease trigger` and the
/// dashboard's button do.
pub async fn request_trigger(
    store: &dyn Store,
    job: &str,
    by: &str,
    timeout: chrono::Duration,
    allow_overlap: bool,
) -> Result<TriggerRequest, ControlError> {
    let fail = |source| ControlError::Store {
        store: store.describe(),
        source,
    };
    let mut request = TriggerRequest {
        fire_time: trigger_fire_time(Utc::now()),
        by: by.to_string(),
        expires_at: Utc::now() + timeout,
        allow_overlap,
    };
    // Two requests within one millisecond: the second takes the next one.
    let mut tries = 0;
    loop {
        let change = RequestChange::AddTrigger(request.clone());
        let added = timed(store.change_request(job, &change))
            .await
            .map_err(|e| ControlError::Store {
                store: store.describe(),
                source: StoreError::Unavailable(format!(
                    "{e}; the request may have been stored anyway: see `cronlease status` \
                     before asking again"
                )),
            })?;
        if added {
            break;
        }
        let lease = timed(store.leases(&[job.to_string()]))
            .await
            .map_err(&fail)?;
        let pending = lease.get(job).map_or(0, |l| l.requests.triggers.len());
        tries += 1;
        if pending >= MAX_PENDING_TRIGGERS || tries >= 5 {
            return Err(ControlError::Refused(format!(
                "{job}: {pending} triggers are already waiting (at most \
                 {MAX_PENDING_TRIGGERS}); is any node running? see `cronlease status`"
            )));
        }
        request.fire_time += chrono::Duration::milliseconds(1);
        if request.fire_time.timestamp_subsec_millis() == 0 {
            request.fire_time += chrono::Duration::milliseconds(1);
        }
    }
    Ok(request)
}

/// Nodes that renewed their record within three leases (by this machine's clock: good
/// enough for a hint).
async fn live_nodes(store: &dyn Store, config: &Config) -> Result<usize, StoreError> {
    let nodes = timed(store.nodes()).await?;
    let window = chrono::Duration::from_std(config.election.lease * 3)
        .unwrap_or(chrono::Duration::seconds(60))
        .max(chrono::Duration::seconds(30));
    let now = Utc::now();
    Ok(nodes
        .values()
        .filter(|n| now - n.renewed_at < window)
        .count())
}

/// `--wait`: poll the run's record until it ends, or the request until it expires. A store
/// that does not answer is tried again (said once every 20 failures): the run may go on.
async fn follow(
    store: &dyn Store,
    job: &str,
    request: &TriggerRequest,
    say: &mut dyn FnMut(&str),
) -> Result<TriggerEnd, StoreError> {
    let mut announced = false;
    let mut errors = 0u32;
    loop {
        match follow_step(store, job, request).await {
            Ok(Step::Done(end)) => return Ok(end),
            Ok(Step::Running(run)) => {
                errors = 0;
                if !announced {
                    say(&format!(
                        "{job}: running on {} (term {})",
                        run.node, run.term
                    ));
                    announced = true;
                }
            }
            Ok(Step::Waiting) => errors = 0,
            Err(e) => {
                errors += 1;
                if errors == 1 || errors % 20 == 0 {
                    say(&format!("{job}: cannot read the store, still waiting: {e}"));
                }
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

enum Step {
    Done(TriggerEnd),
    Running(Box<RunRecord>),
    Waiting,
}

async fn follow_step(
    store: &dyn Store,
    job: &str,
    request: &TriggerRequest,
) -> Result<Step, StoreError> {
    let finished = |run: RunRecord| {
        if run.outcome == store::RUNNING {
            Step::Running(Box::new(run))
        } else {
            Step::Done(TriggerEnd::Finished(Box::new(run)))
        }
    };
    if let Some(run) = timed(store.get_run(job, request.fire_time)).await? {
        return Ok(finished(run));
    }
    let id = request.id();
    let pending = timed(store.leases(&[job.to_string()]))
        .await?
        .get(job)
        .is_some_and(|l| l.requests.has(&id));
    let expired = Utc::now() > request.expires_at;
    if pending && !expired {
        return Ok(Step::Waiting);
    }
    if pending {
        // Withdraw it ourselves: a claim checks the request is pending, so after this no
        // node can start it.
        timed(store.change_request(job, &RequestChange::Remove(id))).await?;
    }
    // Claimed just before the withdrawal (or before the leader removed it)?
    if let Some(run) = timed(store.get_run(job, request.fire_time)).await? {
        return Ok(finished(run));
    }
    let why = if expired {
        format!(
            "{job}: not run: no node took the request before it expired at {}",
            crate::node::tick::rfc3339(request.expires_at)
        )
    } else {
        format!(
            "{job}: not run: the request was dropped unrun before its expiry (the leader's \
             log says why: trigger_expired), or withdrawn by someone else"
        )
    };
    Ok(Step::Done(TriggerEnd::Expired(why)))
}

/// One line for a finished run: `job: ok (exit 0) on node-a, term 3, 1.2 s, 1 attempt`.
pub fn run_line(run: &RunRecord) -> String {
    let mut line = format!("{}: {}", run.job, run.outcome);
    if let Some(reason) = &run.reason {
        line.push_str(&format!(" ({reason})"));
    }
    if let Some(code) = run.exit_code.filter(|c| *c != 0 || run.outcome != "ok") {
        line.push_str(&format!(", exit code {code}"));
    }
    line.push_str(&format!(" on {}, term {}", run.node, run.term));
    line.push_str(&took_and_attempts(run));
    line
}

/// What `cronlease backfill` does.
#[derive(Debug, Clone)]
pub enum BackfillAction {
    Start {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dry_run: bool,
    },
    Cancel,
}

/// `cronlease backfill`: the lines to print.
pub async fn backfill(
    config: &Config,
    job: &str,
    action: &BackfillAction,
) -> Result<String, ControlError> {
    let (from, to, dry_run) = match action {
        BackfillAction::Cancel => return cancel_backfill(config, job).await,
        BackfillAction::Start { from, to, dry_run } => (*from, *to, *dry_run),
    };
    let definition = select_enabled_job(config, job)?;
    let now = Utc::now();
    if from > to {
        return Err(ControlError::Usage(format!(
            "--from {} is after --to {}",
            crate::node::tick::rfc3339(from),
            crate::node::tick::rfc3339(to)
        )));
    }
    if from > now {
        return Err(ControlError::Usage(format!(
            "--from {} is in the future: a backfill runs fire times that passed",
            crate::node::tick::rfc3339(from)
        )));
    }
    let mut out = String::new();
    let to = if to > now {
        out.push_str(&format!(
            "{job}: --to is in the future: backfilling up to now ({}); later fire times run on schedule\n",
            crate::node::tick::rfc3339(now)
        ));
        now
    } else {
        to
    };
    let times = fire_times(&definition.schedule, from, to, MAX_BACKFILL + 1);
    if times.len() > MAX_BACKFILL {
        return Err(ControlError::Usage(format!(
            "{job}: more than {MAX_BACKFILL} fire times between {} and {}: backfill at most \
             {MAX_BACKFILL} at once (split the range)",
            crate::node::tick::rfc3339(from),
            crate::node::tick::rfc3339(to)
        )));
    }
    if times.is_empty() {
        out.push_str(&format!(
            "{job}: no fire time between {} and {}: nothing to backfill\n",
            crate::node::tick::rfc3339(from),
            crate::node::tick::rfc3339(to)
        ));
        return Ok(out);
    }
    let store = connect(config).await?;
    let fail = store_error(&store);
    if let Some(pruned) = timed(store.pruned_until(job)).await.map_err(&fail)? {
        if times[0] <= pruned {
            let first_ok = times.iter().find(|t| **t > pruned);
            return Err(ControlError::Usage(format!(
                "{job}: the history up to {} was pruned ([store] history): whether fire times \
                 up to then ran cannot be told, so they cannot be backfilled; {}",
                crate::node::tick::rfc3339(pruned),
                match first_ok {
                    Some(t) => format!("start at {} or later", crate::node::tick::rfc3339(*t)),
                    None => "no fire time of this range can be".into(),
                }
            )));
        }
    }
    let mut missing = Vec::new();
    for t in &times {
        if !timed(store.run_exists(job, *t)).await.map_err(&fail)? {
            missing.push(*t);
        }
    }
    let ran = times.len() - missing.len();
    if dry_run {
        out.push_str(&format!(
            "{job}: {} fire times between {} and {}: {ran} ran, {} would be backfilled{}\n",
            times.len(),
            crate::node::tick::rfc3339(from),
            crate::node::tick::rfc3339(to),
            missing.len(),
            if missing.is_empty() { "" } else { ":" }
        ));
        for t in &missing {
            out.push_str(&format!("  {}\n", crate::node::tick::rfc3339(*t)));
        }
        return Ok(out);
    }
    let lease = timed(store.leases(&[job.to_string()]))
        .await
        .map_err(&fail)?;
    if let Some(b) = lease.get(job).and_then(|l| l.requests.backfill.clone()) {
        return Err(ControlError::Usage(format!(
            "{job}: a backfill is already in progress ({} .. {}, {} of {} done, by {}): wait \
             for it or cancel it with `cronlease backfill {job} --cancel`",
            crate::node::tick::rfc3339(b.from),
            crate::node::tick::rfc3339(b.to),
            b.done,
            b.total,
            b.by
        )));
    }
    if missing.is_empty() {
        out.push_str(&format!(
            "{job}: all {} fire times between {} and {} ran: nothing to backfill\n",
            times.len(),
            crate::node::tick::rfc3339(from),
            crate::node::tick::rfc3339(to)
        ));
        return Ok(out);
    }
    let at = Utc::now();
    let request = BackfillRequest {
        id: format!("b{}", at.timestamp_millis()),
        by: who(),
        at,
        from,
        to,
        total: times.len() as u32,
        done: 0,
        cursor: None,
    };
    let added = timed(store.change_request(job, &RequestChange::AddBackfill(request.clone())))
        .await
        .map_err(&fail)?;
    if !added {
        return Err(ControlError::Usage(format!(
            "{job}: a backfill is already in progress: wait for it or cancel it with \
             `cronlease backfill {job} --cancel`"
        )));
    }
    out.push_str(&format!(
        "{job}: backfill of {} .. {} requested by {}: {} fire times, {} not run yet, oldest \
         first, one at a time; progress in `cronlease status`\n",
        crate::node::tick::rfc3339(from),
        crate::node::tick::rfc3339(to),
        request.by,
        times.len(),
        missing.len()
    ));
    if live_nodes(&*store, config).await.map_err(&fail)? == 0 {
        out.push_str(&format!(
            "{job}: no node is running: the backfill starts when one leads the job\n"
        ));
    }
    Ok(out)
}

async fn cancel_backfill(config: &Config, job: &str) -> Result<String, ControlError> {
    select_jobs(config, &[job.to_string()], false)?;
    let store = connect(config).await?;
    let fail = store_error(&store);
    let lease = timed(store.leases(&[job.to_string()]))
        .await
        .map_err(&fail)?;
    let Some(b) = lease.get(job).and_then(|l| l.requests.backfill.clone()) else {
        return Err(ControlError::Refused(format!(
            "{job}: no backfill in progress"
        )));
    };
    let removed = timed(store.change_request(job, &RequestChange::Remove(b.id.clone())))
        .await
        .map_err(&fail)?;
    if !removed {
        return Err(ControlError::Refused(format!(
            "{job}: the backfill ended meanwhile"
        )));
    }
    let progress = match b.cursor {
        Some(c) => format!(
            "{} of {} done, up to {}",
            b.done,
            b.total,
            crate::node::tick::rfc3339(c)
        ),
        None => format!("0 of {} done", b.total),
    };
    Ok(format!(
        "{job}: backfill of {} .. {} cancelled ({progress}); a run already going finishes\n",
        crate::node::tick::rfc3339(b.from),
        crate::node::tick::rfc3339(b.to)
    ))
}

/// The fire times of `schedule` from `from` to `to` (both included), at most `limit`.
pub fn fire_times(
    schedule: &crate::config::schedule::Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    schedule.between(from - chrono::Duration::nanoseconds(1), to, limit)
}

/// `, 1.2 s, 2 attempts` (the duration only once the run ended): the end of a run's line in
/// `trigger --wait` and of its header in `cronlease logs`.
pub fn took_and_attempts(run: &RunRecord) -> String {
    let mut text = String::new();
    if let Some(end) = run.finished_at {
        let ms = (end - run.started_at).num_milliseconds().max(0);
        text.push_str(&format!(", {:.1} s", ms as f64 / 1000.0));
    }
    text.push_str(&format!(
        ", {} attempt{}",
        run.attempts,
        if run.attempts == 1 { "" } else { "s" }
    ));
    text
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
    set_pause_in(&*store, jobs, pause).await
}

/// [`set_pause`] through a store at hand (a node's: the dashboard's buttons).
pub async fn set_pause_in(
    store: &dyn Store,
    jobs: &[String],
    pause: Option<Pause>,
) -> Result<Vec<(String, Outcome)>, ControlError> {
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
                Outcome::AlreadyPaused(lease.get(job).and_then(|l| l.paused.as_deref().cloned()))
            }
            (None, true) => Outcome::Resumed,
            (None, false) => Outcome::NotPaused,
        };
        out.push((job.clone(), outcome));
    }
    Ok(out)
}

pub(crate) async fn timed<T>(
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
    let at = |t: DateTime<Utc>| crate::node::tick::rfc3339(t);
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_trigger_never_takes_a_whole_second() {
        assert_eq!(
            trigger_fire_time(at("2026-11-29T17:00:00.250999Z")),
            at("2026-11-29T17:00:00.250Z")
        );
        assert_eq!(
            trigger_fire_time(at("2026-11-29T17:00:00.000400Z")),
            at("2026-11-29T17:00:00.001Z")
        );
    }

    #[test]
    fn backfill_fire_times_include_both_ends_and_stop_at_the_limit() {
        let every_minute = crate::config::schedule::Schedule::parse("* * * * *", "UTC").unwrap();
        let from = at("2026-11-29T17:00:00Z");
        let to = at("2026-11-29T17:03:00Z");
        assert_eq!(
            fire_times(&every_minute, from, to, 100),
            vec![
                from,
                at("2026-11-29T17:01:00Z"),
                at("2026-11-29T17:02:00Z"),
                to
            ]
        );
        assert_eq!(fire_times(&every_minute, from, to, 2).len(), 2);
        assert!(fire_times(
            &every_minute,
            at("2026-11-29T17:00:01Z"),
            at("2026-11-29T17:00:59Z"),
            9
        )
        .is_empty());
    }

    #[test]
    fn a_finished_run_in_one_line() {
        let run = RunRecord {
            outcome: "failed".into(),
            exit_code: Some(3),
            finished_at: Some(at("2026-11-29T17:00:01.500Z")),
            attempts: 2,
            ..RunRecord::claimed("job", at("2026-11-29T17:00:00.250Z"), "n1", 4, "s", "p")
        };
        let run = RunRecord {
            started_at: at("2026-11-29T17:00:00.300Z"),
            ..run
        };
        assert_eq!(
            run_line(&run),
            "job: failed, exit code 3 on n1, term 4, 1.2 s, 2 attempts"
        );
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
