//! The node: everything a `cronlease run` process does between its start and its one shutdown
//! path ([`app`]): its session and elections, the tick source and the ticks, the runs it
//! starts and records, and what it does for the cluster (orphans, history, requests).
pub mod app;
pub mod drift;
pub mod election;
pub mod exec;
pub mod heap;
pub mod history;
pub mod http_run;
pub mod job_health;
pub mod jobs;
pub mod orphans;
pub mod output;
pub mod placement;
pub mod recorder;
pub mod reload;
pub mod requested;
pub mod runner;
pub mod session;
pub mod tick;
pub mod ticker;
pub mod walk;
pub mod watchdog;
