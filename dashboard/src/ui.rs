//! The page shell and the small pieces every page uses: status badges, times, numbers, the
//! throughput chart (server-side SVG). Everything goes through maud, which escapes every
//! spliced value; nothing here writes raw HTML from data.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use chronos_core::access::Permission;
use chronos_core::history::Minute;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::assets;
use crate::session::{Flash, Session};

/// Which top-level page is showing (for the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tasks,
    Dlq,
    Schedules,
    Jobs,
}

const LOGO: &str = r#"<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><circle cx="12" cy="12" r="9.5" fill="none" stroke="currentColor" stroke-width="2"/><path d="M12 6.5V12l3.8 2.3" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/></svg>"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Chronos" }
            link rel="icon" type="image/svg+xml" href=(assets::FAVICON.path());
            link rel="stylesheet" href=(assets::CSS.path());
            script src=(assets::JS.path()) {}
        }
    }
}

/// A whole page for a signed-in operator. A shown flash message is cleared by the response.
/// `since`: the live stream's position when the page's data was read ([`crate::live::Live::cursor`]),
/// so the page's stream starts from there and misses nothing that happened meanwhile.
pub fn page(s: &Session, nav: Nav, title: &str, flash: &Flash, since: &str, body: Markup) -> Response {
    let item = |n: Nav, href: &str, label: &str, perm: Permission| {
        html! {
            @if s.may(perm) {
                a href=(href) class=[(n == nav).then_some("active")] { (label)
                    @if n == Nav::Dlq { span.pill.hidden data-total="dead" {} }
                }
            }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-role=(s.caller.role.as_str()) data-since=(since) {
                header.topbar {
                    a.brand href="/" { (PreEscaped(LOGO)) span { "Chronos" } }
                    nav.mainnav {
                        (item(Nav::Overview, "/", "Overview", Permission::QueuesRead))
                        (item(Nav::Tasks, "/tasks", "Tasks", Permission::TasksRead))
                        (item(Nav::Dlq, "/dlq", "Dead letters", Permission::DlqRead))
                        (item(Nav::Schedules, "/schedules", "Schedules", Permission::SchedulesRead))
                        (item(Nav::Jobs, "/jobs", "Jobs", Permission::TasksRead))
                    }
                    form.topsearch action="/tasks" method="get" role="search" {
                        input type="search" name="q" placeholder="Search tasks, errors, payloads…" aria-label="Search tasks";
                    }
                    span #live.live data-state="connecting" title="Live updates" { i {} span.label { "Connecting" } }
                    button #theme.iconbtn type="button" title="Switch light / dark" aria-label="Switch light / dark" { "◐" }
                    span.who title=(format!("Signed in as {} ({})", s.who(), s.caller.role)) {
                        (s.who()) " " span.role { (s.caller.role.as_str()) }
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button.linkbtn type="submit" { "Sign out" }
                    }
                }
                main {
                    @if let Some((ok, text)) = &flash.0 {
                        div.flash.ok[*ok].err[!*ok] role="status" { (text) }
                    }
                    (body)
                }
            }
        }
    };
    let mut r = markup.into_response();
    if flash.0.is_some() {
        r.headers_mut().append(header::SET_COOKIE, Flash::clear());
    }
    r
}

/// A page with no session (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main.narrow {
                    a.brand.big href="/" { (PreEscaped(LOGO)) span { "Chronos" } }
                    (body)
                }
            }
        }
    }
}

pub fn error_page(code: u16, title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            section.card.errorcard {
                p.code { (code) }
                h1 { (title) }
                p { (message) }
                p.actions { a.btn href="/" { "Back to the overview" } " " a.btn.ghost href="/tasks" { "Tasks" } }
            }
        },
    )
}

pub fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge s-{status}")) data-status="" { (status) } }
}

/// An instant: absolute in UTC (the title), relative in the text once the script runs.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) data-rel="" title=(t.format("%Y-%m-%d %H:%M:%S%.3f UTC")) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// `1234567` → `1,234,567`.
pub fn num(n: impl Into<i128>) -> String {
    let s = n.into().to_string();
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// `text` cut to `max` characters, an ellipsis marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `1 dead task`, `2,000 dead tasks`.
pub fn count(n: i64, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{} {one}s", num(n)) }
}

/// A duration for people: `850 ms`, `12.4 s`, `3 min 05 s`, `2 h 10 min`, `3 d 4 h`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        3_600_000..86_400_000 => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
        _ => format!("{} d {} h", ms / 86_400_000, (ms / 3_600_000) % 24),
    }
}

