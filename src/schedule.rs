//! Cron expression + IANA time zone → fire times.
//!
//! Cron patterns (croner, seconds optional: a 5-field expression fires at second 0) are matched
//! against the *wall-clock* time of the job's zone. Mapping wall-clock matches to instants is
//! done here rather than with croner's own `DateTime<Tz>` search, because that search is not
//! monotonic inside a DST overlap: from an instant in the repeated hour it can return an
//! earlier instant, and its iterator interleaves the two occurrences of the hour (00:00Z,
//! 01:00Z, 00:20Z, ...). Here croner only answers "next/previous matching wall-clock second"
//! (evaluated in UTC, which has no DST), and the rules below turn those into instants:
//!
//! * A wall-clock time that exists once fires at that instant.
//! * DST overlap (fall back, the wall-clock time exists twice): a *fixed-time* job (single
//!   second, minute and hour, croner's [`croner::JobType::FixedTime`], e.g. `0 30 2 * * *`)
//!   fires once, at the first occurrence; an *interval* job (`*/10 * * * * *`, `0 0 * * * *`)
//!   fires at both occurrences, so it keeps its real-time cadence.
//! * DST gap (spring forward, the wall-clock time does not exist): a fixed-time job fires once
//!   at the first instant after the gap (03:00 local in Europe/Berlin); an interval job skips
//!   the missing times.
//!
//! These are the rules croner itself applies; fire times here are additionally strictly
//! increasing, and `next_after` / `latest_at_or_before` are exact inverses of each other.
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A job's schedule: a cron expression (seconds optional) evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written (trimmed).
    pub expr: String,
    pub tz: chrono_tz::Tz,
    /// The parsed pattern, shared: croner keeps a bitset per field (about 5 KB a pattern), and
    /// schedules are cloned into the ticker and the tick logic; with 10,000 jobs, copies cost
    /// tens of MiB.
    pub cron: std::sync::Arc<Cron>,
    /// Fixed-time job (single second, minute and hour): fires once on DST overlap, and once
    /// right after a DST gap that swallowed its time.
    pub fixed_time: bool,
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

    /// Parse `expr` (5 or 6 fields, or a croner @nickname) for the zone `tz`.
    pub fn new(expr: &str, tz: chrono_tz::Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        let bad = |why: String| ScheduleError(format!("bad cron expression {expr:?}: {why}"));
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') {
            match fields {
                5 | 6 => {}
                7 => {
                    return Err(bad(
                        "7 fields (a year field) are not supported; use 6 fields \
                         (second minute hour day-of-month month day-of-week) or 5 (no seconds)"
                            .into(),
                    ))
                }
                n => {
                    return Err(bad(format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 \
                         (with seconds first), found {n}"
                    )))
                }
            }
        }
        // An empty list item (", * * * * *", "1,,2") is refused here: croner takes a field of
        // only commas as an empty set, and proving that it never fires then walks croner's
        // whole search limit (tens of seconds).
        if let Some((n, field)) = trimmed
            .split_whitespace()
            .enumerate()
            .find(|(_, f)| f.split(',').any(str::is_empty))
        {
            return Err(bad(format!(
                "field {} ({field:?}) has an empty item between commas",
                n + 1
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| bad(e.to_string()))?;
        // Every pattern that matches at all matches within one 400-year Gregorian cycle.
        let probe = NaiveDateTime::parse_from_str("2000-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
            .expect("valid literal");
        if naive_search(&cron, probe, true, croner::Direction::Forward).is_none() {
            return Err(bad("it never fires (no date matches it)".into()));
        }
        let fixed_time = cron.determine_job_type() == JobType::FixedTime;
        Ok(Schedule {
            expr: trimmed.to_string(),
            tz,
            cron: std::sync::Arc::new(cron),
            fixed_time,
        })
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
            naive_search(&self.cron, gap_start, true, croner::Direction::Forward),
            Some(n) if n < gap_end
        )
    }

    /// The first fire time at or after unix second `from`.
    fn first_at_or_after(&self, from: i64) -> Option<i64> {
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
                    naive_search(&self.cron, search, true, croner::Direction::Forward)
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
                    naive_search(&self.cron, search, true, croner::Direction::Backward)
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

/// The nearest wall-clock second matching `cron` from `from` in `direction` (UTC has no DST, so
/// this is a pure calendar search).
fn naive_search(
    cron: &Cron,
    from: NaiveDateTime,
    inclusive: bool,
    direction: croner::Direction,
) -> Option<NaiveDateTime> {
    let start = from.and_utc();
    let found = match direction {
        croner::Direction::Forward => cron.find_next_occurrence(&start, inclusive),
        croner::Direction::Backward => cron.find_previous_occurrence(&start, inclusive),
    };
    found.ok().map(|d| d.naive_utc())
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
                        if s.cron.is_time_matching(&n.and_utc()).unwrap() {
                            return s.is_fire(n, ts);
                        }
                        let (before, after) = (off(ts - 1), off(ts));
                        s.fixed_time
                            && after > before
                            && (ts + before..ts + after).any(|l| {
                                let n = naive_of(l).unwrap();
                                s.cron.is_time_matching(&n.and_utc()).unwrap()
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
