//! Writes run outcomes to the store, for as long as the node lives.
//!
//! A run's final record must reach the store whatever the store does meanwhile: an outage of a
//! few seconds used to leave a record `running` forever. So a finished run hands its record to
//! this queue and moves on; one worker writes the queue with capped exponential backoff
//! ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`]) across outages of any length, without holding
//! up any tick (claims go to the store directly, never through here).
//!
//! - **Bounded.** At most [`QUEUE`] records wait in the channel and [`PENDING`] in the worker;
//!   when both are full, the run that finishes next waits for room (logged `outcome_queue_full`
//!   and counted): its own task waits, no other job's tick does, and nothing is dropped.
//! - **Conditional.** Each write is [`Store::finish`]: it lands only if the record is still
//!   this claim's `running` record. If another node closed it meanwhile (it judged this node
//!   dead: see [`crate::node::orphans`]) or it was pruned, the write is dropped and logged
//!   (`outcome_superseded`): a run is closed once.
//! - **Unconfirmed claims.** A claim whose answer was lost (the store call failed) may have
//!   committed, possibly after the caller gave up waiting. It is queued as such: once the
//!   store answers, the record is read back, and if it is this claim's (same session and term)
//!   and still `running`, it is closed as `skipped` with reason `claim_unconfirmed`. If there
//!   is no record yet, it is read once more [`RECHECK_AFTER`] later (a commit still in flight
//!   lands by then) before the claim is taken as never made. The fire time is not run late:
//!   at most once.
//! - **Graceful stop.** [`Worker::drain`] keeps writing until a deadline (the end of
//!   `shutdown_grace`), then logs every record it could not write (`outcome_unrecorded`); those
//!   are closed as `lost` by the job's next leader once this node's record is gone.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::node::history::History;
use crate::node::tick::rfc3339;
use crate::ops::metrics::Metrics;
use crate::store::{RunRecord, Store, StoreError, RUNNING};

/// Records waiting in the channel before a finishing run waits for room.
pub const QUEUE: usize = 1024;
/// Records the worker holds (being retried) before it stops taking more from the channel.
pub const PENDING: usize = 8192;
/// Writes in flight at once when the worker catches up on a backlog.
const IN_FLIGHT: usize = 16;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// How long after finding no record an unconfirmed claim is read again: longer than any store
/// call may take (the store timeout is at most 10 s).
pub const RECHECK_AFTER: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the worker writes.
#[derive(Debug, Clone)]
enum Entry {
    /// A claimed run's final record.
    Finish(RunRecord),
    /// A claim whose answer was lost: resolve it (module docs). `rechecked`: this is the
    /// second read.
    Unconfirmed(RunRecord, bool),
}

impl Entry {
    fn run(&self) -> &RunRecord {
        match self {
            Entry::Finish(r) | Entry::Unconfirmed(r, _) => r,
        }
    }
}

pub struct Recorder {
    tx: mpsc::Sender<Entry>,
    metrics: Arc<Metrics>,
    node: String,
}

