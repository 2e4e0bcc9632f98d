//! Cron expression + IANA time zone → fire times.
//!
//! Cron patterns (croner, seconds optional: a 5-field expression fires at second 0) are matched
//! against the *wall-clock* time of the job's zone. Mapping wall-clock matches to instants is
//! done here rather than with croner's own `DateTime<Tz>` search, because that search is not
//! monotonic inside a DST overlap: from an instant in the repeated hour it can return an
//! earlier instant, and its iterator interleaves the two occurrences of the hour (00:00Z,
//! 01:00Z, 00:20Z, ...). Here croner only parses; [`CronMask`] answers "next/previous matching wall-clock second"
//! (evaluated in UTC, which has no DST), and the rules below turn those into instants:
//!
//! * A wall-clock time that exists once fires at that instant.
//! * Linux cron's DST rule (crontab(5), cronie and Vixie cron) for *fixed-time* jobs: those
//!   whose second, minute and hour fields do not start with `*` (`30 2 * * *`,
//!   `0,30 2 * * *`, `0 1,2,5 * * *`, `@daily`; see [`crate::config::crontab`]):
//!   - DST gap (spring forward, the wall-clock time does not exist): the job fires once at the
//!     first instant after the gap (03:00 local in Europe/Berlin), however many of its times
//!     the gap swallowed;
//!   - DST overlap (fall back, the wall-clock time exists twice): it fires once, at the first
//!     occurrence.
//! * Every other job (*interval* jobs: `*/10 * * * * *`, `30 * * * *`, `@hourly`) fires at
//!   every real instant that matches: both occurrences in an overlap, none in a gap, so it
//!   keeps its real-time cadence.
//!
//! Fire times are strictly increasing, do not depend on the instant a search starts from
//! (a search that starts at the very second a gap ends still finds the skipped time), and
//! `next_after` / `latest_at_or_before` are exact inverses of each other.
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::config::cron_mask::CronMask;

/// Which way a calendar search goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A job's schedule: a cron expression (seconds optional) evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written (trimmed).
    pub expr: String,
    pub tz: chrono_tz::Tz,
    /// The parsed pattern as bit masks (croner's own parse is about 5 KB a pattern: see
    /// [`crate::config::cron_mask`]).
    mask: CronMask,
    /// Fixed-time job (Linux cron's rule: no `*` at the start of the second, minute or hour
    /// field): fires once on DST overlap, and once right after a DST gap that swallowed its
    /// time.
    pub fixed_time: bool,
    /// Day-of-month `LW`: only the last weekday of the month matches.
    last_weekday: bool,
    /// How the day fields combine, when both restrict the days (see [`crate::config::crontab`]).
    pub days_rule: Option<DaysRule>,
}

/// How day-of-month and day-of-week combine when both restrict the days (Linux cron's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaysRule {
    /// Neither field starts with `*`: a day matching either runs.
    Either,
    /// One field starts with `*` (as in `*/2`): a day must match both.
    Both,
}

/// Probe step when looking for UTC-offset changes. Time zones change offset at most a few times
/// a year; two changes within this step would be missed (none exist in the tz database).
const PROBE_STEP: i64 = 12 * 3600;
/// Upper bound on loop iterations of one search (each crosses an offset change or rejects a
/// repeated wall-clock time), so a search always ends.
const MAX_STEPS: usize = 100_000;

/// Parse an IANA time zone name ("Europe/Berlin", "UTC").
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    chrono_tz::Tz::from_str(name).map_err(|_| ScheduleError(format!("unknown time zone {name:?}")))
}

