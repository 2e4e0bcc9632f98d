//! The node's job table: the jobs of the current jobs.toml, each in a slot whose index stays
//! the same for the node's whole life.
//!
//! Everything that keeps per-job state (the ticks and their runs, the ticker's cursors, the
//! election's callbacks) refers to a job by its slot index. A reload ([`crate::node::reload`]) applies
//! a new file as a diff: a changed job gets its new definition in the same slot (runs going keep
//! the definition they started with: they hold an `Arc` of it), a new job gets a new slot (or
//! its old one back, if a job of that name was removed earlier), and a removed job's slot is
//! *retired*: kept, so its runs can finish and its lease be handed back, but no longer scheduled
//! or contested. Slots are never deleted, so an index never points at another job.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use crate::config::{Action, Job};

/// What a reload changed, by slot index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<usize>,
    pub removed: Vec<usize>,
    pub changed: Vec<usize>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

pub struct JobTable {
    state: RwLock<Table>,
}

struct Table {
    slots: Vec<Arc<Job>>,
    /// Per slot, its definition digest ([`digest`]).
    digests: Vec<String>,
    retired: Vec<bool>,
    /// Per slot, when a reload added the job or switched it on (`None`: since the start):
    /// set before the slot can be contested, so no fire time from before is caught up.
    since: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    /// Job name → slot, retired slots included.
    index: HashMap<String, usize>,
    /// The names of the active, enabled jobs, in slot order: the ones contested (read on
    /// every election poll).
    active: Arc<Vec<String>>,
}

impl Table {
    fn refresh_active(&mut self) {
        self.active = Arc::new(
            self.slots
                .iter()
                .zip(&self.retired)
                .filter(|(j, retired)| !**retired && j.enabled)
                .map(|(j, _)| j.name.clone())
                .collect(),
        );
    }
}

impl JobTable {
    pub fn new(jobs: Vec<Job>) -> Self {
        let mut t = Table {
            slots: Vec::with_capacity(jobs.len()),
            digests: Vec::with_capacity(jobs.len()),
            retired: Vec::with_capacity(jobs.len()),
            since: Vec::with_capacity(jobs.len()),
            index: HashMap::with_capacity(jobs.len()),
            active: Arc::default(),
        };
        for job in jobs {
            t.index.insert(job.name.clone(), t.slots.len());
            t.digests.push(digest(&job));
            t.slots.push(Arc::new(job));
            t.retired.push(false);
            t.since.push(None);
        }
        t.refresh_active();
        JobTable {
            state: RwLock::new(t),
        }
    }

    /// The job in slot `idx` (its current definition; retired slots keep their last one).
    pub fn get(&self, idx: usize) -> Arc<Job> {
        self.state.read().unwrap().slots[idx].clone()
    }

    /// How many slots there are (active and retired).
    pub fn slots(&self) -> usize {
        self.state.read().unwrap().slots.len()
    }

