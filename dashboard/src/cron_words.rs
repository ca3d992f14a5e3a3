//! A cron expression in words, for people scanning the schedules page: `0 3 * * *` → "At
//! 03:00, every day"; `*/15 9-17 * * MON-FRI` → "Every 15 minutes, from 09:00 to 17:59,
//! Monday to Friday". Shapes it does not know read as the fields spelled out; the expression
//! itself is always shown beside it.

const DAYS: [&str; 8] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTHS: [&str; 13] =
    ["", "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

fn number(s: &str, names: &[&str]) -> Option<u32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let up = s.to_ascii_uppercase();
    names.iter().position(|n| n.len() >= 3 && n[..3].eq_ignore_ascii_case(&up)).map(|i| i as u32)
}

fn day(s: &str) -> Option<&'static str> {
    number(s, &DAYS[..7]).and_then(|n| DAYS.get(n as usize).copied())
}

fn month(s: &str) -> Option<&'static str> {
    number(s, &MONTHS).and_then(|n| MONTHS.get(n as usize).copied()).filter(|m| !m.is_empty())
}

/// `a`, `a-b`, `a,b,c` with `word` naming each value.
fn list(field: &str, word: impl Fn(&str) -> Option<String>, range_sep: &str) -> Option<String> {
    let parts: Vec<String> = field
        .split(',')
        .map(|p| match p.split_once('-') {
            Some((a, b)) if !p.contains('/') => Some(format!("{}{range_sep}{}", word(a)?, word(b)?)),
            None if !p.contains('/') => word(p),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(match parts.len() {
        1 => parts[0].clone(),
        _ => format!("{} and {}", parts[..parts.len() - 1].join(", "), parts[parts.len() - 1]),
    })
}

fn step(field: &str) -> Option<u32> {
    field.strip_prefix("*/").and_then(|n| n.parse().ok())
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 { one.to_owned() } else { format!("{n} {one}s") }
}

fn clock(h: &str, m: &str, s: Option<&str>) -> Option<String> {
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    Some(match s.map(|s| s.parse::<u32>()) {
        Some(Ok(s)) if s != 0 => format!("{h:02}:{m:02}:{s:02}"),
        Some(Err(_)) => return None,
        _ => format!("{h:02}:{m:02}"),
    })
}

fn time_part(sec: Option<&str>, min: &str, hour: &str) -> String {
    let sec_plain = sec.is_none_or(|s| s == "0");
    // Every second / every n seconds.
    if let Some(s) = sec
        && min == "*"
        && hour == "*"
    {
        if s == "*" {
            return "Every second".into();
        }
        if let Some(n) = step(s) {
            return format!("Every {}", plural(n, "second"));
        }
    }
    if sec_plain {
        if min == "*" && hour == "*" {
            return "Every minute".into();
        }
        if let Some(n) = step(min) {
            let every = format!("Every {}", plural(n, "minute"));
            return match hour {
                "*" => every,
                h => match h.split_once('-') {
                    Some((a, b)) if a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok() => {
                        format!("{every}, from {:02}:00 to {:02}:59", a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap())
                    }
                    _ => format!("{every}, during hour {h}"),
                },
            };
        }
        if let Ok(m) = min.parse::<u32>() {
            if hour == "*" {
                return if m == 0 { "Every hour, on the hour".into() } else { format!("Every hour at {m} past") };
            }
            if let Some(n) = step(hour) {
                return format!("Every {} at :{m:02}", plural(n, "hour"));
            }
            if let Some(t) = clock(hour, min, None) {
                return format!("At {t}");
            }
            if hour.contains(',') && hour.split(',').all(|h| h.parse::<u32>().is_ok()) {
                let times: Vec<String> = hour.split(',').filter_map(|h| clock(h, min, None)).collect();
                return format!("At {}", list(&times.join(","), |t| Some(t.to_owned()), "").unwrap_or_default());
            }
            if let Some((a, b)) = hour.split_once('-') {
                return format!("Every hour at :{m:02}, from {a} to {b} o'clock");
            }
        }
    }
    if let (Some(s), Ok(_), Ok(_)) = (sec, min.parse::<u32>(), hour.parse::<u32>())
        && let Some(t) = clock(hour, min, Some(s))
    {
        return format!("At {t}");
    }
    let mut out = format!("At minute {min} of hour {hour}");
    if let Some(s) = sec.filter(|s| *s != "0") {
        out = format!("At second {s}, minute {min} of hour {hour}");
    }
    out
}

fn day_part(dom: &str, mon: &str, dow: &str) -> String {
    let on_days = match dow {
        "*" | "?" => None,
        "1-5" | "MON-FRI" | "mon-fri" => Some("Monday to Friday".to_owned()),
        "0,6" | "6,0" | "SAT,SUN" | "sat,sun" => Some("on weekends".to_owned()),
        d => Some(list(d, |x| day(x).map(str::to_owned), " to ").map(|l| format!("on {l}")).unwrap_or_else(|| format!("on weekday {d}"))),
    };
    let on_dom = match dom {
        "*" | "?" => None,
        d => Some(
            list(d, |x| x.parse::<u32>().ok().map(|n| n.to_string()), "–")
                .map(|l| format!("on day {l} of the month"))
                .unwrap_or_else(|| format!("on day {d}")),
        ),
    };
    let mut out = match (on_dom, on_days) {
        (None, None) => "every day".to_owned(),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        // Vixie cron: either matches.
        (Some(a), Some(b)) => format!("{a} or {b}"),
    };
    if mon != "*" {
        out.push_str(&match list(mon, |x| month(x).map(str::to_owned), " to ") {
            Some(l) => format!(", in {l}"),
            None => format!(", in month {mon}"),
        });
    }
    out
}

/// `expr` in words.
pub fn describe(expr: &str) -> String {
    let e = expr.trim();
    match e.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => return "At 00:00 on 1 January".into(),
        "@monthly" => return "At 00:00 on the 1st of every month".into(),
        "@weekly" => return "At 00:00 every Sunday".into(),
        "@daily" | "@midnight" => return "At 00:00, every day".into(),
        "@hourly" => return "Every hour, on the hour".into(),
        _ => {}
    }
    let f: Vec<&str> = e.split_whitespace().collect();
    let (sec, rest) = match f.len() {
        5 => (None, &f[..]),
        6 => (Some(f[0]), &f[1..]),
        _ => return e.to_owned(),
    };
    let time = time_part(sec, rest[0], rest[1]);
    let days = day_part(rest[2], rest[3], rest[4]);
    if days == "every day" && time.starts_with("Every") { time } else { format!("{time}, {days}") }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_expressions_read_as_a_person_would_say_them() {
        for (expr, words) in [
            ("0 3 * * *", "At 03:00, every day"),
            ("30 2 * * *", "At 02:30, every day"),
            ("*/15 * * * *", "Every 15 minutes"),
            ("* * * * *", "Every minute"),
            ("0 * * * *", "Every hour, on the hour"),
            ("0 9 * * MON-FRI", "At 09:00, Monday to Friday"),
            ("0 9 * * 1,3", "At 09:00, on Monday and Wednesday"),
            ("*/10 * * * * *", "Every 10 seconds"),
            ("*/15 9-17 * * 1-5", "Every 15 minutes, from 09:00 to 17:59, Monday to Friday"),
            ("0 0 1 * *", "At 00:00, on day 1 of the month"),
            ("0 0 1,15 * 1", "At 00:00, on day 1 and 15 of the month or on Monday"),
            ("0 4 * 1-3 *", "At 04:00, every day, in January to March"),
            ("0 8,12,18 * * *", "At 08:00, 12:00 and 18:00, every day"),
            ("@daily", "At 00:00, every day"),
            ("0 */2 * * *", "Every 2 hours at :00"),
        ] {
            assert_eq!(describe(expr), words, "{expr}");
        }
    }

    #[test]
    fn unknown_shapes_still_say_something_true() {
        assert_eq!(describe("5-10 1 * * *"), "At minute 5-10 of hour 1, every day");
        assert_eq!(describe("not cron"), "not cron");
    }
}
