//! One run on the dashboard: what the page shows when a run's mark is clicked.
//!
//! - `GET /api/runs/{job}/{fire_time}`: the run's record from the store: its `status --json`
//!   fields, the header line of `cronlease logs`, and its kept output. Any run of a job of the
//!   node's file that the store still keeps, whichever node ran it (404 for another job, without
//!   a read). A finished run's answer is kept (the last [`KEPT_RECORDS`]): it does not change,
//!   so opening it again costs no read; a running one is one `get_run` per request.
//! - `GET /api/runs/{job}/{fire_time}/live`: a running run's output as it comes, the body of
//!   the node's `/runs/{job}/{fire_time}/output` ([`crate::ops::http`]). When the run goes on
//!   this node, from its memory; otherwise this node relays the stream of the node that runs
//!   it (its address is in its node record, as the election last read it), so a page served
//!   by any node can follow any run, and the browser only ever talks to the node it loaded the
//!   page from. 404 once the run has ended (the page then reads the record again for the
//!   outcome); 502 when the running node serves no HTTP, cannot be reached, or its address
//!   leads to another node from here (a loopback address on another host: the answer's
//!   [`NODE_HEADER`] tells), or refuses this node's token; 503 beyond [`MAX_RELAYS`] at once.
//!   The relay reads with this node's own token (a read token when it has one): the caller
//!   was let in here already, and is never forwarded; a node that serves HTTPS sends no token
//!   to a node that serves plain HTTP.
//!
//! Relaying costs this node one store read per opened stream (the run), one connection for as
//! long as the page follows the run, and one read of the run whenever the stream stays silent
//! for [`SILENCE_CHECK`] (given up after [`SILENCE_FAILURES`] such reads fail in a row).
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
use crate::ops::http::{local_output, parse_fire_time, NodeState, NODE_HEADER, OUTPUT_CUT_HEADER};
use crate::store::{self, RunRecord, Store, StoreError};

/// Connecting to the running node (and its answer's head).
const RELAY_CONNECT: Duration = Duration::from_secs(5);
/// Finished runs' answers kept in memory.
pub const KEPT_RECORDS: usize = 512;
/// Relayed streams at once.
pub const MAX_RELAYS: usize = 32;
/// Silent-stream checks against the store that may fail in a row before the relay gives up.
pub const SILENCE_FAILURES: u32 = 6;

/// A finished run's answer, by job and fire time (ms).
type Kept = std::collections::HashMap<(String, i64), Arc<serde_json::Value>>;

/// The node's part of run detail: finished runs' answers, and the relays' client and limit.
pub struct RunDetail {
    finished: std::sync::Mutex<Kept>,
    relays: Arc<tokio::sync::Semaphore>,
    client: Option<reqwest::Client>,
    /// This node serves HTTPS: it sends no token over plain HTTP to another node.
    tls: bool,
}

impl RunDetail {
    /// `extra_roots`: `--http-tls-ca`, for nodes that serve HTTPS with a private CA; `tls`:
    /// this node serves HTTPS.
    pub fn new(extra_roots: Vec<reqwest::Certificate>, tls: bool) -> RunDetail {
        let client = crate::ops::http_client::client(RELAY_CONNECT, &extra_roots)
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot make the HTTP client that relays other nodes' live output: {}",
                    crate::ops::follow::chain(e)
                )
            })
            .ok();
        RunDetail {
            finished: Default::default(),
            relays: Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS)),
            client,
            tls,
        }
    }
}

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
    let (_, records) = crate::ops::actions::job_and_store(state, job)?;
    let Some(fire_time) = parse_fire_time(fire) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad fire time {fire:?}: expected RFC 3339 or a run key's unix seconds"),
        )));
    };
    let unavailable = |e: StoreError| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the store ({}): {e}", records.describe()),
        ))
    };
    match timed(records.get_run(job, fire_time)).await {
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
    let key = parse_fire_time(&fire).map(|t| (job.clone(), t.timestamp_millis()));
    let kept = key
        .as_ref()
        .and_then(|k| state.runs.finished.lock().unwrap().get(k).cloned());
    let answer = match kept {
        Some(answer) => answer,
        None => {
            let run = match read(&state, &job, &fire).await {
                Ok(run) => run,
                Err(answer) => return *answer,
            };
            let answer = Arc::new(json!({
                "run": crate::ops::status::run_status(&run),
                "header": crate::ops::logs::header(&run),
                "attempts": run.attempts,
                "output": run.output,
                "output_cut": run.output_cut,
                "cut_marker": (run.output_cut > 0)
                    .then(|| crate::node::output::cut_marker(run.output_cut)),
                "running": run.outcome == store::RUNNING,
            }));
            if let (Some(key), false) = (key, run.outcome == store::RUNNING) {
                let mut kept = state.runs.finished.lock().unwrap();
                if kept.len() >= KEPT_RECORDS {
                    kept.clear();
                }
                kept.insert(key, answer.clone());
            }
            answer
        }
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(&*answer)).into_response()
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
    let nodes = match running.election.observation() {
        Ok(observed) => observed.nodes,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store: {e}"),
            )
        }
    };
    let Ok(permit) = state.runs.relays.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node relays {MAX_RELAYS} runs already: try again later"),
        );
    };
    let Some(client) = state.runs.client.clone() else {
        return error(StatusCode::BAD_GATEWAY, "no HTTP client".into());
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
    // This node's own token (a read one when it has one): the caller was let in here, and a
    // relay needs no more than reading. Never sent in the clear by a node that serves TLS.
    let token = state.access.tokens().map(|t| t.for_client());
    if token.is_some() && state.runs.tls && !addr.starts_with("https://") {
        return error(
            StatusCode::BAD_GATEWAY,
            format!(
                "node {} serves plain HTTP ({addr}); this node serves HTTPS and does not send \
                 its token in the clear: give every node --http-tls-cert",
                run.node
            ),
        );
    }
    let authorization = token.and_then(|t| {
        let mut v = HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
        v.set_sensitive(true);
        Some(v)
    });
    let held = Relay {
        records: running.handle.clone(),
        client,
        permit,
        authorization,
    };
    relay(held, &run, &addr, shutdown).await
}

