//! Telling people: the `[[notify]]` sinks (webhook, command) and the jobs' healthchecks.io-style
//! pings.
//!
//! **Who sends.** Each event is sent by the one node that observed it, so it goes out once in
//! the cluster: a run's outcome by the node whose outcome write landed (the recorder calls
//! [`Notifier::run_ended`] after the store took it, so a run that another node closed as
//! `lost` meanwhile does not also report `failed`); `lost` by the leader that closed the
//! orphan; `missed` by the node that took the lease over and counted the missed fire times
//! ([`crate::node::job_health`]). Delivery is at least once: a webhook whose answer was lost is
//! sent again, with the same `id`.
//!
//! **`recovered`** is the first `ok` run after a `failed`, `timeout` or `lost` one. The node
//! remembers the newest outcome of each job it leads (seeded from the store's history when it
//! takes the lease, forgotten when it loses it); an `ok` run of a job it knows nothing of
//! looks its predecessor up in the store (one read), so it works across a failover.
//!
//! **Pings** follow the healthchecks.io protocol: `GET <ping>/start` when a run starts, then
//! `POST <ping>` (ok) or `POST <ping>/fail` (anything else, `lost` included) with the end of
//! the run's output as the body, each with `?rid=` (a UUID of the run) so that the server
//! pairs start and end. A run that never starts (skipped) sends nothing. The server notices a
//! missing ping itself, even when the whole cluster is down.
//!
//! **Never in the way.** Every destination has its own bounded queue and worker
//! ([`deliver`]): queuing never waits, a sink that is down fills its own queue and nothing
//! else, and a full queue drops (counted, logged).
pub mod deliver;
pub mod event;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::notify::{EventKind, Sink, Target};
use crate::config::Job;
use crate::node::jobs::JobTable;
use crate::ops::metrics::Metrics;
use crate::store::{time_key, RunRecord, Store};

use deliver::{Delivery, Destination, Request, Worker};
use event::Event;

/// The per-attempt timeout of a ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a ping is retried: a ping later than that says nothing true any more.
pub const PING_RETRY_FOR: Duration = Duration::from_secs(5 * 60);
/// The metrics label of every ping destination (one per job would not be a bounded set).
pub const PING_SINK: &str = "ping";
/// Runs read to find an `ok` run's predecessor when the node does not know it.
const PREVIOUS_READ: usize = 10;

