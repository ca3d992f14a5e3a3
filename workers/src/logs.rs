//! Capture of a handler's own log lines during an attempt, stored with the attempt.
//!
//! [`CaptureLayer`] is a `tracing` layer: an event emitted while a handler runs (the handler's
//! task has the attempt's [`Capture`] in a task-local) is formatted into one line and kept in
//! that attempt's bounded buffer; the recorder sends the buffer with the attempt's outcome, and
//! the audit writer stores it in `task_attempts.logs`. An event anywhere else costs one failed
//! task-local lookup and nothing more. The buffer keeps the last [`MAX_LINES`] lines and at most
//! [`MAX_BYTES`]; what it dropped is said on its first line. It allocates only when the handler
//! logs. Only events the process's filter (`CHRONOS_LOG`) lets through are seen, and a task the
//! handler spawns itself is outside the capture (its events are not the attempt's).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many of an attempt's last lines are kept.
pub const MAX_LINES: usize = 200;
/// How many bytes of an attempt's last lines are kept (a longer single line is cut).
pub const MAX_BYTES: usize = 64 * 1024;

/// The layer to add to the process's subscriber; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        crate::runtime::with_capture(|c| c.push(event));
    }
}

/// One attempt's captured lines.
#[derive(Debug, Default)]
pub struct Capture {
    inner: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl Capture {
    pub const fn new() -> Self {
        Capture { inner: Mutex::new(Lines { lines: VecDeque::new(), bytes: 0, dropped: 0 }) }
    }

    fn push(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = String::with_capacity(128);
        let _ = write!(line, "{} {:>5} {}:", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"), meta.level(), meta.target());
        event.record(&mut LineVisitor(&mut line));
        self.push_line(line);
    }

    /// Keep `line`, dropping the oldest lines beyond the bounds.
    fn push_line(&self, mut line: String) {
        // A line and its newline fit the bound, so the newest line is always kept.
        if line.len() >= MAX_BYTES {
            let mut cut = MAX_BYTES - 1 - CUT_MARK.len();
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(CUT_MARK);
        }
        let Ok(mut l) = self.inner.lock() else { return };
        l.bytes += line.len() + 1;
        l.lines.push_back(line);
        while l.lines.len() > MAX_LINES || (l.bytes > MAX_BYTES && l.lines.len() > 1) {
            let Some(old) = l.lines.pop_front() else { break };
            l.bytes -= old.len() + 1;
            l.dropped += 1;
        }
    }

    /// The captured text, `None` when the handler logged nothing. Empties the buffer.
    pub fn take(&self) -> Option<String> {
        let mut l = self.inner.lock().ok()?;
        if l.lines.is_empty() && l.dropped == 0 {
            return None;
        }
        let mut out = String::with_capacity(l.bytes + 128);
        if l.dropped > 0 {
            let _ = writeln!(
                out,
                "[{} earlier lines not kept: the capture keeps the last {MAX_LINES} lines, {} KiB]",
                l.dropped,
                MAX_BYTES / 1024
            );
        }
        for line in l.lines.drain(..) {
            out.push_str(&line);
            out.push('\n');
        }
        out.pop();
        *l = Lines::default();
        Some(out)
    }
}

const CUT_MARK: &str = " …[line cut]";

/// Writes ` message key=value …` after the line's prefix.
struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_keeps_the_last_lines_and_says_how_many_it_dropped() {
        let c = Capture::new();
        for i in 0..MAX_LINES + 5 {
            c.push_line(format!("line {i}"));
        }
        let text = c.take().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert!(lines[0].starts_with("[5 earlier lines not kept"), "{}", lines[0]);
        assert_eq!(lines[1], "line 5");
        assert_eq!(*lines.last().unwrap(), format!("line {}", MAX_LINES + 4));
        assert_eq!(c.take(), None, "taking empties the buffer");
    }

    #[test]
    fn the_capture_stays_within_its_byte_bound() {
        let c = Capture::new();
        for _ in 0..20 {
            c.push_line("x".repeat(10_000));
        }
        c.push_line("é".repeat(MAX_BYTES));
        let text = c.take().unwrap();
        assert!(text.len() <= MAX_BYTES + 200, "{}", text.len());
        assert!(text.starts_with("[20 earlier lines not kept"), "{}", text.lines().next().unwrap());
        assert!(text.lines().nth(1).unwrap().starts_with('é'));
        assert!(text.ends_with(CUT_MARK));
    }

    #[test]
    fn nothing_logged_is_nothing_stored() {
        assert_eq!(Capture::new().take(), None);
    }
}
