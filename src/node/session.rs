//! The node's session: the one record that keeps all of this node's leases alive.
//!
//! A lease lives as long as its holder's session (the Consul-session / ZooKeeper-ephemeral
//! idea), so the node renews every lease it holds with ONE write per renew period: store cost
//! grows with nodes, not with jobs.
//!
//! Timing, in one place:
//! - Every `renew` the node writes its `Node` record with the heartbeat counter bumped.
//! - The session is valid until `start of the last successful write + renew_deadline`, on this
//!   process's monotonic clock. `renew_deadline = (renew + lease) / 2 < lease`.
//! - An observer takes a lease over only after it has seen the heartbeat NOT change for a full
//!   `lease` on its own monotonic clock, counted from a moment after that write committed. So a
//!   leader stops acting at least `lease - renew_deadline` before anybody else may start.
//! - When the deadline passes without a successful write, the session *lapses*: its id is
//!   replaced by a fresh one and is never resurrected, so every lease taken under it is dead for
//!   good (observers see the session changed and treat those leases as free). A late success of
//!   a write started under the old id does not revive anything.
//!
//! Limits: the monotonic clocks of the nodes must run at roughly the same rate (they do on any
//! sane host; NTP slews wall clocks, not rates beyond ~500 ppm). A process frozen for longer than
//! `lease` (SIGSTOP, VM pause) wakes with a lapsed session and is fenced by the term check of
//! every tick claim.
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ElectionConfig;
use crate::ops::sd_notify::Progress;
use crate::store::{NodeRecord, Store, StoreError};
use std::sync::Arc;

/// The first retry delay when the store cannot be reached; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Session {
    node: String,
    /// Fresh per process start, kept across lapses: run records carry it, and a `running`
    /// record whose process is still in its node's record is not an orphan.
    process: String,
    store: Arc<dyn Store>,
    election: ElectionConfig,
    started_at: DateTime<Utc>,
    /// This node's HTTP address, advertised in its record for `cronlease status`.
    http: Option<String>,
    state: Mutex<State>,
    /// Wakes the renew loop for an early heartbeat (a lease change to announce).
    renew_now: tokio::sync::Notify,
    /// Counts the writes of the record that succeeded after failed ones: the store answers
    /// again ([`Session::recoveries`]).
    recovered: tokio::sync::watch::Sender<u64>,
    /// When the last write of the record ended, success or not: registration and the renew
    /// loop are alive (systemd's watchdog, [`crate::ops::sd_notify::watchdog_ok`]).
    progress: Progress,
}

struct State {
    id: String,
    heartbeat: i64,
    /// `None` until the first successful write of this session id, and after a lapse.
    valid_until: Option<Instant>,
    /// Jobs this node leads (informational, written with the heartbeat).
    jobs: Vec<String>,
    /// Consecutive failed writes, for log throttling.
    failures: u32,
    /// Bumped after every lease change this node made; written with the next heartbeat, which
    /// [`Session::leases_changed`] asks for at once. Observers re-read the leases when it moves.
    lease_epoch: i64,
    /// This node's clock offset estimate, published in its record.
    clock_offset_ms: Option<i64>,
    /// The digest of the job definitions this node runs, once they are in the store
    /// ([`crate::node::drift`]).
    jobs_digest: String,
    /// The node is stopping (published: peers place no leases on it).
    leaving: bool,
}

