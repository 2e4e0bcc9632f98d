//! Prometheus metrics of one node, served on `/metrics` by [`crate::ops::http`].
//!
//! Counted where the thing happens (the tick, the election, the store wrapper in
//! [`crate::store::metered`]), not derived from log lines: a log filter must never change what
//! the metrics say. Label values are bounded: job names come from `jobs.toml`, store operations
//! and outcomes are fixed sets.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cronlease_ticks_run_total` | counter | job |
//! | `cronlease_ticks_sat_out_total` | counter | job |
//! | `cronlease_tick_lateness_seconds` | histogram | — |
//! | `cronlease_job_runs_total` | counter | job, outcome |
//! | `cronlease_job_retries_total` | counter | job |
//! | `cronlease_job_duration_seconds` | histogram | job |
//! | `cronlease_lease_acquisitions_total` | counter | job |
//! | `cronlease_lease_losses_total` | counter | job |
//! | `cronlease_leases_held` | gauge | — |
//! | `cronlease_store_calls_total` | counter | op |
//! | `cronlease_store_errors_total` | counter | op |
//! | `cronlease_store_writes_total` | counter | op |
//! | `cronlease_store_reads_total` | counter | op |
//! | `cronlease_store_call_duration_seconds` | histogram | op |
//! | `cronlease_runs_pruned_total` | counter | — |
//! | `cronlease_runs_lost_total` | counter | job |
//! | `cronlease_runs_recovered_total` | counter | job |
//! | `cronlease_claims_refused_total` | counter | job, reason |
//! | `cronlease_outcomes_pending` | gauge | — |
//! | `cronlease_outcome_queue_full_total` | counter | — |
//! | `cronlease_clock_offset_seconds` | gauge | — |
//! | `cronlease_job_leader` | gauge | job (1 on the node that holds the job's lease, else 0) |
//! | `cronlease_job_last_run_timestamp_seconds` | gauge | job (start of its newest run) |
//! | `cronlease_job_last_success_timestamp_seconds` | gauge | job (end of its newest `ok` run) |
//! | `cronlease_ticks_missed_total` | counter | job |
//! | `cronlease_job_interval_seconds` | gauge | job (longest time between its fire times in the next 8 days; enabled jobs) |
//! | `cronlease_job_paused` | gauge | job (1 while paused, as this node last read its lease) |
//! | `cronlease_node_ready` | gauge | — (what `/readyz` says, at each scrape) |
//! | `cronlease_output_bytes_written_total` | counter | — (output tails written with run records: outcomes and refreshes) |
//! | `cronlease_notifications_total` | counter | sink, result (`sent`, `retried`, `gave_up`, `dropped`) |
//! | `cronlease_http_auth_failures_total` | counter | reason (`missing`, `wrong`, `role`, `limited`) |
//!
//! The last-run and last-success gauges are seeded from the store's history when this node
//! takes a job's lease and only ever move forward, so a failover does not reset them: take
//! `max by (job)` across nodes. A missed tick (a fire time that passed with nobody running it)
//! is counted once in the cluster, by the node that takes the lease over and finds it
//! ([`crate::node::job_health`]).
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobOutcome {
    job: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobReason {
    job: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkResult {
    sink: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the node, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    ticks_run: Family<JobLabel, Counter>,
    ticks_sat_out: Family<JobLabel, Counter>,
    tick_lateness: Histogram,
    job_runs: Family<JobOutcome, Counter>,
    job_retries: Family<JobLabel, Counter>,
    job_duration: HistogramFamily<JobLabel>,
    lease_acquisitions: Family<JobLabel, Counter>,
    lease_losses: Family<JobLabel, Counter>,
    leases_held: Gauge,
    store_calls: Family<OpLabel, Counter>,
    store_errors: Family<OpLabel, Counter>,
    store_writes: Family<OpLabel, Counter>,
    store_reads: Family<OpLabel, Counter>,
    store_latency: HistogramFamily<OpLabel>,
    runs_pruned: Counter,
    runs_lost: Family<JobLabel, Counter>,
    runs_recovered: Family<JobLabel, Counter>,
    job_leader: Family<JobLabel, Gauge>,
    job_last_run: Family<JobLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    job_last_success: Family<JobLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ticks_missed: Family<JobLabel, Counter>,
    job_interval: Family<JobLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    node_ready: Gauge,
    job_paused: Family<JobLabel, Gauge>,
    /// The jobs whose `cronlease_job_leader` is 1 now.
    leading: std::sync::Mutex<std::collections::HashSet<String>>,
    claims_refused: Family<JobReason, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    notifications: Family<SinkResult, Counter>,
    http_auth_failures: Family<ReasonLabel, Counter>,
    output_written: Counter,
    jobs_configured: Gauge,
    config_drift_jobs: Gauge,
    outcomes_pending: Gauge,
    outcome_queue_full: Counter,
    clock_offset: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn job_duration_histogram() -> Histogram {
    // 10 ms .. ~1.5 h
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

fn store_latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            ticks_run: Family::default(),
            ticks_sat_out: Family::default(),
            tick_lateness: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            job_runs: Family::default(),
            job_retries: Family::default(),
            job_duration: Family::new_with_constructor(job_duration_histogram),
            lease_acquisitions: Family::default(),
            lease_losses: Family::default(),
            leases_held: Gauge::default(),
            store_calls: Family::default(),
            store_errors: Family::default(),
            store_writes: Family::default(),
            store_reads: Family::default(),
            store_latency: Family::new_with_constructor(store_latency_histogram),
            runs_pruned: Counter::default(),
            runs_lost: Family::default(),
            runs_recovered: Family::default(),
            job_leader: Family::default(),
            job_last_run: Family::default(),
            job_last_success: Family::default(),
            ticks_missed: Family::default(),
            job_interval: Family::default(),
            node_ready: Gauge::default(),
            job_paused: Family::default(),
            leading: Default::default(),
            claims_refused: Family::default(),
            config_reloads: Family::default(),
            notifications: Family::default(),
            http_auth_failures: Family::default(),
            output_written: Counter::default(),
            jobs_configured: Gauge::default(),
            config_drift_jobs: Gauge::default(),
            outcomes_pending: Gauge::default(),
            outcome_queue_full: Counter::default(),
            clock_offset: Gauge::default(),
        };
        m.registry.register(
            "cronlease_config_reloads",
            "Reloads of the jobs file, by result (applied, unchanged, rejected)",
            m.config_reloads.clone(),
        );
        m.registry.register(
            "cronlease_output_bytes_written",
            "Bytes of run output (kept tails) written to the store with run records",
            m.output_written.clone(),
        );
        m.registry.register(
            "cronlease_notifications",
            "Notification and ping deliveries by sink and result: sent, retried (an attempt \
             failed; tried again), gave_up (retry_for passed or the sink refused it), dropped \
             (queue full, or the node stopped first)",
            m.notifications.clone(),
        );
        m.registry.register(
            "cronlease_http_auth_failures",
            "Requests to the HTTP interface refused for their token, by reason: missing (none \
             given), wrong (no such token), role (a read token for a write), limited (too many \
             wrong tokens from the address: 429)",
            m.http_auth_failures.clone(),
        );
        m.registry.register(
            "cronlease_jobs_configured",
            "Jobs in this node's current jobs file",
            m.jobs_configured.clone(),
        );
        m.registry.register(
            "cronlease_config_drift_jobs",
            "Jobs whose definition differs between this node and its live peers (or that some \
             of them do not have)",
            m.config_drift_jobs.clone(),
        );
        m.registry.register(
            "cronlease_runs_lost",
            "Orphaned runs (their node died while they ran) this node closed as lost",
            m.runs_lost.clone(),
        );
        m.registry.register(
            "cronlease_runs_recovered",
            "Lost runs this node ran again (recover = true)",
            m.runs_recovered.clone(),
        );
        m.registry.register(
            "cronlease_job_leader",
            "1 on the node that holds the job's lease, 0 on a node that held it",
            m.job_leader.clone(),
        );
        m.registry.register(
            "cronlease_job_last_run_timestamp_seconds",
            "Start of the job's newest run (from the store's history when this node took the lease)",
            m.job_last_run.clone(),
        );
        m.registry.register(
            "cronlease_job_last_success_timestamp_seconds",
            "End of the job's newest ok run (from the store's history when this node took the lease)",
            m.job_last_success.clone(),
        );
        m.registry.register(
            "cronlease_job_interval_seconds",
            "Time between the job's next two fire times (for alerts on a job without a success)",
            m.job_interval.clone(),
        );
        m.registry.register(
            "cronlease_job_paused",
            "1 while the job is paused (cronlease pause), as this node last read its lease",
            m.job_paused.clone(),
        );
        m.registry.register(
            "cronlease_node_ready",
            "1 while this node is ready (/readyz), else 0",
            m.node_ready.clone(),
        );
        m.registry.register(
            "cronlease_ticks_missed",
            "Fire times that passed with nobody running them, counted by the node that took the lease over",
            m.ticks_missed.clone(),
        );
        m.registry.register(
            "cronlease_claims_refused",
            "Tick claims the store refused, by reason (already_run, fenced, too_old)",
            m.claims_refused.clone(),
        );
        m.registry.register(
            "cronlease_outcomes_pending",
            "Run outcomes waiting to be written to the store",
            m.outcomes_pending.clone(),
        );
        m.registry.register(
            "cronlease_outcome_queue_full",
            "Times a finished run waited for room in the full outcome queue",
            m.outcome_queue_full.clone(),
        );
        m.registry.register(
            "cronlease_clock_offset_seconds",
            "This node's wall-clock offset from its peers' (median), estimated from heartbeats",
            m.clock_offset.clone(),
        );
        let r = &mut m.registry;
        r.register(
            "cronlease_ticks_run",
            "Ticks this node claimed and ran",
            m.ticks_run.clone(),
        );
        r.register(
            "cronlease_ticks_sat_out",
            "Ticks this node sat out (another node leads, or the claim was refused)",
            m.ticks_sat_out.clone(),
        );
        r.register(
            "cronlease_tick_lateness_seconds",
            "From a tick's fire time to its claim committed",
            m.tick_lateness.clone(),
        );
        r.register(
            "cronlease_job_runs",
            "Finished runs by outcome (ok, failed, timeout, killed, replaced, skipped)",
            m.job_runs.clone(),
        );
        r.register(
            "cronlease_job_retries",
            "Attempts started again after a failed or timed-out attempt",
            m.job_retries.clone(),
        );
        r.register(
            "cronlease_job_duration_seconds",
            "How long runs took",
            m.job_duration.clone(),
        );
        r.register(
            "cronlease_lease_acquisitions",
            "Leases this node acquired",
            m.lease_acquisitions.clone(),
        );
        r.register(
            "cronlease_lease_losses",
            "Leases this node lost without releasing them",
            m.lease_losses.clone(),
        );
        r.register(
            "cronlease_leases_held",
            "Leases this node holds now",
            m.leases_held.clone(),
        );
        r.register(
            "cronlease_store_calls",
            "Store operations by name",
            m.store_calls.clone(),
        );
        r.register(
            "cronlease_store_errors",
            "Store operations that failed",
            m.store_errors.clone(),
        );
        r.register(
            "cronlease_store_writes",
            "Entities written or deleted, by store operation",
            m.store_writes.clone(),
        );
        r.register(
            "cronlease_store_reads",
            "Entities read, by store operation (what Datastore bills for lookups and queries)",
            m.store_reads.clone(),
        );
        r.register(
            "cronlease_store_call_duration_seconds",
            "Store operation latency",
            m.store_latency.clone(),
        );
        r.register(
            "cronlease_runs_pruned",
            "Old run records deleted to keep [store] history",
            m.runs_pruned.clone(),
        );
        m
    }

    fn job(job: &str) -> JobLabel {
        JobLabel {
            job: job.to_string(),
        }
    }

    pub fn tick_run(&self, job: &str, lateness: Duration) {
        self.ticks_run.get_or_create(&Self::job(job)).inc();
        self.tick_lateness.observe(lateness.as_secs_f64());
    }

    pub fn tick_sat_out(&self, job: &str) {
        self.ticks_sat_out.get_or_create(&Self::job(job)).inc();
    }

    pub fn job_finished(&self, job: &str, outcome: &str, duration: Duration) {
        self.job_runs
            .get_or_create(&JobOutcome {
                job: job.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.job_duration
            .get_or_create(&Self::job(job))
            .observe(duration.as_secs_f64());
    }

    /// A claimed tick that was not run because the job's previous run still went on: counted
    /// as a run with outcome `skipped`, without a duration (nothing ran).
    pub fn job_skipped(&self, job: &str) {
        self.job_runs
            .get_or_create(&JobOutcome {
                job: job.to_string(),
                outcome: "skipped".to_string(),
            })
            .inc();
    }

    /// One more attempt of a run (`retries`).
    pub fn job_retry(&self, job: &str) {
        self.job_retries.get_or_create(&Self::job(job)).inc();
    }

    pub fn lease_acquired(&self, job: &str) {
        self.lease_acquisitions.get_or_create(&Self::job(job)).inc();
    }

    pub fn lease_lost(&self, job: &str) {
        self.lease_losses.get_or_create(&Self::job(job)).inc();
    }

    /// The jobs this node holds the lease of now: `cronlease_leases_held` and each job's
    /// `cronlease_job_leader` (only the jobs whose leadership changed are touched).
    pub fn set_held<'a>(&self, jobs: impl IntoIterator<Item = &'a String>) {
        let now: std::collections::HashSet<&String> = jobs.into_iter().collect();
        self.leases_held.set(now.len() as i64);
        let mut leading = self.leading.lock().unwrap();
        leading.retain(|job| {
            let keep = now.contains(job);
            if !keep {
                self.job_leader.get_or_create(&Self::job(job)).set(0);
            }
            keep
        });
        for job in now {
            if leading.insert(job.clone()) {
                self.job_leader.get_or_create(&Self::job(job)).set(1);
            }
        }
    }

    /// This node no longer holds the lease of `job` and holds `held` now: one job's change,
    /// where [`Metrics::set_held`] compares every held job (called per job, a lapse of 20,000
    /// leases took it minutes).
    pub fn not_held(&self, job: &str, held: usize) {
        self.leases_held.set(held as i64);
        if self.leading.lock().unwrap().remove(job) {
            self.job_leader.get_or_create(&Self::job(job)).set(0);
        }
    }

    /// A run of `job` started at `started` (and, if `succeeded_at`, ended `ok` then): the
    /// last-run and last-success gauges move forward, never back.
    pub fn run_seen(
        &self,
        job: &str,
        started: chrono::DateTime<chrono::Utc>,
        succeeded_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let secs = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        let raise = |g: &Gauge<f64, std::sync::atomic::AtomicU64>, v: f64| {
            if v > g.get() {
                g.set(v);
            }
        };
        raise(
            &self.job_last_run.get_or_create(&Self::job(job)),
            secs(started),
        );
        if let Some(t) = succeeded_at {
            raise(
                &self.job_last_success.get_or_create(&Self::job(job)),
                secs(t),
            );
        }
    }

    /// The enabled jobs in force and the time between their next two fire times; jobs no
    /// longer in the list lose their series.
    pub fn set_intervals(&self, jobs: &[(String, Option<Duration>)]) {
        self.job_interval.clear();
        for (job, interval) in jobs {
            if let Some(d) = interval {
                self.job_interval
                    .get_or_create(&Self::job(job))
                    .set(d.as_secs_f64());
            }
        }
    }

    /// Which jobs are paused now (each job of the table, with its state).
    pub fn set_paused(&self, jobs: &[(String, bool)]) {
        self.job_paused.clear();
        for (job, paused) in jobs {
            self.job_paused
                .get_or_create(&Self::job(job))
                .set(i64::from(*paused));
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.node_ready.set(i64::from(ready));
    }

    /// Fire times of `job` that passed with nobody running them.
    pub fn ticks_missed(&self, job: &str, n: u64) {
        self.ticks_missed.get_or_create(&Self::job(job)).inc_by(n);
    }

    /// One store operation: its latency, whether it failed, how many entities it wrote.
    pub fn store_call(&self, op: &str, took: Duration, ok: bool, writes: u64) {
        self.store_call_read(op, took, ok, writes, 0);
    }

    /// One store operation, with the number of entities it returned from reads.
    pub fn store_call_read(&self, op: &str, took: Duration, ok: bool, writes: u64, reads: u64) {
        let label = OpLabel { op: op.to_string() };
        self.store_calls.get_or_create(&label).inc();
        self.store_latency
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&label).inc();
        }
        if writes > 0 {
            self.store_writes.get_or_create(&label).inc_by(writes);
        }
        if reads > 0 {
            self.store_reads.get_or_create(&label).inc_by(reads);
        }
    }

    /// A reload of the jobs file ended with `result`: applied, unchanged or rejected.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// A request to the HTTP interface refused for its token ([`crate::ops::http_auth`]).
    pub fn http_auth_failure(&self, reason: &str) {
        self.http_auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// A run record carrying `bytes` of output tail was written.
    pub fn output_written(&self, bytes: usize) {
        self.output_written.inc_by(bytes as u64);
    }

    /// A notification to `sink` (a `[[notify]]` name, or `ping`) came to `result`.
    pub fn notification(&self, sink: &str, result: &str) {
        self.notifications
            .get_or_create(&SinkResult {
                sink: sink.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn set_jobs_configured(&self, n: usize) {
        self.jobs_configured.set(n as i64);
    }

    pub fn set_config_drift_jobs(&self, n: usize) {
        self.config_drift_jobs.set(n as i64);
    }

    pub fn run_lost(&self, job: &str) {
        self.runs_lost
            .get_or_create(&JobLabel { job: job.into() })
            .inc();
    }

    pub fn run_recovered(&self, job: &str) {
        self.runs_recovered
            .get_or_create(&JobLabel { job: job.into() })
            .inc();
    }

    pub fn claim_refused(&self, job: &str, reason: &str) {
        self.claims_refused
            .get_or_create(&JobReason {
                job: job.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn set_outcomes_pending(&self, n: usize) {
        self.outcomes_pending.set(n as i64);
    }

    pub fn outcome_queue_full(&self) {
        self.outcome_queue_full.inc();
    }

    pub fn set_clock_offset(&self, seconds: f64) {
        self.clock_offset.set(seconds);
    }

    pub fn runs_pruned(&self, n: usize) {
        self.runs_pruned.inc_by(n as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped alerting rules use is one this node exports (a rule on a
    /// misspelt name would never fire).
    #[test]
    fn the_alerting_rules_use_only_exported_metrics() {
        let rules = include_str!("../../deploy/prometheus/alerts.yaml");
        let m = Metrics::new();
        let j = "j".to_string();
        m.set_held([&j]);
        m.run_seen("j", chrono::Utc::now(), Some(chrono::Utc::now()));
        m.ticks_missed("j", 1);
        m.run_lost("j");
        m.job_finished("j", "failed", Duration::from_secs(1));
        m.set_intervals(&[(j.clone(), Some(Duration::from_secs(60)))]);
        m.set_ready(true);
        m.set_paused(&[(j.clone(), false)]);
        m.set_clock_offset(0.1);
        m.notification("ops", "gave_up");
        let text = m.encode();
        let mut used: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("cronlease_"))
            .collect();
        used.sort();
        used.dedup();
        assert!(used.len() >= 8, "{used:?}");
        for name in used {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "the rules use {name}, which /metrics does not export:\n{text}"
            );
        }
    }

    #[test]
    fn counters_show_in_the_text_exposition() {
        let m = Metrics::new();
        m.tick_run("backup", Duration::from_millis(12));
        m.tick_run("backup", Duration::from_millis(12));
        m.tick_sat_out("report");
        m.job_finished("backup", "ok", Duration::from_millis(1500));
        m.store_call("claim", Duration::from_millis(3), true, 1);
        m.store_call("snapshot", Duration::from_millis(3), false, 0);
        m.store_call_read("leases", Duration::from_millis(3), true, 0, 1000);
        let (backup, report) = ("backup".to_string(), "report".to_string());
        m.set_held([&backup, &report]);
        m.set_held([&backup, &report]);
        m.job_retry("backup");
        m.job_retry("backup");
        m.job_skipped("report");
        let text = m.encode();
        assert!(
            text.contains("cronlease_ticks_run_total{job=\"backup\"} 2"),
            "{text}"
        );
        assert!(text.contains("cronlease_ticks_sat_out_total{job=\"report\"} 1"));
        assert!(text.contains("cronlease_job_runs_total{job=\"backup\",outcome=\"ok\"} 1"));
        assert!(text.contains("cronlease_job_duration_seconds_count{job=\"backup\"} 1"));
        assert!(text.contains("cronlease_store_writes_total{op=\"claim\"} 1"));
        assert!(text.contains("cronlease_store_errors_total{op=\"snapshot\"} 1"));
        assert!(text.contains("cronlease_store_reads_total{op=\"leases\"} 1000"));
        assert!(text.contains("cronlease_leases_held 2"));
        assert!(text.contains("cronlease_job_leader{job=\"report\"} 1"));
        m.set_held([&backup]);
        let text_after = m.encode();
        assert!(text_after.contains("cronlease_job_leader{job=\"report\"} 0"));
        assert!(text_after.contains("cronlease_job_leader{job=\"backup\"} 1"));
        assert!(text_after.contains("cronlease_leases_held 1"));
        assert!(text.contains("cronlease_job_retries_total{job=\"backup\"} 2"));
        assert!(text.contains("cronlease_job_runs_total{job=\"report\",outcome=\"skipped\"} 1"));
        assert!(!text.contains("cronlease_job_duration_seconds_count{job=\"report\"}"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn one_lost_lease_moves_only_its_own_series() {
        let m = Metrics::new();
        let (backup, report) = ("backup".to_string(), "report".to_string());
        m.set_held([&backup, &report]);
        m.not_held("report", 1);
        let text = m.encode();
        assert!(text.contains("cronlease_leases_held 1"), "{text}");
        assert!(text.contains("cronlease_job_leader{job=\"report\"} 0"));
        assert!(text.contains("cronlease_job_leader{job=\"backup\"} 1"));
        // A later full update agrees: the job is no longer among the led ones.
        m.set_held([&backup, &report]);
        assert!(m
            .encode()
            .contains("cronlease_job_leader{job=\"report\"} 1"));
    }
}