/// Why the notification settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A header names an environment variable this node does not have.
    #[error("{0}")]
    Environment(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The node's notifier: routes events to the sinks the job names.
pub struct Notifier {
    node: String,
    metrics: Arc<Metrics>,
    jobs: Arc<JobTable>,
    /// For an `ok` run's predecessor when this node does not know it.
    store: Option<Arc<dyn Store>>,
    client: reqwest::Client,
    tracker: TaskTracker,
    /// Cancelled when the node gives up on what is still queued.
    kill: CancellationToken,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per `[[notify]]` name: its definition (headers resolved) and its queue.
    sinks: HashMap<String, (Sink, mpsc::Sender<Delivery>)>,
    /// Per ping URL: its queue.
    pings: HashMap<String, mpsc::Sender<Delivery>>,
    /// Per job this node leads: the fire time and outcome of its newest run that ended `ok`,
    /// `failed`, `timeout` or `lost` ([`tracked`]).
    last: HashMap<String, (DateTime<Utc>, String)>,
    /// After [`Notifier::close`]: nothing more is queued.
    closed: bool,
}

/// Every sink's headers resolved from `env`, or the first that cannot be.
pub fn resolve(
    sinks: &[Sink],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Sink>, NotifyError> {
    sinks
        .iter()
        .map(|s| {
            let headers = s.resolve_headers(&env).map_err(NotifyError::Environment)?;
            // A value reqwest would refuse at every send (a variable ending in a newline).
            for (name, value) in &headers {
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    return Err(NotifyError::Environment(format!(
                        "notify {:?}: header {name} is not a valid HTTP header value once its \
                         variables are filled in (a newline or control character?)",
                        s.name
                    )));
                }
            }
            let mut s = s.clone();
            if let Target::Webhook { headers: h, .. } = &mut s.target {
                *h = headers;
            }
            Ok(s)
        })
        .collect()
}

/// The process environment, for [`resolve`].
pub fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Notifier {
    /// `store`: where an `ok` run's predecessor is looked up (`None`: never; tests).
    pub fn new(
        node: String,
        metrics: Arc<Metrics>,
        jobs: Arc<JobTable>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Arc<Notifier>, NotifyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("cronlease/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        Ok(Arc::new(Notifier {
            node,
            metrics,
            jobs,
            store,
            client,
            tracker: TaskTracker::new(),
            kill: CancellationToken::new(),
            state: Mutex::new(State::default()),
        }))
    }

    /// Use these sinks (headers already resolved, see [`resolve`]): a new or changed sink gets a
    /// new worker; the worker of a removed or changed one sends what it has queued, then ends.
    /// Returns the names of the sinks added, changed or removed.
    pub fn configure(&self, sinks: Vec<Sink>) -> Vec<String> {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return Vec::new();
        }
        let mut touched = Vec::new();
        let mut next = HashMap::new();
        for sink in sinks {
            match st.sinks.remove(&sink.name) {
                Some((old, tx)) if old == sink => {
                    next.insert(sink.name.clone(), (old, tx));
                }
                before => {
                    touched.push(sink.name.clone());
                    drop(before);
                    let tx =
                        self.spawn(&sink.name, destination(&sink), sink.timeout, sink.retry_for);
                    next.insert(sink.name.clone(), (sink, tx));
                }
            }
        }
        touched.extend(st.sinks.keys().cloned());
        st.sinks = next;
        // Pings of URLs no job uses any more: their workers send what they have, then end.
        let used: std::collections::HashSet<String> = self
            .jobs
            .active()
            .iter()
            .filter_map(|(_, j)| j.ping.as_ref().map(|u| u.to_string()))
            .collect();
        st.pings.retain(|url, _| used.contains(url));
        touched.sort();
        touched
    }

    fn spawn(
        &self,
        sink: &str,
        destination: Destination,
        timeout: Duration,
        retry_for: Duration,
    ) -> mpsc::Sender<Delivery> {
        let (tx, rx) = Worker::queue();
        let worker = Worker {
            sink: sink.to_string(),
            destination,
            timeout,
            retry_for,
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            node: self.node.clone(),
        };
        self.tracker.spawn(worker.run(rx, self.kill.clone()));
        tx
    }

    fn job(&self, name: &str) -> Option<Arc<Job>> {
        self.jobs.index(name).map(|idx| self.jobs.get(idx))
    }

    /// Remember the newest finished run of `job` among `runs` (the store's history, read when
    /// this node took the lease), for `recovered`.
    pub fn seed(&self, job: &str, runs: &[RunRecord]) {
        let newest = runs
            .iter()
            .filter(|r| tracked(&r.outcome))
            .max_by_key(|r| r.fire_time);
        if let Some(run) = newest {
            let mut st = self.state.lock().unwrap();
            let known = st.last.get(job).map(|(t, _)| *t);
            if known.is_none_or(|t| t < run.fire_time) {
                st.last
                    .insert(job.to_string(), (run.fire_time, run.outcome.clone()));
            }
        }
    }

    /// A run started on this node: its ping's `/start`.
    pub fn run_started(&self, run: &RunRecord) {
        let Some(job) = self.job(&run.job) else {
            return;
        };
        if let Some(ping) = &job.ping {
            self.ping(run, ping, "start", None);
        }
    }

    /// This node no longer leads `job`: what it knew of its last outcome goes stale.
    pub fn forget(&self, job: &str) {
        self.state.lock().unwrap().last.remove(job);
    }

    /// A run's final outcome is in the store (written by this node; `lost`: closed by it).
    pub fn run_ended(self: &Arc<Self>, run: &RunRecord) {
        if !finished(&run.outcome) {
            return;
        }
        let Some(job) = self.job(&run.job) else {
            return;
        };
        if let Some(ping) = &job.ping {
            let body = Some(deliver::ping_body(&run.output));
            let what = if run.outcome == "ok" {
                "success"
            } else {
                "fail"
            };
            self.ping(run, ping, what, body);
        }
        // A job without sinks needs no events (nor the store read an `ok` may take).
        if job.notify.is_empty() {
            return;
        }
        if let Some(kind) = EventKind::of_outcome(&run.outcome) {
            self.remember(run);
            self.send(&job, Event::of_run(kind, run, &self.node));
            return;
        }
        if run.outcome != "ok" {
            return;
        }
        // `ok`: recovered if the run before it failed.
        let known = self.state.lock().unwrap().last.get(&run.job).cloned();
        self.remember(run);
        match recovered(known.as_ref(), run.fire_time) {
            Some(true) => self.send(&job, Event::of_run(EventKind::Recovered, run, &self.node)),
            Some(false) => {}
            None => {
                let Some(store) = self.store.clone() else {
                    return;
                };
                let (this, run) = (self.clone(), run.clone());
                tokio::spawn(async move {
                    let runs = match store.recent_runs(&run.job, PREVIOUS_READ).await {
                        Ok(runs) => runs,
                        Err(e) => {
                            warn!(event = "store_error", job = %run.job, node = %this.node,
                                "cannot read the run before this ok run (no recovered event \
                                 if it failed): {e}");
                            return;
                        }
                    };
                    let previous = runs
                        .iter()
                        .filter(|r| r.fire_time < run.fire_time && tracked(&r.outcome))
                        .max_by_key(|r| r.fire_time);
                    if previous.is_some_and(|p| failing(&p.outcome)) {
                        if let Some(job) = this.job(&run.job) {
                            this.send(&job, Event::of_run(EventKind::Recovered, &run, &this.node));
                        }
                    }
                });
            }
        }
    }

    /// Keep `run` as the job's newest outcome, unless a newer one is known.
    fn remember(&self, run: &RunRecord) {
        if !tracked(&run.outcome) {
            return;
        }
        let mut st = self.state.lock().unwrap();
        let newer = st
            .last
            .get(&run.job)
            .is_some_and(|(t, _)| *t >= run.fire_time);
        if !newer {
            st.last
                .insert(run.job.clone(), (run.fire_time, run.outcome.clone()));
        }
    }

    /// Fire times from `first` to `last` (`count` of them) passed with nobody running them.
    pub fn missed(
        &self,
        job: &str,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        count: usize,
        term: i64,
    ) {
        if let Some(def) = self.job(job) {
            self.send(
                &def,
                Event::missed(job, first, last, count, &self.node, term),
            );
        }
    }

    /// Queue `event` for each of the job's sinks that wants it.
    fn send(&self, job: &Job, event: Event) {
        let Some(kind) = EventKind::NAMES
            .iter()
            .find(|(n, _)| *n == event.event)
            .map(|(_, k)| *k)
        else {
            return;
        };
        if job.notify.is_empty() {
            return;
        }
        // The JSON (its output up to 256 KiB) and the logs are made outside the lock.
        let targets: Vec<(String, Option<mpsc::Sender<Delivery>>)> = {
            let st = self.state.lock().unwrap();
            job.notify
                .iter()
                .filter_map(|name| match st.sinks.get(name) {
                    Some((sink, _)) if !sink.on.contains(&kind) => None,
                    Some((_, tx)) if !st.closed => Some((name.clone(), Some(tx.clone()))),
                    _ => Some((name.clone(), None)),
                })
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let body = serde_json::to_string(&event).unwrap_or_default();
        for (name, tx) in targets {
            let Some(tx) = tx else {
                // The node is stopping (or the sink went away with a reload).
                self.metrics.notification(&name, "dropped");
                warn!(event = "notify_dropped", sink = %name, job = %job.name, node = %self.node,
                    what = event.event, "{} → {name}: not sent (the node is stopping, or a \
                    reload is replacing the sink)", event.summary());
                continue;
            };
            info!(event = "notify", sink = %name, job = %job.name, node = %self.node,
                what = event.event, fire_time = %event.fire_time, "{} → {name}", event.summary());
            self.queue(
                &name,
                &tx,
                Delivery {
                    job: job.name.clone(),
                    what: event.event.to_string(),
                    request: Request::Event(body.clone()),
                    queued: Instant::now(),
                },
            );
        }
    }

    /// Queue one ping of `run` (`start`, `success` or `fail`).
    fn ping(&self, run: &RunRecord, base: &reqwest::Url, what: &str, body: Option<String>) {
        let mut url = base.clone();
        let path = url.path().trim_end_matches('/').to_string();
        match what {
            "start" => url.set_path(&format!("{path}/start")),
            "fail" => url.set_path(&format!("{path}/fail")),
            _ => url.set_path(&path),
        }
        url.query_pairs_mut()
            .append_pair("rid", &run_uuid(run).to_string());
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return;
        }
        let key = base.to_string();
        let tx = match st.pings.get(&key) {
            Some(tx) => tx.clone(),
            None => {
                let tx = self.spawn(PING_SINK, Destination::Ping, PING_TIMEOUT, PING_RETRY_FOR);
                st.pings.insert(key, tx.clone());
                tx
            }
        };
        drop(st);
        self.queue(
            PING_SINK,
            &tx,
            Delivery {
                job: run.job.clone(),
                what: format!("ping {what}"),
                request: Request::Ping { url, body },
                queued: Instant::now(),
            },
        );
    }

    fn queue(&self, sink: &str, tx: &mpsc::Sender<Delivery>, d: Delivery) {
        if let Err(e) = tx.try_send(d) {
            self.metrics.notification(sink, "dropped");
            let d = match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            };
            warn!(event = "notify_dropped", sink, job = %d.job, node = %self.node, what = %d.what,
                "{} {} not sent: {} deliveries are already waiting for {sink}", d.job, d.what,
                deliver::QUEUE);
        }
    }

    /// Stop taking events, send what is queued until `deadline`, then give up on the rest
    /// (counted `dropped`). Called once the runs' outcomes are written.
    pub async fn shutdown(&self, deadline: Instant) {
        {
            let mut st = self.state.lock().unwrap();
            st.closed = true;
            st.sinks.clear();
            st.pings.clear();
        }
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            self.kill.cancel();
            self.tracker.wait().await;
        }
    }
}

