//! Property tests for input the program does not control: the jobs file and the cron
//! expressions and time zones in it.
//!
//! * Config: `config::parse` never panics, whatever the text (random text, random bytes made
//!   UTF-8, plausible-but-wrong TOML from a small grammar, valid files with one thing broken);
//!   every `ConfigError::At` points inside the text (line >= 1, column >= 1, the line exists,
//!   the column is at most one past its end) with a non-empty one-line message; and every valid
//!   file the generator writes parses to exactly what was written.
//! * Schedule: for random valid cron expressions in random zones (every zone of the tz database
//!   can come up; five with unusual DST are drawn more often) at random instants of 1970-2100,
//!   many of them near an offset change: `Schedule::parse` accepts them (or says "never
//!   fires"), `next_after` is strictly later and whole-second, `next_after` and
//!   `latest_at_or_before` are exact inverses, `upcoming` and `between` are strictly
//!   increasing and complete, and around offset changes the fire times equal a brute-force
//!   evaluation of the rules in `src/config/schedule.rs` second by second (which also shows that no
//!   fire time is returned twice across a fall-back). Garbage expressions and unknown zones are
//!   refused with an error, never a panic.
//!
//! Case counts are set per block (`cases`) so the file runs in a few seconds in a debug build;
//! `PROPTEST_CASES=N` replaces every count (for a longer local run). A failure prints the
//! shrunk input; `PROPTEST_RNG_SEED` replays a run. Nothing is written to disk.
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::{Tz, TZ_VARIANTS};
use cronlease::config::schedule::Schedule;
use cronlease::config::{self, Action, Config, ConfigError};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The proptest settings of one block: `default` cases unless `PROPTEST_CASES` says otherwise,
/// no failure files, bounded shrinking.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// Zones with unusual offset changes, drawn more often than the rest.
const SPECIAL_ZONES: [Tz; 5] = [
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe, // 30-minute DST
    chrono_tz::Pacific::Chatham,     // +12:45 / +13:45
    chrono_tz::America::Sao_Paulo,   // southern hemisphere, DST abolished in 2019
];

/// 1970-01-01T00:00:00Z .. 2100-12-31T23:59:59Z
const FIRST_TS: i64 = 0;
const LAST_TS: i64 = 4_133_980_799;

fn zone() -> impl Strategy<Value = Tz> {
    prop_oneof![
        1 => select(SPECIAL_ZONES.to_vec()),
        1 => select(TZ_VARIANTS.to_vec()),
    ]
}

