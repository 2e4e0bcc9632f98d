//! The node's HTTP interface (only with `--http ADDR`): health, readiness, its view, metrics.
//!
//! | path | answers |
//! |---|---|
//! | `/healthz`, `/.well-known/live` | 200 while the node works; 503 when it held leases it failed to renew in time and has not renewed since |
//! | `/readyz`, `/.well-known/ready` | 200 once the store answered and the node's session is valid; 503 while connecting, after a lapse, and while stopping |
//! | `/status` | JSON: this node's view of every job (role, holder, term, next fire time, its last run) |
//! | `/metrics` | Prometheus / OpenMetrics text, see [`crate::ops::metrics`] |
//! | `/runs/{job}/{fire_time}/output` | a run going on this node: its kept output, then its lines as they come, until it ends (`text/plain`, chunked); 404 when no such run is going here |
//! | `/`, `/dashboard.js`, `/dashboard.css` | the dashboard: a page that shows the cluster live, [`crate::ops::dashboard`] |
//! | `/api/cluster` | JSON: the report of `cronlease status --json`, refreshed at most once per poll; `?since=V`: only the job rows changed since version `V` ([`crate::ops::row_versions`]) |
//! | `/api/jobs/{job}` | JSON: one job's view: its last 100 runs, counts per outcome, next fire times ([`crate::ops::job_view`]) |
//! | `/api/runs/{job}/{fire_time}` | JSON: one run's record from the store, with its kept output: [`crate::ops::run_detail`] |
//! | `/api/runs/{job}/{fire_time}/live` | a running run's output as it comes, from whichever node runs it |
//! | `POST /api/jobs/{job}/{pause,resume,trigger}` | the control plane's writes: [`crate::ops::actions`] |
//!
//! Every route is behind one guard ([`crate::ops::http_auth`]): tokens and their roles, the
//! `Host` check of a loopback bind, the limit on wrong tokens, the security headers. With
//! `--http-tls-cert` the same routes are served over TLS ([`crate::ops::http_listener`],
//! [`crate::ops::http_tls`]).
//!
//! The output stream is what `cronlease logs --follow` reads (the node's address is in its
//! record in the store). `fire_time` is RFC 3339 or a run key's unix seconds (`1800000000`, or
//! `1800000000.250` for a manual run). The body starts with the cut marker when bytes before
//! the kept tail were dropped (their count is also in the `x-cronlease-output-cut` header, so
//! a reader can tell where in the run's output the body starts; `x-cronlease-node` names the
//! node, so a reader that meant another node can tell), then the kept tail, then each
//! new line; a reader that falls [`LIVE_LINES`](crate::node::output::LIVE_LINES) behind gets a
//! [`lag_marker`] line and goes on.
//! It ends when the run does; when the server stops first, it breaks off (no chunked end), so
//! that a reader cannot take it for the run's end.
//!
//! The listener is bound before the store is reached, so an orchestrator sees "alive, not
//! ready" during start-up instead of a refused connection. Liveness deliberately does not fail
//! for a follower that cannot reach the store: restarting it would not help anybody.
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::node::election::Election;
use crate::node::jobs::JobTable;
use crate::node::output::{cut_marker, lag_marker, Subscription};
use crate::node::session::Session;
use crate::node::tick::{rfc3339, LastRun, Ticks};
use crate::ops::http_listener::HttpListener;
use crate::ops::metrics::Metrics;

/// What the endpoints read. The running parts are filled in once the node has registered.
pub struct NodeState {
    pub node: String,
    pub jobs: Arc<JobTable>,
    pub metrics: Arc<Metrics>,
    pub running: OnceLock<Running>,
    /// The election's poll: how often the dashboard refreshes.
    pub poll: std::time::Duration,
    /// Who may read and act: tokens, public reads, Host names ([`crate::ops::http_auth`]).
    pub access: Arc<crate::ops::http_auth::HttpAccess>,
    /// Cancelled when the node starts its graceful stop.
    pub stopping: CancellationToken,
    /// The dashboard's run detail: finished records kept, live relays.
    pub runs: crate::ops::run_detail::RunDetail,
}

