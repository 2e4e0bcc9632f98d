//! Config drift: which node runs which definition of each job.
//!
//! Every node publishes its job definitions (job → [`crate::node::jobs::digest`]) as a
//! [`Definitions`] record, written at start and after every reload that changed a job, and
//! then the digest of the whole set in its node record (`jobs_digest`, written with the
//! heartbeat it already makes). A peer reads another node's definitions only when that node's
//! `jobs_digest` is new to it and differs from its own, so a cluster that agrees costs no reads
//! at all, and a change costs one read per peer.
//!
//! With that, each node:
//! - logs `config_drift` once per change when the live nodes disagree about a job it knows
//!   (another digest, or the job missing), and `config_drift_cleared` when they agree again;
//!   `cronlease_config_drift_jobs` counts the jobs in disagreement;
//! - counts, per job, only the nodes that know it for the fair share of the election: a job
//!   known by two of three nodes is split between those two ([`Drift::share`]).
//!
//! A node whose record has no `jobs_digest` (older version, or not yet published) is taken to
//! know every job, with an unknown definition: it is contested as before and never reported.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::node::jobs::JobTable;
use crate::node::session::Session;
use crate::ops::metrics::Metrics;
use crate::store::{Definitions, NodeRecord, Store};

/// Definitions are written again this often even when unchanged: a peer that removed this
/// node's record as dead (a restart with the same `--node-id` racing its garbage collection)
/// removed them too, and this puts them back. One write per node per period.
const REPUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// How a job switched off (`enabled = false`) appears in [`Definitions::jobs`]: its digest
/// behind this prefix. Such a node has the job but does not contest it.
pub const OFF: &str = "off:";

/// This node's definitions, from its job table.
pub fn definitions_of(jobs: &JobTable) -> Definitions {
    let jobs: BTreeMap<String, String> = jobs
        .active()
        .into_iter()
        .map(|(idx, job)| {
            let digest = jobs.digest(idx);
            let value = if job.enabled {
                digest
            } else {
                format!("{OFF}{digest}")
            };
            (job.name.clone(), value)
        })
        .collect();
    let text: String = jobs
        .iter()
        .map(|(name, digest)| format!("{name}={digest}\n"))
        .collect();
    let h = crate::config::text_hash(text.as_bytes());
    Definitions {
        digest: format!("{h:016x}"),
        jobs,
    }
}

/// One node's view of a job: its digest, or `None` when the node does not have the job.
pub type Variant = (String, Option<String>);

/// The jobs the given nodes disagree about, each with every node's variant (sorted by node).
/// Only `jobs` are looked at; nodes are (id, definitions).
pub fn disagreements<'a>(
    nodes: &[(String, Arc<Definitions>)],
    jobs: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, Vec<Variant>> {
    let mut out = BTreeMap::new();
    // Nodes with one digest for the whole set agree on every job: nothing to compare.
    if nodes.windows(2).all(|w| w[0].1.digest == w[1].1.digest) {
        return out;
    }
    for job in jobs {
        let first = nodes.first().and_then(|(_, d)| d.jobs.get(job));
        if nodes.iter().all(|(_, d)| d.jobs.get(job) == first) {
            continue;
        }
        let mut variants: Vec<Variant> = nodes
            .iter()
            .map(|(id, d)| (id.clone(), d.jobs.get(job).cloned()))
            .collect();
        variants.sort();
        out.insert(job.clone(), variants);
    }
    out
}

