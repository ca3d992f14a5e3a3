//! Cron schedules: parse crontab expressions and list their fire instants in a time zone.
//!
//! # Why not the `cron` crate
//! zslayton's `cron` crate was the suggested base, but it implements Quartz syntax, not crontab(5):
//! - it requires a seconds field (6 or 7 fields), so a plain `0 9 * * *` is refused;
//! - day-of-week is 1–7 with 1 = Sunday, so `1-5` means Sunday–Thursday to it, not Monday–Friday;
//! - day-of-month and day-of-week must BOTH match, where Vixie cron fires when EITHER matches;
//! - it has no Vixie rule that a day field starting with `*` counts as unrestricted;
//! - it has no notion of Debian's DST handling of fixed-time jobs (run skipped times once after
//!   the gap, run repeated times once).
//!
//! Adapting it would mean rewriting every expression and post-filtering its output, and the
//! DOM/DOW rule still could not be expressed; a field-wise matcher is less code than that.
//!
//! # Semantics
//! Vixie/Debian cron: 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading
//! second; `*`, `a`, `a-b`, lists, `*/n`, `a-b/n`, `a/n` (= a-max/n); JAN–DEC and SUN–SAT names;
//! 0 and 7 are Sunday; the `@` macros except `@reboot`. Times are evaluated in the schedule's zone:
//! a *fixed-time* job (5 fields, neither minute nor hour starting with `*`) whose wall time is
//! skipped by a spring-forward runs once at the end of the gap, and one whose wall time repeats
//! runs once, at the earlier instant. Every other job runs at each real instant whose wall time
//! matches. All functions are pure: no clock is read.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
pub use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Searches stop after this local year: it bounds the work for sparse schedules and is as far as
/// anyone schedules a job.
const MAX_YEAR: i32 = 9999;

/// A cron expression or time zone that cannot be used, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    /// "second", "minute", "hour", "day-of-month", "month", "day-of-week", "expression" or "timezone".
    pub field: &'static str,
    pub message: String,
}

impl CronError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        CronError { field, message: message.into() }
    }
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CronError {}

impl From<CronError> for crate::error::Error {
    /// The API reports a bad zone against the request's `timezone` field and everything else
    /// against `cron`, keeping the cron field name in the message.
    fn from(e: CronError) -> Self {
        if e.field == "timezone" {
            crate::error::Error::invalid("timezone", e.message)
        } else {
            crate::error::Error::invalid("cron", e.to_string())
        }
    }
}

/// How one field is read: its bounds, its names and how to describe what it accepts.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names; `names[i]` stands for `min_name_value + i`.
    names: &'static [&'static str],
    min_name_value: u32,
    /// The range as error messages state it.
    range: &'static str,
    /// Everything the field accepts, for "not a number" messages.
    allowed: &'static str,
}

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[], min_name_value: 0, range: "0–59", allowed: "0–59" };
const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], min_name_value: 0, range: "0–59", allowed: "0–59" };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], min_name_value: 0, range: "0–23", allowed: "0–23" };
const DAY_OF_MONTH: FieldSpec =
    FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], min_name_value: 0, range: "1–31", allowed: "1–31" };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    min_name_value: 1,
    range: "1–12",
    allowed: "1–12 or JAN–DEC",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    min_name_value: 0,
    range: "0–7 (0 and 7 are Sunday)",
    allowed: "0–7 (0 and 7 are Sunday) or SUN–SAT",
};

const MONTH_NAMES: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// Longest each month can be; February counts 29 because leap years make day 29 reachable.
const MAX_DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

const FIELDS_EXPECTED: &str =
    "expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second, or a macro such as @daily";

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// A parsed cron expression. Each field is a bit set (bit n = value n); day-of-week keeps Sunday
/// at bit 0 only, 7 is folded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    has_seconds: bool,
    /// Vixie: when either day field starts with `*` a day must match both, otherwise either.
    days_and: bool,
    fixed_time: bool,
}

impl CronExpr {
    /// Parses a 5- or 6-field expression or a macro; refuses anything cron would reject or that
    /// could never fire, naming the field to fix.
    pub fn parse(expr: &str) -> Result<CronExpr, CronError> {
        let source = expr.trim();
        let words: Vec<&str> = source.split_whitespace().collect();
        let Some(first) = words.first() else {
            return Err(CronError::new("expression", format!("is empty; {FIELDS_EXPECTED}")));
        };
        let expanded = if first.starts_with('@') {
            let lower = first.to_ascii_lowercase();
            if lower == "@reboot" {
                return Err(CronError::new(
                    "expression",
                    "@reboot is not supported: Chronos schedules run by the clock, not at machine start; \
                     use a time schedule such as @daily",
                ));
            }
            let Some((_, fields)) = MACROS.iter().find(|(name, _)| *name == lower) else {
                return Err(CronError::new(
                    "expression",
                    format!("unknown macro \"{first}\"; use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"),
                ));
            };
            if words.len() > 1 {
                return Err(CronError::new("expression", format!("macro {first} takes no further fields, found \"{source}\"")));
            }
            fields.split_whitespace().collect()
        } else {
            words
        };
        let (second, rest) = match expanded.len() {
            5 => ("0", &expanded[..]),
            6 => (expanded[0], &expanded[1..]),
            n => return Err(CronError::new("expression", format!("found {n} fields in \"{source}\"; {FIELDS_EXPECTED}"))),
        };
        let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        let mut days_of_week = parse_field(&DAY_OF_WEEK, dow, source)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        let parsed = CronExpr {
            source: source.to_string(),
            seconds: parse_field(&SECOND, second, source)?,
            minutes: parse_field(&MINUTE, minute, source)?,
            hours: parse_field(&HOUR, hour, source)?,
            days_of_month: parse_field(&DAY_OF_MONTH, dom, source)?,
            months: parse_field(&MONTH, month, source)?,
            days_of_week,
            has_seconds: expanded.len() == 6,
            days_and: dom.starts_with('*') || dow.starts_with('*'),
            fixed_time: expanded.len() == 5 && !minute.starts_with('*') && !hour.starts_with('*'),
        };
        parsed.check_can_fire(dom)?;
        Ok(parsed)
    }

