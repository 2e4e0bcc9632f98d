//! One run on the dashboard: what the page shows when a run's mark is clicked.
//!
//! - `GET /api/runs/{job}/{fire_time}`: the run's record from the store (one `get_run` read per
//!   click): its `status --json` fields, the header line of `cronlease logs`, and its kept
//!   output. It works for any run the store still keeps, whichever node ran it.
//! - `GET /api/runs/{job}/{fire_time}/live`: a running run's output as it comes, the body of
//!   the node's `/runs/{job}/{fire_time}/output` ([`crate::ops::http`]). When the run goes on
//!   this node, from its memory; otherwise this node relays the stream of the node that runs
//!   it (its address is in its node record), so a page served by any node can follow any run,
//!   and the browser only ever talks to the node it loaded the page from. 404 once the run has
//!   ended (the page then reads the record again for the outcome); 502 when the running node
//!   serves no HTTP or cannot be reached.
//!
//! Relaying costs this node two store reads per opened stream (the run, the node records), one
//! connection for as long as the page follows the run, and one read of the run whenever the
//! stream stays silent for [`SILENCE_CHECK`].
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::tick::rfc3339;
use crate::ops::control::timed;
use crate::ops::follow::{END_GRACE, SILENCE_CHECK};
use crate::ops::http::{local_output, parse_fire_time, NodeState, OUTPUT_CUT_HEADER};
use crate::store::{self, RunRecord, Store, StoreError};

/// Connecting to the running node (and its answer's head).
const RELAY_CONNECT: Duration = Duration::from_secs(5);

fn error(code: StatusCode, text: String) -> Response {
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": text })),
    )
        .into_response()
}

/// The run asked for, from the store; or the answer to give instead.
async fn read(state: &NodeState, job: &str, fire: &str) -> Result<RunRecord, Box<Response>> {
    if !crate::config::is_job_name(job) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("{job:?} cannot be a job's name"),
        )));
    }
    let Some(fire_time) = parse_fire_time(fire) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad fire time {fire:?}: expected RFC 3339 or a run key's unix seconds"),
        )));
    };
    let Some(running) = state.running.get() else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has not reached the store yet".into(),
        )));
    };
    let unavailable = |e: StoreError| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the store ({}): {e}", running.store),
        ))
    };
    match timed(running.handle.get_run(job, fire_time)).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "{job}: no run at {} (pruned, or never claimed)",
                rfc3339(fire_time)
            ),
        ))),
        Err(e) => Err(unavailable(e)),
    }
}

/// `GET /api/runs/{job}/{fire_time}`.
pub async fn record(
    State(state): State<Arc<NodeState>>,
    Path((job, fire)): Path<(String, String)>,
) -> Response {
    let run = match read(&state, &job, &fire).await {
        Ok(run) => run,
        Err(answer) => return *answer,
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "run": crate::ops::status::run_status(&run),
            "header": crate::ops::logs::header(&run),
            "attempts": run.attempts,
            "output": run.output,
            "output_cut": run.output_cut,
            "cut_marker": (run.output_cut > 0)
                .then(|| crate::node::output::cut_marker(run.output_cut)),
            "running": run.outcome == store::RUNNING,
        })),
    )
        .into_response()
}

/// `GET /api/runs/{job}/{fire_time}/live`.
pub async fn live(
    State(state): State<Arc<NodeState>>,
    Path((job, fire)): Path<(String, String)>,
    shutdown: CancellationToken,
) -> Response {
    if let Some(fire_time) = parse_fire_time(&fire) {
        if let Some(here) = local_output(&state, &job, fire_time, shutdown.clone()) {
            return here;
        }
    }
    let run = match read(&state, &job, &fire).await {
        Ok(run) => run,
        Err(answer) => return *answer,
    };
    if run.outcome != store::RUNNING {
        return error(
            StatusCode::NOT_FOUND,
            format!("the run ended: {}", run.outcome),
        );
    }
    if run.node == state.node {
        // The record says here, the memory says not (it ended a moment ago): the record will.
        return error(StatusCode::NOT_FOUND, "the run is ending".into());
    }
    let Some(running) = state.running.get() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no store yet".into());
    };
    let nodes = match timed(running.handle.nodes()).await {
        Ok(nodes) => nodes,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store: {e}"),
            )
        }
    };
    let addr = match nodes.get(&run.node).map(|n| n.http.clone()) {
        None => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "node {} is not registered any more (stopped or died): the next leader \
                     closes its run",
                    run.node
                ),
            )
        }
        Some(None) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "node {} serves no HTTP (start it with --http ADDR to follow its runs \
                     live)",
                    run.node
                ),
            )
        }
        Some(Some(addr)) => addr,
    };
    relay(running.handle.clone(), &run, &addr, shutdown).await
}