impl Session {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        election: ElectionConfig,
        http: Option<String>,
    ) -> Self {
        Session {
            node,
            process: new_session_id(),
            store,
            election,
            started_at: Utc::now(),
            http,
            state: Mutex::new(State {
                id: new_session_id(),
                heartbeat: 0,
                valid_until: None,
                jobs: Vec::new(),
                failures: 0,
                lease_epoch: 0,
                clock_offset_ms: None,
                jobs_digest: String::new(),
                leaving: false,
            }),
            renew_now: tokio::sync::Notify::new(),
            recovered: tokio::sync::watch::Sender::new(0),
            progress: Progress::new(),
        }
    }

    /// Moves each time a write of the record succeeds after failed ones: the election's
    /// polls, backing off after failed reads, wake on it instead of waiting out the backoff.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// When the last write of the node record ended (success or store error).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// This process's id (see [`NodeRecord::process`]).
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Publish the digest of this node's job definitions (already in the store) with the next
    /// heartbeat.
    pub fn set_jobs_digest(&self, digest: String) {
        self.state.lock().unwrap().jobs_digest = digest;
    }

    /// Say in the node record, written now, that this node is stopping and keeps only
    /// `keeps` (the jobs with a run going); peers take its other leases straight from it at
    /// their next poll ([`NodeRecord::leaving`]). The lease epoch does not move: the leases
    /// themselves have not changed, and peers need no re-read of them to act.
    pub fn set_leaving(&self, keeps: Vec<String>) {
        {
            let mut st = self.state.lock().unwrap();
            st.leaving = true;
            st.jobs = keeps;
            st.jobs.sort();
        }
        self.renew_now.notify_one();
    }

    /// Publish this node's clock offset estimate with the next heartbeat.
    pub fn set_clock_offset(&self, offset_ms: Option<i64>) {
        self.state.lock().unwrap().clock_offset_ms = offset_ms;
    }

    /// The session id if the session is valid now. A passed deadline lapses the session here
    /// (whoever looks first), so a node that wakes from a long pause sees it at once.
    pub fn current(&self) -> Option<String> {
        let mut st = self.state.lock().unwrap();
        match st.valid_until {
            Some(until) if Instant::now() < until => Some(st.id.clone()),
            Some(_) => {
                lapse(&mut st, &self.node);
                None
            }
            None => None,
        }
    }

    /// Record the jobs this node leads; written with the next heartbeat. Once the node is
    /// leaving, its jobs only shrink ([`NodeRecord::leaving`]): a job it handed over is not
    /// claimed back by a later write.
    pub fn set_jobs(&self, mut jobs: Vec<String>) {
        jobs.sort();
        let mut st = self.state.lock().unwrap();
        if st.leaving {
            jobs.retain(|j| st.jobs.binary_search(j).is_ok());
        }
        st.jobs = jobs;
    }

    /// This node changed leases (acquired or released some): bump the lease epoch and write the
    /// record now rather than at the next renew period, so that the other nodes, which re-read
    /// the leases only when some node's epoch moves, learn of it within their next poll.
    pub fn leases_changed(&self, jobs: Vec<String>) {
        self.set_jobs(jobs);
        self.state.lock().unwrap().lease_epoch += 1;
        self.renew_now.notify_one();
    }

    /// Write the node record once (bumping the heartbeat). On success the session is valid until
    /// the write's start + renew_deadline, unless the session id changed meanwhile.
    pub async fn renew_once(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let record = {
            let mut st = self.state.lock().unwrap();
            // Lapse first if the deadline already passed: never extend an expired session.
            if matches!(st.valid_until, Some(until) if started >= until) {
                lapse(&mut st, &self.node);
            }
            st.heartbeat += 1;
            NodeRecord {
                id: self.node.clone(),
                session: st.id.clone(),
                heartbeat: st.heartbeat,
                started_at: self.started_at,
                renewed_at: Utc::now(),
                jobs: st.jobs.clone(),
                http: self.http.clone(),
                lease_epoch: st.lease_epoch,
                process: self.process.clone(),
                clock_offset_ms: st.clock_offset_ms,
                jobs_digest: st.jobs_digest.clone(),
                leaving: st.leaving,
            }
        };
        let result = self.store.put_node(&record).await;
        self.progress.stamp();
        let mut st = self.state.lock().unwrap();
        match result {
            Ok(()) => {
                if st.id == record.session {
                    let until = started + self.election.renew_deadline();
                    if Instant::now() < until {
                        if st.valid_until.is_none() {
                            info!(event = "session_started", session = %st.id, "session started");
                        }
                        st.valid_until = Some(until);
                    }
                }
                if st.failures > 0 {
                    info!(
                        event = "store_recovered",
                        failures = st.failures,
                        "store reachable again"
                    );
                    self.recovered.send_modify(|n| *n += 1);
                }
                st.failures = 0;
                Ok(())
            }
            Err(e) => {
                st.failures += 1;
                Err(e)
            }
        }
    }

    /// Register: write the node record until it succeeds (backing off) or `cancel` fires.
    /// Returns false if cancelled first.
    pub async fn register(&self, cancel: &CancellationToken) -> bool {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.renew_once().await {
                Ok(()) if self.current().is_some() => return true,
                Ok(()) => {}
                Err(e) => {
                    warn!(
                        event = "store_error",
                        retry_in_ms = backoff.as_millis() as u64,
                        "cannot register with the store, retrying: {e}"
                    );
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Renew every `renew` period until `cancel` fires, and at once when
    /// [`Session::leases_changed`] asks (the period then restarts, so announcing lease changes
    /// adds writes only while leases move).
    pub async fn renew_loop(&self, cancel: CancellationToken) {
        let mut interval = tokio::time::interval(self.election.renew);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await; // the first tick is immediate; registration just wrote
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = interval.tick() => {}
                _ = self.renew_now.notified() => interval.reset(),
            }
            let began = Instant::now();
            let result = self.renew_once().await;
            tracing::debug!(event = "heartbeat", node = %self.node, ok = result.is_ok(),
                took_ms = began.elapsed().as_millis() as u64, "heartbeat written");
            if let Err(e) = result {
                let failures = self.state.lock().unwrap().failures;
                // One line on the first failure, then one every ten.
                if failures == 1 || failures % 10 == 0 {
                    warn!(event = "store_error", failures, "heartbeat failed: {e}");
                }
            }
            // Make a lapse visible promptly even when nobody else looks.
            let _ = self.current();
        }
    }

    /// Stop: delete the node record so others take this node's leases at their next poll.
    pub async fn remove(&self) -> Result<(), StoreError> {
        self.store.delete_node(&self.node).await
    }
}

fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn lapse(st: &mut State, node: &str) {
    warn!(
        event = "session_lapsed",
        node,
        session = %st.id,
        "renew deadline passed without a successful heartbeat: all leases of this session are lost"
    );
    st.id = new_session_id();
    st.valid_until = None;
}
