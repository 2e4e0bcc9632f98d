//! Reload: re-read the jobs file on SIGHUP and when it changes on disk, and apply it as a diff.
//!
//! The file is watched with a cheap `stat` every [`CHECK_EVERY`] (device, inode, size, mtime,
//! ctime, following symlinks): an in-place rewrite, a rename over it (editors, `sed -i`) and a
//! Kubernetes ConfigMap's symlink swap all change one of them. A change is applied once the
//! file has stayed the same for one more check (debounce: an editor's several writes make one
//! reload), and only if its bytes differ from the last file read.
//!
//! A new file is validated completely before anything changes; a bad one is refused
//! (`config_rejected`, with the usual `file:line:col`) and the node keeps its jobs and stays
//! ready. `[store]` and `[election]` changes need a restart (the store connection is the
//! node's identity; lease, renew and poll must agree across the cluster), so a file that
//! changes them is refused whole with a message that says so. `[node]` settings apply at
//! once. The jobs are applied as a diff ([`crate::node::jobs::JobTable::apply`]):
//!
//! * unchanged jobs: nothing happens (lease, term and running run kept);
//! * a changed job keeps its lease and term; its new definition takes effect from its next
//!   fire time (a run going finishes under the definition it started with);
//! * a new job joins the election at the next poll, and never catches up fire times from
//!   before it was added;
//! * a removed job is no longer scheduled; its runs going here may finish within
//!   `shutdown_grace` (then they are killed), and then its lease is handed back.
//!
//! Under systemd, a reload that reads the file says `RELOADING=1` when it starts and `READY=1`
//! when it ends, with the reason in `STATUS=` when the file was refused
//! ([`crate::ops::sd_notify`]): `systemctl reload` then waits for the file to be applied, and
//! shows why it was not.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{self, Config, ElectionConfig, NodeConfig, StoreConfig};
use crate::node::drift::Drift;
use crate::node::election::Election;
use crate::node::jobs::JobTable;
use crate::node::tick::Ticks;
use crate::node::ticker::ScheduleUpdates;
use crate::ops::metrics::Metrics;

/// How often the file's metadata is looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What identifies one version of the file on disk, cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    Missing,
    File {
        dev: u64,
        ino: u64,
        len: u64,
        mtime_ns: i128,
        /// Also moves on `chmod` (a token file's mode matters: [`crate::ops::token`]).
        ctime_ns: i128,
    },
}

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Stamp::File {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        },
        Err(_) => Stamp::Missing,
    }
}

/// Files watched by their stamps, checked every [`CHECK_EVERY`]: a change is reported once
/// the files have stayed the same for one more check (an editor's several writes, or a
/// certificate and its key written one after the other, make one report), and only while
/// every file is there. The jobs file ([`Reloader`]) and the HTTP interface's certificate,
/// key and token file ([`crate::ops::http_secrets`]) are watched this way.
pub(crate) struct Watched {
    paths: Vec<PathBuf>,
    seen: Vec<Stamp>,
    /// A change seen and not yet reported.
    settling: bool,
}

impl Watched {
    pub(crate) fn new(paths: Vec<PathBuf>) -> Watched {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        Watched {
            paths,
            seen,
            settling: false,
        }
    }

    /// The files were just read (SIGHUP): changes seen so far are not to be reported.
    pub(crate) fn reset(&mut self) {
        self.seen = self.paths.iter().map(|p| stamp(p)).collect();
        self.settling = false;
    }

    /// One check: whether a change has settled and the files are worth reading.
    pub(crate) fn settled(&mut self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        if now != self.seen {
            self.seen = now;
            self.settling = true;
            return false;
        }
        let settled = std::mem::take(&mut self.settling);
        settled && !now.contains(&Stamp::Missing)
    }
}

use crate::config::text_hash as content_hash;

/// The settings in force, besides the jobs.
struct Current {
    store: StoreConfig,
    election: ElectionConfig,
    node: NodeConfig,
    /// The bytes of the last file read (applied or refused), so a `touch` reloads nothing.
    hash: Option<u64>,
}

/// The parts of the node a reload changes.
pub struct Parts {
    pub jobs: Arc<JobTable>,
    pub ticks: Arc<Ticks>,
    pub election: Arc<Election>,
    pub schedules: ScheduleUpdates,
    pub drift: Arc<Drift>,
    /// Removed jobs finish their runs in tasks tracked here (the node's run tracker).
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// `[[notify]]` changes apply at once.
    pub notifier: Arc<crate::notify::Notifier>,
    /// systemd hears of each reload (`Type=notify-reload`): its start, its end, a refusal.
    pub sd_notify: Arc<crate::ops::sd_notify::SdNotify>,
}