/// `n1=3f2a…, n2=absent`, for logs and tables.
pub fn describe(variants: &[Variant]) -> String {
    variants
        .iter()
        .map(|(node, d)| format!("{node}={}", d.as_deref().unwrap_or("absent")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct Drift {
    node: String,
    store: Arc<dyn Store>,
    session: Arc<Session>,
    jobs: Arc<JobTable>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    mine: Arc<Definitions>,
    /// The digest whose definitions are in the store (and in the session's record), and when
    /// they were written.
    published: Option<(String, tokio::time::Instant)>,
    /// Live peers' definitions, by node, as last read.
    peers: HashMap<String, Arc<Definitions>>,
    /// The disagreements last reported, by job.
    reported: BTreeMap<String, Vec<Variant>>,
}

impl Drift {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        session: Arc<Session>,
        jobs: Arc<JobTable>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mine = Arc::new(definitions_of(&jobs));
        Drift {
            node,
            store,
            session,
            jobs,
            metrics,
            state: Mutex::new(State {
                mine,
                ..State::default()
            }),
        }
    }

    /// The job table changed (a reload): publish the new definitions at the next poll.
    pub fn jobs_changed(&self) {
        let mine = Arc::new(definitions_of(&self.jobs));
        let mut st = self.state.lock().unwrap();
        if st.mine.digest != mine.digest {
            st.mine = mine;
        }
    }

    /// Write this node's definitions if the store does not have them yet, then announce their
    /// digest in the node record. False if the store refused (tried again next time).
    pub async fn publish(&self) -> bool {
        let mine = {
            let st = self.state.lock().unwrap();
            let fresh = st.published.as_ref().is_some_and(|(digest, at)| {
                *digest == st.mine.digest && at.elapsed() < REPUBLISH_EVERY
            });
            if fresh {
                return true;
            }
            st.mine.clone()
        };
        match self.store.put_definitions(&self.node, &mine).await {
            Ok(()) => {
                self.session.set_jobs_digest(mine.digest.clone());
                self.state.lock().unwrap().published =
                    Some((mine.digest.clone(), tokio::time::Instant::now()));
                true
            }
            Err(e) => {
                warn!(event = "store_error", node = %self.node,
                    "cannot publish this node's job definitions (tried again at the next poll): {e}");
                false
            }
        }
    }

    /// Read the definitions of the peers in `nodes` whose digest is new and not ours; forget
    /// the nodes that are gone.
    pub async fn refresh(&self, nodes: &HashMap<String, NodeRecord>) {
        let wanted = {
            let mut st = self.state.lock().unwrap();
            st.peers.retain(|id, _| nodes.contains_key(id));
            let mine = st.mine.clone();
            let mut wanted = Vec::new();
            for (id, n) in nodes {
                if id == &self.node {
                    continue;
                }
                if n.jobs_digest.is_empty() {
                    st.peers.remove(id);
                } else if n.jobs_digest == mine.digest {
                    st.peers.insert(id.clone(), mine.clone());
                } else if st.peers.get(id).is_none_or(|d| d.digest != n.jobs_digest) {
                    wanted.push((id.clone(), n.jobs_digest.clone()));
                }
            }
            wanted
        };
        for (id, digest) in wanted {
            match self.store.definitions(&id).await {
                Ok(Some(d)) if d.digest == digest => {
                    self.state.lock().unwrap().peers.insert(id, Arc::new(d));
                }
                // Not written yet, or already newer than the record read: next poll.
                Ok(_) => {
                    self.state.lock().unwrap().peers.remove(&id);
                }
                Err(e) => {
                    warn!(event = "store_error", node = %self.node, peer = %id,
                        "cannot read a node's job definitions: {e}");
                }
            }
        }
    }

    /// This node's fair share of `names` (its jobs) with `live_peers` alive: the sum over the
    /// jobs of 1 / (the nodes that know the job), rounded up.
    pub fn share(&self, names: &[String], live_peers: &[&String]) -> usize {
        let st = self.state.lock().unwrap();
        // A peer contests a job it has, switched on; one whose definitions are unknown is
        // taken to contest every job.
        let knows = |peer: &String, job: &String| {
            st.peers
                .get(peer)
                .is_none_or(|d| d.jobs.get(job).is_some_and(|v| !v.starts_with(OFF)))
        };
        // Every peer known to run this node's definitions (or unknown): the plain split.
        let same = |p: &&String| st.peers.get(*p).is_none_or(|d| d.digest == st.mine.digest);
        if live_peers.iter().all(same) {
            return names.len().div_ceil(1 + live_peers.len());
        }
        let mut total = 0f64;
        for job in names {
            let k = 1 + live_peers.iter().filter(|p| knows(p, job)).count();
            total += 1.0 / k as f64;
        }
        // A hair below an integer is that integer (float error), not one more.
        (total - 1e-9).ceil().max(0.0) as usize
    }

    /// Whether every live peer runs this node's definitions (or its are unknown): then every
    /// node contests every job, and leases are placed by [`crate::node::placement`].
    pub fn uniform(&self, live_peers: &[&String]) -> bool {
        let st = self.state.lock().unwrap();
        live_peers
            .iter()
            .all(|p| st.peers.get(*p).is_none_or(|d| d.digest == st.mine.digest))
    }

    /// Compare the definitions of this node and its live peers; log what changed.
    pub fn check(&self, live_peers: &[&String]) {
        let mut st = self.state.lock().unwrap();
        let mut nodes: Vec<(String, Arc<Definitions>)> = vec![(self.node.clone(), st.mine.clone())];
        nodes.extend(
            live_peers
                .iter()
                .filter_map(|p| st.peers.get(*p).map(|d| ((*p).clone(), d.clone()))),
        );
        let now = disagreements(&nodes, st.mine.jobs.keys());
        for (job, variants) in &now {
            if st.reported.get(job) != Some(variants) {
                warn!(event = "config_drift", job = %job, node = %self.node,
                    nodes = %describe(variants),
                    "the nodes run different definitions of {job}: {}", describe(variants));
            }
        }
        for job in st.reported.keys() {
            if !now.contains_key(job) && st.mine.jobs.contains_key(job) {
                info!(event = "config_drift_cleared", job = %job, node = %self.node,
                    "the nodes agree on {job} again");
            }
        }
        self.metrics.set_config_drift_jobs(now.len());
        st.reported = now;
    }

    /// The disagreements as last checked, by job.
    pub fn current(&self) -> BTreeMap<String, Vec<Variant>> {
        self.state.lock().unwrap().reported.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(pairs: &[(&str, &str)]) -> Arc<Definitions> {
        Arc::new(Definitions {
            digest: format!("{pairs:?}"),
            jobs: pairs
                .iter()
                .map(|(j, d)| (j.to_string(), d.to_string()))
                .collect(),
        })
    }

    #[test]
    fn disagreements_name_every_node_and_absence() {
        let nodes = vec![
            ("n1".to_string(), defs(&[("a", "1"), ("b", "1")])),
            ("n2".to_string(), defs(&[("a", "2"), ("b", "1")])),
            ("n3".to_string(), defs(&[("a", "1")])),
        ];
        let jobs = ["a".to_string(), "b".to_string()];
        let d = disagreements(&nodes, jobs.iter());
        assert_eq!(describe(&d["a"]), "n1=1, n2=2, n3=1");
        assert_eq!(describe(&d["b"]), "n1=1, n2=1, n3=absent");
        let same = vec![
            ("n1".to_string(), defs(&[("a", "1")])),
            ("n2".to_string(), defs(&[("a", "1")])),
        ];
        assert!(disagreements(&same, jobs.iter()).is_empty());
    }

    #[test]
    fn definitions_digest_the_whole_set() {
        let parse = |t: &str| JobTable::new(crate::config::parse("j.toml", t).unwrap().jobs);
        let a = "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"a\"\n";
        let b = "[[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"b\"\n";
        let one = definitions_of(&parse(&format!("{a}{b}")));
        assert_eq!(one.jobs.len(), 2);
        assert_eq!(
            one,
            definitions_of(&parse(&format!("{b}{a}"))),
            "order does not matter"
        );
        assert_ne!(one.digest, definitions_of(&parse(a)).digest);
    }
}