    /// The expression as given (trimmed), which is also how it is serialized.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for the 6-field form with a leading seconds field.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// True when Debian's DST rule applies: a 5-field job whose minute and hour fields do not start
    /// with `*`. Such a job runs once for a wall time skipped by spring-forward (at the end of the
    /// gap) and once for a wall time that repeats (the earlier instant).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// Every fire instant t with after < t <= until, ascending, at most `limit` of them.
    pub fn occurrences(&self, tz: Tz, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        if limit == 0 || until <= after {
            return Vec::new();
        }
        self.fire_times(tz, after).take_while(|t| *t <= until).take(limit).collect()
    }

    /// The first `n` fire instants strictly after `after` (fewer only if the expression stops matching before year 9999).
    pub fn next_n(&self, tz: Tz, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.fire_times(tz, after).take(n).collect()
    }

    /// The first fire instant strictly after `after`, if any before year 9999 ends.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fire_times(tz, after).next()
    }

    fn fire_times(&self, tz: Tz, after: DateTime<Utc>) -> FireTimes<'_> {
        FireTimes {
            expr: self,
            tz,
            after,
            cursor: search_start(tz, after),
            ready: VecDeque::new(),
            second_pass: VecDeque::new(),
            last: None,
        }
    }

    /// Refuses day-of-month/month combinations that never exist (`0 0 30 2 *`). Only needed when
    /// days must match both day fields: with the "either" rule the weekdays always fire.
    fn check_can_fire(&self, dom_text: &str) -> Result<(), CronError> {
        if !self.days_and {
            return Ok(());
        }
        let months: Vec<usize> = (1..=12).filter(|m| self.months & (1 << m) != 0).collect();
        let fires = months.iter().any(|&m| {
            let reachable_days = (1u64 << (MAX_DAYS_IN_MONTH[m - 1] + 1)) - 2;
            self.days_of_month & reachable_days != 0
        });
        if fires {
            return Ok(());
        }
        let names: Vec<&str> = months.iter().map(|&m| MONTH_NAMES[m - 1]).collect();
        Err(CronError::new(
            "day-of-month",
            format!(
                "\"{dom_text}\" never occurs in {}, so \"{}\" would never fire; pick a day those months have",
                names.join(" or "),
                self.source
            ),
        ))
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday) != 0;
        if self.days_and { dom && dow } else { dom || dow }
    }

    /// The first local wall time at or after `from` that matches, jumping field by field (month,
    /// day, hour, minute, second) so sparse schedules cost a few steps per year, not one per minute.
    fn next_local(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let (mut year, mut month, mut day) = (from.year(), from.month(), from.day());
        let (mut hour, mut minute, mut second) = (from.hour(), from.minute(), from.second());
        // A unit that overflows (month 13, hour 24, …) finds no bit and carries into the next larger unit.
        loop {
            if year > MAX_YEAR {
                return None;
            }
            match next_bit(self.months, month) {
                None => {
                    year += 1;
                    (month, day, hour, minute, second) = (1, 1, 0, 0, 0);
                    continue;
                }
                Some(m) if m != month => (month, day, hour, minute, second) = (m, 1, 0, 0, 0),
                Some(_) => {}
            }
            let first_weekday = NaiveDate::from_ymd_opt(year, month, 1)?.weekday().num_days_from_sunday();
            let found = (day..=days_in_month(year, month)).find(|&d| self.day_matches(d, (first_weekday + d - 1) % 7));
            match found {
                None => {
                    month += 1;
                    (day, hour, minute, second) = (1, 0, 0, 0);
                    continue;
                }
                Some(d) if d != day => (day, hour, minute, second) = (d, 0, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.hours, hour) {
                None => {
                    day += 1;
                    (hour, minute, second) = (0, 0, 0);
                    continue;
                }
                Some(h) if h != hour => (hour, minute, second) = (h, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, minute) {
                None => {
                    hour += 1;
                    (minute, second) = (0, 0);
                    continue;
                }
                Some(m) if m != minute => (minute, second) = (m, 0),
                Some(_) => {}
            }
            match next_bit(self.seconds, second) {
                None => {
                    minute += 1;
                    second = 0;
                    continue;
                }
                Some(s) => second = s,
            }
            return NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second);
        }
    }
}

impl FromStr for CronExpr {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Stored and sent as the source string, so what the user wrote is what they read back.
impl Serialize for CronExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        CronExpr::parse(&source).map_err(serde::de::Error::custom)
    }
}

/// Parses an IANA zone name exactly as spelled (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, CronError> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let trimmed = name.trim();
    let message = if trimmed.is_empty() {
        "is empty; use an IANA time zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\"".to_string()
    } else if let Some(tz) = chrono_tz::TZ_VARIANTS.iter().find(|tz| tz.name().eq_ignore_ascii_case(trimmed)) {
        format!("\"{name}\" is not an IANA time zone name; did you mean \"{}\"? (names are exact and case-sensitive)", tz.name())
    } else {
        format!(
            "\"{name}\" is not an IANA time zone name; use one such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\" \
             (abbreviations such as CEST or PST are not zone names)"
        )
    };
    Err(CronError::new("timezone", message))
}

/// Parses one field into a bit set, with errors that quote the token and the whole expression.
fn parse_field(spec: &FieldSpec, text: &str, expr: &str) -> Result<u64, CronError> {
    let fail = |message: String| CronError::new(spec.name, format!("{message} in \"{expr}\""));
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(fail(format!("\"{text}\" has an empty list element; separate values with single commas, e.g. 1,2")));
        }
        let (base, step) = match part.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(spec, step, part).map_err(fail)?)),
            None => (part, None),
        };
        let (low, high) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (parse_value(spec, a, part).map_err(fail)?, parse_value(spec, b, part).map_err(fail)?);
            if a > b {
                return Err(fail(format!(
                    "range \"{base}\" is reversed ({a} comes after {b}); ranges do not wrap around, write it as \"{a}-{},{}-{b}\"",
                    spec.max, spec.min
                )));
            }
            (a, b)
        } else {
            let a = parse_value(spec, base, part).map_err(fail)?;
            // `a/n` is Vixie's and cronie's shorthand for `a-max/n`.
            (a, if step.is_some() { spec.max } else { a })
        };
        for value in (low..=high).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