pub struct Reloader {
    path: PathBuf,
    current: Mutex<Current>,
    parts: Parts,
}

/// How one reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The diff was applied (names of the jobs added, removed and changed).
    Applied {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// Same bytes, or no job changed.
    Unchanged,
    /// Refused; the current configuration is kept.
    Rejected(String),
}

/// The longest time between two fire times of `schedule` within the next 8 days (at most
/// 10,000 of them): what "a job without a success for N intervals" should count in, so that
/// `*/15 9-17 * * 1-5` is not overdue every night and weekend.
fn longest_gap(
    schedule: &crate::config::schedule::Schedule,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<std::time::Duration> {
    let horizon = now + chrono::Duration::days(8);
    let mut prev = schedule.next_after(now)?;
    let mut longest = chrono::Duration::zero();
    for _ in 0..10_000 {
        let Some(next) = schedule.next_after(prev) else {
            break;
        };
        longest = longest.max(next - prev);
        if next > horizon {
            break;
        }
        prev = next;
    }
    (longest > chrono::Duration::zero())
        .then(|| longest.to_std().ok())
        .flatten()
}

/// The jobs in force, on `/metrics`: how many, and each enabled job's interval.
fn publish_jobs(parts: &Parts) {
    parts
        .metrics
        .set_jobs_configured(parts.jobs.active_names().len());
    let now = chrono::Utc::now();
    let intervals: Vec<(String, Option<std::time::Duration>)> = parts
        .jobs
        .active()
        .into_iter()
        .filter(|(_, j)| j.enabled)
        .map(|(_, j)| (j.name.clone(), longest_gap(&j.schedule, now)))
        .collect();
    parts.metrics.set_intervals(&intervals);
}

impl Reloader {
    pub fn new(config: &Config, parts: Parts) -> Self {
        // The bytes the running config was parsed from, not the file now: an edit made while
        // the node was starting is applied as soon as `run` starts.
        let hash = Some(config.source_hash);
        publish_jobs(&parts);
        Reloader {
            path: config.source.clone(),
            current: Mutex::new(Current {
                store: config.store.clone(),
                election: config.election,
                node: config.node,
                hash,
            }),
            parts,
        }
    }

    /// The `[node]` settings in force (a reload may change them).
    pub fn node_config(&self) -> NodeConfig {
        self.current.lock().unwrap().node
    }

    /// Watch for SIGHUP and for changes of the file until `stop`.
    pub async fn run(&self, mut hangup: Signal, stop: CancellationToken) {
        let mut watched = Watched::new(vec![self.path.clone()]);
        // Changed since it was read at start (the store may have taken a while to answer)?
        self.reload("file_changed", false);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                s = hangup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    info!(event = "signal", signal = "SIGHUP", "reloading {}", self.path.display());
                    watched.reset();
                    self.reload("sighup", true);
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    if watched.settled() {
                        self.reload("file_changed", false);
                    }
                }
            }
        }
    }

    /// Read the file and apply it (see the module docs). `always`: also when the bytes are the
    /// ones last read (SIGHUP: the operator asked).
    pub fn reload(&self, trigger: &'static str, always: bool) -> Reloaded {
        let file = self.path.display().to_string();
        let hash = std::fs::read(&self.path).ok().map(|b| content_hash(&b));
        {
            let mut cur = self.current.lock().unwrap();
            if !always && hash.is_some() && hash == cur.hash {
                debug!(trigger, "{file}: same content, nothing to reload");
                return Reloaded::Unchanged;
            }
            cur.hash = hash;
        }
        self.parts.sd_notify.reloading();
        let result = match config::load(&self.path) {
            Err(e) => Reloaded::Rejected(e.to_string()),
            Ok(new) => self.apply(new),
        };
        let refused = match &result {
            Reloaded::Rejected(why) => Some(why.as_str()),
            _ => None,
        };
        self.parts.sd_notify.reloaded(refused);
        match &result {
            Reloaded::Rejected(why) => {
                self.parts.metrics.config_reload("rejected");
                warn!(event = "config_rejected", config = %file, trigger, error = %why,
                    "keeping the current jobs: {why}");
            }
            Reloaded::Unchanged => {
                self.parts.metrics.config_reload("unchanged");
                info!(event = "config_unchanged", config = %file, trigger,
                    "{file} re-read: no job changed");
            }
            Reloaded::Applied {
                added,
                removed,
                changed,
            } => {
                self.parts.metrics.config_reload("applied");
                publish_jobs(&self.parts);
                let what: Vec<String> =
                    [("added", added), ("removed", removed), ("changed", changed)]
                        .iter()
                        .filter(|(_, names)| !names.is_empty())
                        .map(|(how, names)| format!("{how} {}", names.join(", ")))
                        .collect();
                info!(event = "config_reloaded", config = %file, trigger,
                    added = %added.join(","), removed = %removed.join(","),
                    changed = %changed.join(","), "{file} reloaded: {}", what.join("; "));
            }
        }
        result
    }

    fn apply(&self, new: Config) -> Reloaded {
        // Resolved before anything changes: a header naming a variable this node lacks
        // refuses the whole file, as a syntax error would.
        let sinks = match crate::notify::resolve(&new.notify, crate::notify::environment) {
            Ok(sinks) => sinks,
            Err(e) => {
                return Reloaded::Rejected(format!("{}: {e}", self.path.display()));
            }
        };
        if let Err(e) =
            crate::config::context::check_environment(&new.jobs, crate::notify::environment)
        {
            return Reloaded::Rejected(format!("{}: {e}", self.path.display()));
        }
        let node_changed = {
            let mut cur = self.current.lock().unwrap();
            if new.store != cur.store {
                return Reloaded::Rejected(format!(
                    "{}: [store] changed; the store is chosen at start: restart the node to \
                     use the new settings",
                    self.path.display()
                ));
            }
            if new.election != cur.election {
                return Reloaded::Rejected(format!(
                    "{}: [election] changed; lease, renew and poll must agree across the \
                     cluster: restart every node to use the new settings",
                    self.path.display()
                ));
            }
            let changed = new.node != cur.node;
            cur.node = new.node;
            changed
        };

        if node_changed {
            self.parts.election.set_skew_warn(new.node.clock_skew_warn);
            info!(event = "node_settings_changed", shutdown_grace = ?new.node.shutdown_grace,
                clock_skew_warn = ?new.node.clock_skew_warn, "[node] settings applied");
        }
        let diff = self.parts.jobs.apply(new.jobs);
        // After the jobs: the pings of URLs no job uses any more end with them.
        let touched = self.parts.notifier.configure(sinks);
        if !touched.is_empty() {
            info!(event = "notify_configured", sinks = %touched.join(","),
                "[[notify]] applied: {} added, changed or removed", touched.join(", "));
        }
        if diff.is_empty() {
            return Reloaded::Unchanged;
        }
        // The new definitions are published at the next poll (crate::node::drift).
        self.parts.drift.jobs_changed();
        let names = |slots: &[usize]| -> Vec<String> {
            slots
                .iter()
                .map(|&i| self.parts.jobs.get(i).name.clone())
                .collect()
        };
        // A disabled job (`enabled = false`) is not scheduled.
        let schedule = |idx: usize| {
            let job = self.parts.jobs.get(idx);
            job.enabled.then(|| job.schedule.clone())
        };
        let grace = new.node.shutdown_grace;
        // A removed job, or one switched off, finishes its runs; its lease then goes back.
        let retire = |idx: usize| {
            let ticks = self.parts.ticks.clone();
            self.parts
                .tracker
                .spawn(async move { ticks.retire(idx, grace).await });
        };
        for &idx in diff.added.iter().chain(&diff.changed) {
            let schedule = schedule(idx);
            if schedule.is_none() {
                retire(idx);
            }
            self.parts.schedules.set(idx, schedule);
        }
        for &idx in &diff.removed {
            self.parts.schedules.set(idx, None);
            retire(idx);
        }
        Reloaded::Applied {
            added: names(&diff.added),
            removed: names(&diff.removed),
            changed: names(&diff.changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_it_holds_for_one_more_check_and_while_every_file_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "1").unwrap();
        let mut watched = Watched::new(vec![a.clone(), b.clone()]);
        assert!(!watched.settled(), "nothing changed");
        std::fs::write(&a, "22").unwrap();
        assert!(!watched.settled(), "changed: wait one more check");
        assert!(watched.settled(), "held: report it");
        assert!(!watched.settled(), "reported once");
        std::fs::write(&b, "333").unwrap();
        watched.reset();
        assert!(!watched.settled(), "read already (SIGHUP)");
        assert!(!watched.settled());
        std::fs::remove_file(&b).unwrap();
        assert!(!watched.settled());
        assert!(!watched.settled(), "a file is missing: nothing to read");
    }
}
