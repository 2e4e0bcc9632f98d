//! cronlease: a leader-gated distributed cron scheduler.
//!
//! Several identical nodes read the same `jobs.toml`. Every job has its own election, a lease in
//! a shared store; on each cron tick only the node holding the job's lease runs it.
//!
//! Crate map, by role:
//!
//! | module       | job                                                                   |
//! |--------------|-----------------------------------------------------------------------|
//! | [`config`]   | `jobs.toml` → [`config::Config`]; every error names file, line, column |
//! | [`crontab`]  | the crontab dialect (Linux cron's fields, macros, day and DST rules) → croner |
//! | [`schedule`] | cron expression + IANA time zone → fire times (croner, DST-correct)    |
//! | [`drift`]    | published job definitions: drift reports, per-job fair share          |
//! | [`jobs`]     | the job table: stable slots, so a reload can add, change and retire jobs |
//! | [`reload`]   | SIGHUP / file change → validated jobs.toml applied as a diff           |
//! | [`ticker`]   | the tick source: tokio-cron-scheduler pulses, croner fire times        |
//! | [`store`]    | the storage seam (one trait, storage only) and its backends            |
//! | [`session`]  | the node's session: one heartbeat write per renew period, its deadline |
//! | [`election`] | observes leases, judges expiry on the local monotonic clock, acquires  |
//! | [`tick`]     | one tick: claim (fenced by term) then run, or sit out                  |
//! | [`recorder`] | run outcomes to the store, retried for as long as the node lives       |
//! | [`orphans`]  | closes (or recovers) the running runs of dead nodes, per job leader    |
//! | [`requested`] | runs operators asked for: trigger (run now) and backfill, on the leader |
//! | [`history`]  | keeps the newest `[store] history` runs per job, prunes in background  |
//! | [`runner`]   | runs an action, labels its output, enforces the timeout               |
//! | [`watchdog`] | `__watchdog`: kills a dead node's running jobs (even after `kill -9`)  |
//! | [`metrics`]  | Prometheus counters and histograms of one node                         |
//! | [`http`]     | `--http`: /healthz, /readyz, /status, /metrics                         |
//! | [`logging`]  | the two log formats (pretty, flat JSON) and the stable field names     |
//! | [`check`]    | `cronlease check`: the validated config and next fire times           |
//! | [`control`]  | `cronlease pause`, `resume`, `trigger`, `backfill`: requests through the store |
//! | [`status`]   | `cronlease status`: leases, nodes and last runs, read from the store   |
//! | [`app`]      | wiring and the one shutdown path                                       |
pub mod app;
pub mod check;
pub mod config;
pub mod control;
pub mod crontab;
pub mod drift;
pub mod election;
pub mod history;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod orphans;
pub mod recorder;
pub mod reload;
pub mod requested;
pub mod runner;
pub mod schedule;
pub mod session;
pub mod status;
pub mod store;
pub mod tick;
pub mod ticker;
pub mod watchdog;
