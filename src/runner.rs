//! Runs a job's action. (stub: helper fills in)
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Job;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Timeout,
    Killed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunContext {
    pub node: String,
    pub fire_time: DateTime<Utc>,
    pub term: i64,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
}

pub async fn run(job: &Job, ctx: &RunContext, kill: CancellationToken) -> RunResult {
    let _ = (job, ctx, kill);
    todo!()
}