/// The parts of a registered node.
pub struct Running {
    pub store: String,
    /// The store itself, for the write endpoints.
    pub handle: Arc<dyn crate::store::Store>,
    /// The dashboard's view of the cluster, refreshed at most once per poll.
    pub cluster: Arc<crate::ops::cluster_view::ClusterView>,
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

/// Bind `addr` now; serve until `shutdown` fires, over TLS with `tls`
/// ([`crate::ops::http_tls`]). Returns the bound address (port 0 allowed) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<NodeState>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let listener = HttpListener::new(listener, tls, shutdown.clone())
        .map_err(|source| HttpError { addr, source })?;
    let bound = axum::serve::Listener::local_addr(&listener)
        .map_err(|source| HttpError { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/live", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/ready", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/runs/{job}/{fire_time}/output", {
            let shutdown = shutdown.clone();
            get(move |state, path| run_output(state, path, shutdown.clone()))
        })
        .merge(
            // The page and its JSON, gzipped for a browser that asks (a report of 1,000 jobs
            // with 20 runs each is megabytes, read every poll). Not the output streams: they
            // must not wait for a compressor's buffer.
            Router::new()
                .route("/", get(crate::ops::dashboard::page))
                .route("/dashboard.js", get(crate::ops::dashboard::script))
                .route("/dashboard.css", get(crate::ops::dashboard::style))
                .route("/api/cluster", get(crate::ops::dashboard::cluster))
                .route("/api/jobs/{job}", get(crate::ops::job_view::job))
                .route(
                    "/api/runs/{job}/{fire_time}",
                    get(crate::ops::run_detail::record),
                )
                .layer(tower_http::compression::CompressionLayer::new()),
        )
        .route("/api/runs/{job}/{fire_time}/live", {
            let shutdown = shutdown.clone();
            get(move |state, path| crate::ops::run_detail::live(state, path, shutdown.clone()))
        })
        .route("/api/jobs/{job}/pause", post(crate::ops::actions::pause))
        .route("/api/jobs/{job}/resume", post(crate::ops::actions::resume))
        .route(
            "/api/jobs/{job}/trigger",
            post(crate::ops::actions::trigger),
        )
        // Every route behind the one guard: tokens, roles, Host, the security headers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ops::http_auth::guard,
        ))
        .with_state(state);
    let task = tokio::spawn(async move {
        // The callers' addresses: the guard limits by them, the write endpoints log them.
        // (Through `tap_io`, axum gives a custom listener's `SocketAddr` as `ConnectInfo`.)
        let served = axum::serve(
            listener.tap_io(|_| ()),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
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

/// The response header of a run's output stream that names the node serving it: a reader
/// that reached another node than the one it meant (an address that means another host from
/// here, such as loopback) can tell.
pub const NODE_HEADER: &str = "x-cronlease-node";

/// The response header with the number of output bytes before the body's first byte of output.
pub const OUTPUT_CUT_HEADER: &str = "x-cronlease-output-cut";

/// A fire time in a URL: RFC 3339, or a run key's unix seconds ([`crate::store::time_key`]).
pub fn parse_fire_time(text: &str) -> Option<DateTime<Utc>> {
    crate::store::parse_time_key(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `/runs/{job}/{fire_time}/output`.
async fn run_output(
    State(state): State<Arc<NodeState>>,
    Path((job, fire)): Path<(String, String)>,
    shutdown: CancellationToken,
) -> Response {
    let Some(fire_time) = parse_fire_time(&fire) else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "bad fire time {fire:?}: expected RFC 3339 (2026-03-29T00:59:59Z) or unix \
                 seconds (1800000000, 1800000000.250)"
            ),
        );
    };
    match local_output(&state, &job, fire_time, shutdown) {
        Some(stream) => stream,
        None => text(
            StatusCode::NOT_FOUND,
            &format!(
                "no run of {job} at {} is going on node {} (it ended, or runs elsewhere: see \
                 `cronlease logs {job}`)",
                rfc3339(fire_time),
                state.node
            ),
        ),
    }
}

/// The stream of the run of `job` at `fire_time` if it is going on this node.
pub(crate) fn local_output(
    state: &NodeState,
    job: &str,
    fire_time: DateTime<Utc>,
    shutdown: CancellationToken,
) -> Option<Response> {
    let tail = state
        .running
        .get()
        .and_then(|r| r.ticks.live_output(job, fire_time))?;
    let sub = tail.subscribe();
    let cut = sub.cut;
    Some(
        (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (header::CACHE_CONTROL, "no-cache".to_string()),
                (
                    header::HeaderName::from_static(OUTPUT_CUT_HEADER),
                    cut.to_string(),
                ),
                (
                    header::HeaderName::from_static(NODE_HEADER),
                    state.node.clone(),
                ),
            ],
            Body::from_stream(output_stream(sub, shutdown)),
        )
            .into_response(),
    )
}

/// The most bytes of lines already waiting that one chunk gathers.
const CHUNK_BYTES: usize = 64 * 1024;

/// The body of `/runs/{job}/{fire_time}/output`: the cut marker and the kept tail, then the
/// lines as they come (those already waiting gathered into one chunk), until the run ends.
/// When the server stops first, an error breaks the response off.
fn output_stream(
    sub: Subscription,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut head = String::new();
    if sub.cut > 0 {
        head.push_str(&cut_marker(sub.cut));
        head.push('\n');
    }
    head.push_str(&sub.text);
    let head = futures::stream::iter((!head.is_empty()).then(|| Ok(Bytes::from(head))));
    let live = futures::stream::unfold(Some(sub.lines), move |rx| {
        let shutdown = shutdown.clone();
        async move {
            let mut rx = rx?;
            let mut chunk = String::new();
            let first = tokio::select! {
                biased;
                first = rx.recv() => first,
                _ = shutdown.cancelled() => {
                    let e = std::io::Error::other("the node's HTTP server is stopping");
                    return Some((Err(e), None));
                }
            };
            let mut ended = false;
            match first {
                Ok(line) => {
                    chunk.push_str(&line);
                    chunk.push('\n');
                }
                Err(RecvError::Lagged(n)) => {
                    chunk.push_str(&lag_marker(n));
                    chunk.push('\n');
                }
                Err(RecvError::Closed) => return None,
            }
            while chunk.len() < CHUNK_BYTES {
                match rx.try_recv() {
                    Ok(line) => {
                        chunk.push_str(&line);
                        chunk.push('\n');
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        chunk.push_str(&lag_marker(n));
                        chunk.push('\n');
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        ended = true;
                        break;
                    }
                }
            }
            Some((Ok(Bytes::from(chunk)), (!ended).then_some(rx)))
        }
    });
    head.chain(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::output::{OutputTail, LIVE_LINES};

    async fn collect(
        stream: impl Stream<Item = Result<Bytes, std::io::Error>>,
    ) -> (String, Option<String>) {
        let mut body = String::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => body.push_str(std::str::from_utf8(&bytes).unwrap()),
                Err(e) => return (body, Some(e.to_string())),
            }
        }
        (body, None)
    }

    #[tokio::test]
    async fn the_output_stream_is_the_marker_the_tail_then_live_lines_until_the_end() {
        let tail = Arc::new(OutputTail::new(7));
        tail.push("first line");
        tail.push("second");
        let stream = output_stream(tail.subscribe(), CancellationToken::new());
        let pusher = {
            let tail = tail.clone();
            tokio::spawn(async move {
                for i in 0..3 {
                    tail.push(&format!("live {i}"));
                    tokio::task::yield_now().await;
                }
                tail.close();
            })
        };
        let (body, error) = collect(stream).await;
        pusher.await.unwrap();
        assert_eq!(error, None);
        assert_eq!(
            body,
            format!("{}\nsecond\nlive 0\nlive 1\nlive 2\n", cut_marker(11))
        );
    }

    #[tokio::test]
    async fn a_lagging_reader_is_told_and_a_stopping_server_breaks_the_stream_off() {
        let tail = OutputTail::new(0);
        let shutdown = CancellationToken::new();
        let stream = output_stream(tail.subscribe(), shutdown.clone());
        for i in 0..LIVE_LINES + 3 {
            tail.push(&format!("{i}"));
        }
        shutdown.cancel();
        let (body, error) = collect(stream).await;
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], lag_marker(3));
        assert_eq!(lines[1], "3");
        assert_eq!(lines.last(), Some(&format!("{}", LIVE_LINES + 2).as_str()));
        assert_eq!(error.as_deref(), Some("the node's HTTP server is stopping"));
    }

    #[test]
    fn fire_times_parse_as_run_keys_or_rfc3339() {
        let t = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        assert_eq!(parse_fire_time("1800000000.250"), Some(t));
        assert_eq!(parse_fire_time("2027-01-15T08:00:00.250Z"), Some(t));
        assert_eq!(parse_fire_time("2027-01-15T09:00:00.250+01:00"), Some(t));
        assert_eq!(
            parse_fire_time("1800000000"),
            DateTime::from_timestamp(1_800_000_000, 0)
        );
        assert_eq!(parse_fire_time("yesterday"), None);
        assert_eq!(parse_fire_time("1800000000.2"), None);
    }
}
