//! The HTTP interface's write endpoints, for operate tokens ([`crate::ops::http_auth`]):
//!
//! | request | does | like |
//! |---|---|---|
//! | `POST /api/jobs/{job}/pause` (optional JSON `{"note": "..."}`) | pauses the job | `cronlease pause JOB --note` |
//! | `POST /api/jobs/{job}/resume` | resumes it | `cronlease resume JOB` |
//! | `POST /api/jobs/{job}/trigger` | asks its leader to run it now (expires after an hour) | `cronlease trigger JOB` |
//!
//! Each goes through the store exactly as its CLI counterpart does (the same functions of
//! [`crate::ops::control`]), so it shows up in the job's record and history the same way, with
//! `by` = `http@<caller address>`; each is logged (`http_action`) with the caller's address.
//! Answers: 200/202 with JSON; from the guard, 403 when the node has no token (read-only) or
//! the token only reads, 401 without a right `Authorization: Bearer`; 404 for a job not in
//! this node's file; 409 to trigger a disabled job; 503 before the node reached the store, or
//! when the store does not answer.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::node::tick::rfc3339;
use crate::ops::control::{self, ControlError, Outcome};
use crate::ops::http::NodeState;
use crate::ops::http_auth::Operate;
use crate::store::Pause;

/// How long a dashboard trigger waits for a leader before it is dropped.
const TRIGGER_TIMEOUT: chrono::Duration = chrono::Duration::hours(1);
/// The longest pause note accepted.
const MAX_NOTE: usize = 500;

/// The body of a pause (all of it optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[serde(default)]
    note: Option<String>,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// A job's definition on this node, and the store to act through.
pub(crate) type Target = (Arc<crate::config::Job>, Arc<dyn crate::store::Store>);

/// The job's definition on this node, and the store; or the answer that says why not.
pub(crate) fn job_and_store(state: &NodeState, job: &str) -> Result<Target, Box<Response>> {
    let Some(def) = state.jobs.index(job).map(|i| state.jobs.get(i)) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no job {job:?} in this node's jobs file"),
        )));
    };
    let Some(running) = state.running.get() else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has not reached the store yet",
        )));
    };
    Ok((def, running.handle.clone()))
}

fn control_error(e: ControlError) -> Response {
    let code = match &e {
        ControlError::Usage(_) => StatusCode::BAD_REQUEST,
        ControlError::Refused(_) => StatusCode::CONFLICT,
        ControlError::Connect { .. } | ControlError::Store { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    error(code, e.to_string())
}

fn caller(addr: SocketAddr) -> String {
    format!("http@{}", addr.ip())
}

pub async fn pause(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    _granted: axum::Extension<Operate>,
    Path(job): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be JSON like {{\"note\": \"...\"}}: {e}"),
                )
            }
        }
    };
    let note = body.note.unwrap_or_default();
    if note.chars().count() > MAX_NOTE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the note is longer than {MAX_NOTE} characters"),
        );
    }
    let (_, store) = match job_and_store(&state, &job) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let by = caller(addr);
    let pause = Pause {
        by: by.clone(),
        at: Utc::now(),
        note: note.clone(),
    };
    match control::set_pause_in(&*store, std::slice::from_ref(&job), Some(pause)).await {
        Ok(results) => {
            let result = match results.first().map(|(_, o)| o) {
                Some(Outcome::Paused(_)) => "paused",
                _ => "already_paused",
            };
            info!(event = "http_action", action = "pause", job = %job, node = %state.node,
                caller = %addr, result, note = %note, "{job}: {result} by {by}");
            Json(json!({ "job": job, "result": result, "by": by, "note": note })).into_response()
        }
        Err(e) => control_error(e),
    }
}

pub async fn resume(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    _granted: axum::Extension<Operate>,
    Path(job): Path<String>,
) -> Response {
    let (_, store) = match job_and_store(&state, &job) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match control::set_pause_in(&*store, std::slice::from_ref(&job), None).await {
        Ok(results) => {
            let result = match results.first().map(|(_, o)| o) {
                Some(Outcome::Resumed) => "resumed",
                _ => "not_paused",
            };
            info!(event = "http_action", action = "resume", job = %job, node = %state.node,
                caller = %addr, result, "{job}: {result} by {}", caller(addr));
            Json(json!({ "job": job, "result": result, "by": caller(addr) })).into_response()
        }
        Err(e) => control_error(e),
    }
}

pub async fn trigger(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    _granted: axum::Extension<Operate>,
    Path(job): Path<String>,
) -> Response {
    let (def, store) = match job_and_store(&state, &job) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !def.enabled {
        return error(
            StatusCode::CONFLICT,
            format!("{job} is declared off (enabled = false): it is never run"),
        );
    }
    let by = caller(addr);
    match control::request_trigger(&*store, &job, &by, TRIGGER_TIMEOUT, false).await {
        Ok(request) => {
            let fire = rfc3339(request.fire_time);
            info!(event = "http_action", action = "trigger", job = %job, node = %state.node,
                caller = %addr, fire_time = %fire, "{job}: run requested by {by}");
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "job": job,
                    "fire_time": fire,
                    "expires_at": rfc3339(request.expires_at),
                    "by": by,
                })),
            )
                .into_response()
        }
        Err(e) => control_error(e),
    }
}
