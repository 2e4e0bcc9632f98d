//! A parsed cron pattern in 40 bytes, and the calendar search over it.
//!
//! croner parses the pattern (and stays the authority on what the syntax means), but its parsed
//! form keeps a byte per possible value of every field, years included: 1 to 5,000, so about
//! 5 KB a pattern. At 10,000 jobs that was half of a node's heap (50 MB), at 100,000 jobs half
//! a gigabyte. [`CronMask`] keeps the same information as bit masks, read out of croner's parse
//! once, and answers the two questions the schedule asks: does a wall-clock second match, and
//! which is the nearest matching second from a given one in either direction. Its day rule is
//! croner's `day_match`, rule for rule (`L`, `W`, `#n`, `nL`, the star and AND/OR rules), so a
//! pattern matches exactly the seconds it matched before; a test compares both searches on
//! many patterns and start times.
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};
use croner::Cron;

// croner's feature bits (its `component` module is private; the values are part of how its
// public `is_bit_set` is asked).
const ALL_BIT: u8 = 1;
const NTH_1ST_BIT: u8 = 1 << 1;
const NTH_2ND_BIT: u8 = 1 << 2;
const NTH_3RD_BIT: u8 = 1 << 3;
const NTH_4TH_BIT: u8 = 1 << 4;
const NTH_5TH_BIT: u8 = 1 << 5;
const LAST_BIT: u8 = 1 << 6;
const CLOSEST_WEEKDAY_BIT: u8 = 1 << 7;

/// croner's year range: no match outside it.
const YEAR_MIN: i32 = 1;
const YEAR_MAX: i32 = 5000;

/// The `#n` bits of a weekday, in order of n (1..=5).
const NTH_BITS: [u8; 5] = [
    NTH_1ST_BIT,
    NTH_2ND_BIT,
    NTH_3RD_BIT,
    NTH_4TH_BIT,
    NTH_5TH_BIT,
];

/// A cron pattern as bit masks (bit n set: value n matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronMask {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Days of the month 1..=31.
    days: u32,
    /// `W` days (the weekday nearest to each).
    closest_weekday: u32,
    /// Day-of-month `L`: the month's last day.
    last_day: bool,
    /// Months 1..=12.
    months: u16,
    /// Per weekday (0 = Sunday): croner's bits (`ALL_BIT`, the `#n` bits, `LAST_BIT`).
    weekdays: [u8; 7],
    star_dom: bool,
    star_dow: bool,
    dom_and_dow: bool,
}

/// The values in `range` of a croner component (asked through `is_set(value, bit)`) that have
/// `bit` set.
fn bits(is_set: impl Fn(u16, u8) -> bool, range: std::ops::RangeInclusive<u16>, bit: u8) -> u64 {
    range
        .filter(|&v| is_set(v, bit))
        .fold(0, |mask, v| mask | 1 << v)
}

/// The lowest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask & (!0u64 << from);
    (m != 0).then(|| m.trailing_zeros())
}

/// The highest set bit of `mask` at or below `to`.
fn prev_bit(mask: u64, to: u32) -> Option<u32> {
    let m = if to >= 63 {
        mask
    } else {
        mask & ((1u64 << (to + 1)) - 1)
    };
    (m != 0).then(|| 63 - m.leading_zeros())
}

fn last_day_of_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

impl CronMask {
    /// The masks of croner's parse of `pattern` (the six fields croner was given: the star rules
    /// are read from them as croner reads them) with `dom_and_dow` as given to croner's parser.
    pub fn of(cron: &Cron, pattern: &str, dom_and_dow: bool) -> CronMask {
        let p = &cron.pattern;
        let field = |i: usize| {
            pattern
                .split_whitespace()
                .nth(i)
                .unwrap_or("")
                .replace('?', "*")
        };
        let dow_field = field(5);
        let mut weekdays = [0u8; 7];
        for (day, w) in weekdays.iter_mut().enumerate() {
            for bit in [ALL_BIT, LAST_BIT].into_iter().chain(NTH_BITS) {
                if p.days_of_week.is_bit_set(day as u16, bit).unwrap_or(false) {
                    *w |= bit;
                }
            }
        }
        let seconds = |v, bit| p.seconds.is_bit_set(v, bit).unwrap_or(false);
        let minutes = |v, bit| p.minutes.is_bit_set(v, bit).unwrap_or(false);
        let hours = |v, bit| p.hours.is_bit_set(v, bit).unwrap_or(false);
        let days = |v, bit| p.days.is_bit_set(v, bit).unwrap_or(false);
        let months = |v, bit| p.months.is_bit_set(v, bit).unwrap_or(false);
        CronMask {
            seconds: bits(seconds, 0..=59, ALL_BIT),
            minutes: bits(minutes, 0..=59, ALL_BIT),
            hours: bits(hours, 0..=23, ALL_BIT) as u32,
            days: bits(days, 1..=31, ALL_BIT) as u32,
            closest_weekday: bits(days, 1..=31, CLOSEST_WEEKDAY_BIT) as u32,
            last_day: p.days.is_feature_enabled(LAST_BIT),
            months: bits(months, 1..=12, ALL_BIT) as u16,
            weekdays,
            star_dom: field(3) == "*",
            star_dow: dow_field == "*",
            dom_and_dow: dom_and_dow || dow_field.starts_with('+'),
        }
    }

