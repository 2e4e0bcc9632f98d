//! Slowing down token guessing: after [`FAILURES_PER_WINDOW`] wrong tokens from one address
//! within [`WINDOW`], every request of that address that needs a token gets 429 with
//! `Retry-After` until the window ends, without its token being looked at (so a right guess
//! would not tell). A missing token is not a guess (a dashboard's first read sends none) and
//! does not count.
//!
//! Addresses are counted whole for IPv4 and by /64 for IPv6 (one host usually holds a whole
//! /64). The table is bounded: windows that ended are dropped once it holds [`PRUNE_AT`]
//! addresses (at most once a second), and beyond [`MAX_ADDRESSES`] live windows the wrong
//! tokens of every further address are counted together in one shared window (an attacker
//! with that many addresses is slowed as a whole; the node's memory does not grow without
//! bound, and an address that sends no wrong token is never limited by others).
//!
//! The count is per address as the node sees it: clients behind one proxy or NAT share it, so
//! one of them with a stale token slows the others that need a token, for up to a minute.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens allowed from one address per window.
pub const FAILURES_PER_WINDOW: u32 = 10;
/// The window, started by an address's first wrong token.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses kept before ended windows are dropped.
const PRUNE_AT: usize = 4096;
/// Addresses kept at most; beyond, new ones share [`OVERFLOW`].
pub const MAX_ADDRESSES: usize = 65_536;
/// The key the addresses beyond [`MAX_ADDRESSES`] share (`::`, never a peer's address).
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// What the limiter says about a request from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on and look at its token.
    Allowed,
    /// Refuse it (429); retry after this long.
    Limited(Duration),
}

/// What [`AuthLimiter::failed`] reports, for the log (once per address per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The first failure of the address's window: worth a log line.
    pub first: bool,
    /// This failure used up the window's allowance.
    pub now_limited: bool,
}

struct Entry {
    started: Instant,
    failures: u32,
}

/// The per-address count of wrong tokens.
#[derive(Default)]
pub struct AuthLimiter {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    pruned: Option<Instant>,
}

impl Table {
    /// The key `ip` is counted under now: its own, or the shared one of a full table.
    fn key(&self, ip: IpAddr) -> IpAddr {
        let own = key(ip);
        if self.entries.len() >= MAX_ADDRESSES && !self.entries.contains_key(&own) {
            OVERFLOW
        } else {
            own
        }
    }

    /// Drop ended windows, at most once a second, once the table is big.
    fn prune(&mut self, now: Instant) {
        let due = self
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if self.entries.len() >= PRUNE_AT && due {
            self.entries.retain(|_, e| now < e.started + WINDOW);
            self.pruned = Some(now);
        }
    }
}

/// The key an address is counted under: IPv4 whole, IPv6 by its /64 (IPv4-mapped as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
        v4 => v4,
    }
}

impl AuthLimiter {
    pub fn new() -> AuthLimiter {
        AuthLimiter::default()
    }

    /// Whether a request from `ip` may have its token looked at, at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut table = self.table.lock().unwrap();
        table.prune(now);
        let key = table.key(ip);
        match table.entries.get(&key) {
            Some(e) if now < e.started + WINDOW && e.failures >= FAILURES_PER_WINDOW => {
                let left = (e.started + WINDOW).saturating_duration_since(now);
                Verdict::Limited(left.max(Duration::from_secs(1)))
            }
            _ => Verdict::Allowed,
        }
    }

    /// Count a wrong token from `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Failure {
        let mut table = self.table.lock().unwrap();
        table.prune(now);
        let key = table.key(ip);
        let entry = table.entries.entry(key).or_insert(Entry {
            started: now,
            failures: 0,
        });
        if now >= entry.started + WINDOW {
            *entry = Entry {
                started: now,
                failures: 0,
            };
        }
        entry.failures += 1;
        Failure {
            first: entry.failures == 1,
            now_limited: entry.failures == FAILURES_PER_WINDOW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_wrong_tokens_a_minute_then_429_until_the_window_ends() {
        let limiter = AuthLimiter::new();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_WINDOW {
            assert_eq!(limiter.check(ip, t0), Verdict::Allowed, "failure {i}");
            let f = limiter.failed(ip, t0 + Duration::from_secs(u64::from(i)));
            assert_eq!(f.first, i == 0);
            assert_eq!(f.now_limited, i + 1 == FAILURES_PER_WINDOW);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            limiter.check(ip, later),
            Verdict::Limited(Duration::from_secs(40))
        );
        assert_eq!(limiter.check(other, later), Verdict::Allowed);
        assert_eq!(limiter.check(ip, t0 + WINDOW), Verdict::Allowed);
        assert!(limiter.failed(ip, t0 + WINDOW).first, "a new window starts");
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let limiter = AuthLimiter::new();
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_WINDOW {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            limiter.failed(ip, t0);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(matches!(limiter.check(same_64, t0), Verdict::Limited(_)));
        assert_eq!(limiter.check(other_64, t0), Verdict::Allowed);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        limiter.failed(mapped, t0);
        assert!(!limiter.failed("10.0.0.1".parse().unwrap(), t0).first);
    }

    #[test]
    fn a_full_table_shares_one_window_and_frees_itself_when_windows_end() {
        let limiter = AuthLimiter::new();
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            limiter.failed(IpAddr::V4(i.into()), t0);
        }
        // Beyond the table: counted together; an address without wrong tokens is not limited
        // until the shared window fills.
        let (a, b): (IpAddr, IpAddr) = (
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
        );
        assert_eq!(limiter.check(a, t0), Verdict::Allowed);
        for _ in 0..FAILURES_PER_WINDOW {
            limiter.failed(b, t0);
        }
        assert!(matches!(limiter.check(a, t0), Verdict::Limited(_)));
        // Once the windows ended, the table empties and every address has its own again.
        let later = t0 + WINDOW;
        assert_eq!(limiter.check(a, later), Verdict::Allowed);
        assert!(limiter.table.lock().unwrap().entries.is_empty());
        assert!(limiter.failed(a, later).first);
    }
}
