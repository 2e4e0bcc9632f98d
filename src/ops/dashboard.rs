//! The dashboard: `/` serves one self-contained page (HTML, with its script and style at
//! `/dashboard.js` and `/dashboard.css`, all embedded in the binary: no CDN, no fonts, no
//! build step; not framed by another site, [`crate::ops::http_auth`]) that reads `/api/cluster` every poll and updates the rows
//! that changed in place; `/api/cluster` is the report of `cronlease status --json`, from the
//! node's cached view ([`crate::ops::cluster_view`]), with the rows' version in the
//! [`VERSION_HEADER`]. The page sends it back as `?since=`: the answer is then the header
//! fields, the nodes and only the rows changed since, with the names of the jobs removed
//! ([`changes`]; a few hundred bytes when nothing changed, against 1.5 MB for 1,000 jobs). A
//! version the node does not know (another start, too old, malformed) gets the whole report.
//! While the node cannot read the store, `/api/cluster` answers 503 with the error and the
//! last good report, and the page says so.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::node::tick::rfc3339;
use crate::ops::cluster_view::{Report, View};
use crate::ops::http::NodeState;
use crate::ops::row_versions::Since;

/// The page, with the poll interval filled in at serve time.
const PAGE: &str = include_str!("dashboard.html");
/// Its script and style: files of their own, so that the Content-Security-Policy can forbid
/// anything inline ([`crate::ops::http_auth::CSP`]). Public: they hold no data.
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// `/dashboard.js`.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `/dashboard.css`.
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

pub async fn page(State(state): State<Arc<NodeState>>) -> Response {
    let poll_ms = state.poll.as_millis().max(250);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(PAGE.replace("__POLL_MS__", &poll_ms.to_string())),
    )
        .into_response()
}

/// `/api/cluster`'s query: `since`, the version of the rows the page has.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterQuery {
    since: Option<String>,
}

/// The header that carries the rows' version, with the whole report and with a `since` answer.
pub const VERSION_HEADER: &str = "x-cronlease-version";

pub async fn cluster(
    State(state): State<Arc<NodeState>>,
    Query(query): Query<ClusterQuery>,
) -> Response {
    let Some(view) = state.running.get().map(|r| r.cluster.clone()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "this node has not reached the store yet", "last_good": null })),
        )
            .into_response();
    };
    let json = |code: StatusCode, version: Option<String>, body: Bytes| {
        let mut r = (
            code,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert(VERSION_HEADER, v);
        }
        r
    };
    let encoding_failed = |e: String| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e, "last_good": null })),
        )
            .into_response()
    };
    match view.get().await {
        View::Fresh(report) => {
            let version = Some(report.rows.version());
            match report.rows.since(query.since.as_deref()) {
                Since::After(after) => json(StatusCode::OK, version, changes(&report, after)),
                // The report's JSON as made once per refresh: served to any number of pages.
                Since::Full => match report.json() {
                    Ok(body) => json(StatusCode::OK, version, body),
                    Err(e) => encoding_failed(e),
                },
            }
        }
        View::Failed { error, last_good } => {
            let mut body = format!(
                "{{\"error\":{},\"last_good\":",
                serde_json::Value::String(error)
            )
            .into_bytes();
            match last_good.map(|r| r.json()) {
                Some(Ok(json)) => body.extend_from_slice(&json),
                Some(Err(e)) => return encoding_failed(e),
                None => body.extend_from_slice(b"null"),
            }
            body.push(b'}');
            json(StatusCode::SERVICE_UNAVAILABLE, None, body.into())
        }
    }
}

/// The answer to `?since=` a version of this process: the report's header fields and nodes
/// (a few hundred bytes each; without `jobs_held`, which lists every job at 1,000 jobs and the
/// page works out from the rows), the rows changed after `after`, and the jobs removed since.
/// `since` says it is not the whole report.
fn changes(report: &Report, after: u64) -> Bytes {
    let status = &report.status;
    let mut nodes = serde_json::to_value(&status.nodes).unwrap_or_default();
    for n in nodes.as_array_mut().into_iter().flatten() {
        if let Some(n) = n.as_object_mut() {
            n.remove("jobs_held");
        }
    }
    let head = json!({
        "since": format!("{}-{after}", report.rows.start()),
        "version": report.rows.version(),
        "generated_at": rfc3339(status.generated_at),
        "store": status.store,
        "lease_s": status.lease_s,
        "nodes": nodes,
        "removed": report.rows.removed_after(after),
    });
    let mut body = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
    // The changed rows' JSON, made once at the refresh that changed them, spliced in as is.
    body.pop();
    if body.len() > 1 {
        body.push(b',');
    }
    body.extend_from_slice(b"\"jobs\":");
    body.extend_from_slice(&report.rows.changed_json(after));
    body.push(b'}');
    body.into()
}