/// The worker half, run by [`Worker::run`].
pub struct Worker {
    rx: mpsc::Receiver<Entry>,
    store: Arc<dyn Store>,
    history: Arc<History>,
    metrics: Arc<Metrics>,
    node: String,
    pending: VecDeque<Entry>,
    /// Unconfirmed claims to read again, and when.
    deferred: Vec<(Instant, Entry)>,
    /// Told of every outcome the store took ([`crate::notify`]).
    notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Recorder {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        history: Arc<History>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Recorder>, Worker) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let recorder = Arc::new(Recorder {
            tx,
            metrics: metrics.clone(),
            node: node.clone(),
        });
        let worker = Worker {
            rx,
            store,
            history,
            metrics,
            node,
            pending: VecDeque::new(),
            deferred: Vec::new(),
            notifier: None,
        };
        (recorder, worker)
    }

    /// Queue a claimed run's final record.
    pub async fn finish(&self, run: RunRecord) {
        self.send(Entry::Finish(run)).await
    }

    /// Queue a claim whose answer was lost, to be resolved when the store answers.
    pub async fn unconfirmed(&self, run: RunRecord) {
        self.send(Entry::Unconfirmed(run, false)).await
    }

    async fn send(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(entry)) => {
                self.metrics.outcome_queue_full();
                let run = entry.run();
                warn!(event = "outcome_queue_full", job = %run.job, node = %self.node,
                    fire_time = %rfc3339(run.fire_time),
                    "{} run outcomes are waiting for the store: this run waits for room",
                    QUEUE + PENDING);
                if self.tx.send(entry).await.is_err() {
                    warn!(event = "outcome_unrecorded", node = %self.node,
                        "the outcome writer has stopped: a run's outcome is not recorded");
                }
            }
            Err(mpsc::error::TrySendError::Closed(entry)) => {
                let run = entry.run();
                warn!(event = "outcome_unrecorded", job = %run.job, node = %self.node,
                    fire_time = %rfc3339(run.fire_time), outcome = %run.outcome,
                    "the outcome writer has stopped: this run's outcome is not recorded");
            }
        }
    }
}

/// What one write attempt came to.
enum Written {
    Done,
    Retry(StoreError),
    /// Try this entry again at that instant (not a failure). Boxed: a run record is large.
    Later(Instant, Box<Entry>),
}

impl Worker {
    /// Tell `notifier` of every run outcome written.
    pub fn notify_to(mut self, notifier: Arc<crate::notify::Notifier>) -> Worker {
        self.notifier = Some(notifier);
        self
    }

