//! Unauthenticated endpoints: health, Prometheus metrics, the OpenAPI spec; and the
//! problem+json answers for unknown paths and methods.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};

use crate::AppState;
use crate::error::ApiError;
use crate::views::Health;

/// Redis and Postgres both answer: 200; otherwise 503 naming the one that does not.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, body = Health), (status = 503, description = "A store is unavailable", body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let h = state.chronos.health().await;
    let show = |r: Result<(), String>| r.map(|()| "ok".to_owned()).unwrap_or_else(|e| format!("unavailable: {e}"));
    let (redis, postgres) = (show(h.redis), show(h.postgres));
    let ok = redis == "ok" && postgres == "ok";
    let body = Health { status: if ok { "ok" } else { "unavailable" }.into(), redis, postgres };
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body)).into_response()
}

/// Prometheus text format, rendered by the process's one recorder (`chronos_core::metrics`):
/// this API's request and submission counts, every queue's depth and ages read live, and, in a
/// process that also runs workers or services (`chronos dev`), theirs.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    publish_counters(&state);
    if let Ok(counts) = state.chronos.live_counts().await {
        type Gauge = (&'static str, fn(&chronos_core::queue::QueueCounts) -> u64);
        let gauges: [Gauge; 4] = [
            ("chronos_queue_waiting", |c| c.waiting),
            ("chronos_queue_scheduled", |c| c.delayed),
            ("chronos_queue_retrying", |c| c.retrying),
            ("chronos_dlq_pending", |c| c.dlq_pending),
        ];
        for (q, c) in &counts {
            for (name, f) in gauges {
                gauge!(name, "queue" => q.clone()).set(f(c) as f64);
            }
        }
    }
    let body = chronos_core::metrics::render_with_queues(&state.chronos.engine).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Copy this process's request counters into the metrics recorder (they are plain atomics on
/// the request path): before `/metrics` renders, and before the Lambda function's EMF lines.
pub fn publish_counters(state: &AppState) {
    let m = &state.metrics;
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
        counter!("chronos_http_requests_total", "status" => class).absolute(m.requests[i].load(Ordering::Relaxed));
    }
    counter!("chronos_tasks_created_total").absolute(m.tasks_created.load(Ordering::Relaxed));
    counter!("chronos_task_writes_total").absolute(state.chronos.writes());
}

/// The OpenAPI 3.1 description of this API, generated from the handlers.
pub async fn openapi() -> Response {
    axum::Json(crate::openapi::spec()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// With traces on (see `chronos_core::telemetry`), every request is a server span named after
/// its route (`POST /v1/tasks`) that continues the caller's `traceparent`; the handlers' own
/// spans (`chronos.enqueue`) are its children. With traces off this is one atomic load.
pub async fn trace_requests(req: Request, next: Next) -> Response {
    use chronos_core::telemetry;
    use tracing::Instrument;
    if !telemetry::enabled() {
        return next.run(req).await;
    }
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        parent: None,
        "http.request",
        otel.name = format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", i64::from(res.status().as_u16()));
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    res
}

pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let class = (res.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.metrics.requests[class].fetch_add(1, Ordering::Relaxed);
    res
}