/// The relay's state between two chunks: the running node's answer, and when the store said
/// the run ended.
type Relayed = (reqwest::Response, Option<Instant>);

/// The relay's last item: an error, so that the response is broken off (no chunked end).
fn broken(why: String) -> Option<(Result<axum::body::Bytes, std::io::Error>, Option<Relayed>)> {
    Some((Err(std::io::Error::other(why)), None))
}

/// The running node's stream of `run`'s output, passed through as it comes.
///
/// A stream that stays silent for [`SILENCE_CHECK`] is checked against the store (a node whose
/// host vanished may never close the connection); once the store says the run ended, the
/// stream has [`END_GRACE`] to end too, else it is broken off.
async fn relay(
    records: Arc<dyn Store>,
    run: &RunRecord,
    addr: &str,
    shutdown: CancellationToken,
) -> Response {
    let bad_gateway = |why: String| {
        error(
            StatusCode::BAD_GATEWAY,
            format!("cannot follow the run on node {}: {why}", run.node),
        )
    };
    let Ok(mut url) =
        reqwest::Url::parse(&format!("http://{}/", crate::ops::follow::reachable(addr)))
    else {
        return bad_gateway(format!("its address {addr:?} is not one"));
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear()
            .extend(["runs", &run.job, &store::time_key(run.fire_time), "output"]);
    }
    let client = match reqwest::Client::builder()
        .connect_timeout(RELAY_CONNECT)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let response = match tokio::time::timeout(RELAY_CONNECT, client.get(url).send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_gateway(format!("{addr}: {e}")),
        Err(_) => return bad_gateway(format!("{addr} did not answer within {RELAY_CONNECT:?}")),
    };
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return error(StatusCode::NOT_FOUND, "the run ended".into());
    }
    if !response.status().is_success() {
        return bad_gateway(format!("{addr} answered {}", response.status()));
    }
    let cut = response
        .headers()
        .get(OUTPUT_CUT_HEADER)
        .cloned()
        .unwrap_or(HeaderValue::from_static("0"));
    // Broken off (an error, no chunked end) when the running node's stream breaks or this
    // node's HTTP server stops, so the page cannot take either for the run's end.
    let (job, fire_time) = (run.job.clone(), run.fire_time);
    let body = futures::stream::unfold(Some((response, None)), move |relayed: Option<Relayed>| {
        let (shutdown, records, job) = (shutdown.clone(), records.clone(), job.clone());
        async move {
            let (mut upstream, mut ended_at) = relayed?;
            loop {
                let wait = match ended_at {
                    Some(at) => END_GRACE.saturating_sub(at.elapsed()),
                    None => SILENCE_CHECK,
                };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        return broken("the node's HTTP server is stopping".into());
                    }
                    chunk = tokio::time::timeout(wait, upstream.chunk()) => match chunk {
                        Ok(Ok(Some(bytes))) => return Some((Ok(bytes), Some((upstream, ended_at)))),
                        Ok(Ok(None)) => return None,
                        Ok(Err(e)) => return broken(format!("the running node's stream broke: {e}")),
                        Err(_) if ended_at.is_some() => {
                            return broken("the store says the run ended; its node's stream did not".into());
                        }
                        Err(_) => {
                            let now = timed(records.get_run(&job, fire_time)).await;
                            if let Ok(Some(r)) = now {
                                if r.outcome != store::RUNNING {
                                    ended_at = Some(Instant::now());
                                }
                            }
                        }
                    },
                }
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::HeaderName::from_static(OUTPUT_CUT_HEADER), cut),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
