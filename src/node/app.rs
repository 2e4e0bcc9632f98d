//! Wiring, and the one shutdown path.
//!
//! Start: connect to the store and register this node's session (retrying with backoff while
//! the store is unreachable), then run three loops: the session's heartbeat, the election's
//! poll, and the tick source.
//!
//! Stop (SIGINT or SIGTERM): stop taking ticks and leases; hand back at once the leases of jobs
//! with nothing going; let running jobs finish within `shutdown_grace`, then kill them; release
//! the rest of this node's leases and delete its record, so other nodes take over at their
//! next poll; exit 0. A second signal skips the grace period.
//!
//! Under systemd (`NOTIFY_SOCKET`), one task (`systemd_task`) keeps the timing of what the
//! node tells it: `WATCHDOG=1` while the node's loops make progress, `STATUS=` on change; the
//! moments (`READY=1`, `STOPPING=1`) are said where they happen ([`crate::ops::sd_notify`]).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, ElectionConfig};
use crate::node::drift::Drift;
use crate::node::election::{Election, Leadership, LeaseEvents};
use crate::node::history::History;
use crate::node::job_health::JobHealth;
use crate::node::jobs::JobTable;
use crate::node::orphans::Orphans;
use crate::node::recorder::Recorder;
use crate::node::reload::{self, Reloader};
use crate::node::requested::Requested;
use crate::node::session::Session;
use crate::node::tick::{TickContext, Ticks};
use crate::node::ticker::Ticker;
use crate::ops::http::{self, NodeState, Running};
use crate::ops::metrics::Metrics;
use crate::ops::sd_notify::{self, LoopProgress, Progress, SdNotify};
use crate::store::{self, metered::Metered, Requests, Store};

/// How one node runs, besides its jobs file.
pub struct RunOptions {
    /// This node's id.
    pub node: String,
    /// The HTTP interface (`--http` and its options, checked); no listener without it.
    pub http: Option<crate::ops::http_options::PreparedHttp>,
    /// What to tell systemd (`NOTIFY_SOCKET`; [`SdNotify::disabled`] for silence).
    pub sd_notify: SdNotify,
}

/// How long killed jobs get to be reaped and recorded before the node gives up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The least time queued run outcomes get to be written at a graceful stop.
const MIN_FLUSH: Duration = Duration::from_secs(1);
/// The least time given to queued notifications at shutdown.
const NOTIFY_FLUSH: Duration = Duration::from_secs(3);
/// The longest wait between two attempts to reach the store (here and in
/// [`Session::register`]).
const CONNECT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the systemd task compares the status line with the one it sent last.
const SD_STATUS_EVERY: Duration = Duration::from_secs(2);
/// What systemd gets on top of the stop's own bounds (grace, hand-over, kill wait, flushes):
/// store calls of the release and the record's deletion, a loaded machine.
const STOP_MARGIN: Duration = Duration::from_secs(20);