/// The outcomes a run ends with (not `running`, not `skipped`: a skipped tick never started).
fn finished(outcome: &str) -> bool {
    !matches!(outcome, "running" | "skipped" | "")
}

/// The outcomes that say whether a job works (`recovered` looks at these only: a run stopped,
/// killed or replaced says nothing either way).
fn tracked(outcome: &str) -> bool {
    matches!(outcome, "ok" | "failed" | "timeout" | "lost")
}

/// Whether an `ok` run of `fire_time` is `recovered`, from the job's newest known outcome
/// before it (`None`: not known here; ask the store).
fn recovered(known: Option<&(DateTime<Utc>, String)>, fire_time: DateTime<Utc>) -> Option<bool> {
    match known {
        Some((t, outcome)) if *t < fire_time => Some(failing(outcome)),
        // A backfilled old fire time says nothing about the job's state now.
        Some(_) => Some(false),
        None => None,
    }
}

/// The outcomes after which an `ok` is `recovered`.
fn failing(outcome: &str) -> bool {
    matches!(outcome, "failed" | "timeout" | "lost")
}

fn destination(sink: &Sink) -> Destination {
    match &sink.target {
        Target::Webhook { url, headers } => Destination::Webhook {
            url: url.clone(),
            headers: headers.clone(),
        },
        Target::Command { argv } => Destination::Command { argv: argv.clone() },
    }
}

