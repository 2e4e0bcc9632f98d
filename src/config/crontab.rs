//! The crontab dialect: what users bring from Linux (cronie / Vixie cron), read the way Linux
//! cron reads it, and handed to croner in a form croner matches the same way.
//!
//! croner does the calendar search; this module decides what an expression *means*:
//!
//! * **Fields**: 5 (`minute hour day-of-month month day-of-week`, second 0) or 6 (second first).
//!   Macros `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
//! * **Items**: `*`, `N`, `A-B` (a day-of-week range may end on Sunday as 0: `FRI-SUN`), `*/S`, `A-B/S`, `N/S` (= `N-max/S`), lists of those with `,`
//!   (a `*` anywhere in a list makes the field "every value"), month names `JAN`–`DEC`, weekday
//!   names `SUN`–`SAT`, weekday `0` or `7` for Sunday. Extensions (Quartz-style, not in Linux
//!   cron): day-of-month `L` (last day), `LW` (last weekday), `15W` (weekday nearest the 15th),
//!   `?` (= `*`); day-of-week `5L` (last Friday), `1#2` (second Monday).
//! * **Day-of-month with day-of-week** (cronie `DOM_STAR`/`DOW_STAR`): when either field
//!   starts with `*`, a day must match both; when both are restricted, a day matching either
//!   runs. So `0 16 */2 * sat` runs on odd-numbered days that are Saturdays. (Kubernetes
//!   CronJob, i.e. robfig/cron, ORs there: odd days *or* Saturdays.)
//! * **DST class** (crontab(5): "jobs that run at a particular time — not specified as
//!   @hourly, nor with '*' in the hour or minute specifier"): a job is *fixed-time* unless its
//!   minute or hour field (or, with 6 fields, its second field) starts with `*`. The schedule
//!   module applies the DST rule to it (once after a gap, once in a repeated hour).
//!
//! Refused, with an error that says what to write instead: wrap-around ranges (`FRI-MON`,
//! `22-2`), `@reboot`, year fields, `L` alone in day-of-week, `LW` combined with other
//! days.

/// The field order of a 6-field expression.
const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
const SECOND: usize = 0;
const MINUTE: usize = 1;
const HOUR: usize = 2;
const DOM: usize = 3;
const MONTH: usize = 4;
const DOW: usize = 5;

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// An expression understood: what croner is given and how to read its matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crontab {
    /// Six fields in croner's syntax (numbers only, no names, no macros).
    pub pattern: String,
    /// A day must match day-of-month *and* day-of-week (either field starts with `*`).
    pub dom_and_dow: bool,
    /// Both day fields are restricted, so a day matching either one runs (Linux cron's OR).
    pub days_ored: bool,
    /// The Linux DST class: no `*` at the start of the second, minute or hour field.
    pub fixed_time: bool,
    /// Day-of-month was `LW`: croner is given days 26–31 and only the month's last weekday
    /// among them matches.
    pub last_weekday: bool,
    /// Both day fields restrict the days (neither is `*`), so how they combine matters:
    /// `check` says which rule applies.
    pub both_days_restricted: bool,
}

/// Why an expression is refused (the caller adds the expression itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CrontabError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, CrontabError> {
    Err(CrontabError(why.into()))
}

/// Read `expr` as Linux cron would (plus the extensions in the module docs).
pub fn parse(expr: &str) -> Result<Crontab, CrontabError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return err("it is empty");
    }
    let expanded;
    let text = if trimmed.starts_with('@') {
        expanded = expand_macro(trimmed)?;
        expanded.as_str()
    } else {
        trimmed
    };
    let mut fields: Vec<&str> = text.split_whitespace().collect();
    // Errors number the fields as written (a 5-field expression has no second field).
    let shift = usize::from(fields.len() == 5);
    match fields.len() {
        5 => fields.insert(0, "0"),
        6 => {}
        7 => {
            return err("7 fields (a year field) are not supported; use 6 fields \
                 (second minute hour day-of-month month day-of-week) or 5 (no seconds)")
        }
        n => {
            return err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 \
                 (with seconds first), found {n}"
            ))
        }
    }
    let starts_star = |i: usize| fields[i].starts_with('*') || fields[i].starts_with('?');
    let restricts = |i: usize| !fields[i].split(',').any(|item| item == "*" || item == "?");
    let mut out = Vec::with_capacity(6);
    for (i, field) in fields.iter().enumerate() {
        out.push(field_to_croner(i, field).map_err(|why| {
            CrontabError(format!(
                "field {} ({}) {field:?}: {why}",
                i + 1 - shift,
                FIELD_NAMES[i]
            ))
        })?);
    }
    let last_weekday = fields[DOM].eq_ignore_ascii_case("LW");
    let dom_and_dow = starts_star(DOM) || starts_star(DOW);
    if last_weekday && !starts_star(DOW) {
        return err(format!(
            "day-of-month LW (the last weekday) cannot be combined with day-of-week {:?}; \
             use * as day-of-week",
            fields[DOW]
        ));
    }
    Ok(Crontab {
        pattern: out.join(" "),
        dom_and_dow,
        days_ored: !dom_and_dow,
        fixed_time: !(starts_star(SECOND) || starts_star(MINUTE) || starts_star(HOUR)),
        last_weekday,
        both_days_restricted: restricts(DOM) && restricts(DOW),
    })
}