    /// Does the wall-clock second `n` match?
    pub fn matches(&self, n: NaiveDateTime) -> bool {
        self.seconds & 1 << n.second() != 0
            && self.minutes & 1 << n.minute() != 0
            && self.hours & 1 << n.hour() != 0
            && self.date_matches(n.date())
    }

    fn date_matches(&self, date: NaiveDate) -> bool {
        (YEAR_MIN..=YEAR_MAX).contains(&date.year())
            && self.months & 1 << date.month() != 0
            && self.day_matches(date)
    }

    /// croner's `day_match`, rule for rule.
    fn day_matches(&self, date: NaiveDate) -> bool {
        let (year, month, day) = (date.year(), date.month(), date.day());
        let day_matches = self.days & 1 << day != 0
            || (self.last_day && day == last_day_of_month(year, month))
            || self.is_closest_weekday(date);
        let weekday = self.weekdays[date.weekday().num_days_from_sunday() as usize];
        // The n-th such weekday of the month, and whether it is the last.
        let nth = (day - 1) / 7 + 1;
        let dow_matches = NTH_BITS
            .iter()
            .enumerate()
            .any(|(i, &bit)| weekday & bit != 0 && nth == i as u32 + 1)
            || (weekday & LAST_BIT != 0 && (date + Duration::days(7)).month() != month)
            || weekday & ALL_BIT != 0;
        if (day_matches && self.star_dow) || (dow_matches && self.star_dom) {
            true
        } else if !self.star_dom && !self.star_dow {
            if self.dom_and_dow {
                day_matches && dow_matches
            } else {
                day_matches || dow_matches
            }
        } else {
            false
        }
    }

    /// Whether `date` is the weekday that one of the `W` days resolves to in its month.
    fn is_closest_weekday(&self, date: NaiveDate) -> bool {
        if self.closest_weekday == 0 {
            return false;
        }
        let (year, month) = (date.year(), date.month());
        (1..=31u32)
            .filter(|d| self.closest_weekday & 1 << d != 0)
            .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
            .any(|w| {
                let target = match w.weekday() {
                    Weekday::Sat => {
                        let friday = w - Duration::days(1);
                        if friday.month() == month {
                            friday
                        } else {
                            w + Duration::days(2)
                        }
                    }
                    Weekday::Sun => {
                        let monday = w + Duration::days(1);
                        if monday.month() == month {
                            monday
                        } else {
                            w - Duration::days(2)
                        }
                    }
                    _ => w,
                };
                target == date
            })
    }

    /// The first matching second of the day at or after `h:m:s`.
    fn first_time_from(&self, h: u32, m: u32, s: u32) -> Option<NaiveTime> {
        let mut hour = next_bit(self.hours as u64, h);
        while let Some(hr) = hour {
            let mut minute = next_bit(self.minutes, if hr == h { m } else { 0 });
            while let Some(min) = minute {
                let from = if hr == h && min == m { s } else { 0 };
                if let Some(sec) = next_bit(self.seconds, from) {
                    return NaiveTime::from_hms_opt(hr, min, sec);
                }
                minute = next_bit(self.minutes, min + 1);
            }
            hour = next_bit(self.hours as u64, hr + 1);
        }
        None
    }

    /// The last matching second of the day at or before `h:m:s`.
    fn last_time_to(&self, h: u32, m: u32, s: u32) -> Option<NaiveTime> {
        let mut hour = prev_bit(self.hours as u64, h);
        while let Some(hr) = hour {
            let mut minute = prev_bit(self.minutes, if hr == h { m } else { 59 });
            while let Some(min) = minute {
                let to = if hr == h && min == m { s } else { 59 };
                if let Some(sec) = prev_bit(self.seconds, to) {
                    return NaiveTime::from_hms_opt(hr, min, sec);
                }
                minute = min.checked_sub(1).and_then(|to| prev_bit(self.minutes, to));
            }
            hour = hr
                .checked_sub(1)
                .and_then(|to| prev_bit(self.hours as u64, to));
        }
        None
    }

