//! OpenTelemetry traces, exported with OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not at all otherwise.
//!
//! The standard variables apply: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default,
//! or `http/json`; `grpc` is refused, the binary carries no gRPC stack), `OTEL_SERVICE_NAME`
//! (default `chronos-api`, `chronos-worker`, … after the command), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings, `OTEL_SDK_DISABLED=true`. Only spans
//! of Chronos's own targets are exported (`chronos*`), never a library's.
//!
//! The SDK's batch processor exports from a thread of its own that is not a Tokio worker, so
//! the HTTP client here hands each request to the process's runtime and waits for it there.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// How long one export request may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The installed exporter; [`Traces::shutdown`] flushes what is still buffered.
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    /// Export the spans still buffered and stop the exporter (at most a few seconds).
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            // The flush waits on the exporter's thread, which needs a free runtime worker.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                    eprintln!("chronos: exporting the last spans failed: {e}");
                }
            })
            .await;
        }
    }
}

/// Whether the environment asks for traces.
fn wanted() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracing layer that exports Chronos's spans, when the environment asks for it (see the
/// module documentation), with the handle that flushes it at exit. Must run inside the Tokio
/// runtime that will carry the exports.
pub fn layer<S>(service: &str) -> Result<(Option<impl Layer<S>>, Traces), String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !wanted() {
        return Ok((None, Traces(None)));
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(p) = std::env::var(var)
            && !matches!(p.trim(), "" | "http/protobuf" | "http/json")
        {
            return Err(format!("{var}: {p:?} is not supported; use http/protobuf (the default) or http/json"));
        }
    }
    let http = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build().map_err(|e| format!("the OTLP HTTP client: {e}"))?;
    let client = RuntimeClient { http, rt: tokio::runtime::Handle::current() };
    let exporter =
        SpanExporter::builder().with_http().with_http_client(client).build().map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("chronos");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter_fn(|meta| meta.target().starts_with("chronos")));
    chronos_core::telemetry::set_enabled();
    Ok((Some(layer), Traces(Some(provider))))
}

/// The exporter's HTTP client: reqwest on the process's Tokio runtime.
struct RuntimeClient {
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
}

impl fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RuntimeClient")
    }
}

impl HttpClient for RuntimeClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let http = self.http.clone();
        let sent = self.rt.spawn(async move {
            let (parts, body) = request.into_parts();
            let res = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let mut out = Response::builder().status(res.status());
            if let Some(h) = out.headers_mut() {
                *h = res.headers().clone();
            }
            let body = res.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        });
        Box::pin(async move { sent.await? })
    }
}