fn expand_macro(text: &str) -> Result<String, CrontabError> {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or_default();
    if words.next().is_some() {
        return err(format!("{name} takes no fields after it"));
    }
    let fields = match name.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        "@reboot" => {
            return err(
                "@reboot is not supported: jobs run on a schedule, not when a node \
                 starts (a node that restarts would run it again)",
            )
        }
        _ => {
            return err(format!(
                "unknown macro {name}; supported: @yearly (@annually), @monthly, @weekly, \
                 @daily (@midnight), @hourly"
            ))
        }
    };
    Ok(fields.to_string())
}

/// Bounds of field `i` (day-of-week allows 7 for Sunday).
fn bounds(i: usize) -> (u32, u32) {
    match i {
        SECOND | MINUTE => (0, 59),
        HOUR => (0, 23),
        DOM => (1, 31),
        MONTH => (1, 12),
        _ => (0, 7),
    }
}

fn names(i: usize) -> &'static [&'static str] {
    match i {
        MONTH => &MONTHS,
        DOW => &WEEKDAYS,
        _ => &[],
    }
}

/// One value: a number in bounds, or a name in the month / day-of-week fields.
fn value(i: usize, text: &str) -> Result<u32, String> {
    let (lo, hi) = bounds(i);
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = text
            .parse()
            .map_err(|_| format!("{text} is out of range"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is out of range {lo}-{hi}"));
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let list = names(i);
    if let Some(p) = list.iter().position(|n| *n == upper) {
        return Ok(if i == MONTH { p as u32 + 1 } else { p as u32 });
    }
    if list.is_empty() {
        Err(format!("{text:?} is not a number"))
    } else {
        Err(format!(
            "{text:?} is neither a number nor one of {}",
            list.join(" ")
        ))
    }
}

/// How a value is shown in a suggestion: as a name if the user wrote names.
fn show(i: usize, n: u32, as_name: bool) -> String {
    match (as_name, i) {
        (true, MONTH) => MONTHS[(n - 1) as usize].to_string(),
        (true, DOW) => WEEKDAYS[(n % 7) as usize].to_string(),
        _ => n.to_string(),
    }
}

/// Field `i` in croner's syntax.
fn field_to_croner(i: usize, field: &str) -> Result<String, String> {
    let (lo, hi) = bounds(i);
    let items: Vec<&str> = field.split(',').collect();
    if items.iter().any(|s| s.is_empty()) {
        return Err("an empty item between commas".into());
    }
    let wild = |s: &str| s == "*" || ((i == DOM || i == DOW) && s == "?");
    if items.len() == 1 && wild(items[0]) {
        return Ok("*".into());
    }
    if items.iter().any(|s| wild(s)) {
        // `*` in a list: every value. Not `*` itself, so croner does not treat the day fields
        // as unrestricted (that is decided by the field's first character, above).
        let hi = if i == DOW { 6 } else { hi };
        return Ok(format!("{lo}-{hi}"));
    }
    if items.len() > 1 && items.iter().any(|s| s.eq_ignore_ascii_case("LW")) {
        return Err("LW (the last weekday) must be the whole day-of-month field".into());
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(item_to_croner(i, item)?);
    }
    Ok(out.join(","))
}

fn item_to_croner(i: usize, item: &str) -> Result<String, String> {
    let upper = item.to_ascii_uppercase();
    // Day-of-month extensions.
    if i == DOM {
        if upper == "L" {
            return Ok("L".into());
        }
        if upper == "LW" {
            return Ok("26-31".into());
        }
        if upper.contains('L') {
            return Err(format!(
                "{item:?}: day-of-month takes L (last day) or LW (last weekday) alone"
            ));
        }
        if let Some(day) = upper.strip_suffix('W') {
            let d = value(i, day)?;
            return Ok(format!("{d}W"));
        }
    }
    // Day-of-week extensions.
    if i == DOW {
        if upper == "L" {
            return Err(
                "L alone is not a day of the week; write 6 (Saturday), or 5L for the \
                        last Friday of the month"
                    .into(),
            );
        }
        if let Some(day) = upper.strip_suffix('L') {
            let d = value(i, day)? % 7;
            return Ok(format!("{d}L"));
        }
        if let Some((day, nth)) = upper.split_once('#') {
            let d = value(i, day)? % 7;
            match nth.parse::<u32>() {
                Ok(n @ 1..=5) => return Ok(format!("{d}#{n}")),
                _ => return Err(format!("{item:?}: # takes 1 to 5 (the nth weekday)")),
            }
        }
    }
    let (range, step) = match upper.split_once('/') {
        Some((r, s)) => match s.parse::<u32>() {
            Ok(s) if s >= 1 => (r, Some(s)),
            _ => {
                return Err(format!(
                    "{item:?}: the step after / must be a number of 1 or more"
                ))
            }
        },
        None => (upper.as_str(), None),
    };
    let step_text = step.map(|s| format!("/{s}")).unwrap_or_default();
    if range == "*" {
        return Ok(format!("*{step_text}"));
    }
    if let Some((a, b)) = range.split_once('-') {
        let (x, mut y) = (value(i, a)?, value(i, b)?);
        if i == DOW && y == 0 && x > 0 {
            // Sunday is 0 and 7: a range that ends on it (FRI-SUN, 5-0) ends at 7, as in
            // cronie's current master.
            y = 7;
        }
        if x > y {
            let (lo, hi) = bounds(i);
            let hi = if i == DOW { 6 } else { hi };
            let as_name = a.bytes().any(|c| c.is_ascii_alphabetic());
            let part = |from: u32, to: u32| {
                if from == to {
                    show(i, from, as_name)
                } else {
                    format!("{}-{}", show(i, from, as_name), show(i, to, as_name))
                }
            };
            let hint = if step.is_some() {
                "write the two ranges separately".to_string()
            } else {
                format!("write {},{}", part(x, hi), part(lo, y))
            };
            return Err(format!(
                "the range {item} wraps around (ranges go from low to high); {hint}"
            ));
        }
        return Ok(format!("{x}-{y}{step_text}"));
    }
    let x = value(i, range)?;
    Ok(format!("{x}{step_text}"))
}

/// Is `date` the last Monday–Friday of its month?
pub fn is_last_weekday(date: chrono::NaiveDate) -> bool {
    use chrono::{Datelike, Weekday};
    if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
        return false;
    }
    // No weekday after it in the month: the next weekday is in the next month.
    let next = match date.weekday() {
        Weekday::Fri => date + chrono::Duration::days(3),
        _ => date + chrono::Duration::days(1),
    };
    next.month() != date.month()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(expr: &str) -> String {
        parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .pattern
    }

    fn refused(expr: &str) -> String {
        parse(expr).expect_err(expr).to_string()
    }

    #[test]
    fn macros_expand_like_cronie() {
        assert_eq!(pat("@midnight"), "0 0 0 * * *");
        assert_eq!(pat("@daily"), "0 0 0 * * *");
        assert_eq!(pat("@Annually"), "0 0 0 1 1 *");
        assert_eq!(pat("@weekly"), "0 0 0 * * 0");
        assert!(parse("@daily").unwrap().fixed_time);
        assert!(!parse("@hourly").unwrap().fixed_time);
        assert!(refused("@reboot").contains("not supported"));
        assert!(refused("@every 5m").contains("takes no fields"));
        assert!(refused("@fortnightly").contains("supported: @yearly"));
    }

    #[test]
    fn the_linux_dst_class_looks_at_the_first_character() {
        for (expr, fixed) in [
            ("30 2 * * *", true),
            ("0,30 2 * * *", true),
            ("0 1,2,5 * * *", true),
            ("0-59 2 * * *", true),
            ("*/15 2 * * *", false),
            ("30 * * * *", false),
            ("30 */2 * * *", false),
            ("0 30 2 * * *", true),
            ("*/10 30 2 * * *", false),
            ("@hourly", false),
            ("@monthly", true),
        ] {
            assert_eq!(parse(expr).unwrap().fixed_time, fixed, "{expr}");
        }
    }

    #[test]
    fn day_fields_and_or_like_cronie() {
        let c = parse("0 16 */2 * sat").unwrap();
        assert!(c.dom_and_dow && !c.days_ored);
        assert_eq!(c.pattern, "0 0 16 */2 * 6");
        let c = parse("0 0 1,15 * mon").unwrap();
        assert!(!c.dom_and_dow && c.days_ored);
        assert!(parse("0 0 * * *,0").unwrap().dom_and_dow);
        // `0,*` does not start with `*`: both restricted, ORed (every day).
        let c = parse("0 0 1 * 0,*").unwrap();
        assert!(c.days_ored);
        assert_eq!(c.pattern, "0 0 0 1 * 0-6");
    }

    #[test]
    fn idioms_are_translated() {
        assert_eq!(pat("0 0 * * 7L"), "0 0 0 * * 0L");
        assert_eq!(pat("0 0 * * SUNL"), "0 0 0 * * 0L");
        assert_eq!(pat("0 0 * * 7#2"), "0 0 0 * * 0#2");
        assert_eq!(pat("0 0 LW * *"), "0 0 0 26-31 * *");
        assert!(parse("0 0 LW * *").unwrap().last_weekday);
        assert_eq!(pat("0 0 15W * ?"), "0 0 0 15W * *");
        assert_eq!(pat("0 0 * * *,0"), "0 0 0 * * 0-6");
        assert_eq!(pat("*,5 0 * * *"), "0 0-59 0 * * *");
        assert_eq!(pat("0 9 * jan-mar mon-fri"), "0 0 9 * 1-3 1-5");
        assert_eq!(pat("5/15 * * * *"), "0 5/15 * * * *");
        assert_eq!(pat("0 0 * * 5-7"), "0 0 0 * * 5-7");
        assert_eq!(pat("0 0 * * fri-sun"), "0 0 0 * * 5-7");
        assert_eq!(pat("0 0 * * 5-0/2"), "0 0 0 * * 5-7/2");
    }

    #[test]
    fn refusals_say_what_to_write() {
        let e = refused("0 0 * * FRI-MON");
        assert!(
            e.contains("wraps around") && e.contains("write FRI-SAT,SUN-MON"),
            "{e}"
        );
        let e = refused("0 22-2 * * *");
        assert!(
            e.contains("field 2 (hour)") && e.contains("write 22-23,0-2"),
            "{e}"
        );
        let e = refused("0 0 * NOV-FEB *");
        assert!(e.contains("write NOV-DEC,JAN-FEB"), "{e}");
        assert!(refused("0 0 * * L").contains("5L"));
        assert!(refused("0 0 LW * 1").contains("cannot be combined"));
        assert!(refused("0 0 LW,15 * *").contains("whole day-of-month"));
        assert!(refused("0 0 * * 1#6").contains("1 to 5"));
        assert!(refused("*/0 * * * *").contains("step"));
        assert!(refused("0 0 * * +1").contains("neither a number"));
        assert!(refused("0 +1 * * *").contains("not a number"));
        assert!(refused("60 * * * *").contains("out of range 0-59"));
        assert!(refused("0 0 * * FOO").contains("SUN MON"));
    }

    #[test]
    fn last_weekday() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert!(is_last_weekday(d("2026-01-30"))); // Fri, 31st is a Saturday
        assert!(!is_last_weekday(d("2026-01-31")));
        assert!(is_last_weekday(d("2026-03-31"))); // Tue
        assert!(is_last_weekday(d("2026-02-27"))); // Fri, 28th is a Saturday
        assert!(is_last_weekday(d("2026-05-29"))); // Fri, 30/31 weekend
        assert!(!is_last_weekday(d("2026-05-28")));
    }
}
