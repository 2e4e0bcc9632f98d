//! cronlease: a leader-gated distributed cron scheduler.
//!
//! Several identical nodes read the same `jobs.toml`. Every job has its own election, a lease in
//! a shared store; on each cron tick only the node holding the job's lease runs it.
//!
//! Crate map, by role:
//!
//! **What to run** ([`config`]):
//!
//! | module                | job                                                             |
//! |-----------------------|-----------------------------------------------------------------|
//! | [`config`]            | `jobs.toml` → [`config::Config`]; every error names file, line, column |
//! | [`config::pieces`]    | each `[[job]]` table parsed on its own: no parse tree of the whole file |
//! | [`config::crontab`]   | the crontab dialect (Linux cron's fields, macros, day and DST rules) → croner |
//! | [`config::schedule`]  | cron expression + IANA time zone → fire times (croner, DST-correct) |
//! | [`config::context`]   | what a job's process runs with: env, env_file, working_dir, user, limits, nice |
//! | [`config::jitter`]    | a run's deterministic start delay; the schedule's shortest gap  |
//! | [`config::http_action`] | the `http` action: URL, method, headers, body, expected statuses |
//! | [`config::store`]     | `[store]`: the backend named or implied by the keys, each key checked against it |
//!
//! **Where it is kept** ([`store`]): the storage seam (one trait, storage only) and one file per
//! backend (Datastore, file, Redis, ZooKeeper, PostgreSQL, with [`store::postgres_tls`] for
//! PostgreSQL's `sslmode`), a factory from config, a metering wrapper, and [`store::rules`],
//! what every backend decides the same way (a claim's refusal).
//!
//! **The node** ([`node`]):
//!
//! | module                | job                                                             |
//! |-----------------------|-----------------------------------------------------------------|
//! | [`node::app`]         | wiring and the one shutdown path                                |
//! | [`node::session`]     | the node's session: one heartbeat write per renew period, its deadline |
//! | [`node::election`]    | observes leases, judges expiry on the local monotonic clock, acquires |
//! | [`node::walk`]        | what lets a poll skip its walk over every lease while nothing it reads changed |
//! | [`node::jobs`]        | the job table: stable slots, so a reload can add, change and retire jobs |
//! | [`node::reload`]      | SIGHUP / file change → validated jobs.toml applied as a diff    |
//! | [`node::drift`]       | published job definitions: drift reports, per-job fair share    |
//! | [`node::ticker`]      | the tick source: tokio-cron-scheduler pulses, croner fire times |
//! | [`node::tick`]        | one tick: claim (fenced by term) then run, or sit out           |
//! | [`node::requested`]   | runs operators asked for: trigger (run now) and backfill, on the leader |
//! | [`node::recorder`]    | run outcomes to the store, retried for as long as the node lives |
//! | [`node::orphans`]     | closes (or recovers) the running runs of dead nodes, per job leader |
//! | [`node::job_health`]  | on taking a lease: last run / success gauges from history, missed ticks |
//! | [`node::history`]     | keeps the newest `[store] history` runs per job, prunes in background |
//! | [`node::runner`]      | runs an action, labels its output, enforces the timeout         |
//! | [`node::exec`]        | a job's context on its process: env layers, setrlimit, nice, user (pre_exec) |
//! | [`node::heap`]        | keeps resident memory near the live heap: two malloc arenas, fixed mmap/trim thresholds, a trim every 5 s |
//! | [`node::http_run`]    | runs an `http` action: the request, its idempotency key, status and body tail |
//! | [`node::watchdog`]    | `__watchdog`: kills a dead node's running jobs (even after `kill -9`) |
//!
//! **Operator surfaces** ([`cli`], [`ops`]):
//!
//! | module                | job                                                             |
//! |-----------------------|-----------------------------------------------------------------|
//! | [`cli`]               | the command line, and the completions and man pages made from it |
//! | [`ops::check`]        | `cronlease check`: the validated config and next fire times     |
//! | [`ops::status`]       | `cronlease status`: leases, nodes and last runs, read from the store |
//! | [`ops::control`]      | `cronlease pause`, `resume`, `trigger`, `backfill`: requests through the store |
//! | [`ops::http`]         | `--http`: the routes; /healthz, /readyz, /status, /metrics, run output |
//! | [`ops::metrics`]      | Prometheus counters and histograms of one node                  |
//! | [`ops::logging`]      | the two log formats (pretty, flat JSON) and the stable field names |
//! | [`ops::logs`]         | `cronlease logs`: a run's kept output with its header           |
//! | [`ops::dashboard`]    | `--http` `/`: the live page (embedded HTML/CSS/JS) and `/api/cluster` |
//! | [`ops::cluster_view`] | the node's cached `status` report: one refresh per poll for any number of pages |
//! | [`ops::actions`]      | `--http` write endpoints (pause, resume, trigger), for operate tokens |
//! | [`ops::run_detail`]   | `--http` one run for the page: its record and kept output, its live output from any node |
//! | [`ops::http_options`] | the `--http*` options, checked and loaded before the node starts |
//! | [`ops::http_auth`]    | the guard before every endpoint: roles, Host check, security headers |
//! | [`ops::token`]        | the read and operate tokens: a file or the environment, compared in constant time |
//! | [`ops::auth_limit`]   | wrong tokens per address: 429 after ten a minute              |
//! | [`ops::http_tls`]     | HTTPS: the certificate and key in force, the extra CA of clients |
//! | [`ops::http_listener`] | plain or TLS connections, handshakes off the accept loop      |
//! | [`ops::http_secrets`] | certificate, key and token file re-read on SIGHUP and on change |
//! | [`ops::http_client`]  | reading another node: its URL from its record, the client with the CA |
//! | [`ops::follow`]       | `cronlease logs --follow`: a running run's output, live from its node |
//! | [`ops::sd_notify`]    | systemd's notify protocol: READY, RELOADING, STOPPING, STATUS, a watchdog fed by the node's loops |
//!
//! **Telling people** ([`notify`]):
//!
//! | module                | job                                                             |
//! |-----------------------|-----------------------------------------------------------------|
//! | [`notify`]            | routes run events to `[[notify]]` sinks and jobs' pings, once in the cluster |
//! | [`notify::event`]     | the event JSON a sink receives                                  |
//! | [`notify::deliver`]   | one bounded queue and worker per destination, retries with backoff |
//! | [`config::notify`]    | `[[notify]]` tables, a job's `notify` and `ping`                |
pub mod cli;
pub mod config;
pub mod node;
pub mod notify;
pub mod ops;
pub mod store;
