//! The process's `tracing` subscriber: readable text at a terminal or in a local file, JSON
//! lines (one object per event, the attempt's task id, queue, name, attempt and worker in its
//! `span`) when `CHRONOS_LOG_FORMAT=json` — the default where CloudWatch reads the output
//! (Lambda, ECS). Every process also carries the worker's log capture, which costs nothing
//! outside an attempt. Traces (OpenTelemetry, OTLP) are one more layer, present only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const DEFAULT_FILTER: &str = "info,sqlx=warn,aws=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// `CHRONOS_LOG_FORMAT`: `json` or `text`; unset, JSON on Lambda and ECS, text elsewhere.
fn format() -> Result<Format, String> {
    match std::env::var("CHRONOS_LOG_FORMAT").ok().as_deref().map(str::trim) {
        Some("json") => Ok(Format::Json),
        Some("text") => Ok(Format::Text),
        None | Some("") => {
            let managed = ["AWS_LAMBDA_FUNCTION_NAME", "ECS_CONTAINER_METADATA_URI_V4", "ECS_CONTAINER_METADATA_URI"]
                .iter()
                .any(|v| std::env::var_os(v).is_some());
            Ok(if managed { Format::Json } else { Format::Text })
        }
        Some(other) => Err(format!("CHRONOS_LOG_FORMAT: {other:?} is neither json nor text")),
    }
}

/// Install the subscriber (logs to stderr, filtered by `CHRONOS_LOG`), with the OpenTelemetry
/// exporter when the environment asks for traces (see `otel.rs`; `service` names this process
/// there unless `OTEL_SERVICE_NAME` does).
pub fn init(service: &str) -> Result<crate::otel::Traces, String> {
    let filter = EnvFilter::try_from_env("CHRONOS_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into());
    let (otel, traces) = crate::otel::layer(service)?;
    let registry = tracing_subscriber::registry().with(filter).with(chronos_workers::logs::CaptureLayer).with(otel);
    match format()? {
        Format::Json => registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).init(),
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colour codes only for a person at a terminal; a file or a pipe gets plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    Ok(traces)
}
