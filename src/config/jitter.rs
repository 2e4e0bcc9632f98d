//! `jitter = "30s"`: each run of a job starts a deterministic delay after its fire time, to
//! spread load when many jobs share an instant (`@hourly` across 1,000 jobs), as systemd's
//! `RandomizedDelaySec=` does, but the same on every node: the delay comes from the job's name
//! and the fire time alone, so whichever node leads at the start instant claims and runs it,
//! and a failover in between moves it like any other tick.
//!
//! The fire time stays the scheduled instant: the claim key, `CRONLEASE_FIRE_TIME` and the
//! run record's `fire_time` do not move; `tick_run` logs the delay (`delay_ms`) and its
//! lateness from the delayed start. A jitter must be shorter than the schedule's shortest gap
//! between two fire times (checked at load), and each delay is also kept under the gap to the
//! next fire time, so a run never starts after its successor's instant.
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::schedule::Schedule;

/// How many upcoming fire times the load-time check looks at (and at most how far ahead).
const GAP_SAMPLES: usize = 500;
const GAP_HORIZON_DAYS: i64 = 2 * 366;

/// The delay of the run of `job` at `fire_time`: in `0..=jitter`, the same on every node and
/// in every build.
pub fn delay(job: &str, fire_time: DateTime<Utc>, jitter: Duration) -> Duration {
    let ms = jitter.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let key = format!("{job}\n{}", fire_time.timestamp_millis());
    Duration::from_millis(mix(crate::config::text_hash(key.as_bytes())) % (ms + 1))
}

/// [`delay`], kept under the gap from `fire_time` to the schedule's next fire time.
pub fn bounded_delay(
    job: &str,
    schedule: &Schedule,
    fire_time: DateTime<Utc>,
    jitter: Duration,
) -> Duration {
    let d = delay(job, fire_time, jitter);
    match schedule
        .next_after(fire_time)
        .and_then(|next| (next - fire_time).to_std().ok())
    {
        Some(gap) if d >= gap => gap.saturating_sub(Duration::from_millis(1)),
        _ => d,
    }
}

/// The shortest gap between two consecutive fire times of `schedule` after `from` (the next
/// [`GAP_SAMPLES`] of them, within two years); `None` with fewer than two.
pub fn shortest_gap(schedule: &Schedule, from: DateTime<Utc>) -> Option<Duration> {
    let horizon = from + chrono::Duration::days(GAP_HORIZON_DAYS);
    let fires: Vec<DateTime<Utc>> = schedule
        .upcoming(from, GAP_SAMPLES)
        .into_iter()
        .take_while(|t| *t <= horizon)
        .collect();
    fires
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .min()
}

/// splitmix64's finaliser: FNV's low bits alone are poorly spread.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn delays_are_stable_bounded_and_spread() {
        let jitter = Duration::from_secs(30);
        let t = at("2026-12-07T10:00:00Z");
        // Pinned: every node and build computes the same delay.
        assert_eq!(delay("report", t, jitter), delay("report", t, jitter));
        assert_eq!(delay("report", t, jitter), Duration::from_millis(4290));
        assert_eq!(delay("report", t, Duration::ZERO), Duration::ZERO);
        // 1,000 jobs at one instant: spread over the whole jitter.
        let delays: Vec<u128> = (0..1000)
            .map(|i| delay(&format!("job{i}"), t, jitter).as_millis())
            .collect();
        assert!(delays.iter().all(|&d| d <= 30_000));
        let buckets = (0..10)
            .filter(|b| delays.iter().any(|&d| d / 3000 == *b))
            .count();
        assert_eq!(buckets, 10, "not spread: {:?}", &delays[..20]);
        // The next fire time of the same job gets another delay.
        assert_ne!(
            delay("report", t, jitter),
            delay("report", t + chrono::Duration::hours(1), jitter)
        );
    }

    #[test]
    fn a_jitter_must_be_shorter_than_the_shortest_gap() {
        let job = |schedule: &str, extra: &str| {
            format!("{extra}[[job]]\nname = \"a\"\nschedule = \"{schedule}\"\nshell = \"x\"\n")
        };
        let ok = crate::config::parse("j", &format!("{}jitter = \"59s\"\n", job("* * * * *", "")))
            .unwrap();
        assert_eq!(ok.jobs[0].policy.jitter, Some(Duration::from_secs(59)));
        // "0s" is none.
        let none = crate::config::parse("j", &format!("{}jitter = \"0s\"\n", job("* * * * *", "")))
            .unwrap();
        assert_eq!(none.jobs[0].policy.jitter, None);
        // ... and switches off the one of [defaults] for a job too frequent for it.
        let off = crate::config::parse(
            "j",
            &format!(
                "{}jitter = \"0s\"\n",
                job("*/10 * * * * *", "[defaults]\njitter = \"1m\"\n")
            ),
        )
        .unwrap();
        assert_eq!(off.jobs[0].policy.jitter, None);
        for (text, line) in [
            (format!("{}jitter = \"1m\"\n", job("* * * * *", "")), 5),
            // 0 and 1 past the hour: one minute apart, then 59.
            (format!("{}jitter = \"90s\"\n", job("0 0,1 * * * *", "")), 5),
            // From [defaults]: the job's schedule is blamed.
            (job("*/10 * * * * *", "[defaults]\njitter = \"10s\"\n"), 5),
        ] {
            match crate::config::parse("jobs.toml", &text) {
                Err(crate::config::ConfigError::At {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{message}");
                    assert!(
                        message.contains("not shorter than the shortest gap"),
                        "{message}"
                    );
                }
                other => panic!("{other:?}\n{text}"),
            }
        }
    }

    #[test]
    fn gaps_and_bounds() {
        let from = at("2026-12-07T10:00:00Z");
        let s = Schedule::new("0 0,1 * * *", chrono_tz::Tz::UTC).unwrap();
        assert_eq!(shortest_gap(&s, from), Some(Duration::from_secs(3600)));
        let s = Schedule::new("*/10 * * * * *", chrono_tz::Tz::UTC).unwrap();
        assert_eq!(shortest_gap(&s, from), Some(Duration::from_secs(10)));
        // A delay never reaches the next fire time.
        for i in 0..200 {
            let t = from + chrono::Duration::seconds(10 * i);
            let d = bounded_delay("j", &s, t, Duration::from_secs(60));
            assert!(d < Duration::from_secs(10), "{d:?}");
        }
    }
}