fn ts_of(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn instant(ts: i64, millis: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(ts, millis * 1_000_000).expect("in range")
}

/// UTC offset in seconds of `tz` at unix second `ts`.
fn offset(tz: Tz, ts: i64) -> i64 {
    let utc = DateTime::from_timestamp(ts, 0)
        .expect("in range")
        .naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64
}

fn naive(local_seconds: i64) -> NaiveDateTime {
    DateTime::from_timestamp(local_seconds, 0)
        .expect("in range")
        .naive_utc()
}

/// The instants in `year` at which `tz` changes its UTC offset (the first second of the new
/// offset), found by probing every 6 hours and bisecting.
fn transitions(tz: Tz, year: i32) -> Vec<i64> {
    let start = Utc
        .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
        .timestamp();
    let end = Utc
        .with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
        .timestamp();
    let mut out = Vec::new();
    let mut lo = start;
    while lo < end {
        let hi = (lo + 6 * 3600).min(end);
        let o = offset(tz, lo);
        if offset(tz, hi) != o {
            let (mut a, mut b) = (lo, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if offset(tz, mid) == o {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            out.push(b);
        }
        lo = hi;
    }
    out
}

/// An instant of 1970-2100: uniform, or within 3 hours of one of `tz`'s offset changes.
fn instant_in(tz: Tz) -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (FIRST_TS..=LAST_TS, 0u32..1000).prop_map(|(ts, ms)| instant(ts, ms)),
        (
            1970i32..=2100,
            any::<Index>(),
            -3 * 3600i64..=3 * 3600,
            0u32..1000
        )
            .prop_map(move |(year, idx, delta, ms)| {
                let tr = transitions(tz, year);
                let ts = if tr.is_empty() {
                    // No change that year: somewhere in it.
                    Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0)
                        .unwrap()
                        .timestamp()
                        + idx.index(365 * 86400) as i64
                } else {
                    tr[idx.index(tr.len())] + delta
                };
                instant(ts.clamp(FIRST_TS, LAST_TS), ms)
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Cron expressions

/// One list element of a cron field over `min..=max`: a value, a range, or a step.
fn cron_atom(min: u32, max: u32) -> BoxedStrategy<String> {
    let span = max - min;
    prop_oneof![
        3 => (min..=max).prop_map(|v| v.to_string()),
        2 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => (1..=span).prop_map(|s| format!("*/{s}")),
        1 => (min..=max, min..=max, 1..=span)
            .prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
        1 => (min..=max, 1..=span).prop_map(|(a, s)| format!("{a}/{s}")),
    ]
    .boxed()
}

/// A cron field over `min..=max`: `*`, a list of one to three atoms, or (rarely) a list with
/// `*` in it.
fn cron_field(min: u32, max: u32) -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just("*".to_string()),
        6 => prop::collection::vec(cron_atom(min, max), 1..=3).prop_map(|v| v.join(",")),
        1 => cron_atom(min, max).prop_map(|a| format!("{a},*")),
    ]
    .boxed()
}

/// Day-of-month: a field, or one of the extensions (last day, last weekday, nearest weekday).
fn dom_field(max: u32) -> BoxedStrategy<String> {
    prop_oneof![
        12 => cron_field(1, max),
        1 => select(vec!["L", "LW", "15W", "1W", "L,1", "?"]).prop_map(str::to_string),
    ]
    .boxed()
}

/// Day-of-week: a field, or names, 7 for Sunday, last/nth weekday of the month.
fn dow_field() -> BoxedStrategy<String> {
    prop_oneof![
        12 => cron_field(0, 6),
        1 => select(vec![
            "5L", "7L", "0L", "FRIL", "1#2", "7#1", "0#5", "MON-FRI", "SAT,SUN", "7", "5-7", "?",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Separators between fields: mostly one space.
fn sep() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just(" "), 1 => Just("  "), 1 => Just("\t")]
}

/// A valid cron expression: 6 fields (second first) or 5. With `always_fires`, the day of month
/// stays at most 28, so every month/day combination exists.
fn cron_expr(always_fires: bool) -> BoxedStrategy<String> {
    let dom_max = if always_fires { 28 } else { 31 };
    (
        any::<bool>(),
        [
            cron_field(0, 59),
            cron_field(0, 59),
            cron_field(0, 23),
            if always_fires {
                cron_field(1, dom_max)
            } else {
                dom_field(dom_max)
            },
            cron_field(1, 12),
            // Last / nth weekdays with a `*/N` day-of-month (days ANDed) may never meet.
            if always_fires {
                cron_field(0, 6)
            } else {
                dow_field()
            },
        ],
        prop::collection::vec(sep(), 5),
        prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\t ")],
    )
        .prop_map(|(six, mut fields, seps, pad)| {
            if fields[3] == "LW" {
                // LW combines only with an unrestricted day-of-week.
                fields[5] = "*".to_string();
            }
            let fields: &[String] = if six { &fields } else { &fields[1..] };
            let mut s = pad.to_string();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    s.push_str(seps[i - 1]);
                }
                s.push_str(f);
            }
            s.push_str(pad);
            s
        })
        .boxed()
}

/// Text that is mostly not a cron expression (but sometimes is).
fn garbage_expr() -> BoxedStrategy<String> {
    let soup: Vec<char> = "0123456789*/,-LW#?+ @MONJANSUNDECFRIyearlyhourlyrebootevery\t"
        .chars()
        .collect();
    let fixed = [
        "",
        " ",
        "*",
        "* * * *",
        "* * * * * * *",
        "* * * * * * * *",
        "0 0 0 1 1 * 2030",
        "60 * * * * *",
        "* 60 * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * 32 * *",
        "* * * * 0 *",
        "* * * * 13 *",
        "* * * * * 8",
        "*/0 * * * * *",
        "5-1 * * * * *",
        "1-5/0 * * * * *",
        "99999999999999999999 * * * * *",
        "-1 * * * * *",
        "0 0 0 31 2 *",
        "0 0 0 30 2 *",
        "@reboot",
        "@every 5m",
        "@yearly",
        "@hourly",
        "@",
        "L * * * * *",
        "* * * L * *",
        "* * * * * 5L",
        "* * * * * 1#6",
        "* * * * * 1#0",
        "* * * 15W * *",
        "? ? ? ? ? ?",
        ",,, * * * * *",
        "1,,2 * * * * *",
        "*/ * * * * *",
        "/5 * * * * *",
        "- * * * * *",
        "0 0 12 * * MON-FRI",
        "0 0 12 * JAN-DEC SUN",
        "0 0 12 * * FOO",
        "@midnight",
        "0 0 * * 7L",
        "0 0 LW * *",
        "0 0 LW * 1",
        "0 0 * * *,0",
        "0 0 * * FRI-MON",
        "0 22-2 * * *",
        "* * * * * L",
    ];
    prop_oneof![
        2 => select(fixed.to_vec()).prop_map(str::to_string),
        3 => prop::collection::vec(
            prop::collection::vec(select(soup), 1..6).prop_map(|c| c.into_iter().collect::<String>()),
            0..9,
        )
        .prop_map(|f| f.join(" ")),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Schedule properties

/// The earlier of the two instants of an ambiguous local time, or the single one.
fn first_instant(tz: Tz, n: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&n) {
        LocalResult::Single(t) => Some(t.timestamp()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp().min(b.timestamp())),
        LocalResult::None => None,
    }
}

fn matches(s: &Schedule, n: NaiveDateTime) -> bool {
    s.matches_wall_clock(n)
}

/// Is unix second `ts` a fire time of `s`, by the rules of `src/config/schedule.rs` (module docs),
/// evaluated directly: the wall-clock time at `ts` matches (and, for a fixed-time job, `ts` is
/// its first occurrence), or a fixed-time job's wall-clock match fell into a gap that ends at
/// `ts`.
fn brute_fires(s: &Schedule, ts: i64) -> bool {
    let (o, before) = (offset(s.tz, ts), offset(s.tz, ts - 1));
    let n = naive(ts + o);
    if matches(s, n) {
        return !s.fixed_time || first_instant(s.tz, n) == Some(ts);
    }
    s.fixed_time && o > before && (ts + before..ts + o).any(|l| matches(s, naive(l)))
}

/// The properties that hold for any schedule and instant.
fn check_schedule_at(
    s: &Schedule,
    t: DateTime<Utc>,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    limit: usize,
) -> Result<(), TestCaseError> {
    let second = chrono::Duration::seconds(1);
    let next = s.next_after(t);
    if let Some(n) = next {
        prop_assert!(n > t, "next_after({t}) = {n}");
        prop_assert_eq!(n.nanosecond(), 0, "fire times are whole seconds");
        prop_assert_eq!(
            s.latest_at_or_before(n),
            Some(n),
            "latest_at_or_before(next)"
        );
        // Nothing fires in (t, n).
        if let Some(p) = s.latest_at_or_before(n - second) {
            prop_assert!(p <= t, "{p} fires between {t} and next_after = {n}");
        }
        prop_assert!(
            brute_fires(s, ts_of(n)),
            "next_after({t}) = {n} ({}) is no fire time by the rules",
            n.with_timezone(&s.tz)
        );
    }
    let latest = s.latest_at_or_before(t);
    if let Some(p) = latest {
        prop_assert!(p <= t, "latest_at_or_before({t}) = {p}");
        prop_assert_eq!(p.nanosecond(), 0);
        prop_assert_eq!(s.next_after(p), next, "next_after(latest_at_or_before(t))");
        prop_assert!(
            brute_fires(s, ts_of(p)),
            "latest_at_or_before({t}) = {p} ({}) is no fire time by the rules",
            p.with_timezone(&s.tz)
        );
    }

    let up = s.upcoming(t, 6);
    prop_assert_eq!(up.first().copied(), next);
    for w in up.windows(2) {
        prop_assert!(w[0] < w[1], "upcoming not strictly increasing: {:?}", up);
        prop_assert_eq!(s.next_after(w[0]), Some(w[1]));
        prop_assert_eq!(
            s.latest_at_or_before(w[1] - second),
            Some(w[0]),
            "latest before {} in {:?}",
            w[1],
            up
        );
    }

    let got = s.between(a, b, limit);
    prop_assert!(
        got.len() <= limit,
        "between returned {} > {limit}",
        got.len()
    );
    let mut prev = a;
    for &x in &got {
        prop_assert!(x > a && x <= b, "between({a}, {b}) returned {x}");
        prop_assert!(x > prev, "between not strictly increasing: {:?}", got);
        // Nothing skipped between two returned times.
        prop_assert_eq!(s.next_after(prev), Some(x));
        prev = x;
    }
    if got.len() < limit {
        // Complete: the next fire time after the last one returned is past `b`.
        if let Some(after) = s.next_after(prev) {
            prop_assert!(after > b, "between({a}, {b}) stopped before {after}");
        }
    }
    Ok(())
}

/// Fire times from `next_after` and from `latest_at_or_before` over `(start, end]` both equal
/// the brute-force evaluation of every second.
fn check_against_brute_force(s: &Schedule, start: i64, end: i64) -> Result<(), TestCaseError> {
    let brute: Vec<i64> = (start + 1..=end).filter(|&ts| brute_fires(s, ts)).collect();
    let forward: Vec<i64> = s
        .between(instant(start, 0), instant(end, 0), usize::MAX)
        .into_iter()
        .map(ts_of)
        .collect();
    let show = |v: &[i64]| -> Vec<String> {
        v.iter()
            .map(|&ts| {
                let t = instant(ts, 0);
                format!("{t} ({})", t.with_timezone(&s.tz).format("%H:%M:%S %Z"))
            })
            .collect()
    };
    prop_assert!(
        forward == brute,
        "forward (next_after):\n{:#?}\nbrute force:\n{:#?}",
        show(&forward),
        show(&brute)
    );
    let mut backward = Vec::new();
    let mut cur = instant(end, 0);
    while let Some(t) = s.latest_at_or_before(cur).filter(|&t| ts_of(t) > start) {
        backward.push(ts_of(t));
        cur = t - chrono::Duration::seconds(1);
    }
    backward.reverse();
    prop_assert!(
        backward == brute,
        "backward (latest_at_or_before):\n{:#?}\nbrute force:\n{:#?}",
        show(&backward),
        show(&brute)
    );
    Ok(())
}

/// A zone, one of its offset changes, and an expression whose hours lie around the change's
/// wall-clock time, so that the window around the change has fire times.
fn around_a_change() -> impl Strategy<Value = (Tz, i64, String)> {
    (
        prop_oneof![4 => select(SPECIAL_ZONES.to_vec()), 1 => select(TZ_VARIANTS.to_vec())],
        1970i32..=2100,
        any::<Index>(),
    )
        .prop_filter_map("no offset change that year", |(tz, year, idx)| {
            let tr = transitions(tz, year);
            (!tr.is_empty()).then(|| (tz, tr[idx.index(tr.len())]))
        })
        .prop_flat_map(|(tz, at)| {
            // Wall-clock hours just before and just after the change.
            let before = naive(at - 1 + offset(tz, at - 1));
            let after = naive(at + offset(tz, at));
            let mut hours: Vec<u32> = [before.hour(), after.hour()]
                .into_iter()
                .flat_map(|h| [(h + 23) % 24, h, (h + 1) % 24])
                .collect();
            hours.sort();
            hours.dedup();
            let hours = select(hours);
            let hour = prop_oneof![
                1 => Just("*".to_string()),
                4 => hours.clone().prop_map(|h| h.to_string()),
                1 => prop::collection::vec(hours, 2).prop_map(|h| format!("{},{}", h[0], h[1])),
            ];
            let minute = prop_oneof![
                1 => Just("*".to_string()),
                1 => select(vec![5u32, 10, 15, 20, 30]).prop_map(|s| format!("*/{s}")),
                4 => (0u32..60).prop_map(|m| m.to_string()),
                1 => (0u32..60, 0u32..60).prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
            ];
            let second = prop_oneof![
                4 => Just("0".to_string()),
                2 => (0u32..60).prop_map(|s| s.to_string()),
                1 => select(vec![15u32, 20, 30]).prop_map(|s| format!("*/{s}")),
            ];
            // Usually any day; sometimes the change's own date, sometimes another day.
            let date = prop_oneof![
                4 => Just("* * *".to_string()),
                1 => Just(format!("{} {} *", before.day0() + 1, before.month0() + 1)),
                1 => Just(format!("* * {}", before.weekday().num_days_from_sunday())),
                1 => Just(format!("{} * *", (before.day0() + 10) % 28 + 1)),
            ];
            (Just(tz), Just(at), (second, minute, hour, date))
                .prop_map(|(tz, at, (s, m, h, d))| (tz, at, format!("{s} {m} {h} {d}")))
        })
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn schedules_are_consistent(
        (tz, t, expr) in zone().prop_flat_map(|tz| (Just(tz), instant_in(tz), cron_expr(false))),
        span in prop_oneof![
            Just(0i64),
            1i64..120,
            1i64..3 * 86400,
            -3600i64..0,
        ],
        limit in prop_oneof![Just(0usize), 1usize..10, 10usize..60],
    ) {
        let s = match Schedule::parse(&expr, tz.name()) {
            Ok(s) => s,
            Err(e) => {
                // The only way a well-formed expression is refused.
                prop_assert!(e.to_string().contains("never fires"), "{expr:?} in {tz}: {e}");
                return Ok(());
            }
        };
        prop_assert_eq!(s.tz, tz);
        prop_assert_eq!(&s.expr, expr.trim());
        let b = t + chrono::Duration::seconds(span);
        check_schedule_at(&s, t, t, b, limit)?;
    }
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn garbage_expressions_are_refused_or_work(
        expr in garbage_expr(),
        tz in zone(),
        t in (FIRST_TS..=LAST_TS).prop_map(|ts| instant(ts, 0)),
    ) {
        if let Ok(s) = Schedule::parse(&expr, tz.name()) {
            check_schedule_at(&s, t, t, t + chrono::Duration::hours(1), 20)?;
        }
    }

    /// Around offset changes (spring forward, fall back, and the odd ones in the tz database),
    /// every second of a 3-hour window is checked against the rules. This also shows that a
    /// fall-back hour returns no fire time twice: `between` is strictly increasing, and a
    /// fixed-time job's second pass through the hour is not a fire time.
    #[test]
    fn fire_times_around_offset_changes_match_brute_force(
        (tz, at, expr) in around_a_change(),
    ) {
        let s = match Schedule::parse(&expr, tz.name()) {
            Ok(s) => s,
            Err(e) => {
                prop_assert!(e.to_string().contains("never fires"), "{expr:?}: {e}");
                return Ok(());
            }
        };
        check_against_brute_force(&s, at - 90 * 60, at + 90 * 60)?;
    }

    /// The next fire times do not depend on the instant a search starts from: from every
    /// second (and half second) within ±5 s of an offset change, they are the ones found from
    /// a minute earlier, less those already passed.
    #[test]
    fn next_fire_times_do_not_depend_on_the_starting_second(
        (tz, at, expr) in around_a_change(),
    ) {
        let Ok(s) = Schedule::parse(&expr, tz.name()) else { return Ok(()) };
        let reference = s.upcoming(instant(at - 65, 0), 24);
        for start in at - 5..=at + 5 {
            for millis in [0, 500] {
                let t = instant(start, millis);
                let want: Vec<_> = reference.iter().copied().filter(|&f| f > t).take(4).collect();
                prop_assert_eq!(s.upcoming(t, 4), want, "{} in {} from {}", expr, tz, t);
            }
        }
    }

    /// A fixed-time job whose wall-clock time falls into a fall-back overlap fires once, at the
    /// first occurrence; one whose time falls into a spring-forward gap fires once, right after
    /// the gap.
    #[test]
    fn fixed_time_in_a_change_fires_once(
        (tz, at) in (select(SPECIAL_ZONES.to_vec()), 1970i32..=2100, any::<Index>())
            .prop_filter_map("no offset change that year", |(tz, year, idx)| {
                let tr = transitions(tz, year);
                (!tr.is_empty()).then(|| (tz, tr[idx.index(tr.len())]))
            }),
        pick in any::<Index>(),
    ) {
        let (before, after) = (offset(tz, at - 1), offset(tz, at));
        // The wall-clock seconds that exist twice (after < before) or not at all.
        let (lo, hi) = (at + before.min(after), at + before.max(after));
        let local = naive(lo + pick.index((hi - lo) as usize) as i64);
        let expr = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
        let s = Schedule::parse(&expr, tz.name()).expect("a daily expression parses");
        prop_assert!(s.fixed_time);
        let day = 86400;
        let fires: Vec<i64> = s
            .between(instant(at - day, 0), instant(at + day, 0), 10)
            .into_iter()
            .map(ts_of)
            .collect();
        let local_of = |ts: i64| naive(ts + offset(tz, ts));
        let that_date: Vec<i64> = fires
            .iter()
            .copied()
            .filter(|&ts| local_of(ts).date() == local.date())
            .collect();
        let expected = if after < before {
            local.and_utc().timestamp() - before // first occurrence: the earlier offset
        } else {
            at // the first instant after the gap
        };
        prop_assert_eq!(
            that_date,
            vec![expected],
            "{} in {} around {}: fires {:?}",
            expr,
            tz,
            instant(at, 0),
            fires.iter().map(|&ts| instant(ts, 0).with_timezone(&tz).to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_time_zones_are_refused(
        name in prop_oneof![
            select(vec![
                "", " ", "Mars/Base", "europe/berlin", "EUROPE/BERLIN", " UTC", "UTC ",
                "Europe/Berlin\0", "Europe//Berlin", "Europe/Berlin/", "/Europe/Berlin",
                "../etc/passwd", "Etc/GMT+15", "Etc/GMT-15", "UTC+1", "+01:00", "CEST",
                "America/New York", "Australia/Lord Howe", "Pacific/Chatham\n",
            ]).prop_map(str::to_string),
            "[A-Za-z_/+-]{0,24}",
            any::<String>(),
        ],
    ) {
        prop_assume!(!known_zone_names().contains(name.as_str()));
        match Schedule::parse("0 0 * * * *", &name) {
            Ok(s) => prop_assert!(false, "{name:?} accepted as {}", s.tz),
            Err(e) => prop_assert!(
                e.to_string().starts_with("unknown time zone"),
                "{name:?}: {e}"
            ),
        }
    }
}

fn known_zone_names() -> HashSet<&'static str> {
    TZ_VARIANTS.iter().map(|tz| tz.name()).collect()
}

#[test]
fn every_zone_of_the_database_parses() {
    let t = instant(1_750_000_000, 0);
    for tz in TZ_VARIANTS {
        let s = Schedule::parse("0 */30 * * * *", tz.name())
            .unwrap_or_else(|e| panic!("{}: {e}", tz.name()));
        assert_eq!(s.tz, tz);
        let n = s.next_after(t).unwrap_or_else(|| panic!("{}", tz.name()));
        assert!(n > t && n - t <= chrono::Duration::minutes(30), "{tz}: {n}");
        assert_eq!(Tz::from_str(tz.name()).ok(), Some(tz));
    }
}

// ---------------------------------------------------------------------------------------------
// Config

const FILE: &str = "jobs.toml";

/// `parse`'s outcome is well-formed: a config with jobs, or an error that points inside `text`
/// with a non-empty one-line message.
fn check_outcome(text: &str, result: &Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    match result {
        Ok(c) => prop_assert!(!c.jobs.is_empty(), "a config without jobs"),
        Err(ConfigError::At {
            file,
            line,
            column,
            message,
        }) => {
            prop_assert_eq!(file, FILE);
            prop_assert!(*line >= 1 && *column >= 1, "{line}:{column}: {message}");
            prop_assert!(
                *line <= text.lines().count() + 1,
                "line {line} of a {}-line text: {message}",
                text.lines().count()
            );
            // The position exists: its line is in the text, the column at most one past the
            // end of that line (in characters).
            let the_line = text.split('\n').nth(line - 1);
            prop_assert!(the_line.is_some(), "no line {line}: {message}");
            let width = the_line.unwrap_or_default().chars().count();
            prop_assert!(
                *column <= width + 1,
                "column {column} of a {width}-character line {line}: {message}"
            );
            prop_assert!(
                !message.trim().is_empty(),
                "empty message at {line}:{column}"
            );
            prop_assert!(
                !message.contains('\n') && !message.contains('\r'),
                "message of more than one line at {line}:{column}: {message:?}"
            );
        }
        Err(e @ ConfigError::Io { .. }) => prop_assert!(false, "parse returned an Io error: {e}"),
    }
    Ok(())
}

/// A TOML basic string holding `s` exactly.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration written the ways a user might: "250ms", "10s", "1m 30s", "2h".
fn duration_text(d: Duration) -> BoxedStrategy<String> {
    let ms = d.as_millis();
    let mut forms = vec![humantime::format_duration(d).to_string(), format!("{ms}ms")];
    if ms % 1000 == 0 {
        forms.push(format!("{}s", ms / 1000));
        forms.push(format!("{}sec", ms / 1000));
    }
    if ms % 60_000 == 0 && ms > 0 {
        forms.push(format!("{}m", ms / 60_000));
        forms.push(format!("{}min", ms / 60_000));
    }
    select(forms).boxed()
}

/// What a generated valid file says, to compare with what `parse` returns.
#[derive(Debug, Clone)]
struct Expected {
    project: Option<String>,
    namespace: Option<String>,
    history: Option<usize>,
    election: Option<(Duration, Duration, Duration)>,
    grace: Option<Duration>,
    jobs: Vec<ExpectedJob>,
}

#[derive(Debug, Clone)]
struct ExpectedJob {
    name: String,
    expr: String,
    tz: Option<Tz>,
    timeout: Option<Duration>,
    action: ExpectedAction,
}

#[derive(Debug, Clone)]
enum ExpectedAction {
    Say {
        text: String,
        repeat: Option<u32>,
        pause: Option<Duration>,
    },
    Command(Vec<String>),
    Shell(String),
}

/// Free text for say, command arguments and shell scripts: anything, including quotes,
/// backslashes, newlines and other scripts.
fn free_text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-zA-Z0-9 .,!?'\"\\\\$#=\\[\\]{}-]{1,40}",
        any::<String>(),
        Just("multi\nline\ttext \u{1F600} äöü".to_string()),
    ]
    .boxed()
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,30}"
}

fn expected_job() -> impl Strategy<Value = ExpectedJob> {
    let action = prop_oneof![
        (
            free_text(),
            prop::option::of(1u32..=10_000),
            prop::option::of((0u64..120_000).prop_map(Duration::from_millis)),
        )
            .prop_map(|(text, repeat, pause)| ExpectedAction::Say {
                text,
                repeat,
                pause
            }),
        ("[a-z/._-]{1,20}", prop::collection::vec(free_text(), 0..4)).prop_map(|(p, args)| {
            ExpectedAction::Command(std::iter::once(p).chain(args).collect())
        }),
        free_text()
            .prop_filter("a script with something in it", |s| !s.trim().is_empty())
            .prop_map(ExpectedAction::Shell),
    ];
    (
        name(),
        cron_expr(true),
        prop::option::of(zone()),
        prop::option::of((1u64..86_400_000).prop_map(Duration::from_millis)),
        action,
    )
        .prop_map(|(name, expr, tz, timeout, action)| ExpectedJob {
            name,
            expr,
            tz,
            timeout,
            action,
        })
}

fn expected_config() -> impl Strategy<Value = Expected> {
    let election = (1u64..10_000, 1u64..100_000, any::<Index>()).prop_map(|(renew, more, p)| {
        let lease = renew + more;
        let poll = 1 + p.index(lease as usize - 1) as u64; // 1..lease
        (
            Duration::from_millis(lease),
            Duration::from_millis(renew),
            Duration::from_millis(poll),
        )
    });
    (
        prop::option::of("[a-z][a-z0-9-]{0,20}"),
        prop::option::of("[A-Za-z0-9][A-Za-z0-9_.-]{0,30}"),
        prop::option::of(1usize..=100_000),
        prop::option::of(election),
        prop::option::of((0u64..3_600_000).prop_map(Duration::from_millis)),
        prop::collection::vec(expected_job(), 1..4),
    )
        .prop_map(|(project, namespace, history, election, grace, mut jobs)| {
            // Unique names.
            for (i, j) in jobs.iter_mut().enumerate() {
                if j.name.len() > 90 {
                    j.name.truncate(90);
                }
                j.name = format!("{}-{i}", j.name);
            }
            Expected {
                project,
                namespace,
                history,
                election,
                grace,
                jobs,
            }
        })
}

/// A `key = value` line, written with the spacing and comments a person might use.
fn kv(key: &str, value: String) -> BoxedStrategy<String> {
    let key = key.to_string();
    select(vec![
        format!("{key} = {value}"),
        format!("{key}={value}"),
        format!("  {key}   =   {value}"),
        format!("{key} = {value}  # a comment"),
        format!("\"{key}\" = {value}"),
    ])
    .boxed()
}

/// Lines of a table, in a random order.
fn table(header: &'static str, lines: Vec<BoxedStrategy<String>>) -> BoxedStrategy<String> {
    lines
        .prop_shuffle()
        .prop_map(move |lines| {
            let mut t = format!("{header}\n");
            for l in lines {
                t.push_str(&l);
                t.push('\n');
            }
            t
        })
        .boxed()
}

/// The TOML text of `e`, in one of many spellings.
fn render(e: Expected) -> BoxedStrategy<String> {
    let mut tables: Vec<BoxedStrategy<String>> = Vec::new();
    if e.project.is_some() || e.namespace.is_some() || e.history.is_some() {
        let mut lines = vec![kv("backend", toml_str("datastore"))];
        if let Some(p) = &e.project {
            lines.push(kv("project", toml_str(p)));
        }
        if let Some(n) = &e.namespace {
            lines.push(kv("namespace", toml_str(n)));
        }
        if let Some(h) = e.history {
            lines.push(kv("history", h.to_string()));
        }
        tables.push(table("[store]", lines));
    }
    if let Some((lease, renew, poll)) = e.election {
        let lines = [("lease", lease), ("renew", renew), ("poll", poll)]
            .into_iter()
            .map(|(k, d)| {
                duration_text(d)
                    .prop_flat_map(move |d| kv(k, toml_str(&d)))
                    .boxed()
            })
            .collect();
        tables.push(table("[election]", lines));
    }
    if let Some(g) = e.grace {
        let line = duration_text(g)
            .prop_flat_map(|d| kv("shutdown_grace", toml_str(&d)))
            .boxed();
        tables.push(table("[node]", vec![line]));
    }
    for j in &e.jobs {
        let mut lines = vec![
            kv("name", toml_str(&j.name)),
            kv("schedule", toml_str(&j.expr)),
        ];
        if let Some(tz) = j.tz {
            lines.push(kv("timezone", toml_str(tz.name())));
        }
        if let Some(t) = j.timeout {
            lines.push(
                duration_text(t)
                    .prop_flat_map(|d| kv("timeout", toml_str(&d)))
                    .boxed(),
            );
        }
        match &j.action {
            ExpectedAction::Say {
                text,
                repeat,
                pause,
            } => {
                lines.push(kv("say", toml_str(text)));
                if let Some(r) = repeat {
                    lines.push(kv("repeat", r.to_string()));
                }
                if let Some(p) = pause {
                    lines.push(
                        duration_text(*p)
                            .prop_flat_map(|d| kv("pause", toml_str(&d)))
                            .boxed(),
                    );
                }
            }
            ExpectedAction::Command(argv) => {
                let items: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
                lines.push(kv("command", format!("[{}]", items.join(", "))));
            }
            ExpectedAction::Shell(script) => lines.push(kv("shell", toml_str(script))),
        }
        tables.push(table("[[job]]", lines));
    }
    // Tables in any order (jobs keep theirs: they are an array), blank lines or comments
    // between them.
    let n_jobs = e.jobs.len();
    (
        tables,
        prop::collection::vec(select(vec!["", "\n", "# note\n", "\n\n"]), 8),
    )
        .prop_flat_map(move |(tables, gaps)| {
            let (others, jobs) = tables.split_at(tables.len() - n_jobs);
            let (others, jobs) = (others.to_vec(), jobs.to_vec());
            let gaps = gaps.clone();
            (Just(others).prop_shuffle(), Just(jobs), any::<Index>()).prop_map(
                move |(others, jobs, at)| {
                    // The other tables go before, after or between the jobs.
                    let cut = at.index(others.len() + 1);
                    let mut parts: Vec<String> = others[..cut].to_vec();
                    parts.extend(jobs.clone());
                    parts.extend(others[cut..].iter().cloned());
                    let mut text = String::new();
                    for (i, p) in parts.into_iter().enumerate() {
                        text.push_str(gaps[i % gaps.len()]);
                        text.push_str(&p);
                    }
                    text
                },
            )
        })
        .boxed()
}

fn valid_config() -> impl Strategy<Value = (Expected, String)> {
    expected_config().prop_flat_map(|e| (Just(e.clone()), render(e)))
}

fn check_parsed(e: &Expected, c: &Config) -> Result<(), TestCaseError> {
    prop_assert_eq!(&c.store.project, &e.project);
    prop_assert_eq!(
        c.store.namespace.as_str(),
        e.namespace.as_deref().unwrap_or(config::DEFAULT_NAMESPACE)
    );
    prop_assert_eq!(
        c.store.history,
        e.history.unwrap_or(config::DEFAULT_HISTORY)
    );
    let (lease, renew, poll) = e.election.unwrap_or((
        config::DEFAULT_LEASE,
        config::DEFAULT_RENEW,
        config::DEFAULT_POLL,
    ));
    prop_assert_eq!(
        (c.election.lease, c.election.renew, c.election.poll),
        (lease, renew, poll)
    );
    prop_assert_eq!(
        c.node.shutdown_grace,
        e.grace.unwrap_or(config::DEFAULT_SHUTDOWN_GRACE)
    );
    prop_assert_eq!(c.jobs.len(), e.jobs.len());
    for (got, want) in c.jobs.iter().zip(&e.jobs) {
        prop_assert_eq!(&got.name, &want.name);
        prop_assert_eq!(got.schedule.expr.as_str(), want.expr.trim());
        prop_assert_eq!(got.schedule.tz, want.tz.unwrap_or(Tz::UTC));
        prop_assert_eq!(got.timeout, want.timeout);
        match (&got.action, &want.action) {
            (
                Action::Say {
                    text,
                    repeat,
                    pause,
                },
                ExpectedAction::Say {
                    text: t,
                    repeat: r,
                    pause: p,
                },
            ) => {
                prop_assert_eq!(text, t);
                prop_assert_eq!(*repeat, r.unwrap_or(1));
                prop_assert_eq!(*pause, p.unwrap_or(config::DEFAULT_PAUSE));
            }
            (Action::Command { argv }, ExpectedAction::Command(a)) => prop_assert_eq!(argv, a),
            (Action::Shell { script }, ExpectedAction::Shell(s)) => prop_assert_eq!(script, s),
            (got, want) => prop_assert!(false, "action {got:?}, expected {want:?}"),
        }
    }
    Ok(())
}

// --- plausible but wrong TOML

const KEYS: &[&str] = &[
    // known somewhere
    "name",
    "schedule",
    "timezone",
    "say",
    "command",
    "shell",
    "timeout",
    "repeat",
    "pause",
    "lease",
    "renew",
    "poll",
    "history",
    "namespace",
    "backend",
    "project",
    "shutdown_grace",
    "job",
    "store",
    "election",
    "node",
    // scheduling policies (per job, or in [defaults])
    "overlap",
    "retries",
    "retry_backoff",
    "catch_up",
    "starting_deadline",
    // known nowhere
    "Name",
    "schedules",
    "time_zone",
    "env",
    "job.name",
    "store.history",
    "\"\"",
    "\"say\"",
    "'lease'",
];

const HEADERS: &[&str] = &[
    "", // keys at the top level
    "[store]",
    "[election]",
    "[node]",
    "[defaults]",
    "[[defaults]]",
    "[[job]]",
    "[[job]]",
    "[[job]]",
    "[job]",
    "[[store]]",
    "[jobs]",
    "[[jobs]]",
    "[job.extra]",
    "[store.deep]",
    "[election.lease]",
    "[ job ]",
    "[[ job ]]",
    "[\"job\"]",
    "[other]",
];

const DURATIONS: &[&str] = &[
    "5s",
    "0s",
    "-1s",
    "99999999999h",
    "18446744073709551615s",
    "1m30s",
    "1m 30s",
    "250ms",
    "0ms",
    "1ns",
    "10",
    "ten",
    "",
    " ",
    "400days",
    "365days",
    "366days",
    "1y",
    "  5s  ",
    "5 s",
    "5S",
    "1h-1s",
    "∞",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "a",
    "a b",
    "a@b",
    "__x",
    "datastore",
    "file",
    "Europe/Berlin",
    "Mars/Base",
    "UTC",
    "* * * * * *",
    "*/10 * * * * *",
    "61 * * * * *",
    "0 0 0 31 2 *",
    "* * *",
    "@daily",
    "echo hi",
    "skip",
    "allow",
    "replace",
    "none",
    "latest",
    "all",
    "Skip",
    "äöü",
    "\u{0}",
    "line\nbreak",
];

/// A TOML value (as text): strings, durations, integers including the extremes and past them,
/// floats, booleans, dates, arrays and inline tables.
fn toml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        3 => select(DURATIONS.to_vec()).prop_map(toml_str),
        3 => select(WORDS.to_vec()).prop_map(toml_str),
        1 => "[a-zA-Z0-9 _./@*-]{0,120}".prop_map(|s| toml_str(&s)),
        1 => cron_expr(false).prop_map(|s| toml_str(&s)),
        1 => select(TZ_VARIANTS.to_vec()).prop_map(|tz| toml_str(tz.name())),
        2 => prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(1),
            Just(10_000),
            Just(10_001),
            Just(100_000),
            Just(100_001),
        ]
        .prop_map(|i| i.to_string()),
        1 => select(vec![
            "99999999999999999999", "-99999999999999999999", "0xff", "0o17", "0b101", "1_000",
            "+5", "-0", "007", "1__0",
        ])
        .prop_map(str::to_string),
        1 => prop_oneof![
            any::<f64>().prop_map(|f| {
                if f.is_nan() { "nan".to_string() } else if f.is_infinite() {
                    if f > 0.0 { "inf".to_string() } else { "-inf".to_string() }
                } else {
                    format!("{f:?}")
                }
            }),
            select(vec!["1.5", "-0.0", "1e400", "5e-324", "+inf", "nan", "1.", ".5"])
                .prop_map(str::to_string),
        ],
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => select(vec!["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "2025-13-45"])
            .prop_map(str::to_string),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((select(KEYS.to_vec()), inner), 0..3).prop_map(|kvs| {
                let kvs: Vec<String> = kvs.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{{}}}", kvs.join(", "))
            }),
        ]
    })
    .boxed()
}

