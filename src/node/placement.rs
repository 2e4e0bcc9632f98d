//! Where available leases go: a placement every node computes alike from the same view.
//!
//! With thousands of jobs, nodes that pick available leases at random race each other for the
//! same ones: most compare-and-sets fail, and a failed batch costs a poll. Instead every node
//! places the available leases the same way and takes only its own part, so nodes started
//! together (or the survivors of a dead node) take disjoint sets, each in a few batched store
//! calls, and end within one lease of each other in one round.
//!
//! The placement, from the live nodes, how many leases each holds and the available jobs:
//! - Capacities: `jobs / nodes` each, and one more for `jobs % nodes` of them: those holding
//!   the most now (ties by id), so that nothing moves that need not.
//! - Each available job, in an order fixed by its name's hash, goes to the live node with room
//!   whose rendezvous score for it (a hash of job and node) is highest. A node's death moves
//!   only its own jobs, spread over the survivors.
//!
//! Views differ for a moment (a node saw a death one poll before another): then two nodes
//! may place a job differently. Nothing rests on the placement being right: every acquisition
//! is a compare-and-set, a lost one makes the loser re-read, and a lease nobody took for two
//! polls is taken by anyone ([`crate::node::election`]). Hashes are FNV-1a, fixed here, so
//! nodes of different builds place alike.
use std::collections::HashMap;

/// 64-bit FNV-1a of `parts`, each followed by a zero byte.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A placement of the available jobs, as seen from `me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// How many leases `me` should hold in all.
    pub cap: usize,
    /// The positions (in the `available` slice given) of the jobs placed on `me`, in the order
    /// they were placed.
    pub mine: Vec<usize>,
}

/// Place `available` (job names) over the `live` nodes (`me` among them), which hold `held`
/// leases each (absent: none), with `jobs` jobs in all.
pub fn place(
    me: &str,
    live: &[&str],
    held: &HashMap<&str, usize>,
    jobs: usize,
    available: &[&str],
) -> Placement {
    debug_assert!(live.contains(&me));
    let n = live.len().max(1);
    let (base, extra) = (jobs / n, jobs % n);
    let count = |id: &str| held.get(id).copied().unwrap_or(0);
    let mut order: Vec<&str> = live.to_vec();
    order.sort_by(|a, b| count(b).cmp(&count(a)).then(a.cmp(b)));
    order.dedup();
    let mut room: Vec<(&str, usize)> = order
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let cap = base + usize::from(i < extra);
            (*id, cap.saturating_sub(count(id)))
        })
        .collect();
    let cap = order
        .iter()
        .position(|id| *id == me)
        .map_or(base, |i| base + usize::from(i < extra));
    let mut jobs_in_order: Vec<(u64, usize)> = available
        .iter()
        .enumerate()
        .map(|(i, job)| (fnv(&[job]), i))
        .collect();
    jobs_in_order.sort_unstable();
    let mut mine = Vec::new();
    for (_, i) in jobs_in_order {
        let job = available[i];
        let best = room
            .iter_mut()
            .filter(|(_, r)| *r > 0)
            .max_by_key(|(id, _)| fnv(&[job, id]));
        let Some((id, r)) = best else { break };
        *r -= 1;
        if *id == me {
            mine.push(i);
        }
    }
    Placement { cap, mine }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:05}")).collect()
    }

    /// Every node's part of one view: disjoint, covering every available job, within one of
    /// each other when they all start empty.
    #[test]
    fn nodes_starting_together_take_disjoint_parts_within_one_of_each_other() {
        let jobs = names("job", 10_001);
        let avail: Vec<&str> = jobs.iter().map(String::as_str).collect();
        let live = ["n3", "n1", "n0", "n4", "n2"];
        let held = HashMap::new();
        let mut seen = vec![0u8; avail.len()];
        let mut sizes = Vec::new();
        for me in live {
            let p = place(me, &live, &held, jobs.len(), &avail);
            assert_eq!(p.mine.len(), p.cap, "{me}");
            sizes.push(p.mine.len());
            for i in p.mine {
                seen[i] += 1;
            }
        }
        assert!(
            seen.iter().all(|&s| s == 1),
            "every job placed exactly once"
        );
        sizes.sort();
        assert_eq!(sizes, [2000, 2000, 2000, 2000, 2001]);
    }

    /// A dead node's jobs go to the survivors, to each what it lacks of its new share; the
    /// jobs the survivors hold stay where they are.
    #[test]
    fn a_dead_nodes_jobs_spread_over_the_survivors() {
        let jobs = names("job", 1000);
        let dead: Vec<&str> = jobs[..250].iter().map(String::as_str).collect();
        let live = ["a", "b", "c"];
        let held: HashMap<&str, usize> = [("a", 250), ("b", 250), ("c", 250)].into();
        let mut total = 0;
        for me in live {
            let p = place(me, &live, &held, jobs.len(), &dead);
            assert!(p.cap == 333 || p.cap == 334, "{me}: {}", p.cap);
            assert_eq!(p.mine.len(), p.cap - 250);
            total += p.mine.len();
        }
        assert_eq!(total, 250);
    }

    /// The extra lease of an uneven split goes to whoever holds the most already: a node at
    /// its share is never asked to give one back to make room for it.
    #[test]
    fn the_extra_lease_stays_with_who_holds_it() {
        let live = ["a", "b"];
        let held: HashMap<&str, usize> = [("a", 5), ("b", 6)].into();
        assert_eq!(place("b", &live, &held, 11, &[]).cap, 6);
        assert_eq!(place("a", &live, &held, 11, &[]).cap, 5);
    }

    /// The placement does not depend on the order the jobs or nodes are listed in.
    #[test]
    fn the_order_of_the_lists_does_not_matter() {
        let jobs = names("j", 50);
        let fwd: Vec<&str> = jobs.iter().map(String::as_str).collect();
        let rev: Vec<&str> = fwd.iter().rev().copied().collect();
        let held = HashMap::new();
        let a = place("x", &["x", "y", "z"], &held, 50, &fwd);
        let b = place("x", &["z", "y", "x"], &held, 50, &rev);
        let mut a: Vec<&str> = a.mine.iter().map(|&i| fwd[i]).collect();
        let mut b: Vec<&str> = b.mine.iter().map(|&i| rev[i]).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