/// How long one store call may take before it fails (`renew`, within 1 to 10 s).
fn store_timeout(election: &ElectionConfig) -> Duration {
    election
        .renew
        .clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// What a graceful stop may take, for systemd's `EXTEND_TIMEOUT_USEC`: the grace period of the
/// running jobs, the hand-over of the leases, the kill wait and the flushes, and a margin. So
/// `TimeoutStopSec` follows `shutdown_grace` in jobs.toml rather than the unit file's guess.
fn stop_budget(grace: Duration, poll: Duration) -> Duration {
    grace
        + crate::node::election::handover_wait(poll)
        + KILL_WAIT
        + MIN_FLUSH
        + NOTIFY_FLUSH
        + STOP_MARGIN
}

/// What the systemd task watches, filled in as the node starts.
struct Systemd {
    sd: Arc<SdNotify>,
    /// Stamped after each attempt to reach the store: the start is alive.
    starting: Progress,
    /// The session, as soon as it exists: registration's attempts stamp its progress.
    session: OnceLock<Arc<Session>>,
    /// The heartbeat has stopped: the node's last seconds, each step bounded.
    finishing: AtomicBool,
}

impl Systemd {
    fn new(sd: SdNotify) -> Self {
        Systemd {
            sd: Arc::new(sd),
            starting: Progress::new(),
            session: OnceLock::new(),
            finishing: AtomicBool::new(false),
        }
    }

    /// The loops whose progress the watchdog asks for now: the start's attempts until the node
    /// is registered, then the session's renew loop and the election's poll loop (the renew
    /// loop alone once stopping, nothing once the heartbeat has stopped). Each loop's period
    /// includes one store call's bound (twice the timeout: the file store's lock wait), so a
    /// store that never answers still lets every iteration end.
    fn loops(&self, state: &NodeState, election: &ElectionConfig) -> Vec<LoopProgress> {
        if self.finishing.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let call = store_timeout(election) * 2;
        match state.running.get() {
            None => {
                let registering = self.session.get().map_or(0, |s| s.progress().last_ms());
                vec![LoopProgress {
                    last_ms: self.starting.last_ms().max(registering),
                    period: CONNECT_MAX_BACKOFF + call,
                }]
            }
            Some(running) => {
                let mut loops = vec![LoopProgress {
                    last_ms: running.session.progress().last_ms(),
                    period: election.renew + call,
                }];
                if !state.stopping.is_cancelled() {
                    loops.push(LoopProgress {
                        last_ms: running.election.progress().last_ms(),
                        period: election.poll + call,
                    });
                }
                loops
            }
        }
    }
}

/// The one place of systemd's timing: `WATCHDOG=1` at least every half of `WATCHDOG_USEC`
/// while [`sd_notify::watchdog_ok`] says the node's loops make progress (a store outage does
/// not stop them: iterations end with an error), and, once running, the status line when it
/// changed, looked at every [`SD_STATUS_EVERY`]. Ends with `end`.
async fn systemd_task(
    systemd: Arc<Systemd>,
    state: Arc<NodeState>,
    election: ElectionConfig,
    end: CancellationToken,
) {
    let sd = &systemd.sd;
    if !sd.enabled() {
        return;
    }
    let watchdog = sd.watchdog();
    let every = watchdog.map_or(SD_STATUS_EVERY, |w| {
        (w / 4).clamp(Duration::from_millis(1), SD_STATUS_EVERY)
    });
    let mut sent: Option<String> = None;
    let mut status_due = tokio::time::Instant::now();
    loop {
        if let Some(w) = watchdog {
            let now = sd_notify::monotonic_usec() / 1_000;
            if sd_notify::watchdog_ok(now, w, &systemd.loops(&state, &election)) {
                sd.watchdog_ping();
            }
        }
        let now = tokio::time::Instant::now();
        if now >= status_due && !state.stopping.is_cancelled() {
            status_due = now + SD_STATUS_EVERY;
            if let Some(running) = state.running.get() {
                let store_error = running.election.observation().err();
                let text = sd_notify::running_status(
                    running.election.held().len(),
                    state.jobs.active_names().len(),
                    &running.store,
                    store_error.as_deref(),
                    sd.refused().as_deref(),
                );
                if sent.as_ref() != Some(&text) {
                    sd.status(&text);
                    sent = Some(text);
                }
            }
        }
        tokio::select! {
            _ = end.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The election's events, delivered to the parts of the node that act on them.
struct NodeEvents {
    ticks: Arc<Ticks>,
    history: Arc<History>,
    orphans: Arc<Orphans>,
    requested: Arc<Requested>,
    health: Arc<JobHealth>,
}

impl LeaseEvents for NodeEvents {
    fn acquired(&self, idx: usize, term: i64) {
        self.ticks.caught_up(idx, term);
        // Term 1: nobody held it before, so nobody ran it: no history to prune.
        if term > 1 {
            self.history.acquired(&self.ticks.job(idx).name);
        }
        self.orphans.acquired();
        self.health.acquired(idx, term);
    }

    fn lost(&self, idx: usize, term: i64) {
        self.ticks.lease_lost(idx, term);
    }

    fn requests(&self, idx: usize, lead: &Leadership, requests: &Requests) {
        self.requested.seen(idx, lead, requests)
    }

    fn hand_over(&self, jobs: Vec<usize>, want: usize) -> Vec<usize> {
        self.ticks.hand_over(jobs, want)
    }

    fn handed_over(&self, jobs: &[usize]) {
        self.ticks.handed_over(jobs)
    }
}

/// A random, readable node id such as `quiet-otter-0412`.
pub fn random_node_id() -> String {
    let mut generator = names::Generator::with_naming(names::Name::Numbered);
    generator.next().unwrap_or_else(|| "node".to_string())
}

/// The shutdown tree: `stop` (stop taking ticks and leases) → `kill` (kill running jobs).
struct Shutdown {
    stop: CancellationToken,
    kill: CancellationToken,
}

fn watch_signals(shutdown: &Shutdown) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let stop = shutdown.stop.clone();
    let kill = shutdown.kill.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                info!(
                    event = "signal",
                    signal = name,
                    "stopping: no new ticks; running jobs may finish"
                );
                stop.cancel();
            } else {
                info!(
                    event = "signal",
                    signal = name,
                    "second signal: killing running jobs now"
                );
                kill.cancel();
            }
        }
    });
    Ok(())
}

