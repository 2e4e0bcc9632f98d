//! The dashboard: `/` serves one self-contained page (HTML, CSS and JS embedded in the binary:
//! no CDN, no fonts, no build step) that reads `/api/cluster` every poll and redraws without
//! reloading; `/api/cluster` is the report of `cronlease status --json`, from the node's
//! cached view ([`crate::ops::cluster_view`]). While the node cannot read the store,
//! `/api/cluster` answers 503 with the error and the last good report, and the page says so.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ops::cluster_view::View;
use crate::ops::http::NodeState;

/// The page, with the poll interval filled in at serve time.
const PAGE: &str = include_str!("dashboard.html");

pub async fn page(State(state): State<Arc<NodeState>>) -> Response {
    let poll_ms = state.poll.as_millis().max(250);
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Not framed by another site: its buttons cannot be clicked through a disguise.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(PAGE.replace("__POLL_MS__", &poll_ms.to_string()).replace(
            "__ACTIONS__",
            if state.token.is_some() {
                "true"
            } else {
                "false"
            },
        )),
    )
        .into_response()
}

pub async fn cluster(State(state): State<Arc<NodeState>>) -> Response {
    let Some(view) = state.running.get().map(|r| r.cluster.clone()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "this node has not reached the store yet", "last_good": null })),
        )
            .into_response();
    };
    let json = |code: StatusCode, body: Bytes| {
        (
            code,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    };
    match view.get().await {
        // The report's JSON as made once per refresh: served to any number of pages as is.
        View::Fresh(report) => json(StatusCode::OK, report.json),
        View::Failed { error, last_good } => {
            let mut body = format!(
                "{{\"error\":{},\"last_good\":",
                serde_json::Value::String(error)
            )
            .into_bytes();
            match last_good {
                Some(r) => body.extend_from_slice(&r.json),
                None => body.extend_from_slice(b"null"),
            }
            body.push(b'}');
            json(StatusCode::SERVICE_UNAVAILABLE, body.into())
        }
    }
}