    /// The slot of job `name`, active or retired.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.state.read().unwrap().index.get(name).copied()
    }

    /// Whether slot `idx` is contested and run: a job of the current file, enabled.
    pub fn is_contested(&self, idx: usize) -> bool {
        let t = self.state.read().unwrap();
        t.retired.get(idx).is_some_and(|r| !r) && t.slots[idx].enabled
    }

    /// When a reload added job `idx` or switched it on (`None`: it was there from the start).
    pub fn since(&self, idx: usize) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state.read().unwrap().since.get(idx).copied().flatten()
    }

    /// Whether slot `idx` holds a job of the current file.
    pub fn is_active(&self, idx: usize) -> bool {
        self.state
            .read()
            .unwrap()
            .retired
            .get(idx)
            .is_some_and(|r| !r)
    }

    /// The names of the current file's enabled jobs, in slot order: the ones contested.
    pub fn active_names(&self) -> Arc<Vec<String>> {
        self.state.read().unwrap().active.clone()
    }

    /// The current file's jobs with their slots.
    pub fn active(&self) -> Vec<(usize, Arc<Job>)> {
        let t = self.state.read().unwrap();
        t.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| !t.retired[*i])
            .map(|(i, j)| (i, j.clone()))
            .collect()
    }

    /// The definition digest of slot `idx`.
    pub fn digest(&self, idx: usize) -> String {
        self.state.read().unwrap().digests[idx].clone()
    }

    /// Make `jobs` (a complete, validated file's) the current jobs; what changed. A job
    /// added, or switched from `enabled = false` to on, is stamped with `now` ([`Self::since`]).
    pub fn apply(&self, jobs: Vec<Job>) -> Diff {
        let now = chrono::Utc::now();
        let mut t = self.state.write().unwrap();
        let mut diff = Diff::default();
        let mut seen = vec![false; t.slots.len()];
        for job in jobs {
            let d = digest(&job);
            match t.index.get(&job.name).copied() {
                Some(i) => {
                    seen[i] = true;
                    if t.retired[i] {
                        t.retired[i] = false;
                        t.since[i] = Some(now);
                        diff.added.push(i);
                    } else if t.digests[i] != d {
                        if job.enabled && !t.slots[i].enabled {
                            t.since[i] = Some(now);
                        }
                        diff.changed.push(i);
                    } else {
                        continue;
                    }
                    t.slots[i] = Arc::new(job);
                    t.digests[i] = d;
                }
                None => {
                    let i = t.slots.len();
                    t.index.insert(job.name.clone(), i);
                    t.slots.push(Arc::new(job));
                    t.digests.push(d);
                    t.retired.push(false);
                    t.since.push(Some(now));
                    diff.added.push(i);
                }
            }
        }
        for (i, seen) in seen.into_iter().enumerate() {
            if !seen && !t.retired[i] {
                t.retired[i] = true;
                diff.removed.push(i);
            }
        }
        t.refresh_active();
        diff
    }
}

