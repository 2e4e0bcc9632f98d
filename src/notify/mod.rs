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
//! remembers the newest finished run of each job, seeded from the store's history when it
//! takes the lease, so it works across a failover.
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
use crate::store::{time_key, RunRecord};

use deliver::{Delivery, Destination, Request, Worker};
use event::Event;

/// The per-attempt timeout of a ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a ping is retried: a ping later than that says nothing true any more.
pub const PING_RETRY_FOR: Duration = Duration::from_secs(5 * 60);
/// The metrics label of every ping destination (one per job would not be a bounded set).
pub const PING_SINK: &str = "ping";

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
    /// Per job: the fire time and outcome of its newest finished run.
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
    pub fn new(
        node: String,
        metrics: Arc<Metrics>,
        jobs: Arc<JobTable>,
    ) -> Result<Arc<Notifier>, NotifyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("cronlease/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        Ok(Arc::new(Notifier {
            node,
            metrics,
            jobs,
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
            .filter(|r| finished(&r.outcome))
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

    /// A run's final outcome is in the store (written by this node; `lost`: closed by it).
    pub fn run_ended(&self, run: &RunRecord) {
        if !finished(&run.outcome) {
            return;
        }
        let Some(job) = self.job(&run.job) else {
            return;
        };
        let previous = {
            let mut st = self.state.lock().unwrap();
            let previous = st.last.get(&run.job).cloned();
            // A backfilled old fire time says nothing about the job's state now.
            if previous.as_ref().is_none_or(|(t, _)| *t < run.fire_time) {
                st.last
                    .insert(run.job.clone(), (run.fire_time, run.outcome.clone()));
            }
            previous
        };
        let kind = EventKind::of_outcome(&run.outcome).or_else(|| {
            let was_failing = previous.as_ref().is_some_and(|(t, outcome)| {
                *t < run.fire_time && matches!(outcome.as_str(), "failed" | "timeout" | "lost")
            });
            (run.outcome == "ok" && was_failing).then_some(EventKind::Recovered)
        });
        if let Some(kind) = kind {
            self.send(&job, Event::of_run(kind, run, &self.node));
        }
        if let Some(ping) = &job.ping {
            let body = Some(deliver::ping_body(&run.output));
            if run.outcome == "ok" {
                self.ping(run, ping, "success", body);
            } else {
                self.ping(run, ping, "fail", body);
            }
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
        let kind = EventKind::NAMES
            .iter()
            .find(|(n, _)| *n == event.event)
            .map(|(_, k)| *k);
        let st = self.state.lock().unwrap();
        if st.closed {
            return;
        }
        let mut body: Option<String> = None;
        for name in &job.notify {
            let Some((sink, tx)) = st.sinks.get(name) else {
                continue;
            };
            if !kind.is_some_and(|k| sink.on.contains(&k)) {
                continue;
            }
            let body = body
                .get_or_insert_with(|| serde_json::to_string(&event).unwrap_or_default())
                .clone();
            info!(event = "notify", sink = %name, job = %job.name, node = %self.node,
                what = event.event, fire_time = %event.fire_time, "{} → {name}", event.summary());
            self.queue(
                name,
                tx,
                Delivery {
                    job: job.name.clone(),
                    what: event.event.to_string(),
                    request: Request::Event(body),
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
            _ => {}
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