impl Schedule {
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let tz = parse_timezone(tz)?;
        Schedule::new(expr, tz)
    }

    /// Parse `expr` (5 or 6 fields, or a macro; see [`crate::config::crontab`]) for the zone `tz`.
    pub fn new(expr: &str, tz: chrono_tz::Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        let bad = |why: String| ScheduleError(format!("bad cron expression {expr:?}: {why}"));
        let tab = crate::config::crontab::parse(trimmed).map_err(|e| bad(e.0))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(tab.dom_and_dow)
            .build()
            .parse(&tab.pattern)
            .map_err(|e| bad(e.to_string()))?;
        let schedule = Schedule {
            expr: trimmed.to_string(),
            tz,
            mask: CronMask::of(&cron, &tab.pattern, tab.dom_and_dow),
            fixed_time: tab.fixed_time,
            last_weekday: tab.last_weekday,
            days_rule: tab.both_days_restricted.then_some(if tab.days_ored {
                DaysRule::Either
            } else {
                DaysRule::Both
            }),
        };
        // Every pattern that matches at all matches within one 400-year Gregorian cycle.
        let probe = NaiveDateTime::parse_from_str("2000-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
            .expect("valid literal");
        if schedule.naive_search(probe, Direction::Forward).is_none() {
            return Err(bad("it never fires (no date matches it)".into()));
        }
        Ok(schedule)
    }

    /// Does the wall-clock second `n` match the expression?
    pub fn matches_wall_clock(&self, n: NaiveDateTime) -> bool {
        self.mask.matches(n)
            && (!self.last_weekday || crate::config::crontab::is_last_weekday(n.date()))
    }

    /// The nearest matching wall-clock second at or after (before) `from` (UTC has no DST, so
    /// this is a pure calendar search).
    fn naive_search(&self, from: NaiveDateTime, direction: Direction) -> Option<NaiveDateTime> {
        let mut from = from;
        // `LW`: croner matches days 26-31; skip the days that are not the last weekday.
        for _ in 0..MAX_STEPS {
            let found = match direction {
                Direction::Forward => self.mask.next_from(from),
                Direction::Backward => self.mask.prev_from(from),
            }?;
            if !self.last_weekday || crate::config::crontab::is_last_weekday(found.date()) {
                return Some(found);
            }
            from = match direction {
                Direction::Forward => found.date().succ_opt()?.and_hms_opt(0, 0, 0)?,
                Direction::Backward => found.date().pred_opt()?.and_hms_opt(23, 59, 59)?,
            };
        }
        None
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = t.timestamp().checked_add(1)?;
        self.first_at_or_after(from).and_then(to_utc)
    }

    /// The latest fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.last_at_or_before(t.timestamp()).and_then(to_utc)
    }

    /// All fire times `T` with `after < T <= until`, in order, at most `limit` of them.
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cur = after;
        while out.len() < limit {
            match self.next_after(cur) {
                Some(t) if t <= until => {
                    out.push(t);
                    cur = t;
                }
                _ => break,
            }
        }
        out
    }

    /// The next `n` fire times strictly after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut cur = t;
        while out.len() < n {
            match self.next_after(cur) {
                Some(next) => {
                    out.push(next);
                    cur = next;
                }
                None => break,
            }
        }
        out
    }

    /// Does the zone change its UTC offset within `horizon` after `t` (has DST, or is about to
    /// change its standard time)?
    pub fn offset_changes_within(&self, t: DateTime<Utc>, horizon: Duration) -> bool {
        let from = t.timestamp();
        self.next_change(from, from.saturating_add(horizon.num_seconds()))
            .is_some()
    }

    /// UTC offset (seconds) in force at unix time `ts`.
    fn offset(&self, ts: i64) -> Option<i64> {
        let utc = DateTime::from_timestamp(ts, 0)?;
        Some(
            self.tz
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc() as i64,
        )
    }

    /// First instant in `(from, limit]` whose offset differs from the offset at `from`.
    fn next_change(&self, from: i64, limit: i64) -> Option<i64> {
        let o = self.offset(from)?;
        let mut lo = from;
        while lo < limit {
            let hi = lo.saturating_add(PROBE_STEP).min(limit);
            if self.offset(hi)? != o {
                return Some(self.bisect(lo, hi, o));
            }
            lo = hi;
        }
        None
    }

    /// Start of the constant-offset run that contains `from`, if it begins after `limit`
    /// (i.e. the first instant `s` in `(limit, from]` with the offset of `from` on all of `[s, from]`
    /// and a different offset at `s - 1`).
    fn segment_start(&self, from: i64, limit: i64) -> Option<i64> {
        let o = self.offset(from)?;
        let mut hi = from;
        while hi > limit {
            let lo = hi.saturating_sub(PROBE_STEP).max(limit);
            if self.offset(lo)? != o {
                // offset(lo) != o, offset(hi) == o
                let mut lo = lo;
                let mut hi = hi;
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset(mid) == Some(o) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return Some(hi);
            }
            hi = lo;
        }
        None
    }

    /// With `offset(lo) == o != offset(hi)`: the first instant in `(lo, hi]` whose offset is not `o`.
    fn bisect(&self, mut lo: i64, mut hi: i64, o: i64) -> i64 {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset(mid) == Some(o) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Is the wall-clock match `naive`, taken at the instant `ts`, a fire time?
    /// (`ts` is a valid instant for `naive`; only the second occurrence of a repeated
    /// wall-clock time of a fixed-time job is not.)
    fn is_fire(&self, naive: NaiveDateTime, ts: i64) -> bool {
        match self.tz.from_local_datetime(&naive) {
            chrono::LocalResult::Ambiguous(first, _) => first.timestamp() == ts || !self.fixed_time,
            _ => true,
        }
    }

    /// At an offset change at instant `at` from offset `before` to `after`: a fixed-time job
    /// whose wall-clock time fell into the gap fires at `at`.
    fn gap_fires(&self, at: i64, before: i64, after: i64) -> bool {
        if !self.fixed_time || after <= before {
            return false;
        }
        let (Some(gap_start), Some(gap_end)) = (naive_of(at + before), naive_of(at + after)) else {
            return false;
        };
        matches!(
            self.naive_search(gap_start, Direction::Forward),
            Some(n) if n < gap_end
        )
    }

    /// The first fire time at or after unix second `from`.
    fn first_at_or_after(&self, from: i64) -> Option<i64> {
        // `from` may be the very instant of a spring-forward change: the search below only
        // looks for changes after `cur`, so the gap that ends at `from` is checked here (a
        // fixed-time job's skipped time fires at `from`).
        let (before, at) = (self.offset(from.checked_sub(1)?)?, self.offset(from)?);
        if self.gap_fires(from, before, at) {
            return Some(from);
        }
        let mut cur = from;
        // Wall-clock times at or after this have no match (croner searched and found none).
        let mut exhausted: Option<NaiveDateTime> = None;
        let mut steps = 0;
        'segments: loop {
            let o = self.offset(cur)?;
            let mut search = naive_of(cur.checked_add(o)?)?;
            loop {
                steps += 1;
                if steps > MAX_STEPS {
                    return None;
                }
                let found = if exhausted.is_some_and(|e| search >= e) {
                    None
                } else {
                    self.naive_search(search, Direction::Forward)
                };
                let candidate = found.map(|n| (n, n.and_utc().timestamp() - o));
                // The candidate holds only if the offset stays `o` from `cur` up to it.
                let limit = match candidate {
                    Some((_, ts)) => ts,
                    None => {
                        exhausted = Some(exhausted.map_or(search, |e| e.min(search)));
                        // Wall-clock time only goes back at a fall-back; look for the next change
                        // within a bounded horizon (tz tables end; offsets are constant after).
                        cur.checked_add(400 * 366 * 86400)?
                    }
                };
                match self.next_change(cur, limit) {
                    Some(change) => {
                        let after = self.offset(change)?;
                        if self.gap_fires(change, o, after) {
                            return Some(change);
                        }
                        cur = change;
                        continue 'segments;
                    }
                    None => {
                        let (n, ts) = candidate?;
                        if self.is_fire(n, ts) {
                            return Some(ts);
                        }
                        search = n.checked_add_signed(Duration::seconds(1))?;
                    }
                }
            }
        }
    }

    /// The latest fire time at or before unix second `to`.
    fn last_at_or_before(&self, to: i64) -> Option<i64> {
        let mut cur = to;
        // Wall-clock times at or before this have no match.
        let mut exhausted: Option<NaiveDateTime> = None;
        let mut steps = 0;
        'segments: loop {
            let o = self.offset(cur)?;
            let mut search = naive_of(cur.checked_add(o)?)?;
            loop {
                steps += 1;
                if steps > MAX_STEPS {
                    return None;
                }
                let found = if exhausted.is_some_and(|e| search <= e) {
                    None
                } else {
                    self.naive_search(search, Direction::Backward)
                };
                let candidate = found.map(|n| (n, n.and_utc().timestamp() - o));
                let limit = match candidate {
                    Some((_, ts)) => ts,
                    None => {
                        exhausted = Some(exhausted.map_or(search, |e| e.max(search)));
                        cur.checked_sub(400 * 366 * 86400)?
                    }
                };
                match self.segment_start(cur, limit) {
                    Some(start) => {
                        let prev = start.checked_sub(1)?;
                        let before = self.offset(prev)?;
                        if self.gap_fires(start, before, o) {
                            return Some(start);
                        }
                        cur = prev;
                        continue 'segments;
                    }
                    None => {
                        let (n, ts) = candidate?;
                        if self.is_fire(n, ts) {
                            return Some(ts);
                        }
                        search = n.checked_sub_signed(Duration::seconds(1))?;
                    }
                }
            }
        }
    }
}

