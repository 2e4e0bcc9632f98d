//! The node's HTTP interface (only with `--http ADDR`): health, readiness, its view, metrics.
//!
//! | path | answers |
//! |---|---|
//! | `/healthz`, `/.well-known/live` | 200 while the node works; 503 when it held leases it failed to renew in time and has not renewed since |
//! | `/readyz`, `/.well-known/ready` | 200 once the store answered and the node's session is valid; 503 while connecting, after a lapse, and while stopping |
//! | `/status` | JSON: this node's view of every job (role, holder, term, next fire time, its last run) |
//! | `/metrics` | Prometheus / OpenMetrics text, see [`crate::ops::metrics`] |
//!
//! The listener is bound before the store is reached, so an orchestrator sees "alive, not
//! ready" during start-up instead of a refused connection. Liveness deliberately does not fail
//! for a follower that cannot reach the store: restarting it would not help anybody.
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::election::Election;
use crate::node::jobs::JobTable;
use crate::node::session::Session;
use crate::node::tick::{rfc3339, LastRun, Ticks};
use crate::ops::metrics::Metrics;

/// What the endpoints read. The running parts are filled in once the node has registered.
pub struct NodeState {
    pub node: String,
    pub jobs: Arc<JobTable>,
    pub metrics: Arc<Metrics>,
    pub running: OnceLock<Running>,
    /// Cancelled when the node starts its graceful stop.
    pub stopping: CancellationToken,
}

/// The parts of a registered node.
pub struct Running {
    pub store: String,
    pub session: Arc<Session>,
    pub election: Arc<Election>,
    pub ticks: Arc<Ticks>,
    pub drift: Arc<crate::node::drift::Drift>,
}

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` now; serve until `shutdown` fires. Returns the bound address (port 0 allowed)
/// and the serving task.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<NodeState>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/live", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/ready", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(event = "http_error", "HTTP server stopped: {e}");
        }
    });
    Ok((bound, task))
}

fn text(code: StatusCode, body: &str) -> Response {
    (code, format!("{body}\n")).into_response()
}

async fn healthz(State(state): State<Arc<NodeState>>) -> Response {
    match state.running.get() {
        Some(r) if !r.election.healthy() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: leases were lost because the store could not be renewed in time",
        ),
        _ => text(StatusCode::OK, "ok"),
    }
}

async fn readyz(State(state): State<Arc<NodeState>>) -> Response {
    match not_ready(&state) {
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        None => text(StatusCode::OK, "ready"),
    }
}

/// Why the node is not ready, if it is not (`/readyz`, `cronlease_node_ready`).
fn not_ready(state: &NodeState) -> Option<&'static str> {
    if state.stopping.is_cancelled() {
        return Some("not ready: stopping");
    }
    match state.running.get() {
        None => Some("not ready: not registered with the store yet"),
        Some(r) if r.session.current().is_none() => {
            Some("not ready: the session lapsed; re-registering")
        }
        Some(_) => None,
    }
}

/// `/status`: this node's view.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    /// `starting`, `ready`, `lapsed` or `stopping`.
    pub state: &'static str,
    pub session: Option<String>,
    pub store: Option<String>,
    pub healthy: bool,
    pub now: String,
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub name: String,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// Who leads as this node last saw it; `null` when free or not yet known.
    pub holder: Option<String>,
    pub term: i64,
    pub next_fire_time: Option<String>,
    /// This node's last run of the job since it started (cluster history: `cronlease status`).
    pub last_run: Option<LastRun>,
    /// When the live nodes run different definitions of this job: `node=digest` per node
    /// (`absent` where a node lacks it), as in the `config_drift` log line; else `null`.
    pub drift: Option<String>,
    /// Set while the job is paused, as this node last read its lease.
    pub paused: Option<PausedView>,
    /// `false`: declared off in the jobs file.
    pub enabled: bool,
}

/// Who paused a job, since when, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PausedView {
    pub by: String,
    pub since: String,
    pub note: String,
}

async fn status(State(state): State<Arc<NodeState>>) -> Json<NodeStatus> {
    Json(node_status(&state))
}

fn node_status(state: &NodeState) -> NodeStatus {
    let now = Utc::now();
    let running = state.running.get();
    let session = running.and_then(|r| r.session.current());
    let phase = match (running, &session) {
        _ if state.stopping.is_cancelled() => "stopping",
        (None, _) => "starting",
        (Some(_), None) => "lapsed",
        (Some(_), Some(_)) => "ready",
    };
    let drift = running.map(|r| r.drift.current()).unwrap_or_default();
    let jobs = state
        .jobs
        .active()
        .into_iter()
        .map(|(idx, job)| {
            let paused = running
                .and_then(|r| r.election.view(&job.name).paused)
                .map(|p| PausedView {
                    by: p.by,
                    since: rfc3339(p.at),
                    note: p.note,
                });
            let (role, holder, term, last_run) = match running {
                None => ("follower", None, 0, None),
                Some(r) => {
                    let view = r.election.view(&job.name);
                    let leading = r.election.leading(&job.name);
                    let term = leading.as_ref().map(|l| l.term).unwrap_or(view.term);
                    let holder = if leading.is_some() {
                        Some(state.node.clone())
                    } else {
                        Some(view.holder).filter(|h| !h.is_empty())
                    };
                    let role = if leading.is_some() {
                        "leader"
                    } else {
                        "follower"
                    };
                    (role, holder, term, r.ticks.last_run(idx))
                }
            };
            JobStatus {
                name: job.name.clone(),
                role,
                holder,
                term,
                next_fire_time: job.schedule.next_after(now).map(rfc3339),
                last_run,
                drift: drift
                    .get(&job.name)
                    .map(|v| crate::node::drift::describe(v)),
                paused,
                enabled: job.enabled,
            }
        })
        .collect();
    NodeStatus {
        node: state.node.clone(),
        state: phase,
        session,
        store: running.map(|r| r.store.clone()),
        healthy: running.is_none_or(|r| r.election.healthy()),
        now: rfc3339(now),
        jobs,
    }
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    state.metrics.set_ready(not_ready(&state).is_none());
    if let Some(r) = state.running.get() {
        let paused: Vec<(String, bool)> = r
            .election
            .job_names()
            .into_iter()
            .map(|job| {
                let paused = r.election.view(&job).paused.is_some();
                (job, paused)
            })
            .collect();
        state.metrics.set_paused(&paused);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