/// Percent-encode everything but unreserved characters (for query strings and paths).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment for a queue name. `.` and `..` are refused as queue names everywhere, so
/// encoding suffices; they are encoded anyway so that no link could ever resolve elsewhere.
pub fn seg(s: &str) -> String {
    match s {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => url_encode(s),
    }
}

/// Completed and failed attempts per minute, as bars (failed stacked on completed). The SVG
/// stretches to the card's width, so its labels are HTML beside it (stretched text is ugly).
pub fn throughput_chart(minutes: &[Minute]) -> Markup {
    let (w, h) = (720.0_f64, 150.0_f64);
    let max = minutes.iter().map(|m| m.completed + m.failed).max().unwrap_or(0).max(1);
    // A round top for the axis: 1, 2 or 5 times a power of ten.
    let top = {
        let mut p = 1i64;
        loop {
            if let Some(t) = [p, 2 * p, 5 * p].into_iter().find(|t| *t >= max) {
                break t;
            }
            p *= 10;
        }
    };
    let n = minutes.len().max(1) as f64;
    let bw = w / n;
    let y = |v: i64| h * (1.0 - v as f64 / top as f64);
    let total: i64 = minutes.iter().map(|m| m.completed).sum();
    let failed: i64 = minutes.iter().map(|m| m.failed).sum();
    html! {
        div.chart {
            div.legend {
                span.key.ok {} "Completed " strong { (num(total)) }
                span.key.bad {} "Failed " strong { (num(failed)) }
                span.muted { "last " (minutes.len()) " minutes" }
            }
            div.plot {
                div.yaxis { span { (num(top)) } span { (num(top / 2)) } span { "0" } }
                svg viewBox=(format!("0 0 {w} {h}")) preserveAspectRatio="none" role="img" aria-label="Attempts finished per minute" {
                    @for frac in [0.0, 0.5, 1.0] {
                        line.grid x1="0" x2=(w) y1=(h * frac) y2=(h * frac) vector-effect="non-scaling-stroke" {}
                    }
                    @for (i, m) in minutes.iter().enumerate() {
                        @let x = i as f64 * bw + 1.0;
                        @let bar_w = (bw - 2.0).max(1.0);
                        g {
                            title { (m.at.format("%H:%M")) " UTC — " (m.completed) " completed, " (m.failed) " failed" }
                            rect.hit x=(x) y="0" width=(bar_w) height=(h) {}
                            @if m.completed > 0 {
                                rect.ok x=(x) y=(y(m.completed)) width=(bar_w) height=(h - y(m.completed)) {}
                            }
                            @if m.failed > 0 {
                                rect.bad x=(x) y=(y(m.completed + m.failed)) width=(bar_w) height=(y(m.completed) - y(m.completed + m.failed)) {}
                            }
                        }
                    }
                }
            }
            @if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
                div.xaxis { span { (first.at.format("%H:%M")) } span { (minutes[minutes.len() / 2].at.format("%H:%M")) } span { (last.at.format("%H:%M")) " UTC" } }
            }
        }
    }
}

/// An id short enough for a table: its last 8 hex digits. Ids are UUIDv7, whose leading digits
/// are the creation time, so tasks made together (a batch, a flow) share them; the tail is random.
pub fn short_id(id: uuid::Uuid) -> String {
    let s = id.simple().to_string();
    s[s.len() - 8..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_like_a_person_wrote_them() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(-1000), "-1,000");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_400), "12.4 s");
        assert_eq!(duration_ms(185_000), "3 min 05 s");
        assert_eq!(duration_ms(7_800_000), "2 h 10 min");
    }

    #[test]
    fn path_segments_never_resolve_to_another_page() {
        assert_eq!(seg(".."), "%2E%2E");
        assert_eq!(seg("a/b"), "a%2Fb");
        assert_eq!(url_encode("q=1&x"), "q%3D1%26x");
    }
}