/// What a relay holds while it goes on.
struct Relay {
    records: Arc<dyn Store>,
    client: reqwest::Client,
    /// One of [`MAX_RELAYS`], given back when the stream ends or the page goes away.
    permit: tokio::sync::OwnedSemaphorePermit,
    /// This node's token for the running node.
    authorization: Option<HeaderValue>,
}

/// The relay's state between two chunks: the running node's answer, when the store said the
/// run ended, and how many checks against the store failed in a row.
type Relayed = (reqwest::Response, Option<Instant>, u32);

/// The relay's last item: an error, so that the response is broken off (no chunked end).
fn broken(why: String) -> Option<(Result<axum::body::Bytes, std::io::Error>, Option<Relayed>)> {
    Some((Err(std::io::Error::other(why)), None))
}

/// The running node's stream of `run`'s output, passed through as it comes.
///
/// A stream that stays silent for [`SILENCE_CHECK`] is checked against the store (a node whose
/// host vanished may never close the connection); once the store says the run ended, the
/// stream has [`END_GRACE`] to end too, else it is broken off.
async fn relay(held: Relay, run: &RunRecord, addr: &str, shutdown: CancellationToken) -> Response {
    let Relay {
        records,
        client,
        permit,
        authorization,
    } = held;
    let bad_gateway = |why: String| {
        error(
            StatusCode::BAD_GATEWAY,
            format!("cannot follow the run on node {}: {why}", run.node),
        )
    };
    let url = match crate::ops::http_client::output_url(
        addr,
        &run.job,
        &store::time_key(run.fire_time),
    ) {
        Ok(url) => url,
        Err(why) => return bad_gateway(why),
    };
    let mut request = client.get(url);
    if let Some(a) = authorization {
        request = request.header(header::AUTHORIZATION, a);
    }
    let response = match tokio::time::timeout(RELAY_CONNECT, request.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_gateway(format!("{addr}: {}", crate::ops::follow::chain(&e))),
        Err(_) => return bad_gateway(format!("{addr} did not answer within {RELAY_CONNECT:?}")),
    };
    // Whoever answered must be the node that runs it: an address such as 127.0.0.1:9100 in
    // another host's record leads to this host's own port.
    let answered_by = response
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("something that is not a cronlease node")
        .to_string();
    if answered_by != run.node {
        return bad_gateway(format!(
            "its address {addr} leads to {answered_by} from this node (bind its --http to an \
             address the other nodes can reach)"
        ));
    }
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return error(StatusCode::NOT_FOUND, "the run ended".into());
    }
    if matches!(
        response.status(),
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
    ) {
        return bad_gateway(format!(
            "{addr} refused this node's token ({}): give the nodes of a cluster the same \
             token file",
            response.status()
        ));
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
    // The permit goes with the stream: dropped when it ends, or when the page went away.
    let permit = Arc::new(permit);
    let body = futures::stream::unfold(
        Some((response, None, 0)),
        move |relayed: Option<Relayed>| {
            let (shutdown, records, job) = (shutdown.clone(), records.clone(), job.clone());
            let _permit = permit.clone();
            async move {
                let _permit = _permit;
                let (mut upstream, mut ended_at, mut failures) = relayed?;
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
                            Ok(Ok(Some(bytes))) => {
                                return Some((Ok(bytes), Some((upstream, ended_at, 0))));
                            }
                            Ok(Ok(None)) => return None,
                            Ok(Err(e)) => return broken(format!("the running node's stream broke: {e}")),
                            Err(_) if ended_at.is_some() => {
                                return broken("the store says the run ended; its node's stream did not".into());
                            }
                            Err(_) => match timed(records.get_run(&job, fire_time)).await {
                                Ok(Some(r)) if r.outcome == store::RUNNING => failures = 0,
                                Ok(_) => ended_at = Some(Instant::now()),
                                Err(_) if failures + 1 >= SILENCE_FAILURES => {
                                    return broken("the stream is silent and the store does not answer".into());
                                }
                                Err(_) => failures += 1,
                            },
                        },
                    }
                }
            }
        },
    );
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