    /// The first matching second at or after `from` (whole seconds: a fraction is dropped).
    pub fn next_from(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let (mut h, mut m, mut s) = (from.hour(), from.minute(), from.second());
        // Whole months that do not match are skipped, so this visits at most the days of the
        // matching months until croner's last year.
        while date.year() <= YEAR_MAX {
            if self.months & 1 << date.month() == 0 {
                let (y, mo) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                date = NaiveDate::from_ymd_opt(y, mo, 1)?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if date.year() >= YEAR_MIN && self.day_matches(date) {
                if let Some(time) = self.first_time_from(h, m, s) {
                    return Some(date.and_time(time));
                }
            }
            date = date.succ_opt()?;
            (h, m, s) = (0, 0, 0);
        }
        None
    }

    /// The last matching second at or before `to` (whole seconds).
    pub fn prev_from(&self, to: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = to.date();
        let (mut h, mut m, mut s) = (to.hour(), to.minute(), to.second());
        while date.year() >= YEAR_MIN {
            if self.months & 1 << date.month() == 0 {
                date = date.with_day(1)?.pred_opt()?;
                (h, m, s) = (23, 59, 59);
                continue;
            }
            if date.year() <= YEAR_MAX && self.day_matches(date) {
                if let Some(time) = self.last_time_to(h, m, s) {
                    return Some(date.and_time(time));
                }
            }
            date = date.pred_opt()?;
            (h, m, s) = (23, 59, 59);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use croner::parser::{CronParser, Seconds, Year};

    fn parse(pattern: &str, dom_and_dow: bool) -> (Cron, CronMask) {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(dom_and_dow)
            .build()
            .parse(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let mask = CronMask::of(&cron, pattern, dom_and_dow);
        (cron, mask)
    }

    /// A small deterministic generator (no dependency for a test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    const PATTERNS: &[&str] = &[
        "* * * * * *",
        "0 * * * * *",
        "*/10 * * * * *",
        "0 0 * * * *",
        "0 30 2 * * *",
        "15 5-20/5 3,7,22 * * *",
        "0 0 0 1 * *",
        "0 0 0 L * *",
        "0 0 12 15W * *",
        "0 0 12 1W * *",
        "0 0 12 31W * *",
        "0 0 0 * * 1",
        "0 0 0 * * 5L",
        "0 0 0 * * 1#2",
        "0 0 0 * * 0#5",
        "0 0 0 */2 * 6",
        "0 0 0 13 * 5",
        "0 0 0 29 2 *",
        "0 0 0 29 2 1",
        "0 0 0 30 2 *",
        "0 0 9-17 * * 1-5",
        "0 0 0 1,15 1,4,7,10 *",
        "0 0 0 ? * 3",
        "0 0 0 10-20 * 0,6",
        "59 59 23 31 12 *",
        "0 0 0 * * 7",
        "0 0 0 L 2 *",
    ];

    #[test]
    fn matches_and_searches_agree_with_croner() {
        let mut rng = Lcg(7);
        let base = NaiveDate::from_ymd_opt(1995, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        for &pattern in PATTERNS {
            for dom_and_dow in [false, true] {
                let (cron, mask) = parse(pattern, dom_and_dow);
                for _ in 0..12 {
                    let start = base + Duration::seconds(rng.next(40 * 366 * 86_400) as i64);
                    let at = start.and_utc();
                    assert_eq!(
                        mask.matches(start),
                        cron.is_time_matching(&at).unwrap(),
                        "{pattern} ({dom_and_dow}) matches {start}"
                    );
                    let ours = mask.next_from(start);
                    let theirs = cron
                        .find_next_occurrence(&at, true)
                        .ok()
                        .map(|d| d.naive_utc());
                    assert_eq!(ours, theirs, "{pattern} ({dom_and_dow}) next from {start}");
                    let ours = mask.prev_from(start);
                    let theirs = cron
                        .find_previous_occurrence(&at, true)
                        .ok()
                        .map(|d| d.naive_utc());
                    assert_eq!(
                        ours, theirs,
                        "{pattern} ({dom_and_dow}) previous from {start}"
                    );
                }
                // Every second of a day with many boundaries matches alike.
                let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
                for minute in 0..(24 * 60) {
                    let t = day.and_hms_opt(minute / 60, minute % 60, 0).unwrap();
                    assert_eq!(
                        mask.matches(t),
                        cron.is_time_matching(&t.and_utc()).unwrap(),
                        "{pattern} ({dom_and_dow}) matches {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_pattern_that_never_fires_is_searched_to_the_end_and_found_empty() {
        let (_, mask) = parse("0 0 0 30 2 *", false);
        let from = NaiveDate::from_ymd_opt(2000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(mask.next_from(from), None);
        assert_eq!(mask.prev_from(from), None);
    }

    #[test]
    fn a_mask_is_small() {
        assert!(std::mem::size_of::<CronMask>() <= 48);
    }
}