fn parse_step(spec: &FieldSpec, text: &str, part: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step \"{text}\" in \"{part}\" is not a number; write e.g. */5"));
    }
    let span = spec.max - spec.min + 1;
    match text.parse::<u32>() {
        Ok(0) => Err(format!("step 0 in \"{part}\" never advances; use a step of at least 1")),
        Ok(step) if step <= span => Ok(step),
        _ => Err(format!("step {text} in \"{part}\" is larger than the whole range {}", spec.range)),
    }
}

fn parse_value(spec: &FieldSpec, token: &str, part: &str) -> Result<u32, String> {
    if token.is_empty() {
        return Err(format!("\"{part}\" is missing a value; allowed: {}", spec.allowed));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(n) if (spec.min..=spec.max).contains(&n) => Ok(n),
            _ => Err(format!("{token} is out of range {}", spec.range)),
        };
    }
    if let Some(i) = spec.names.iter().position(|name| name.eq_ignore_ascii_case(token)) {
        return Ok(spec.min_name_value + i as u32);
    }
    if is_quartz_syntax(token) {
        return Err(format!("\"{token}\" is Quartz syntax that crontab does not have; allowed: {}", spec.allowed));
    }
    let what = if spec.names.is_empty() { "not a number" } else { "not a number or a three-letter name" };
    Err(format!("\"{token}\" is {what}; allowed: {}", spec.allowed))
}

/// Quartz-only tokens (`?`, `L`, `LW`, `5L`, `15W`, `1#2`) get a message of their own, because
/// people copy them from Quartz or Spring examples.
fn is_quartz_syntax(token: &str) -> bool {
    let digits_then = |suffix: char| token.strip_suffix(suffix).is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()));
    matches!(token, "?" | "L" | "LW") || token.contains('#') || digits_then('L') || digits_then('W')
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

fn offset_seconds(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc())
}

/// The local wall time to start searching from. Instants after `after` can show an earlier wall
/// time than `after` itself when the clocks go back soon after it (the second pass of a repeated
/// hour), so start from the smallest offset the zone has over the next day.
fn search_start(tz: Tz, after: DateTime<Utc>) -> Option<NaiveDateTime> {
    let min_offset = (0..=26).filter_map(|h| after.checked_add_signed(TimeDelta::hours(h))).map(|t| offset_seconds(tz, t)).min()?;
    after.naive_utc().checked_add_signed(TimeDelta::seconds(min_offset))?.with_nanosecond(0)
}

/// The first real instant after a spring-forward gap that contains the wall time `local`: the
/// transition itself, found as the first instant whose wall time is past `local`.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let target = local.and_utc().timestamp();
    let wall = |ts: i64| DateTime::from_timestamp(ts, 0).map_or(ts, |t| ts + offset_seconds(tz, t));
    // Offsets lie within ±26 h, so wall(lo) <= target < wall(hi).
    let (mut lo, mut hi) = (target - 26 * 3600, target + 26 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid) > target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// Fire instants after `after`, ascending. Local matches are visited in wall-time order; in a
/// repeated hour the later (second-pass) instants are held back until the walk passes them, so the
/// output stays in real-time order.
struct FireTimes<'a> {
    expr: &'a CronExpr,
    tz: Tz,
    after: DateTime<Utc>,
    /// Next wall time to search from; None once the search passed year 9999.
    cursor: Option<NaiveDateTime>,
    ready: VecDeque<DateTime<Utc>>,
    second_pass: VecDeque<DateTime<Utc>>,
    /// Last instant returned: drops the duplicate when a gap run lands on a time that also matches.
    last: Option<DateTime<Utc>>,
}

impl FireTimes<'_> {
    /// Resolves the next local match into instants; false when nothing is left.
    fn refill(&mut self) -> bool {
        let Some(from) = self.cursor else {
            self.ready.extend(self.second_pass.drain(..));
            return !self.ready.is_empty();
        };
        let Some(local) = self.expr.next_local(from) else {
            self.cursor = None;
            return true;
        };
        self.cursor = local.checked_add_signed(TimeDelta::seconds(1));
        let (first, second) = match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => (Some(t.with_timezone(&Utc)), None),
            LocalResult::Ambiguous(x, y) => {
                let (x, y) = (x.with_timezone(&Utc), y.with_timezone(&Utc));
                let (earlier, later) = if x <= y { (x, y) } else { (y, x) };
                (Some(earlier), (!self.expr.fixed_time).then_some(later))
            }
            LocalResult::None if self.expr.fixed_time => (gap_end(self.tz, local), None),
            LocalResult::None => (None, None),
        };
        if let Some(t) = first {
            while let Some(held) = self.second_pass.front().copied().filter(|held| *held < t) {
                self.second_pass.pop_front();
                self.ready.push_back(held);
            }
            self.ready.push_back(t);
        }
        self.second_pass.extend(second);
        true
    }
}