pub async fn run(mut config: Config, options: RunOptions) -> anyhow::Result<()> {
    let node = options.node;
    let systemd = Arc::new(Systemd::new(options.sd_notify));
    let shutdown = Shutdown {
        stop: CancellationToken::new(),
        kill: CancellationToken::new(),
    };
    watch_signals(&shutdown)?;
    // Installed now: SIGHUP's default action would end the process. One that arrives before
    // the reloader runs is kept and handled then.
    let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Moved, not copied: from here on the table is the one list of jobs (a second copy was
    // 8 MB at 10,000 jobs).
    let count = config.jobs.len();
    let jobs = Arc::new(JobTable::new(std::mem::take(&mut config.jobs)));
    info!(event = "node_starting", jobs = count, config = %config.source.display(),
        "starting with {count} jobs");

    // HTTP first: "alive, not ready" while the store is being reached. It stops last.
    let metrics = Arc::new(Metrics::new());
    let node_state = Arc::new(NodeState {
        node: node.clone(),
        jobs: jobs.clone(),
        metrics: metrics.clone(),
        running: std::sync::OnceLock::new(),
        access: options
            .http
            .as_ref()
            .map(|h| h.access.clone())
            .unwrap_or_else(|| Arc::new(crate::ops::http_auth::HttpAccess::open())),
        poll: config.election.poll,
        stopping: shutdown.stop.clone(),
        runs: crate::ops::run_detail::RunDetail::new(
            options
                .http
                .as_ref()
                .map(|h| h.extra_roots.clone())
                .unwrap_or_default(),
            options.http.as_ref().is_some_and(|h| h.tls.is_some()),
        ),
    });
    let http_stop = CancellationToken::new();
    let http_server = match options.http {
        Some(prepared) => {
            let tls = prepared.tls.as_ref().map(|(_, slot)| slot.server_config());
            let (bound, task) =
                http::serve(prepared.addr, tls, node_state.clone(), http_stop.clone()).await?;
            let advertised = prepared.advertised(bound);
            let scheme = if prepared.tls.is_some() {
                "https"
            } else {
                "http"
            };
            info!(event = "http_listening", addr = %bound, advertised = %advertised,
                "serving the dashboard, /healthz /readyz /status /metrics on {scheme}://{bound} \
                 (published as {advertised})");
            // Certificates and tokens rotate without a restart.
            let secrets = crate::ops::http_secrets::Secrets {
                tls: prepared.tls,
                token_file: prepared.token_file,
                access: prepared.access,
            };
            if secrets.any() {
                let hangup =
                    signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
                tokio::spawn(secrets.run(hangup, http_stop.clone()));
            }
            Some((advertised, task))
        }
        None => None,
    };
    let systemd_end = CancellationToken::new();
    let sd_task = tokio::spawn(systemd_task(
        systemd.clone(),
        node_state.clone(),
        config.election,
        systemd_end.clone(),
    ));
    // Running jobs' processes die with this node, even on SIGKILL (crate::node::watchdog).
    crate::node::watchdog::start();
    let result = run_node(
        config,
        hangup,
        node,
        metrics,
        node_state,
        http_server.as_ref().map(|(a, _)| a.clone()),
        shutdown,
        systemd,
    )
    .await;
    systemd_end.cancel();
    let _ = sd_task.await;
    crate::node::watchdog::stop().await;
    http_stop.cancel();
    if let Some((_, task)) = http_server {
        let _ = task.await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_node(
    config: Config,
    hangup: tokio::signal::unix::Signal,
    node: String,
    metrics: Arc<Metrics>,
    node_state: Arc<NodeState>,
    http: Option<String>,
    shutdown: Shutdown,
    systemd: Arc<Systemd>,
) -> anyhow::Result<()> {
    let jobs = node_state.jobs.clone();
    let Some(store) = connect_store(&config, &shutdown.stop, &systemd).await? else {
        systemd
            .sd
            .stopping(STOP_MARGIN, "stopping: the store was never reached");
        info!(
            event = "node_stopped",
            "stopped before the store was reached"
        );
        return Ok(());
    };
    let store: Arc<dyn Store> = Arc::new(Metered::new(store, metrics.clone()));
    let session = Arc::new(Session::new(
        node.clone(),
        store.clone(),
        config.election,
        http,
    ));
    let _ = systemd.session.set(session.clone());
    // This node's job definitions go to the store before its record names their digest
    // (crate::node::drift); if the store is not there yet, the election's polls try again.
    let drift = Arc::new(Drift::new(
        node.clone(),
        store.clone(),
        session.clone(),
        jobs.clone(),
        metrics.clone(),
    ));
    drift.publish().await;
    systemd
        .sd
        .status(&format!("registering with the {}", store.describe()));
    if !session.register(&shutdown.stop).await {
        systemd
            .sd
            .stopping(STOP_MARGIN, "stopping: never registered with the store");
        info!(event = "node_stopped", "stopped before registering");
        return Ok(());
    }
    info!(event = "node_started", store = %store.describe(), "registered; lease {:?}, renew {:?}, poll {:?}",
        config.election.lease, config.election.renew, config.election.poll);

    // The heartbeat outlives `stop`: leases must stay alive while running jobs finish.
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = {
        let session = session.clone();
        let token = heartbeat_stop.clone();
        tokio::spawn(async move { session.renew_loop(token).await })
    };

    let election = Arc::new(
        Election::new(
            session.clone(),
            store.clone(),
            config.election,
            jobs.clone(),
            metrics.clone(),
        )
        .with_skew_warn(config.node.clock_skew_warn),
    );
    election.set_drift(drift.clone());
    let tracker = TaskTracker::new();
    let history = Arc::new(History::new(
        store.clone(),
        config.store.history,
        metrics.clone(),
    ));
    // Events go out from queues of their own (crate::notify), never in a tick's way.
    let notifier = crate::notify::Notifier::new(
        node.clone(),
        metrics.clone(),
        jobs.clone(),
        Some(store.clone()),
    )?;
    let sinks = crate::notify::resolve(&config.notify, crate::notify::environment)?;
    notifier.configure(sinks);
    // Run outcomes are written by their own worker, retrying across store outages.
    let (recorder, outcome_writer) = Recorder::new(
        node.clone(),
        store.clone(),
        history.clone(),
        metrics.clone(),
    );
    let outcome_writer = outcome_writer.notify_to(notifier.clone());
    let recorder_stop = CancellationToken::new();
    let outcome_writer = {
        let token = recorder_stop.clone();
        tokio::spawn(outcome_writer.run(token))
    };
    let ticks = Arc::new(Ticks::new(
        TickContext {
            node: node.clone(),
            store: store.clone(),
            election: election.clone(),
            metrics: metrics.clone(),
            lease: config.election.lease,
            tracker: tracker.clone(),
            stopping: shutdown.stop.clone(),
            kill: shutdown.kill.clone(),
            recorder,
            process: session.process().to_string(),
            notifier: notifier.clone(),
        },
        jobs.clone(),
    ));
    let orphans = Arc::new(Orphans::new(
        node.clone(),
        session.process().to_string(),
        store.clone(),
        election.clone(),
        ticks.clone(),
        metrics.clone(),
    ));
    let requested = Arc::new(Requested::new(
        node.clone(),
        session.process().to_string(),
        store.clone(),
        election.clone(),
        ticks.clone(),
    ));
    election.set_events(Arc::new(NodeEvents {
        ticks: ticks.clone(),
        history: history.clone(),
        orphans: orphans.clone(),
        requested,
        health: Arc::new(JobHealth::new(
            node.clone(),
            store.clone(),
            election.clone(),
            ticks.clone(),
            metrics.clone(),
        )),
    }));
    let _ = node_state.running.set(Running {
        store: store.describe(),
        handle: store.clone(),
        cluster: Arc::new(crate::ops::cluster_view::ClusterView::new(
            store.clone(),
            election.clone(),
            config.clone(),
            jobs.clone(),
            config.election.poll,
        )),
        session: session.clone(),
        election: election.clone(),
        ticks: ticks.clone(),
        drift: drift.clone(),
    });
    // Registered and serving: /readyz answers 200 from here on, and systemd hears the same.
    systemd.sd.ready();
    // Pruning old runs is background work: it stops with the ticks.
    let pruner = {
        let history = history.clone();
        let token = shutdown.stop.clone();
        tokio::spawn(async move { history.run(token).await })
    };
    let election_task = {
        let election = election.clone();
        let token = shutdown.stop.clone();
        tokio::spawn(async move { election.run(token).await })
    };
    // A lapse of the session is noticed within half a poll, even while the election's poll
    // waits on an unreachable store: it drops the leases (and `on_lease_lost = "stop"` stops
    // their runs) right at the renew deadline. Runs until the session ends.
    let lapse_watch = {
        let election = election.clone();
        let token = heartbeat_stop.clone();
        let every = (config.election.poll / 2).max(Duration::from_millis(50));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                election.healthy();
            }
        })
    };
    // Freed memory goes back to the system (crate::node::heap); nothing waits for this task.
    tokio::spawn(crate::node::heap::trim_until(shutdown.stop.clone()));
    let orphan_task = {
        let orphans = orphans.clone();
        let token = shutdown.stop.clone();
        tokio::spawn(async move { orphans.run(token).await })
    };
    let ticker = {
        let ticks = ticks.clone();
        Ticker::start(
            jobs.active()
                .into_iter()
                .map(|(_, j)| j.schedule.clone())
                .collect(),
            Utc::now(),
            Arc::new(move |idx, t| ticks.fire(idx, t)),
            shutdown.stop.clone(),
        )
        .await
        .context("starting the tick source")?
    };

    // Jobs declared off (`enabled = false`) are not scheduled.
    for (idx, job) in jobs.active() {
        if !job.enabled {
            ticker.updates().set(idx, None);
        }
    }
    // jobs.toml is re-read on SIGHUP and when it changes on disk (crate::node::reload).
    let reloader = Arc::new(Reloader::new(
        &config,
        reload::Parts {
            jobs: jobs.clone(),
            ticks: ticks.clone(),
            election: election.clone(),
            schedules: ticker.updates(),
            drift: drift.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            sd_notify: systemd.sd.clone(),
        },
    ));
    let reload_task = {
        let reloader = reloader.clone();
        let token = shutdown.stop.clone();
        tokio::spawn(async move { reloader.run(hangup, token).await })
    };

    shutdown.stop.cancelled().await;
    let stopped_at = tokio::time::Instant::now();
    let grace = reloader.node_config().shutdown_grace;
    systemd.sd.stopping(
        stop_budget(grace, config.election.poll),
        &format!(
            "stopping: running jobs may finish within {}",
            humantime::format_duration(grace)
        ),
    );

    // 1. No new leases; those with nothing going go back now, so the others take them at
    // their next poll (a claim needs the lease, so none of these can start a run after). Then
    // no new ticks.
    let _ = election_task.await;
    election.release_idle().await;
    ticker.stop().await;
    let _ = reload_task.await;
    let _ = orphan_task.await;
    let _ = pruner.await;
    // 2. Running jobs finish within the grace period, else they are killed.
    tracker.close();
    if !tracker.is_empty() {
        info!(
            event = "draining",
            running = tracker.len(),
            "waiting up to {grace:?} for running jobs"
        );
    }
    tokio::select! {
        _ = tracker.wait() => {}
        _ = tokio::time::sleep(grace) => {
            warn!(event = "grace_exceeded", "shutdown grace of {grace:?} exceeded: killing running jobs");
            shutdown.kill.cancel();
        }
        _ = shutdown.kill.cancelled() => {}
    }
    if tokio::time::timeout(KILL_WAIT, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            event = "grace_exceeded",
            "jobs still not reaped after {KILL_WAIT:?}; leaving them"
        );
    }
    // 3. Record the outcomes still queued, until the grace period is over (at least a second).
    recorder_stop.cancel();
    if let Ok(writer) = outcome_writer.await {
        let deadline = (stopped_at + grace).max(tokio::time::Instant::now() + MIN_FLUSH);
        let left = writer.drain(deadline).await;
        if left > 0 {
            warn!(
                event = "outcome_unrecorded",
                left, "{left} run outcome(s) could not be recorded before stopping"
            );
        }
    }
    // 4. Hand the leases back and end the session.
    let released = election.release_all().await;
    heartbeat_stop.cancel();
    systemd.finishing.store(true, Ordering::Relaxed);
    let _ = heartbeat.await;
    let _ = lapse_watch.await;
    if let Err(e) = session.remove().await {
        warn!(
            event = "store_error",
            "cannot delete this node's record: {e}"
        );
    }
    // 5. Send the notifications still queued (outcomes just written included), within what is
    // left of the grace period, at least a few seconds: after the hand-over, so that a sink
    // that is down does not keep the jobs unled.
    let deadline = (stopped_at + grace).max(tokio::time::Instant::now() + NOTIFY_FLUSH);
    notifier.shutdown(deadline).await;
    info!(event = "node_stopped", released, "stopped");
    Ok(())
}

