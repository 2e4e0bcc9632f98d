//! `GET /api/jobs/{job}`: one job's own view on the dashboard, read when the page opens it:
//! its newest [`JOB_VIEW_RUNS`] runs (without their output), how many of them ended which way,
//! and its next [`NEXT_FIRES`] fire times. One `recent_runs` read per open, from the store as
//! it is then; nothing is read for it while no page has it open (the cluster view keeps 20
//! runs a job for the rows, refreshed only as they change). 404 for a job not in this node's
//! file, without a read; 503 when the store does not answer.
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use crate::node::tick::rfc3339;
use crate::ops::control::timed;
use crate::ops::http::NodeState;
use crate::ops::status::{run_status, RunStatus};

/// How many of a job's newest runs its view shows (the default `history` keeps as many).
pub const JOB_VIEW_RUNS: usize = 100;
/// How many of its next fire times.
pub const NEXT_FIRES: usize = 5;

/// The answer.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    /// What it runs: `say`, `command` or `shell`.
    pub action: &'static str,
    pub enabled: bool,
    /// Newest first, without output.
    pub runs: Vec<RunStatus>,
    /// Per outcome (`ok`, `failed`, `running`, ...), how many of `runs` have it.
    pub counts: BTreeMap<String, usize>,
    /// The schedule's next fire times after now, in order (RFC 3339).
    pub next_fire_times: Vec<String>,
}

fn error(code: StatusCode, text: String) -> Response {
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": text })),
    )
        .into_response()
}

/// How many runs ended (or stand) which way.
fn counts(runs: &[RunStatus]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in runs {
        *counts.entry(r.outcome.clone()).or_insert(0) += 1;
    }
    counts
}

pub async fn job(State(state): State<Arc<NodeState>>, Path(job): Path<String>) -> Response {
    if !crate::config::is_job_name(&job) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{job:?} cannot be a job's name"),
        );
    }
    let (def, store) = match crate::ops::actions::job_and_store(&state, &job) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    let runs = match timed(store.recent_runs(&job, JOB_VIEW_RUNS)).await {
        Ok(runs) => runs,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store ({}): {e}", store.describe()),
            )
        }
    };
    let mut runs: Vec<RunStatus> = runs.iter().map(run_status).collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.fire_time));
    let view = JobView {
        name: def.name.clone(),
        schedule: def.schedule.expr.clone(),
        timezone: def.schedule.tz.name().to_string(),
        action: def.action.kind(),
        enabled: def.enabled,
        counts: counts(&runs),
        runs,
        next_fire_times: def
            .schedule
            .upcoming(Utc::now(), NEXT_FIRES)
            .into_iter()
            .map(rfc3339)
            .collect(),
    };
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(view),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;
    use chrono::DateTime;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_fires_are_the_schedules_next_in_order() {
        let s = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let got: Vec<String> = s
            .upcoming(at("2026-12-01T10:07:00Z"), 3)
            .into_iter()
            .map(rfc3339)
            .collect();
        assert_eq!(
            got,
            [
                "2026-12-01T10:15:00Z",
                "2026-12-01T10:30:00Z",
                "2026-12-01T10:45:00Z"
            ]
        );
        // A fire time exactly now is not next.
        assert_eq!(
            s.upcoming(at("2026-12-01T10:15:00Z"), 1),
            [at("2026-12-01T10:30:00Z")]
        );
    }

    #[test]
    fn counts_are_per_outcome() {
        let run = |t: &str, outcome: &str| {
            run_status(&crate::store::RunRecord {
                outcome: outcome.into(),
                ..crate::store::RunRecord::claimed("j", at(t), "n", 1, "s", "p")
            })
        };
        let runs = [
            run("2026-12-01T10:00:00Z", "ok"),
            run("2026-12-01T10:01:00Z", "failed"),
            run("2026-12-01T10:02:00Z", "ok"),
            run("2026-12-01T10:03:00Z", "running"),
        ];
        let c = counts(&runs);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            [
                ("failed".to_string(), 1),
                ("ok".to_string(), 2),
                ("running".to_string(), 1)
            ]
        );
    }
}