impl Iterator for FireTimes<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        loop {
            while let Some(t) = self.ready.pop_front() {
                if t > self.after && self.last.is_none_or(|last| t > last) {
                    self.last = Some(t);
                    return Some(t);
                }
            }
            if !self.refill() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad test time {s}: {e}")).with_timezone(&Utc)
    }

    fn cron(s: &str) -> CronExpr {
        CronExpr::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn zone(name: &str) -> Tz {
        parse_timezone(name).unwrap()
    }

    /// Instants as RFC 3339 in `tz`, so a failing assertion reads like the table.
    fn show(tz: Tz, instants: &[DateTime<Utc>]) -> Vec<String> {
        instants.iter().map(|t| t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true)).collect()
    }

    fn assert_instants(what: &str, tz: Tz, got: &[DateTime<Utc>], expected: &[&str]) {
        let want: Vec<DateTime<Utc>> = expected.iter().map(|s| at(s)).collect();
        assert_eq!(got, want, "{what}\n got: {:#?}\nwant: {:#?}", show(tz, got), show(tz, &want));
    }

    #[test]
    fn syntax_table_in_utc() {
        // (expression, after, the next fire instants)
        let rows: &[(&str, &str, &[&str])] = &[
            ("* * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]),
            ("5 * * * *", "2026-01-01T00:05:00Z", &["2026-01-01T01:05:00Z", "2026-01-01T02:05:00Z"]),
            // ranges, and ranges with steps
            (
                "0 9-17/4 * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z", "2026-01-02T09:00:00Z"],
            ),
            (
                "10-20/5 8 * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T08:10:00Z", "2026-01-01T08:15:00Z", "2026-01-01T08:20:00Z", "2026-01-02T08:10:00Z"],
            ),
            ("*/20 * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T00:20:00Z", "2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z"]),
            // a/n means a-max/n
            ("50/5 * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T00:50:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:50:00Z"]),
            // lists of values and ranges
            (
                "0 0 1,15,20-21 * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-15T00:00:00Z", "2026-01-20T00:00:00Z", "2026-01-21T00:00:00Z", "2026-02-01T00:00:00Z"],
            ),
            (
                "0,30 8-9,18 * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T08:00:00Z",
                    "2026-01-01T08:30:00Z",
                    "2026-01-01T09:00:00Z",
                    "2026-01-01T09:30:00Z",
                    "2026-01-01T18:00:00Z",
                    "2026-01-01T18:30:00Z",
                    "2026-01-02T08:00:00Z",
                ],
            ),
            // month names, case-insensitive, in lists and ranges
            (
                "0 0 1 FEB,jun-Aug *",
                "2026-01-01T00:00:00Z",
                &["2026-02-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z", "2026-08-01T00:00:00Z", "2027-02-01T00:00:00Z"],
            ),
            ("0 0 1 */5 *", "2026-01-01T00:00:00Z", &["2026-06-01T00:00:00Z", "2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
            // 2026-01-04 is a Sunday: 0, 7 and SUN are the same day
            ("0 12 * * 0", "2026-01-01T00:00:00Z", &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"]),
            ("0 12 * * 7", "2026-01-01T00:00:00Z", &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"]),
            ("0 12 * * sun", "2026-01-01T00:00:00Z", &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"]),
            (
                "0 12 * * 5-7",
                "2026-01-01T00:00:00Z",
                &["2026-01-02T12:00:00Z", "2026-01-03T12:00:00Z", "2026-01-04T12:00:00Z", "2026-01-09T12:00:00Z"],
            ),
            ("0 12 * * Mon-FRI", "2026-01-02T13:00:00Z", &["2026-01-05T12:00:00Z", "2026-01-06T12:00:00Z"]),
            (
                "0 12 * * MON,WED-THU",
                "2026-01-01T13:00:00Z",
                &["2026-01-05T12:00:00Z", "2026-01-07T12:00:00Z", "2026-01-08T12:00:00Z", "2026-01-12T12:00:00Z"],
            ),
            // `*/2` in day-of-week is 0,2,4,6: Sunday, Tuesday, Thursday, Saturday
            ("0 12 * * */2", "2026-01-01T13:00:00Z", &["2026-01-03T12:00:00Z", "2026-01-04T12:00:00Z", "2026-01-06T12:00:00Z"]),
            // both day fields restricted: EITHER matches (the 13th, and every Friday)
            (
                "0 0 13 * FRI",
                "2026-02-01T00:00:00Z",
                &[
                    "2026-02-06T00:00:00Z",
                    "2026-02-13T00:00:00Z",
                    "2026-02-20T00:00:00Z",
                    "2026-02-27T00:00:00Z",
                    "2026-03-06T00:00:00Z",
                    "2026-03-13T00:00:00Z",
                ],
            ),
            (
                "0 0 1-7 * MON",
                "2026-03-07T00:00:00Z",
                &["2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z", "2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z", "2026-04-01T00:00:00Z"],
            ),
            // a day field starting with `*` is unrestricted for that rule: BOTH must match
            // (odd days that are Mondays: 2026-03-09 is a Monday on an odd day, 03-16 is even)
            ("0 0 */2 * MON", "2026-03-01T00:00:00Z", &["2026-03-09T00:00:00Z", "2026-03-23T00:00:00Z", "2026-04-13T00:00:00Z"]),
            // the first of the month only when it is a Sunday/Tuesday/Thursday/Saturday
            (
                "0 0 1 * */2",
                "2026-01-01T00:00:00Z",
                &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-08-01T00:00:00Z", "2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"],
            ),
            // restricted day-of-week fires even where day-of-month does not exist
            ("0 0 31 4 MON", "2026-04-01T00:00:00Z", &["2026-04-06T00:00:00Z", "2026-04-13T00:00:00Z"]),
            // short months are skipped; year rollover
            ("0 0 31 * *", "2026-01-31T00:00:00Z", &["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"]),
            ("59 23 31 12 *", "2026-06-01T00:00:00Z", &["2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"]),
            // macros
            ("@yearly", "2026-03-01T00:00:00Z", &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
            ("@annually", "2026-03-01T00:00:00Z", &["2027-01-01T00:00:00Z"]),
            ("@monthly", "2026-03-01T00:00:00Z", &["2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"]),
            ("@weekly", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
            ("@daily", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
            ("@MIDNIGHT", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z"]),
            ("@hourly", "2026-01-01T00:30:00Z", &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]),
            // 6 fields: leading seconds
            ("*/20 * * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"]),
            ("30 0 12 * * *", "2026-01-01T00:00:00Z", &["2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"]),
            ("15,45 30 9 * * MON", "2026-01-01T00:00:00Z", &["2026-01-05T09:30:15Z", "2026-01-05T09:30:45Z", "2026-01-12T09:30:15Z"]),
            // leap days: 2100 is not a leap year
            ("0 0 29 2 *", "2023-06-01T00:00:00Z", &["2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
            ("0 0 29 2 *", "2097-03-01T00:00:00Z", &["2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"]),
            ("0 0 29 2 *", "2399-01-01T00:00:00Z", &["2400-02-29T00:00:00Z", "2404-02-29T00:00:00Z"]),
            // leading/trailing spaces and tabs between fields
            ("  0\t0 * * *  ", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z"]),
        ];
        for (expr, after, expected) in rows {
            let got = cron(expr).next_n(Tz::UTC, at(after), expected.len());
            assert_instants(&format!("{expr:?} after {after}"), Tz::UTC, &got, expected);
        }
    }

    #[test]
    fn occurrences_window_is_after_exclusive_until_inclusive_and_limited() {
        let e = cron("0 * * * *");
        let got = e.occurrences(Tz::UTC, at("2026-01-01T01:00:00Z"), at("2026-01-01T04:00:00Z"), 10);
        assert_instants("(01:00, 04:00]", Tz::UTC, &got, &["2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"]);
        let got = e.occurrences(Tz::UTC, at("2026-01-01T01:00:00Z"), at("2026-01-01T04:00:00Z"), 2);
        assert_instants("limit 2", Tz::UTC, &got, &["2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z"]);
        assert!(e.occurrences(Tz::UTC, at("2026-01-01T01:00:00Z"), at("2026-01-01T04:00:00Z"), 0).is_empty());
        assert!(e.occurrences(Tz::UTC, at("2026-01-01T04:00:00Z"), at("2026-01-01T01:00:00Z"), 10).is_empty());
        // a sub-second `after` still yields whole seconds
        let got = e.next_n(Tz::UTC, at("2026-01-01T01:59:59.999Z"), 1);
        assert_instants("sub-second after", Tz::UTC, &got, &["2026-01-01T02:00:00Z"]);
        assert_eq!(e.next_after(Tz::UTC, at("2026-01-01T01:00:00Z")), Some(at("2026-01-01T02:00:00Z")));
    }

    #[test]
    fn every_second_for_two_minutes_is_120_instants() {
        let start = at("2026-05-01T10:00:00Z");
        let got = cron("* * * * * *").occurrences(zone("Europe/Berlin"), start, start + TimeDelta::minutes(2), 1000);
        assert_eq!(got.len(), 120);
        assert!(got.windows(2).all(|w| w[1] - w[0] == TimeDelta::seconds(1)));
        assert_eq!(got.last(), Some(&(start + TimeDelta::minutes(2))));
    }

    #[test]
    fn search_is_bounded_at_year_9999() {
        let got = cron("0 0 29 2 *").next_n(Tz::UTC, at("9980-01-01T00:00:00Z"), 100);
        assert_instants(
            "leap days to the end",
            Tz::UTC,
            &got,
            &["9980-02-29T00:00:00Z", "9984-02-29T00:00:00Z", "9988-02-29T00:00:00Z", "9992-02-29T00:00:00Z", "9996-02-29T00:00:00Z"],
        );
        assert!(cron("* * * * *").next_n(Tz::UTC, at("9999-12-31T23:59:00Z"), 5).is_empty());
        assert!(cron("* * * * *").next_n(Tz::UTC, DateTime::<Utc>::MAX_UTC, 5).is_empty());
        // many sparse results stay fast: roughly 1,940 leap days remain before 10000
        let all = cron("0 0 29 2 *").next_n(Tz::UTC, at("2026-01-01T00:00:00Z"), 5000);
        assert!(all.len() < 5000 && all.len() > 1900, "{}", all.len());
        assert_eq!(all.last(), Some(&at("9996-02-29T00:00:00Z")));
    }

    #[test]
    fn properties_table() {
        // (expression, source, has_seconds, is_fixed_time)
        let rows: &[(&str, &str, bool, bool)] = &[
            ("30 2 * * *", "30 2 * * *", false, true),
            ("0 1-3 * * *", "0 1-3 * * *", false, true),
            ("0,30 2 * * MON", "0,30 2 * * MON", false, true),
            ("*/15 * * * *", "*/15 * * * *", false, false),
            ("0 */2 * * *", "0 */2 * * *", false, false),
            ("30 * * * *", "30 * * * *", false, false),
            ("* 2 * * *", "* 2 * * *", false, false),
            ("0 30 2 * * *", "0 30 2 * * *", true, false),
            ("  @daily ", "@daily", false, true),
            ("@yearly", "@yearly", false, true),
            ("@monthly", "@monthly", false, true),
            ("@weekly", "@weekly", false, true),
            ("@hourly", "@hourly", false, false),
        ];
        for &(expr, source, has_seconds, fixed) in rows {
            let e = cron(expr);
            assert_eq!((e.source(), e.has_seconds(), e.is_fixed_time()), (source, has_seconds, fixed), "{expr:?}");
            assert_eq!(e.to_string(), source);
            assert_eq!(expr.parse::<CronExpr>().as_ref(), Ok(&e));
        }
    }

    #[test]
    fn invalid_expressions_name_the_field_and_the_fix() {
        // (expression, field, part of the message)
        let rows: &[(&str, &str, &str)] = &[
            ("0 0 32 * *", "day-of-month", "32 is out of range 1–31 in \"0 0 32 * *\""),
            ("0 0 0 * *", "day-of-month", "0 is out of range 1–31"),
            ("60 * * * *", "minute", "60 is out of range 0–59"),
            ("* 24 * * *", "hour", "24 is out of range 0–23"),
            ("* * * 13 *", "month", "13 is out of range 1–12"),
            ("* * * 0 *", "month", "0 is out of range 1–12"),
            ("* * * * 8", "day-of-week", "8 is out of range 0–7 (0 and 7 are Sunday)"),
            ("60 * * * * *", "second", "60 is out of range 0–59"),
            ("* * * FOO *", "month", "\"FOO\" is not a number or a three-letter name; allowed: 1–12 or JAN–DEC"),
            (
                "* * * * MONDAY",
                "day-of-week",
                "\"MONDAY\" is not a number or a three-letter name; allowed: 0–7 (0 and 7 are Sunday) or SUN–SAT",
            ),
            ("JAN * * * *", "minute", "\"JAN\" is not a number; allowed: 0–59"),
            ("* * ? * *", "day-of-month", "Quartz syntax"),
            ("* * L * *", "day-of-month", "Quartz syntax"),
            ("*/0 * * * *", "minute", "step 0 in \"*/0\" never advances"),
            ("0 1-5/0 * * *", "hour", "step 0"),
            ("*/61 * * * *", "minute", "step 61 in \"*/61\" is larger than the whole range 0–59"),
            ("*/x * * * *", "minute", "step \"x\" in \"*/x\" is not a number"),
            ("5-1 * * * *", "minute", "range \"5-1\" is reversed (5 comes after 1); ranges do not wrap around, write it as \"5-59,0-1\""),
            ("* * * * FRI-MON", "day-of-week", "reversed"),
            ("* * * DEC-JAN *", "month", "reversed"),
            ("1,,2 * * * *", "minute", "empty list element"),
            ("1- * * * *", "minute", "\"1-\" is missing a value"),
            ("/5 * * * *", "minute", "\"/5\" is missing a value"),
            ("1-2-3 * * * *", "minute", "\"2-3\" is not a number"),
            (
                "* * * *",
                "expression",
                "found 4 fields in \"* * * *\"; expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second",
            ),
            ("* * * * * * *", "expression", "found 7 fields"),
            ("", "expression", "is empty; expected 5 fields"),
            ("   ", "expression", "is empty"),
            ("@reboot", "expression", "@reboot is not supported"),
            ("@fortnightly", "expression", "unknown macro \"@fortnightly\"; use one of @yearly"),
            ("@daily 5", "expression", "takes no further fields"),
            // never fires: day-of-month that the months do not have, with an unrestricted day-of-week
            ("0 0 30 2 *", "day-of-month", "\"30\" never occurs in February, so \"0 0 30 2 *\" would never fire"),
            ("0 0 31 4,6 *", "day-of-month", "\"31\" never occurs in April or June"),
            ("0 0 30,31 FEB *", "day-of-month", "never occurs in February"),
            ("0 0 31 2 */2", "day-of-month", "would never fire"),
            ("0 0 0 31 11 *", "day-of-month", "never occurs in November"),
        ];
        for &(expr, field, fragment) in rows {
            let err = CronExpr::parse(expr).expect_err(expr);
            assert_eq!(err.field, field, "{expr:?}: {err}");
            assert!(err.message.contains(fragment), "{expr:?}: message {:?} lacks {fragment:?}", err.message);
        }
        let err = CronExpr::parse("0 0 32 * *").unwrap_err();
        assert_eq!(err.to_string(), "day-of-month: 32 is out of range 1–31 in \"0 0 32 * *\"");
    }

    #[test]
    fn timezones_are_exact_iana_names() {
        assert_eq!(parse_timezone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
        assert_eq!(parse_timezone("Australia/Lord_Howe"), Ok(Tz::Australia__Lord_Howe));
        // (input, part of the message)
        let rows: &[(&str, &str)] = &[
            ("europe/berlin", "did you mean \"Europe/Berlin\"?"),
            ("CEST", "use one such as \"Europe/Berlin\""),
            ("Mars/Olympus", "\"Mars/Olympus\" is not an IANA time zone name"),
            ("", "is empty; use an IANA time zone name such as \"Europe/Berlin\""),
        ];
        for &(name, fragment) in rows {
            let err = parse_timezone(name).expect_err(name);
            assert_eq!(err.field, "timezone");
            assert!(err.message.contains(fragment), "{name:?}: {:?}", err.message);
        }
    }

    #[test]
    fn converts_into_the_crate_error() {
        let err: crate::error::Error = CronExpr::parse("0 0 32 * *").unwrap_err().into();
        let expected = "day-of-month: 32 is out of range";
        assert!(matches!(&err, crate::error::Error::Invalid { field: "cron", message } if message.starts_with(expected)), "{err}");
        let err: crate::error::Error = parse_timezone("Nowhere").unwrap_err().into();
        assert!(matches!(&err, crate::error::Error::Invalid { field: "timezone", message } if message.starts_with("\"Nowhere\"")));
        assert!(!err.is_retryable());
    }

    #[test]
    fn serializes_as_the_source_string() {
        let e = cron("*/5 9-17 * * MON-FRI");
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"*/5 9-17 * * MON-FRI\"");
        assert_eq!(serde_json::from_str::<CronExpr>("\"*/5 9-17 * * MON-FRI\"").unwrap(), e);
        let err = serde_json::from_str::<CronExpr>("\"0 0 32 * *\"").unwrap_err().to_string();
        assert!(err.contains("day-of-month: 32 is out of range"), "{err}");
    }

    /// The DST tables below rely on these transitions; check them against chrono-tz itself.
    #[test]
    fn zone_transitions_the_tables_assume() {
        // (zone, local wall time, offsets in seconds at that wall time: none = gap, two = repeated)
        let rows: &[(&str, &str, &[i32])] = &[
            ("Europe/Berlin", "2026-03-29T01:59:00", &[3600]),
            ("Europe/Berlin", "2026-03-29T02:30:00", &[]),
            ("Europe/Berlin", "2026-03-29T03:00:00", &[7200]),
            ("Europe/Berlin", "2026-10-25T02:30:00", &[7200, 3600]),
            ("Europe/Berlin", "2026-10-25T03:00:00", &[3600]),
            ("America/New_York", "2026-03-08T02:30:00", &[]),
            ("America/New_York", "2026-03-08T03:00:00", &[-4 * 3600]),
            ("America/New_York", "2026-11-01T01:30:00", &[-4 * 3600, -5 * 3600]),
            ("America/New_York", "2026-11-01T02:00:00", &[-5 * 3600]),
            // first Sunday of April: 02:00 +11:00 → 01:30 +10:30
            ("Australia/Lord_Howe", "2026-04-05T01:29:00", &[39600]),
            ("Australia/Lord_Howe", "2026-04-05T01:30:00", &[39600, 37800]),
            ("Australia/Lord_Howe", "2026-04-05T01:59:00", &[39600, 37800]),
            ("Australia/Lord_Howe", "2026-04-05T02:00:00", &[37800]),
            // first Sunday of October: 02:00 +10:30 → 02:30 +11:00
            ("Australia/Lord_Howe", "2026-10-04T01:59:00", &[37800]),
            ("Australia/Lord_Howe", "2026-10-04T02:00:00", &[]),
            ("Australia/Lord_Howe", "2026-10-04T02:29:00", &[]),
            ("Australia/Lord_Howe", "2026-10-04T02:30:00", &[39600]),
        ];
        for &(name, local, offsets) in rows {
            let tz = zone(name);
            let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").unwrap();
            let got: Vec<i32> = match tz.from_local_datetime(&naive) {
                LocalResult::Single(t) => vec![t.offset().fix().local_minus_utc()],
                LocalResult::Ambiguous(a, b) => vec![a.offset().fix().local_minus_utc(), b.offset().fix().local_minus_utc()],
                LocalResult::None => vec![],
            };
            assert_eq!(got, offsets, "{name} {local}");
        }
    }

    #[test]
    fn dst_table() {
        // (zone, expression, after, until, every instant in (after, until])
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str, &str, &[&str])] = &[
            // ---- Europe/Berlin, 2026-03-29 02:00 → 03:00 (02:xx does not exist) ----
            // fixed-time: a skipped run happens once at the end of the gap (03:00 CEST).
            // Without the gap rule the 29th would have no run.
            ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
             &["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
            // two matches in one gap collapse into one run
            ("Europe/Berlin", "0,30 2 * * *", "2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
             &["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
            // the gap run at 03:00 is not duplicated by the 03:00 match
            ("Europe/Berlin", "0 1-3 * * *", "2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
             &["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00",
               "2026-03-30T01:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T03:00:00+02:00"]),
            ("Europe/Berlin", "45 1 * * *", "2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
             &["2026-03-29T01:45:00+01:00", "2026-03-30T01:45:00+02:00"]),
            // non-fixed and 6-field: nothing in the gap
            ("Europe/Berlin", "0 30 2 * * *", "2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00",
             &["2026-03-30T02:30:00+02:00"]),
            ("Europe/Berlin", "*/15 * * * *", "2026-03-29T00:50:00+01:00", "2026-03-29T03:40:00+02:00",
             &["2026-03-29T01:00:00+01:00", "2026-03-29T01:15:00+01:00", "2026-03-29T01:30:00+01:00", "2026-03-29T01:45:00+01:00",
               "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00", "2026-03-29T03:30:00+02:00"]),
            ("Europe/Berlin", "0 */1 * * *", "2026-03-29T00:50:00+01:00", "2026-03-29T03:40:00+02:00",
             &["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]),
            ("Europe/Berlin", "30 * * * *", "2026-03-29T00:50:00+01:00", "2026-03-29T03:40:00+02:00",
             &["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"]),

            // ---- Europe/Berlin, 2026-10-25 03:00 → 02:00 (02:xx happens twice) ----
            // fixed-time: once, at the first (CEST) occurrence. Without the rule 02:30+01:00 would also run.
            ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
            ("Europe/Berlin", "0,30 2 * * *", "2026-10-24T12:00:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:00:00+01:00", "2026-10-26T02:30:00+01:00"]),
            ("Europe/Berlin", "0 1-3 * * *", "2026-10-24T12:00:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00",
               "2026-10-26T01:00:00+01:00", "2026-10-26T02:00:00+01:00", "2026-10-26T03:00:00+01:00"]),
            ("Europe/Berlin", "45 1 * * *", "2026-10-24T12:00:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-25T01:45:00+02:00", "2026-10-26T01:45:00+01:00"]),
            // non-fixed and 6-field: both passes of the repeated hour, in real-time order
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-24T12:00:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"]),
            ("Europe/Berlin", "*/15 * * * *", "2026-10-25T01:50:00+02:00", "2026-10-25T03:10:00+01:00",
             &["2026-10-25T02:00:00+02:00", "2026-10-25T02:15:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:45:00+02:00",
               "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T02:45:00+01:00",
               "2026-10-25T03:00:00+01:00"]),
            ("Europe/Berlin", "0 */1 * * *", "2026-10-25T01:50:00+02:00", "2026-10-25T03:10:00+01:00",
             &["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
            ("Europe/Berlin", "30 * * * *", "2026-10-25T01:50:00+02:00", "2026-10-25T03:10:00+01:00",
             &["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]),
            // starting inside the first pass still finds the second pass (non-fixed) …
            ("Europe/Berlin", "*/15 * * * *", "2026-10-25T02:40:00+02:00", "2026-10-25T02:20:00+01:00",
             &["2026-10-25T02:45:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00"]),
            // … and does not rerun a fixed-time job that already ran in it
            ("Europe/Berlin", "30 2 * * *", "2026-10-25T02:40:00+02:00", "2026-10-26T12:00:00+01:00",
             &["2026-10-26T02:30:00+01:00"]),

            // ---- America/New_York, 2026-03-08 02:00 → 03:00 ----
            ("America/New_York", "30 2 * * *", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00",
             &["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
            ("America/New_York", "0,30 2 * * *", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00",
             &["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
            ("America/New_York", "0 1-3 * * *", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00",
             &["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00",
               "2026-03-09T01:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T03:00:00-04:00"]),
            ("America/New_York", "45 1 * * *", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00",
             &["2026-03-08T01:45:00-05:00", "2026-03-09T01:45:00-04:00"]),
            ("America/New_York", "0 30 2 * * *", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00",
             &["2026-03-09T02:30:00-04:00"]),
            ("America/New_York", "*/15 * * * *", "2026-03-08T00:50:00-05:00", "2026-03-08T03:40:00-04:00",
             &["2026-03-08T01:00:00-05:00", "2026-03-08T01:15:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-08T01:45:00-05:00",
               "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00", "2026-03-08T03:30:00-04:00"]),
            ("America/New_York", "0 */1 * * *", "2026-03-08T00:50:00-05:00", "2026-03-08T03:40:00-04:00",
             &["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"]),
            ("America/New_York", "30 * * * *", "2026-03-08T00:50:00-05:00", "2026-03-08T03:40:00-04:00",
             &["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]),

            // ---- America/New_York, 2026-11-01 02:00 → 01:00 (01:xx happens twice) ----
            ("America/New_York", "30 2 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"]),
            ("America/New_York", "0,30 2 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T02:00:00-05:00", "2026-11-01T02:30:00-05:00", "2026-11-02T02:00:00-05:00", "2026-11-02T02:30:00-05:00"]),
            // 01:00 runs once (EDT); without the repeated-hour rule 01:00-05:00 would also run
            ("America/New_York", "0 1-3 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00",
               "2026-11-02T01:00:00-05:00", "2026-11-02T02:00:00-05:00", "2026-11-02T03:00:00-05:00"]),
            ("America/New_York", "45 1 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T01:45:00-04:00", "2026-11-02T01:45:00-05:00"]),
            ("America/New_York", "0 30 2 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"]),
            ("America/New_York", "0 30 1 * * *", "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00",
             &["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"]),
            ("America/New_York", "*/15 * * * *", "2026-11-01T00:50:00-04:00", "2026-11-01T02:10:00-05:00",
             &["2026-11-01T01:00:00-04:00", "2026-11-01T01:15:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:45:00-04:00",
               "2026-11-01T01:00:00-05:00", "2026-11-01T01:15:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T01:45:00-05:00",
               "2026-11-01T02:00:00-05:00"]),
            ("America/New_York", "0 */1 * * *", "2026-11-01T00:50:00-04:00", "2026-11-01T02:10:00-05:00",
             &["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
            ("America/New_York", "30 * * * *", "2026-11-01T00:50:00-04:00", "2026-11-01T02:10:00-05:00",
             &["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]),

            // ---- Australia/Lord_Howe, 2026-04-05 02:00 (+11:00) → 01:30 (+10:30): 01:30–01:59 twice ----
            ("Australia/Lord_Howe", "30 2 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T02:30:00+10:30", "2026-04-06T02:30:00+10:30"]),
            ("Australia/Lord_Howe", "0,30 2 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T02:00:00+10:30", "2026-04-05T02:30:00+10:30", "2026-04-06T02:00:00+10:30", "2026-04-06T02:30:00+10:30"]),
            ("Australia/Lord_Howe", "0 1-3 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T01:00:00+11:00", "2026-04-05T02:00:00+10:30", "2026-04-05T03:00:00+10:30",
               "2026-04-06T01:00:00+10:30", "2026-04-06T02:00:00+10:30", "2026-04-06T03:00:00+10:30"]),
            ("Australia/Lord_Howe", "45 1 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
            ("Australia/Lord_Howe", "0 45 1 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30", "2026-04-06T01:45:00+10:30"]),
            ("Australia/Lord_Howe", "0 30 2 * * *", "2026-04-04T12:00:00+11:00", "2026-04-06T12:00:00+10:30",
             &["2026-04-05T02:30:00+10:30", "2026-04-06T02:30:00+10:30"]),
            ("Australia/Lord_Howe", "*/15 * * * *", "2026-04-05T00:50:00+11:00", "2026-04-05T02:10:00+10:30",
             &["2026-04-05T01:00:00+11:00", "2026-04-05T01:15:00+11:00", "2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
               "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30"]),
            ("Australia/Lord_Howe", "0 */1 * * *", "2026-04-05T00:50:00+11:00", "2026-04-05T02:10:00+10:30",
             &["2026-04-05T01:00:00+11:00", "2026-04-05T02:00:00+10:30"]),
            ("Australia/Lord_Howe", "30 * * * *", "2026-04-05T00:50:00+11:00", "2026-04-05T02:10:00+10:30",
             &["2026-04-05T01:30:00+11:00", "2026-04-05T01:30:00+10:30"]),

            // ---- Australia/Lord_Howe, 2026-10-04 02:00 (+10:30) → 02:30 (+11:00): 02:00–02:29 skipped ----
            ("Australia/Lord_Howe", "30 2 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T02:30:00+11:00", "2026-10-05T02:30:00+11:00"]),
            // 02:00 runs at the end of the gap, 02:30, which also matches: one run
            ("Australia/Lord_Howe", "0,30 2 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T02:30:00+11:00", "2026-10-05T02:00:00+11:00", "2026-10-05T02:30:00+11:00"]),
            ("Australia/Lord_Howe", "15 2 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
            ("Australia/Lord_Howe", "0 1-3 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T01:00:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00",
               "2026-10-05T01:00:00+11:00", "2026-10-05T02:00:00+11:00", "2026-10-05T03:00:00+11:00"]),
            ("Australia/Lord_Howe", "45 1 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T01:45:00+10:30", "2026-10-05T01:45:00+11:00"]),
            ("Australia/Lord_Howe", "0 30 2 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-04T02:30:00+11:00", "2026-10-05T02:30:00+11:00"]),
            ("Australia/Lord_Howe", "0 15 2 * * *", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00",
             &["2026-10-05T02:15:00+11:00"]),
            ("Australia/Lord_Howe", "*/15 * * * *", "2026-10-04T00:50:00+10:30", "2026-10-04T03:10:00+11:00",
             &["2026-10-04T01:00:00+10:30", "2026-10-04T01:15:00+10:30", "2026-10-04T01:30:00+10:30", "2026-10-04T01:45:00+10:30",
               "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00", "2026-10-04T03:00:00+11:00"]),
            ("Australia/Lord_Howe", "0 */1 * * *", "2026-10-04T00:50:00+10:30", "2026-10-04T03:10:00+11:00",
             &["2026-10-04T01:00:00+10:30", "2026-10-04T03:00:00+11:00"]),
            ("Australia/Lord_Howe", "30 * * * *", "2026-10-04T00:50:00+10:30", "2026-10-04T03:10:00+11:00",
             &["2026-10-04T01:30:00+10:30", "2026-10-04T02:30:00+11:00"]),
        ];
        for &(name, expr, after, until, expected) in rows {
            let tz = zone(name);
            let got = cron(expr).occurrences(tz, at(after), at(until), 100);
            assert_instants(&format!("{expr:?} in {name}, ({after}, {until}]"), tz, &got, expected);
            // next_n agrees with occurrences
            let next = cron(expr).next_n(tz, at(after), expected.len());
            assert_eq!(next, got, "next_n {expr:?} in {name} after {after}");
        }
    }
}