/// Connect to the store, retrying with backoff until it answers or the node is stopped.
/// A configuration problem (no project, bad credentials) is fatal at once.
/// Each attempt stamps `systemd.starting`; each failure is the status line.
async fn connect_store(
    config: &Config,
    stop: &CancellationToken,
    systemd: &Systemd,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let timeout = store_timeout(&config.election);
    // Said once, before any retry: which directory the node shares, and why it was chosen.
    if let store::Resolved::File { dir, default } = store::resolve(&config.store) {
        let why = if default {
            "no Datastore configured ([store] backend, DATASTORE_PROJECT_ID, \
             GOOGLE_CLOUD_PROJECT, DATASTORE_EMULATOR_HOST)"
        } else {
            "[store] backend = \"file\""
        };
        info!(event = "store_selected", backend = "file", path = %dir.display(), default,
            "using the file store at {} ({why}); only nodes on this host share it", dir.display());
    }
    systemd.sd.status("connecting to the store");
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = store::connect(&config.store, timeout).await;
        systemd.starting.stamp();
        match attempt {
            Ok(s) => return Ok(Some(s)),
            Err(store::StoreError::Other(msg)) => anyhow::bail!("{msg}"),
            Err(e) => {
                warn!(
                    event = "store_error",
                    retry_in_ms = backoff.as_millis() as u64,
                    "store unreachable, retrying: {e}"
                );
                systemd.sd.status(&format!("waiting for the store: {e}"));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(CONNECT_MAX_BACKOFF);
    }
}