fn to_utc(ts: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts, 0)
}

fn naive_of(local_seconds: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(local_seconds, 0).map(|d| d.naive_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn fires(s: &Schedule, after: &str, n: usize) -> Vec<String> {
        s.upcoming(utc(after), n)
            .into_iter()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect()
    }

    fn local(s: &Schedule, t: DateTime<Utc>) -> String {
        t.with_timezone(&s.tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// next_after and latest_at_or_before agree, and between() equals iterating next_after.
    fn check_consistent(s: &Schedule, from: &str, n: usize) {
        let times = s.upcoming(utc(from), n);
        assert_eq!(times.len(), n);
        for w in times.windows(2) {
            assert!(w[0] < w[1], "{} not increasing: {:?}", s.expr, times);
            assert_eq!(s.latest_at_or_before(w[1]), Some(w[1]));
            assert_eq!(
                s.latest_at_or_before(w[1] - Duration::milliseconds(1)),
                Some(w[0]),
                "{}: latest before {}",
                s.expr,
                w[1]
            );
            assert_eq!(s.next_after(w[0]), Some(w[1]));
            // strictly after, even with sub-second input
            assert_eq!(s.next_after(w[0] + Duration::milliseconds(999)), Some(w[1]));
        }
        let (first, last) = (times[0], times[n - 1]);
        assert_eq!(
            s.between(first - Duration::seconds(1), last, usize::MAX),
            times
        );
        assert_eq!(s.between(first - Duration::seconds(1), last, 2), times[..2]);
    }

    #[test]
    fn empty_list_items_are_refused_at_once() {
        for expr in [
            ", * * * * *",
            ",,, * * * *",
            "1,,2 * * * * *",
            "0 1, * * * *",
        ] {
            // Refused by the up-front check, before croner's search could run.
            let err = Schedule::parse(expr, "UTC").unwrap_err().to_string();
            assert!(err.contains("empty item between commas"), "{expr}: {err}");
        }
    }

    #[test]
    fn five_fields_means_second_zero() {
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            fires(&s, "2025-01-01T00:00:00Z", 3),
            [
                "2025-01-01T00:15:00Z",
                "2025-01-01T00:30:00Z",
                "2025-01-01T00:45:00Z"
            ]
        );
    }

    #[test]
    fn every_second_and_every_ten_seconds() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            fires(&s, "2025-01-01T00:00:00.500Z", 3),
            [
                "2025-01-01T00:00:01Z",
                "2025-01-01T00:00:02Z",
                "2025-01-01T00:00:03Z"
            ]
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-01-01T00:00:07.900Z")),
            Some(utc("2025-01-01T00:00:07Z"))
        );
        check_consistent(&s, "2025-01-01T00:00:00Z", 50);

        let s = Schedule::parse("*/10 * * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2025-01-01T00:00:00Z", 3),
            [
                "2025-01-01T00:00:10Z",
                "2025-01-01T00:00:20Z",
                "2025-01-01T00:00:30Z"
            ]
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-01-01T00:00:20Z")),
            Some(utc("2025-01-01T00:00:20Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-01-01T00:00:19.999Z")),
            Some(utc("2025-01-01T00:00:10Z"))
        );
        assert_eq!(
            s.between(
                utc("2025-01-01T00:00:00Z"),
                utc("2025-01-01T00:01:00Z"),
                100
            )
            .len(),
            6
        );
        // Every 10 seconds keeps its real-time cadence through both DST changes.
        for from in ["2025-03-30T00:59:00Z", "2025-10-26T00:59:00Z"] {
            let got = s.upcoming(utc(from), 12);
            for w in got.windows(2) {
                assert_eq!(w[1] - w[0], Duration::seconds(10), "{from}: {got:?}");
            }
            check_consistent(&s, from, 20);
        }
        // Across the whole repeated hour there are 360 ticks per hour of real time.
        let n = s.between(
            utc("2025-10-26T00:00:00Z"),
            utc("2025-10-26T02:00:00Z"),
            10_000,
        );
        assert_eq!(n.len(), 720);
    }

    #[test]
    fn berlin_spring_forward_daily_fires_once_after_the_gap() {
        let s = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert!(s.fixed_time);
        let got = s.upcoming(utc("2025-03-29T12:00:00Z"), 3);
        let local: Vec<_> = got.iter().map(|t| local(&s, *t)).collect();
        assert_eq!(
            local,
            [
                "2025-03-30 03:00:00 CEST",
                "2025-03-31 02:30:00 CEST",
                "2025-04-01 02:30:00 CEST"
            ]
        );
        assert_eq!(got[0], utc("2025-03-30T01:00:00Z"));
        assert_eq!(
            s.latest_at_or_before(utc("2025-03-30T01:00:00Z")),
            Some(utc("2025-03-30T01:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-03-30T00:59:59Z")),
            Some(utc("2025-03-29T01:30:00Z"))
        );
        check_consistent(&s, "2025-03-25T00:00:00Z", 10);
    }

    #[test]
    fn berlin_fall_back_daily_fires_once() {
        let s = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let got = s.upcoming(utc("2025-10-25T12:00:00Z"), 3);
        let local: Vec<_> = got.iter().map(|t| local(&s, *t)).collect();
        assert_eq!(
            local,
            [
                "2025-10-26 02:30:00 CEST",
                "2025-10-27 02:30:00 CET",
                "2025-10-28 02:30:00 CET"
            ]
        );
        // From inside the repeated hour (second pass), the next one is tomorrow.
        assert_eq!(
            s.next_after(utc("2025-10-26T01:10:00Z")),
            Some(utc("2025-10-27T01:30:00Z"))
        );
        // The second 02:30 (01:30Z) is not a fire time.
        assert_eq!(
            s.latest_at_or_before(utc("2025-10-26T01:45:00Z")),
            Some(utc("2025-10-26T00:30:00Z"))
        );
        check_consistent(&s, "2025-10-20T00:00:00Z", 10);
    }

    #[test]
    fn new_york_transitions() {
        // Spring forward 2025-03-09: 02:00 EST -> 03:00 EDT.
        let s = Schedule::parse("30 2 * * *", "America/New_York").unwrap();
        let got = s.upcoming(utc("2025-03-08T12:00:00Z"), 2);
        assert_eq!(
            got.iter().map(|t| local(&s, *t)).collect::<Vec<_>>(),
            ["2025-03-09 03:00:00 EDT", "2025-03-10 02:30:00 EDT"]
        );
        assert_eq!(got[0], utc("2025-03-09T07:00:00Z"));
        check_consistent(&s, "2025-03-05T00:00:00Z", 10);

        // Fall back 2025-11-02: 02:00 EDT -> 01:00 EST; 01:30 happens twice.
        let s = Schedule::parse("0 30 1 * * *", "America/New_York").unwrap();
        let got = s.upcoming(utc("2025-11-01T12:00:00Z"), 2);
        assert_eq!(
            got.iter().map(|t| local(&s, *t)).collect::<Vec<_>>(),
            ["2025-11-02 01:30:00 EDT", "2025-11-03 01:30:00 EST"]
        );
        check_consistent(&s, "2025-10-30T00:00:00Z", 10);

        // An hourly job runs every real hour: both 01:00s, no 02:00 on spring-forward day.
        let s = Schedule::parse("0 0 * * * *", "America/New_York").unwrap();
        assert!(!s.fixed_time);
        let got = s.upcoming(utc("2025-11-02T04:30:00Z"), 3);
        assert_eq!(
            got.iter().map(|t| local(&s, *t)).collect::<Vec<_>>(),
            [
                "2025-11-02 01:00:00 EDT",
                "2025-11-02 01:00:00 EST",
                "2025-11-02 02:00:00 EST"
            ]
        );
        let got = s.upcoming(utc("2025-03-09T05:30:00Z"), 2);
        assert_eq!(
            got.iter().map(|t| local(&s, *t)).collect::<Vec<_>>(),
            ["2025-03-09 01:00:00 EST", "2025-03-09 03:00:00 EDT"]
        );
        check_consistent(&s, "2025-11-01T23:00:00Z", 10);
        check_consistent(&s, "2025-03-08T23:00:00Z", 10);
    }

    #[test]
    fn interval_job_in_overlap_is_monotonic() {
        // croner's own iterator interleaves the two passes of the repeated hour; we do not.
        let s = Schedule::parse("0 */20 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2025-10-25T23:30:00Z", 8),
            [
                "2025-10-25T23:40:00Z",
                "2025-10-26T00:00:00Z",
                "2025-10-26T00:20:00Z",
                "2025-10-26T00:40:00Z",
                "2025-10-26T01:00:00Z",
                "2025-10-26T01:20:00Z",
                "2025-10-26T01:40:00Z",
                "2025-10-26T02:00:00Z"
            ]
        );
        // From inside the second pass, nothing earlier comes back.
        assert_eq!(
            s.next_after(utc("2025-10-26T01:05:00Z")),
            Some(utc("2025-10-26T01:20:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-10-26T01:05:00Z")),
            Some(utc("2025-10-26T01:00:00Z"))
        );
        // Spring forward: 02:00..02:40 local do not exist and are skipped.
        assert_eq!(
            fires(&s, "2025-03-30T00:30:00Z", 3),
            [
                "2025-03-30T00:40:00Z",
                "2025-03-30T01:00:00Z",
                "2025-03-30T01:20:00Z"
            ]
        );
        check_consistent(&s, "2025-10-25T23:00:00Z", 20);
        check_consistent(&s, "2025-03-29T23:00:00Z", 20);
    }

    #[test]
    fn sparse_schedules() {
        let s = Schedule::parse("0 0 0 29 2 *", "Europe/Berlin").unwrap();
        assert_eq!(
            fires(&s, "2025-01-01T00:00:00Z", 2),
            ["2028-02-28T23:00:00Z", "2032-02-28T23:00:00Z"]
        );
        assert_eq!(
            s.latest_at_or_before(utc("2027-01-01T00:00:00Z")),
            Some(utc("2024-02-28T23:00:00Z"))
        );
        let s = Schedule::parse("@daily", "UTC").unwrap();
        assert_eq!(
            fires(&s, "2025-01-01T00:00:00Z", 1),
            ["2025-01-02T00:00:00Z"]
        );
    }

    #[test]
    fn errors_are_readable() {
        let e = Schedule::parse("0 0 * * *", "Mars/Base").unwrap_err();
        assert_eq!(e.to_string(), "unknown time zone \"Mars/Base\"");
        let e = Schedule::parse("0 0 0 1 1 * 2030", "UTC").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad cron expression \"0 0 0 1 1 * 2030\": 7 fields (a year field)"),
            "{e}"
        );
        let e = Schedule::parse("* * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("found 3"), "{e}");
        let e = Schedule::parse("61 * * * * *", "UTC").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad cron expression \"61 * * * * *\": "),
            "{e}"
        );
        let e = Schedule::parse("0 0 0 31 2 *", "UTC").unwrap_err();
        assert!(e.to_string().contains("never fires"), "{e}");
        assert!(Schedule::parse("", "UTC").is_err());
        assert!(Schedule::parse("*/0 * * * * *", "UTC").is_err());
    }

    /// Brute force over every second of a window around DST changes, straight from the rules
    /// in the module docs, against next_after / latest_at_or_before.
    #[test]
    fn matches_brute_force_around_transitions() {
        let windows = [
            ("Europe/Berlin", "2025-03-30T00:00:00Z"),
            ("Europe/Berlin", "2025-10-26T00:00:00Z"),
            ("America/New_York", "2025-03-09T06:00:00Z"),
            ("America/New_York", "2025-11-02T05:00:00Z"),
            ("Australia/Lord_Howe", "2025-04-05T14:00:00Z"), // 30-minute fall back
            ("Australia/Lord_Howe", "2025-10-04T15:00:00Z"), // 30-minute spring forward
        ];
        let exprs = [
            "0 30 2 * * *",
            "0 45 1 * * *",
            "15 0 2 * * *",
            "0 */20 * * * *",
            "0 0 * * * *",
            "*/30 * * * * *",
            "0 0,30 2 * * *",
            "0 0 3 * * *",
            "0 1,2,5 * * *",
            "0 0-59/20 2 * * *",
            "*/20 2 * * *",
        ];
        for (zone, start) in windows {
            for expr in exprs {
                let s = Schedule::parse(expr, zone).unwrap();
                let start = utc(start).timestamp() - 2 * 3600;
                let end = start + 6 * 3600;
                let off = |ts: i64| s.offset(ts).unwrap();
                let brute: Vec<i64> = (start + 1..=end)
                    .filter(|&ts| {
                        let n = naive_of(ts + off(ts)).unwrap();
                        if s.matches_wall_clock(n) {
                            return s.is_fire(n, ts);
                        }
                        let (before, after) = (off(ts - 1), off(ts));
                        s.fixed_time
                            && after > before
                            && (ts + before..ts + after).any(|l| {
                                let n = naive_of(l).unwrap();
                                s.matches_wall_clock(n)
                            })
                    })
                    .collect();
                let mut fast = Vec::new();
                let mut cur = start;
                while let Some(t) = s.first_at_or_after(cur + 1).filter(|&t| t <= end) {
                    fast.push(t);
                    cur = t;
                }
                assert_eq!(fast, brute, "{expr} in {zone} (forward)");
                let mut back = Vec::new();
                let mut cur = end;
                while let Some(t) = s.last_at_or_before(cur).filter(|&t| t > start) {
                    back.push(t);
                    cur = t - 1;
                }
                back.reverse();
                assert_eq!(back, brute, "{expr} in {zone} (backward)");
            }
        }
    }

    /// The zones of the crontab-compatibility issue: whole-hour, 30-minute (Lord Howe) and
    /// 45-minute-offset (Chatham) changes, at 00:00 (Havana), 24:00 (Santiago) and 02:00.
    const DST_ZONES: [&str; 6] = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Havana",
        "America/Santiago",
        "Pacific/Chatham",
    ];

    /// Expressions that hit the hours around those changes, fixed-time and interval.
    const DST_EXPRS: [&str; 20] = [
        "15 2 * * *",
        "0,30 2 * * *",
        "0 1,2,5 * * *",
        "0 0 * * *",
        "30 0 * * *",
        "45 2 * * *",
        "0 3 * * *",
        "59 23 * * *",
        "0 23 * * *",
        "50 2 * * *",
        "@daily",
        "0 2-3 * * *",
        "*/15 * * * *",
        "0 * * * *",
        "30 * * * *",
        "@hourly",
        "*/10 * * * * *",
        "0 */20 * * * *",
        "* 2 * * *",
        "30 15 2 * * *",
    ];

    /// Every offset change of `zone` in [from, to).
    fn changes(zone: &str, from: &str, to: &str) -> Vec<i64> {
        let s = Schedule::parse("* * * * *", zone).unwrap();
        let (mut cur, end) = (utc(from).timestamp(), utc(to).timestamp());
        let mut out = Vec::new();
        while let Some(c) = s.next_change(cur, end) {
            out.push(c);
            cur = c;
        }
        out
    }

    #[test]
    fn every_zone_has_its_changes_in_2026_and_2027() {
        for zone in DST_ZONES {
            let n = changes(zone, "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z").len();
            assert_eq!(n, 4, "{zone}");
        }
    }

    /// The answer does not depend on the starting instant: from every second within ±5 s of
    /// each offset change, the next fire times are those found from a minute earlier, less the
    /// ones already passed.
    #[test]
    fn next_fire_times_do_not_depend_on_the_starting_second() {
        const N: usize = 4;
        for zone in DST_ZONES {
            for change in changes(zone, "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z") {
                for expr in DST_EXPRS {
                    let s = Schedule::parse(expr, zone).unwrap();
                    let early = DateTime::from_timestamp(change - 65, 0).unwrap();
                    let reference = s.upcoming(early, N + 20);
                    for start in change - 5..=change + 5 {
                        for frac in [0, 500] {
                            let t = DateTime::from_timestamp(start, frac * 1_000_000).unwrap();
                            let want: Vec<_> = reference
                                .iter()
                                .copied()
                                .filter(|&f| f > t)
                                .take(N)
                                .collect();
                            assert_eq!(
                                s.upcoming(t, N),
                                want,
                                "{expr} in {zone} from {t} (change at {})",
                                DateTime::from_timestamp(change, 0).unwrap()
                            );
                            let latest = reference.iter().copied().rfind(|&f| f <= t);
                            if latest.is_some() {
                                assert_eq!(s.latest_at_or_before(t), latest, "{expr} {zone} {t}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn local_times(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.upcoming(utc(from), n)
            .into_iter()
            .map(|t| local(s, t))
            .collect()
    }

    /// Issue example: `15 2 * * *` from one second before Berlin springs forward lost the
    /// day's run (it gave 03-30, 03-31, 04-01).
    #[test]
    fn search_from_the_second_before_a_gap_keeps_the_skipped_run() {
        let s = Schedule::parse("15 2 * * *", "Europe/Berlin").unwrap();
        for from in ["2026-03-29T00:59:58Z", "2026-03-29T00:59:59Z"] {
            assert_eq!(
                local_times(&s, from, 3),
                [
                    "2026-03-29 03:00:00 CEST",
                    "2026-03-30 02:15:00 CEST",
                    "2026-03-31 02:15:00 CEST"
                ],
                "{from}"
            );
        }
    }

    /// Issue example: `0,30 2 * * *` did not run at all on Berlin's spring-forward day; Linux
    /// cron runs it once right after the gap.
    #[test]
    fn a_list_of_minutes_in_the_gap_runs_once_after_it() {
        let s = Schedule::parse("0,30 2 * * *", "Europe/Berlin").unwrap();
        assert!(s.fixed_time);
        assert_eq!(
            local_times(&s, "2026-03-28T12:00:00Z", 4),
            [
                "2026-03-29 03:00:00 CEST",
                "2026-03-30 02:00:00 CEST",
                "2026-03-30 02:30:00 CEST",
                "2026-03-31 02:00:00 CEST",
            ]
        );
    }

    /// Issue example: `0 1,2,5 * * *` ran twice in the repeated hour of fall-back day.
    #[test]
    fn a_list_of_hours_runs_once_in_the_repeated_hour() {
        let s = Schedule::parse("0 1,2,5 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            local_times(&s, "2026-10-24T22:00:00Z", 4),
            [
                "2026-10-25 01:00:00 CEST",
                "2026-10-25 02:00:00 CEST",
                "2026-10-25 05:00:00 CET",
                "2026-10-26 01:00:00 CET"
            ]
        );
        // An interval job still runs at every real instant: both 02:30s, no 02:30 in spring.
        let s = Schedule::parse("30 * * * *", "Europe/Berlin").unwrap();
        assert!(!s.fixed_time);
        assert_eq!(
            local_times(&s, "2026-10-24T23:45:00Z", 3),
            [
                "2026-10-25 02:30:00 CEST",
                "2026-10-25 02:30:00 CET",
                "2026-10-25 03:30:00 CET"
            ]
        );
        assert_eq!(
            local_times(&s, "2026-03-29T00:00:00Z", 2),
            ["2026-03-29 01:30:00 CET", "2026-03-29 03:30:00 CEST"]
        );
    }

    /// Crontab idioms with their next times across a DST change.
    #[test]
    fn crontab_idioms_across_dst() {
        let table: &[(&str, &str, &str, &[&str])] = &[
            // @midnight = @daily; Santiago springs forward at 24:00, so midnight is skipped and
            // the fixed-time job runs right after the gap, at 01:00.
            (
                "@midnight",
                "America/Santiago",
                "2026-09-04T12:00:00Z",
                &[
                    "2026-09-05 00:00:00 -04",
                    "2026-09-06 01:00:00 -03",
                    "2026-09-07 00:00:00 -03",
                ],
            ),
            // 7L: the last Sunday of the month (7 = Sunday, as 0). Berlin's change day itself.
            (
                "0 2 * * 7L",
                "Europe/Berlin",
                "2026-03-01T00:00:00Z",
                &[
                    "2026-03-29 03:00:00 CEST",
                    "2026-04-26 02:00:00 CEST",
                    "2026-05-31 02:00:00 CEST",
                ],
            ),
            // LW: the last weekday of the month.
            (
                "0 18 LW * *",
                "America/New_York",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-30 18:00:00 EST",
                    "2026-02-27 18:00:00 EST",
                    "2026-03-31 18:00:00 EDT",
                    "2026-04-30 18:00:00 EDT",
                    "2026-05-29 18:00:00 EDT",
                ],
            ),
            // `*` in a list is "every day"; Havana's 00:00 repeats on fall-back day: once.
            (
                "0 0 * * *,0",
                "America/Havana",
                "2026-10-31T12:00:00Z",
                &[
                    "2026-11-01 00:00:00 CDT",
                    "2026-11-02 00:00:00 CST",
                    "2026-11-03 00:00:00 CST",
                ],
            ),
            // Both day fields restricted: the 1st OR Mondays (Linux and Kubernetes agree).
            (
                "0 12 1 * mon",
                "UTC",
                "2026-05-28T00:00:00Z",
                &[
                    "2026-06-01 12:00:00 UTC",
                    "2026-06-08 12:00:00 UTC",
                    "2026-06-15 12:00:00 UTC",
                ],
            ),
            // Day-of-month starts with `*`: odd days AND Saturdays (Kubernetes: OR).
            (
                "0 16 */2 * sat",
                "UTC",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-03 16:00:00 UTC",
                    "2026-01-17 16:00:00 UTC",
                    "2026-01-31 16:00:00 UTC",
                    "2026-02-07 16:00:00 UTC",
                ],
            ),
            // 45-minute offset zone: Chatham springs forward 02:45 -> 03:45.
            (
                "0 3 * * *",
                "Pacific/Chatham",
                "2026-09-26T00:00:00Z",
                &["2026-09-27 03:45:00 +1345", "2026-09-28 03:00:00 +1345"],
            ),
            // 30-minute change: Lord Howe falls back 02:00 -> 01:30; 01:45 happens twice.
            (
                "45 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-04T00:00:00Z",
                &["2026-04-05 01:45:00 +11", "2026-04-06 01:45:00 +1030"],
            ),
            (
                "*/30 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-04T14:20:00Z",
                &[
                    "2026-04-05 01:30:00 +11",
                    "2026-04-05 01:30:00 +1030",
                    "2026-04-06 01:00:00 +1030",
                ],
            ),
        ];
        for (expr, zone, from, want) in table {
            let s = Schedule::parse(expr, zone).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&local_times(&s, from, want.len()), want, "{expr} in {zone}");
            check_consistent(&s, from, want.len());
        }
    }

    #[test]
    fn random_expressions_do_not_panic() {
        let alphabet: Vec<char> = "0123456789*/,-LW#?+ @MONJAN".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let t = utc("2025-06-01T12:00:00Z");
        for _ in 0..300 {
            let fields = 5 + (next() % 2) as usize;
            let expr: Vec<String> = (0..fields)
                .map(|_| {
                    let len = 1 + (next() % 4) as usize;
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            if let Ok(s) = Schedule::parse(&expr.join(" "), "Europe/Berlin") {
                let _ = s.next_after(t);
                let _ = s.latest_at_or_before(t);
            }
        }
    }
}