/// A line of a table: mostly `key = value`, sometimes broken.
fn toml_line() -> BoxedStrategy<String> {
    prop_oneof![
        12 => (select(KEYS.to_vec()), toml_value()).prop_flat_map(|(k, v)| kv(k, v)),
        1 => select(vec![
            "", "# comment", "=", "name =", "= 5", "name = \"unterminated", "name = 'x",
            "name = \"\"\"", "[", "]", "[[job]", "[job]]", "x = {", "x = [1,", "name = \"a\" b",
            "\u{FEFF}name = \"a\"", "name\t=\t\"a\"", "name = \"a\"\r",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn wrong_toml() -> BoxedStrategy<String> {
    prop::collection::vec(
        (
            select(HEADERS.to_vec()),
            prop::collection::vec(toml_line(), 0..8),
        ),
        0..6,
    )
    .prop_map(|sections| {
        let mut text = String::new();
        for (header, lines) in sections {
            if !header.is_empty() {
                text.push_str(header);
                text.push('\n');
            }
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
        }
        text
    })
    .boxed()
}

/// A duration string as a user might get it wrong: any number, any unit, signs, spaces.
fn wrong_duration() -> BoxedStrategy<String> {
    prop_oneof![
        select(DURATIONS.to_vec()).prop_map(str::to_string),
        (
            select(vec!["", "-", "+", " "]),
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(u32::MAX as u64),
                Just(u64::MAX),
                any::<u64>(),
                0u64..100_000,
            ],
            select(vec![
                "", "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "sec", "min", "hours",
                "days", "x", " s", "s5",
            ]),
        )
            .prop_map(|(sign, n, unit)| format!("{sign}{n}{unit}")),
    ]
    .boxed()
}

/// A value of the type `key` expects (so that it gets past deserializing) but not
/// necessarily a good one.
fn plausible_value(key: &str, v: &Plausible) -> String {
    let key = key.trim().trim_matches('"');
    match key {
        "lease" | "renew" | "poll" | "shutdown_grace" | "timeout" | "pause" | "retry_backoff"
        | "starting_deadline" => toml_str(&v.duration),
        "history" | "repeat" | "retries" => v.int.to_string(),
        "schedule" => toml_str(&v.expr),
        "timezone" => toml_str(&v.zone),
        "command" => format!(
            "[{}]",
            v.words
                .iter()
                .map(|w| toml_str(w))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => toml_str(v.words.first().map_or("", String::as_str)),
    }
}

#[derive(Debug, Clone)]
struct Plausible {
    duration: String,
    int: i64,
    expr: String,
    zone: String,
    words: Vec<String>,
}

fn plausible() -> impl Strategy<Value = Plausible> {
    (
        wrong_duration(),
        prop_oneof![
            any::<i64>(),
            -2i64..=2,
            Just(i64::MIN),
            Just(i64::MAX),
            select(vec![100, 101, 10_000, 10_001, 100_000, 100_001]),
        ],
        prop_oneof![cron_expr(false), garbage_expr()],
        prop_oneof![
            select(TZ_VARIANTS.to_vec()).prop_map(|tz| tz.name().to_string()),
            "[A-Za-z/_]{0,20}",
        ],
        prop::collection::vec(
            prop_oneof![
                select(WORDS.to_vec()).prop_map(str::to_string),
                "[A-Za-z0-9_.@ -]{0,110}",
            ],
            0..3,
        ),
    )
        .prop_map(|(duration, int, expr, zone, words)| Plausible {
            duration,
            int,
            expr,
            zone,
            words,
        })
}

/// A valid file with a few lines replaced, inserted, deleted or duplicated.
fn broken_valid() -> BoxedStrategy<String> {
    (
        valid_config().prop_map(|(_, text)| text),
        prop::collection::vec(
            (
                0u8..6,
                any::<Index>(),
                toml_line(),
                toml_value(),
                plausible(),
            ),
            1..4,
        ),
    )
        .prop_map(|(text, edits)| {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (op, at, line, value, good_type) in edits {
                if lines.is_empty() {
                    lines.push(line);
                    continue;
                }
                let i = at.index(lines.len());
                match op {
                    // another value of the expected type for the same key
                    0 | 1 => {
                        if let Some((key, _)) = lines[i].split_once('=') {
                            lines[i] = format!("{key}= {}", plausible_value(key, &good_type));
                        }
                    }
                    // any other value for the same key
                    2 => {
                        if let Some((key, _)) = lines[i].split_once('=') {
                            lines[i] = format!("{key}= {value}");
                        }
                    }
                    3 => lines.insert(i, line),
                    4 => {
                        lines.remove(i);
                    }
                    _ => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                }
            }
            let mut text = lines.join("\n");
            text.push('\n');
            text
        })
        .boxed()
}

/// Random text made of TOML's own characters, so that some of it gets past the tokenizer.
fn toml_soup() -> BoxedStrategy<String> {
    let alphabet: Vec<char> = "[]=\"'#\n .,{}_-+:0123456789abcjobnamesy\\\t\r\u{e9}\u{0}"
        .chars()
        .collect();
    prop::collection::vec(select(alphabet), 0..200)
        .prop_map(|c| c.into_iter().collect())
        .boxed()
}

const DEMO: &str = r#"
[store]
namespace = "cronlease"
history = 100

[election]
lease = "10s"
renew = "2s"
poll = "1s"

[node]
shutdown_grace = "10s"

[[job]]
name = "go_preacher"
schedule = "*/10 * * * * *"
say = "Go is the best modern programming language"
repeat = 5
pause = "1s"

[[job]]
name = "uptime"
schedule = "*/15 * * * * *"
timezone = "Europe/Berlin"
command = ["/bin/sh", "-c", "uptime"]
timeout = "5s"
"#;

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn parse_survives_any_text(text in prop_oneof![
        any::<String>(),
        "\\PC{0,200}",
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        toml_soup(),
    ]) {
        check_outcome(&text, &config::parse(FILE, &text))?;
    }

    #[test]
    fn parse_survives_a_mangled_demo(
        edits in prop::collection::vec((any::<Index>(), 0u8..3, any::<char>()), 1..8),
    ) {
        let mut chars: Vec<char> = DEMO.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => {
                    chars.remove(i);
                }
                _ => chars.insert(i, c),
            }
        }
        let text: String = chars.into_iter().collect();
        check_outcome(&text, &config::parse(FILE, &text))?;
    }

    #[test]
    fn parse_survives_plausible_wrong_toml(text in wrong_toml()) {
        check_outcome(&text, &config::parse(FILE, &text))?;
    }

    #[test]
    fn parse_survives_a_broken_valid_file(text in broken_valid()) {
        check_outcome(&text, &config::parse(FILE, &text))?;
    }

    #[test]
    fn valid_files_parse_to_what_they_say((expected, text) in valid_config()) {
        let result = config::parse(FILE, &text);
        check_outcome(&text, &result)?;
        match &result {
            Ok(c) => check_parsed(&expected, c)?,
            Err(e) => prop_assert!(false, "a valid file was refused: {e}\n{text}"),
        }
    }
}