    /// Write until `stop` fires; then [`Worker::drain`] until `deadline` (if given) is what the
    /// caller does next.
    pub async fn run(mut self, stop: tokio_util::sync::CancellationToken) -> Worker {
        let mut backoff = MIN_BACKOFF;
        let mut failures: u32 = 0;
        loop {
            self.take_due(false);
            if self.pending.is_empty() {
                let next = self.deferred.iter().map(|(t, _)| *t).min();
                tokio::select! {
                    entry = self.rx.recv() => match entry {
                        Some(e) => self.pending.push_back(e),
                        None => return self,
                    },
                    _ = stop.cancelled() => return self,
                    _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => continue,
                }
            }
            self.take_queued();
            match self.write_some().await {
                None => {
                    backoff = MIN_BACKOFF;
                    failures = 0;
                }
                Some(e) => {
                    failures += 1;
                    if failures == 1 || failures % 20 == 0 {
                        warn!(event = "store_error", node = %self.node, failures,
                            pending = self.pending.len(), retry_in_ms = backoff.as_millis() as u64,
                            "cannot record run outcomes yet, retrying: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return self,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Graceful stop: every run has ended; write what is left until `deadline`, then log
    /// what could not be written. Returns how many records were left unwritten.
    pub async fn drain(mut self, deadline: Instant) -> usize {
        self.rx.close();
        // Unconfirmed claims waiting for their second read get it now.
        self.take_due(true);
        let mut backoff = MIN_BACKOFF;
        loop {
            self.take_queued();
            if self.pending.is_empty() {
                return 0;
            }
            let failed = tokio::select! {
                biased;
                f = self.write_some() => f,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            if failed.is_some() {
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.take_queued();
        let left = self.pending.len();
        for entry in &self.pending {
            let run = entry.run();
            warn!(event = "outcome_unrecorded", job = %run.job, node = %self.node,
                fire_time = %rfc3339(run.fire_time), term = run.term, outcome = %run.outcome,
                "stopping without recording this run's outcome (the store did not answer in \
                 time); the job's next leader closes it as lost");
        }
        left
    }

    /// Move deferred entries that are due (all of them with `all`) to the front of the queue.
    fn take_due(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(t, _)| all || *t <= now);
        self.deferred = later;
        for (_, entry) in due {
            self.pending.push_front(entry);
        }
    }

    fn take_queued(&mut self) {
        while self.pending.len() < PENDING {
            match self.rx.try_recv() {
                Ok(e) => self.pending.push_back(e),
                Err(_) => break,
            }
        }
        self.metrics.set_outcomes_pending(self.pending.len());
    }

    /// Write the pending records, [`IN_FLIGHT`] at a time, oldest first; stop at the first
    /// batch with a failure and return its error (the failed ones stay pending, in order).
    /// Entries leave `pending` only once written, so a write cut off by a deadline (the future
    /// dropped) loses nothing: they are still pending, and counted as unwritten.
    async fn write_some(&mut self) -> Option<StoreError> {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(IN_FLIGHT);
            let batch: Vec<Entry> = self.pending.iter().take(n).cloned().collect();
            let results = futures::future::join_all(batch.iter().map(|e| self.write(e))).await;
            let mut error = None;
            let mut failed = Vec::new();
            for (entry, result) in batch.into_iter().zip(results) {
                match result {
                    Written::Done => {}
                    Written::Later(at, again) => self.deferred.push((at, *again)),
                    Written::Retry(e) => {
                        failed.push(entry);
                        error.get_or_insert(e);
                    }
                }
            }
            self.pending.drain(..n);
            for entry in failed.into_iter().rev() {
                self.pending.push_front(entry);
            }
            self.metrics.set_outcomes_pending(self.pending.len());
            if error.is_some() {
                return error;
            }
            self.take_queued();
        }
        None
    }

    async fn write(&self, entry: &Entry) -> Written {
        match entry {
            Entry::Finish(run) => match self.store.finish(run).await {
                Ok(true) => {
                    self.history.recorded(&run.job);
                    // Told once the store has it: a run another node closed as lost meanwhile
                    // (superseded below) is not also reported by this node.
                    if let Some(notifier) = &self.notifier {
                        notifier.run_ended(run);
                    }
                    Written::Done
                }
                Ok(false) => {
                    // Our own write, whose answer was lost and whose retry found it done:
                    // recorded after all.
                    if self.superseded(run).await {
                        self.history.recorded(&run.job);
                        if let Some(notifier) = &self.notifier {
                            notifier.run_ended(run);
                        }
                    }
                    Written::Done
                }
                Err(e) => Written::Retry(e),
            },
            Entry::Unconfirmed(claim, rechecked) => {
                let stored = match self.store.get_run(&claim.job, claim.fire_time).await {
                    Ok(r) => r,
                    Err(e) => return Written::Retry(e),
                };
                let fire = rfc3339(claim.fire_time);
                if stored.is_none() && !rechecked {
                    // A commit may still be in flight: read once more later.
                    return Written::Later(
                        Instant::now() + RECHECK_AFTER,
                        Box::new(Entry::Unconfirmed(claim.clone(), true)),
                    );
                }
                // The claim's own record: same session and term, and stamped at the same
                // instant (a requested run, or a recovery, may be claimed again by this node
                // under the same session and term after this claim did not commit).
                let ours = stored.as_ref().is_some_and(|r| {
                    r.outcome == RUNNING
                        && r.session == claim.session
                        && r.term == claim.term
                        && r.started_at.timestamp_millis() == claim.started_at.timestamp_millis()
                });
                if !ours {
                    info!(event = "claim_resolved", job = %claim.job, node = %self.node,
                        fire_time = %fire, term = claim.term, claimed = false,
                        "the claim whose answer was lost did not commit (or is another's)");
                    return Written::Done;
                }
                let closed = claim.clone().skipped("claim_unconfirmed");
                match self.store.finish(&closed).await {
                    Ok(written) => {
                        info!(event = "claim_resolved", job = %claim.job, node = %self.node,
                            fire_time = %fire, term = claim.term, claimed = true, written,
                            "the claim whose answer was lost had committed: closed as skipped \
                             (claim_unconfirmed), not run");
                        if written {
                            self.metrics.job_skipped(&claim.job);
                            self.history.recorded(&claim.job);
                        }
                        Written::Done
                    }
                    Err(e) => Written::Retry(e),
                }
            }
        }
    }

    /// A finish the store refused: true if the record holds this very outcome (an earlier try
    /// landed and its answer was lost); else say what the store holds instead.
    async fn superseded(&self, run: &RunRecord) -> bool {
        let now = self
            .store
            .get_run(&run.job, run.fire_time)
            .await
            .ok()
            .flatten();
        if now.as_ref().is_some_and(|r| same_outcome(r, run)) {
            info!(event = "outcome_landed", job = %run.job, node = %self.node,
                fire_time = %rfc3339(run.fire_time), term = run.term, outcome = %run.outcome,
                "the outcome had been written by an earlier try whose answer was lost");
            return true;
        }
        let (outcome, by) = match &now {
            Some(r) => (r.outcome.clone(), r.node.clone()),
            None => ("none (pruned)".to_string(), String::new()),
        };
        warn!(event = "outcome_superseded", job = %run.job, node = %self.node,
            fire_time = %rfc3339(run.fire_time), term = run.term, outcome = %run.outcome,
            stored_outcome = %outcome, stored_node = %by,
            "the run ended {} but its record was closed meanwhile (now {outcome}{}): not \
             overwritten", run.outcome, if by.is_empty() { String::new() } else { format!(" by {by}") });
        false
    }
}

/// Whether `stored` is the very record `written` (same claim, same outcome, same end to the
/// millisecond, as the stores keep it): a write whose answer was lost landed.
pub fn same_outcome(stored: &RunRecord, written: &RunRecord) -> bool {
    let ms = |r: &RunRecord| r.finished_at.map(|t| t.timestamp_millis());
    stored.outcome == written.outcome
        && stored.session == written.session
        && stored.term == written.term
        && ms(stored).is_some()
        && ms(stored) == ms(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};
    use tokio_util::sync::CancellationToken;

    use crate::store::{Claim, Fence, LeaseRecord, NodeRecord, StoreResult, RUNNING as R};

    /// Run records in memory; `down` makes every call fail as an outage does.
    #[derive(Default)]
    struct Flaky {
        runs: Mutex<HashMap<i64, RunRecord>>,
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn check(&self) -> StoreResult<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    use std::sync::atomic::Ordering;

    #[async_trait::async_trait]
    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn put_node(&self, _: &NodeRecord) -> StoreResult<()> {
            unreachable!()
        }
        async fn delete_node(&self, _: &str) -> StoreResult<()> {
            unreachable!()
        }
        async fn delete_node_if(&self, _: &str, _: &str, _: i64) -> StoreResult<bool> {
            unreachable!()
        }
        async fn nodes(&self) -> StoreResult<HashMap<String, NodeRecord>> {
            unreachable!()
        }
        async fn leases(&self, _: &[String]) -> StoreResult<HashMap<String, LeaseRecord>> {
            unreachable!()
        }
        async fn acquire_many(&self, _: &[crate::store::Acquire]) -> StoreResult<Vec<String>> {
            unreachable!()
        }
        async fn release(&self, _: &[String], _: &str, _: &str) -> StoreResult<usize> {
            unreachable!()
        }
        async fn claim(&self, _: &RunRecord, _: &str) -> StoreResult<Claim> {
            unreachable!()
        }
        async fn finish(&self, run: &RunRecord) -> StoreResult<bool> {
            self.check()?;
            let mut runs = self.runs.lock().unwrap();
            let key = run.fire_time.timestamp();
            let ours = runs
                .get(&key)
                .is_some_and(|r| r.outcome == R && r.session == run.session && r.term == run.term);
            if ours {
                runs.insert(key, run.clone());
            }
            Ok(ours)
        }
        async fn get_run(&self, _: &str, t: DateTime<Utc>) -> StoreResult<Option<RunRecord>> {
            self.check()?;
            Ok(self.runs.lock().unwrap().get(&t.timestamp()).cloned())
        }
        async fn running_runs(&self) -> StoreResult<Vec<RunRecord>> {
            unreachable!()
        }
        async fn put_definitions(&self, _: &str, _: &crate::store::Definitions) -> StoreResult<()> {
            unreachable!()
        }
        async fn definitions(&self, _: &str) -> StoreResult<Option<crate::store::Definitions>> {
            unreachable!()
        }
        async fn set_pause(&self, _: &str, _: Option<&crate::store::Pause>) -> StoreResult<bool> {
            unreachable!()
        }
        async fn change_request(
            &self,
            _: &str,
            _: &crate::store::RequestChange,
        ) -> StoreResult<bool> {
            unreachable!()
        }
        async fn control_epoch(&self) -> StoreResult<i64> {
            unreachable!()
        }
        async fn pruned_until(&self, _: &str) -> StoreResult<Option<DateTime<Utc>>> {
            unreachable!()
        }
        async fn close_orphan(&self, _: &RunRecord, _: &str, _: &Fence) -> StoreResult<Claim> {
            unreachable!()
        }
        async fn runs(&self, _: &str) -> StoreResult<Vec<RunRecord>> {
            unreachable!()
        }
        async fn recent_runs(&self, _: &str, _: usize) -> StoreResult<Vec<RunRecord>> {
            unreachable!()
        }
        async fn prune_runs(&self, _: &str, _: usize) -> StoreResult<usize> {
            Ok(0)
        }
    }

    fn claimed(secs: i64) -> RunRecord {
        RunRecord {
            job: "j".into(),
            fire_time: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            node: "n1".into(),
            term: 3,
            outcome: R.into(),
            attempts: 1,
            session: "s1".into(),
            process: "p1".into(),
            ..Default::default()
        }
    }

    fn finished(secs: i64, outcome: &str) -> RunRecord {
        RunRecord {
            outcome: outcome.into(),
            finished_at: Some(Utc::now()),
            ..claimed(secs)
        }
    }

    fn setup() -> (Arc<Flaky>, Arc<Recorder>, Worker) {
        let store = Arc::new(Flaky::default());
        let metrics = Arc::new(Metrics::new());
        let dyn_store: Arc<dyn Store> = store.clone();
        let history = Arc::new(History::new(dyn_store.clone(), 100, metrics.clone()));
        let (recorder, worker) = Recorder::new("n1".into(), dyn_store, history, metrics);
        (store, recorder, worker)
    }

    fn outcome(store: &Flaky, secs: i64) -> Option<String> {
        let key = 1_800_000_000 + secs;
        store
            .runs
            .lock()
            .unwrap()
            .get(&key)
            .map(|r| r.outcome.clone())
    }

    /// A finish that meets a 10 s outage is written once the store is back, without anyone
    /// asking again; the node's other work never waits for it (the queue takes it at once).
    #[tokio::test(start_paused = true)]
    async fn a_finish_is_retried_across_a_ten_second_outage() {
        let (store, recorder, worker) = setup();
        store.runs.lock().unwrap().insert(1_800_000_001, claimed(1));
        store.down.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        recorder.finish(finished(1, "ok")).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            outcome(&store, 1).as_deref(),
            Some(R),
            "written during the outage?"
        );
        let tries = store.calls.load(Ordering::SeqCst);
        assert!((3..=10).contains(&tries), "{tries} tries in 10 s: backoff?");
        store.down.store(false, Ordering::SeqCst);
        // The next try is at most the backoff cap away.
        tokio::time::sleep(MAX_BACKOFF + Duration::from_millis(10)).await;
        assert_eq!(outcome(&store, 1).as_deref(), Some("ok"));
        stop.cancel();
        let worker = task.await.unwrap();
        assert_eq!(worker.pending.len(), 0);
    }

    /// A claim whose answer was lost and that had committed is closed as skipped
    /// (claim_unconfirmed); one that had not is left alone (nothing created).
    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_claim_is_resolved_when_the_store_answers() {
        let (store, recorder, worker) = setup();
        store.runs.lock().unwrap().insert(1_800_000_002, claimed(2));
        store.down.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        recorder.unconfirmed(claimed(2)).await;
        recorder.unconfirmed(claimed(3)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(MAX_BACKOFF + Duration::from_millis(10)).await;
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!(runs[&1_800_000_002].outcome, "skipped");
        assert_eq!(
            runs[&1_800_000_002].reason.as_deref(),
            Some("claim_unconfirmed")
        );
        assert!(!runs.contains_key(&1_800_000_003), "nothing created");
        // Claim 3's commit lands late (after the first read found nothing): the second read,
        // RECHECK_AFTER later, finds and closes it.
        store.runs.lock().unwrap().insert(1_800_000_003, claimed(3));
        tokio::time::sleep(RECHECK_AFTER + Duration::from_millis(10)).await;
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!(runs[&1_800_000_003].outcome, "skipped");
        stop.cancel();
        task.await.unwrap();
    }

    /// A requested run whose first claim went unanswered (and did not commit) is claimed again
    /// by the same node under the same session and term: resolving the first claim must not
    /// close the second, running one (told apart by the instant each claim was stamped).
    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_claim_never_closes_a_later_claim_of_the_same_fire_time() {
        let (store, recorder, worker) = setup();
        let first = claimed(5);
        let second = RunRecord {
            started_at: first.started_at + chrono::Duration::milliseconds(1200),
            ..claimed(5)
        };
        store.runs.lock().unwrap().insert(1_800_000_005, second);
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        recorder.unconfirmed(first).await;
        tokio::time::sleep(MAX_BACKOFF + RECHECK_AFTER).await;
        assert_eq!(
            outcome(&store, 5).as_deref(),
            Some(R),
            "the later claim was closed"
        );
        stop.cancel();
        task.await.unwrap();
    }

    /// Graceful stop: the queue is written until the deadline; what could not be written is
    /// counted (and logged), never waited for past the deadline.
    #[tokio::test(start_paused = true)]
    async fn drain_stops_at_its_deadline() {
        let (store, recorder, worker) = setup();
        for i in 0..3 {
            store
                .runs
                .lock()
                .unwrap()
                .insert(1_800_000_000 + i, claimed(i));
            recorder.finish(finished(i, "ok")).await;
        }
        store.down.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let left = worker.drain(start + Duration::from_secs(5)).await;
        assert_eq!(left, 3);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took <= Duration::from_secs(6),
            "{took:?}"
        );
        // With the store up, the same drain writes everything at once.
        let (store, recorder, worker) = setup();
        store.runs.lock().unwrap().insert(1_800_000_001, claimed(1));
        recorder.finish(finished(1, "failed")).await;
        assert_eq!(
            worker.drain(Instant::now() + Duration::from_secs(5)).await,
            0
        );
        assert_eq!(outcome(&store, 1).as_deref(), Some("failed"));
    }

    /// A finish refused because the record was closed by someone else (lost) is dropped, not
    /// retried forever.
    #[tokio::test(start_paused = true)]
    async fn a_superseded_finish_is_dropped() {
        let (store, recorder, worker) = setup();
        let mut lost = claimed(4);
        lost.outcome = "lost".into();
        store.runs.lock().unwrap().insert(1_800_000_004, lost);
        recorder.finish(finished(4, "ok")).await;
        assert_eq!(
            worker.drain(Instant::now() + Duration::from_secs(5)).await,
            0
        );
        assert_eq!(outcome(&store, 4).as_deref(), Some("lost"));
    }
}
