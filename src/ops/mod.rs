//! Operator surfaces: the one-shot commands (`check`, `status`, `pause`, `resume`,
//! `trigger`, `backfill`), a node's HTTP endpoints and metrics, and its log formats.
pub mod actions;
pub mod check;
pub mod cluster_view;
pub mod control;
pub mod dashboard;
pub mod follow;
pub mod http;
pub mod job_view;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod row_versions;
pub mod run_detail;
pub mod status;
pub mod token;
