//! Operator surfaces: the one-shot commands (`check`, `status`, `pause`, `resume`,
//! `trigger`, `backfill`), a node's HTTP endpoints and metrics, its log formats, and what it
//! tells systemd.
pub mod actions;
pub mod auth_limit;
pub mod check;
pub mod cluster_view;
pub mod control;
pub mod dashboard;
pub mod follow;
pub mod http;
pub mod http_auth;
pub mod http_client;
pub mod http_listener;
pub mod http_options;
pub mod http_secrets;
pub mod http_tls;
pub mod job_view;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod row_versions;
pub mod run_detail;
pub mod sd_notify;
pub mod status;
pub mod token;