/// A UUID that names one run (its job and fire time): the same on every node, for `rid`.
pub fn run_uuid(run: &RunRecord) -> uuid::Uuid {
    let key = format!("{}@{}", run.job, time_key(run.fire_time));
    let a = crate::config::text_hash(key.as_bytes());
    let b = crate::config::text_hash(format!("cronlease/{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, secs: i64, outcome: &str) -> RunRecord {
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        RunRecord {
            outcome: outcome.into(),
            finished_at: Some(t),
            ..RunRecord::claimed(job, t, "n1", 1, "s", "p")
        }
    }

    #[test]
    fn recovered_is_the_first_ok_after_a_failure() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let n = Notifier::new(
            "n1".into(),
            Arc::new(Metrics::new()),
            Arc::new(JobTable::new(Vec::new())),
            None,
        )
        .unwrap();
        let known = |n: &Notifier| n.state.lock().unwrap().last.get("j").cloned();
        assert_eq!(recovered(None, t(10)), None, "unknown: the store is asked");
        n.remember(&run("j", 10, "failed"));
        assert_eq!(recovered(known(&n).as_ref(), t(11)), Some(true));
        // A stopped, replaced or killed run says nothing: the failure stays the last word.
        for outcome in ["stopped", "replaced", "killed", "skipped"] {
            n.remember(&run("j", 11, outcome));
        }
        assert_eq!(recovered(known(&n).as_ref(), t(12)), Some(true));
        // A backfill of an older fire time neither recovers nor replaces the newest outcome.
        assert_eq!(recovered(known(&n).as_ref(), t(5)), Some(false));
        n.remember(&run("j", 5, "ok"));
        assert_eq!(known(&n).unwrap().1, "failed");
        n.remember(&run("j", 12, "ok"));
        assert_eq!(
            recovered(known(&n).as_ref(), t(13)),
            Some(false),
            "only the first ok"
        );
        n.remember(&run("j", 13, "lost"));
        assert_eq!(recovered(known(&n).as_ref(), t(14)), Some(true));
        // Seeding never goes back in time; losing the lease forgets.
        n.seed("j", &[run("j", 1, "ok")]);
        assert_eq!(known(&n).unwrap().1, "lost");
        n.forget("j");
        assert_eq!(known(&n), None);
        n.seed(
            "j",
            &[
                run("j", 20, "timeout"),
                run("j", 19, "ok"),
                run("j", 21, "skipped"),
            ],
        );
        assert_eq!(known(&n).unwrap(), (t(20), "timeout".to_string()));
    }

    #[test]
    fn a_run_has_one_uuid_everywhere() {
        let a = run_uuid(&run("j", 100, "ok"));
        assert_eq!(a, run_uuid(&run("j", 100, "failed")));
        assert_ne!(a, run_uuid(&run("j", 101, "ok")));
        assert_ne!(a, run_uuid(&run("k", 100, "ok")));
        assert_eq!(a.get_version_num(), 4);
    }

    #[test]
    fn missing_header_variables_are_named() {
        let sink = Sink {
            name: "ops".into(),
            on: vec![EventKind::Failed],
            target: Target::Webhook {
                url: reqwest::Url::parse("http://h/x").unwrap(),
                headers: vec![("Authorization".into(), "Bearer ${TOKEN}".into())],
            },
            timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(1),
        };
        let err = resolve(std::slice::from_ref(&sink), |_| None).unwrap_err();
        assert!(err.to_string().contains("${TOKEN}"), "{err}");
        let ok = resolve(&[sink], |_| Some("t".into())).unwrap();
        match &ok[0].target {
            Target::Webhook { headers, .. } => assert_eq!(headers[0].1, "Bearer t"),
            _ => unreachable!(),
        }
    }
}