/// A stable digest of a job's definition (everything that decides what it runs and when): the
/// same on every node and every build for the same definition, so nodes can compare theirs.
/// 16 hex digits of FNV-1a 64 over a canonical text; not a security boundary.
pub fn digest(job: &Job) -> String {
    let mut text = String::new();
    let p = &job.policy;
    let ms = |d: std::time::Duration| d.as_millis();
    let _ = write!(
        text,
        "name={}\nschedule={}\ntz={}\ntimeout={:?}\noverlap={}\nretries={}\nbackoff={}\n\
         catch_up={}\ndeadline={:?}\non_lease_lost={}\nrecover={}\n",
        job.name,
        job.schedule.expr,
        job.schedule.tz.name(),
        job.timeout.map(ms),
        p.overlap.as_str(),
        p.retries,
        ms(p.retry_backoff),
        p.catch_up.as_str(),
        p.starting_deadline.map(ms),
        p.on_lease_lost.as_str(),
        p.recover,
    );
    if !job.enabled {
        // Only when off, so the digests of enabled jobs stay what they were.
        text.push_str("enabled=false\n");
    }
    // Only when set, likewise: where its events go is part of what a job is (the sinks by
    // name, in any order; a [[notify]] table that differs between nodes is not seen here).
    if !job.notify.is_empty() {
        let mut names = job.notify.clone();
        names.sort();
        let _ = writeln!(text, "notify={names:?}");
    }
    if let Some(ping) = &job.ping {
        let _ = writeln!(text, "ping={ping}");
    }
    if let Some(j) = p.jitter {
        let _ = writeln!(text, "jitter={}", ms(j));
    }
    // Only what is set: env templates and the env file's path, never their values.
    text.push_str(&job.context.digest_text());
    match &job.action {
        Action::Say {
            text: say,
            repeat,
            pause,
        } => {
            let _ = write!(text, "say={say:?}\nrepeat={repeat}\npause={}\n", ms(*pause));
        }
        Action::Command { argv } => {
            let _ = writeln!(text, "command={argv:?}");
        }
        Action::Shell { script } => {
            let _ = writeln!(text, "shell={script:?}");
        }
        Action::Http(http) => text.push_str(&http.digest_text()),
    }
    let h = crate::config::text_hash(text.as_bytes());
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(text: &str) -> Vec<Job> {
        crate::config::parse("jobs.toml", text).unwrap().jobs
    }

    const A: &str = "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"a\"\n";
    const B: &str = "[[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"b\"\n";
    const B2: &str = "[[job]]\nname = \"b\"\nschedule = \"*/5 * * * *\"\nsay = \"b\"\n";
    const C: &str = "[[job]]\nname = \"c\"\nschedule = \"* * * * *\"\nsay = \"c\"\n";

    #[test]
    fn a_reload_keeps_slots_and_reports_the_diff() {
        let t = JobTable::new(jobs(&format!("{A}{B}")));
        assert_eq!(*t.active_names(), ["a", "b"]);
        // Unchanged file: nothing.
        assert!(t.apply(jobs(&format!("{B}{A}"))).is_empty());
        // b changed, a removed, c added.
        let d = t.apply(jobs(&format!("{B2}{C}")));
        assert_eq!(
            d,
            Diff {
                added: vec![2],
                removed: vec![0],
                changed: vec![1]
            }
        );
        assert_eq!(*t.active_names(), ["b", "c"]);
        assert!(!t.is_active(0) && t.is_active(1) && t.is_active(2));
        assert_eq!(t.get(1).schedule.expr, "*/5 * * * *");
        assert_eq!(t.get(0).name, "a", "a retired slot keeps its job");
        assert!(t.since(2).is_some() && t.since(1).is_none());
        assert!(!t.is_contested(0) && t.is_contested(1));
        // a comes back in its old slot.
        let d = t.apply(jobs(&format!("{A}{B2}{C}")));
        assert_eq!(d.added, vec![0]);
        assert_eq!(t.slots(), 3);
        assert_eq!(t.index("a"), Some(0));
    }

    #[test]
    fn digests_are_stable_and_see_every_field() {
        let a = &jobs(A)[0];
        // Pinned: the same definition has the same digest on every node and build.
        assert_eq!(digest(a), digest(&jobs(A)[0]));
        assert_eq!(digest(a), "6543581e60b92ba7");
        for other in [
            A.replace("say = \"a\"", "say = \"A\""),
            A.replace("* * * * *", "*/2 * * * *"),
            format!("{A}timezone = \"Europe/Berlin\"\n"),
            format!("{A}timeout = \"1m\"\n"),
            format!("{A}overlap = \"allow\"\n"),
            format!("{A}retries = 1\n"),
            format!("{A}recover = true\n"),
            format!("{A}enabled = false\n"),
        ] {
            assert_ne!(digest(&jobs(&other)[0]), digest(a), "{other}");
        }
        // The execution context: every key counts, values only as written.
        let sh = A.replace("say = \"a\"", "shell = \"a\"");
        let base = digest(&jobs(&sh)[0]);
        for key in [
            "env = { A = \"1\" }",
            "env = { A = \"${HOME}\" }",
            "env_file = \"/etc/x.env\"",
            "working_dir = \"/tmp\"",
            "limits = { nofile = 64 }",
            "nice = 5",
            "jitter = \"5s\"",
        ] {
            assert_ne!(digest(&jobs(&format!("{sh}{key}\n"))[0]), base, "{key}");
        }
        if nix::unistd::geteuid().is_root() {
            for key in ["user = \"root\"", "group = \"root\""] {
                assert_ne!(digest(&jobs(&format!("{sh}{key}\n"))[0]), base, "{key}");
            }
        }
        // An env file's contents are not part of the definition.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.env");
        std::fs::write(&file, "A=1\n").unwrap();
        let with = format!("{sh}env_file = \"{}\"\n", file.display());
        let before = digest(&jobs(&with)[0]);
        std::fs::write(&file, "A=2\n").unwrap();
        assert_eq!(digest(&jobs(&with)[0]), before);
    }
}
