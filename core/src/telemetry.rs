//! Traces: the W3C trace context a task carries from its producer to its worker, and the
//! OpenTelemetry hooks of the processes that touch it.
//!
//! A producer's `traceparent` (on `POST /v1/tasks`) is stored with the task (Redis field `tc`,
//! Postgres column `trace_context`), so the worker that claims it continues the producer's
//! trace: `POST /v1/tasks` → `chronos.enqueue` → `chronos.task` (claim, run as the `attempt`
//! span, ack) in one trace. The exporter is installed by the binary
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`); until then [`enabled`] is false, no span is made for
//! tracing's sake and a task only keeps the `traceparent` it was given: one atomic load per
//! request and per attempt is the whole cost when traces are off.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (set once its exporter is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called by the binary once its OpenTelemetry layer is installed.
pub fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The tracing target of every span made for traces; the exporter keeps only `chronos*`
/// targets, so a library's spans (sqlx, hyper) never leave the process.
pub const TARGET: &str = "chronos::trace";

/// A W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) parsed; `None`
/// for anything else, including the all-zero ids the specification declares invalid. A
/// version above 00 is read as 00, as the specification asks, when it has at least 00's fields.
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let s = s.trim();
    let mut parts = s.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

/// The `traceparent` of a span context, or `None` when it is not valid.
pub fn traceparent_of(cx: &SpanContext) -> Option<String> {
    cx.is_valid().then(|| format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()))
}

/// Make `span` a child of the trace a stored or received `traceparent` names (nothing when
/// there is none, or it is not valid: the span then starts a trace of its own).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
    }
}

/// The `traceparent` naming `span` itself, for what it starts elsewhere (the task a request
/// enqueues); `None` when traces are off or the span is not exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&span.context().span().span_context().clone())
}

/// The trace id of a stored `traceparent`, as the API shows it (`trace_id`).
pub fn trace_id(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|cx| cx.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_parses_and_formats_back_and_malformed_ones_are_refused() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp).unwrap();
        assert_eq!(traceparent_of(&cx).as_deref(), Some(tp));
        assert_eq!(trace_id(tp).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(cx.is_sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} was accepted");
        }
        // A later version with more fields is read as version 00.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }
}
