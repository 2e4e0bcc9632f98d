//! What lets an election poll skip its walk over every job when nothing it reads has changed.
//!
//! Every poll the election ([`crate::node::election`]) classifies each job's lease against
//! the node records: this node's, another live node's, or available. At 10,000 settled jobs
//! that walk (a hash lookup and a few string compares per job, every second) was a fifth of a
//! node's CPU, and `memcmp` another quarter, for a result that changes only when its inputs
//! do. The inputs are all in a [`WalkKey`]:
//! - the leases copy, by its version: the election counts every change a read makes to it
//!   (the copy itself is changed in place, so its address says nothing);
//! - the job list (a reload makes a new one);
//! - this node's session;
//! - the leases this node holds ([`Held`] counts its changes);
//! - per node record: its session, whether it is stopping and what it keeps, and whether this
//!   observer judges it alive (that one moves with time alone, so it is part of the key).
//!
//! A poll whose key equals the last walk's reuses that walk's result ([`Walked`]): the
//! available leases (with since when) and the leases held per node. Everything after the walk
//! (the share, the placement, patience, the excess) is computed every poll as before.
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use tokio::time::Instant;

use crate::node::election::Leadership;
use crate::store::{NodeRecord, Observed};

/// The leases this node holds (job → leadership), with a count of their changes: a walk's
/// result stays valid while the count does. Read through `Deref`; every change goes through
/// [`Held::insert`] or [`Held::remove`], so none can be missed.
#[derive(Default)]
pub struct Held {
    map: HashMap<String, Leadership>,
    changes: u64,
}

impl Deref for Held {
    type Target = HashMap<String, Leadership>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Held {
    pub fn insert(&mut self, job: String, lead: Leadership) -> Option<Leadership> {
        self.changes += 1;
        self.map.insert(job, lead)
    }

    pub fn remove(&mut self, job: &str) -> Option<Leadership> {
        let removed = self.map.remove(job);
        if removed.is_some() {
            self.changes += 1;
        }
        removed
    }

    /// Take every lease out.
    pub fn drain(&mut self) -> Vec<(String, Leadership)> {
        if !self.map.is_empty() {
            self.changes += 1;
        }
        self.map.drain().collect()
    }

    /// Changes so far: equal counts mean the same leases.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

/// Everything a walk's result depends on.
pub struct WalkKey {
    /// The version of the leases copy.
    leases: u64,
    names: Arc<Vec<String>>,
    session: Option<String>,
    held: u64,
    /// Per node record, by id: what the walk reads of it.
    nodes: Vec<NodeKey>,
}

#[derive(PartialEq, Eq)]
struct NodeKey {
    id: String,
    session: String,
    alive: bool,
    leaving: bool,
    /// What a stopping node keeps (empty unless `leaving`).
    keeps: Vec<String>,
}

impl WalkKey {
    /// `alive(id)`: whether this observer judges node `id` alive now.
    pub fn new(
        leases: u64,
        names: &Arc<Vec<String>>,
        session: Option<&str>,
        held: &Held,
        nodes: &HashMap<String, NodeRecord>,
        alive: impl Fn(&str) -> bool,
    ) -> Self {
        let mut keys: Vec<NodeKey> = nodes
            .iter()
            .map(|(id, n)| NodeKey {
                id: id.clone(),
                session: n.session.clone(),
                alive: alive(id),
                leaving: n.leaving,
                keeps: if n.leaving {
                    n.jobs.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        WalkKey {
            leases,
            names: names.clone(),
            session: session.map(str::to_string),
            held: held.changes(),
            nodes: keys,
        }
    }

    /// The walk changed the held leases: its result holds for them as they are now.
    pub fn after(mut self, held: &Held) -> Self {
        self.held = held.changes();
        self
    }
}

impl PartialEq for WalkKey {
    fn eq(&self, other: &Self) -> bool {
        self.leases == other.leases
            && Arc::ptr_eq(&self.names, &other.names)
            && self.session == other.session
            && self.held == other.held
            && self.nodes == other.nodes
    }
}

/// The available leases: (job, since when and since which poll, what was observed).
pub type Available = Vec<(String, (Instant, u64), Observed)>;

/// A walk's result, kept with its key.
pub struct Walked {
    pub key: WalkKey,
    pub available: Available,
    /// Leases held per live node, this one included.
    pub counts: Vec<(String, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, session: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            session: session.into(),
            heartbeat: 1,
            started_at: chrono::Utc::now(),
            renewed_at: chrono::Utc::now(),
            jobs: vec!["kept".into()],
            http: None,
            lease_epoch: 0,
            process: String::new(),
            clock_offset_ms: None,
            jobs_digest: String::new(),
            leaving: false,
        }
    }

    fn lead() -> Leadership {
        Leadership {
            term: 1,
            session: "s".into(),
        }
    }

    #[test]
    fn held_counts_every_change_and_only_changes() {
        let mut held = Held::default();
        held.insert("a".into(), lead());
        assert_eq!(held.changes(), 1);
        assert!(held.remove("missing").is_none());
        assert_eq!(held.changes(), 1, "removing nothing is no change");
        held.remove("a");
        assert_eq!(held.changes(), 2);
        assert!(held.is_empty());
    }

    #[test]
    fn a_key_changes_with_each_input_the_walk_reads() {
        let leases = 7;
        let names = Arc::new(vec!["a".to_string()]);
        let mut held = Held::default();
        let mut nodes = HashMap::from([("n2".to_string(), node("n2", "s2"))]);
        let key = |leases: u64, names: &Arc<_>, held: &Held, nodes: &HashMap<_, _>, up| {
            WalkKey::new(leases, names, Some("s1"), held, nodes, |_| up)
        };
        let base = key(leases, &names, &held, &nodes, true);
        assert!(base == key(leases, &names, &held, &nodes, true));
        // Heartbeats and epochs are not inputs: the key ignores them.
        nodes.get_mut("n2").unwrap().heartbeat += 1;
        assert!(base == key(leases, &names, &held, &nodes, true));
        // A new version of the leases copy, even an equal one, is a new input.
        assert!(base != key(8, &names, &held, &nodes, true));
        assert!(base != key(leases, &Arc::new(vec!["a".into()]), &held, &nodes, true));
        assert!(
            base != key(leases, &names, &held, &nodes, false),
            "a node died"
        );
        assert!(base != WalkKey::new(leases, &names, None, &held, &nodes, |_| true));
        nodes.get_mut("n2").unwrap().leaving = true;
        let leaving = key(leases, &names, &held, &nodes, true);
        assert!(base != leaving);
        nodes.get_mut("n2").unwrap().jobs.clear();
        assert!(
            leaving != key(leases, &names, &held, &nodes, true),
            "it keeps less"
        );
        nodes.get_mut("n2").unwrap().session = "s3".into();
        let restarted = key(leases, &names, &held, &nodes, true);
        held.insert("a".into(), lead());
        assert!(restarted != key(leases, &names, &held, &nodes, true));
        nodes.insert("n3".into(), node("n3", "s4"));
        let more = key(leases, &names, &held, &nodes, true);
        assert!(more != restarted.after(&held));
    }
}
