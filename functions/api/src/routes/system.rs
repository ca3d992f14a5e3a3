//! Unauthenticated endpoints: health, Prometheus metrics, the OpenAPI spec; and the
//! problem+json answers for unknown paths and methods.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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

/// Prometheus text format: request counts, tasks created, and per-queue depths read live.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    out.push_str("# HELP chronos_http_requests_total API requests by status class.\n# TYPE chronos_http_requests_total counter\n");
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(out, "chronos_http_requests_total{{status=\"{class}\"}} {}", m.requests[i].load(Ordering::Relaxed));
    }
    out.push_str("# HELP chronos_tasks_created_total Tasks accepted by this API process.\n# TYPE chronos_tasks_created_total counter\n");
    let _ = writeln!(out, "chronos_tasks_created_total {}", m.tasks_created.load(Ordering::Relaxed));
    out.push_str(
        "# HELP chronos_task_writes_total Postgres transactions (each with one Redis round trip) that accepted tasks; concurrent submissions share one.\n# TYPE chronos_task_writes_total counter\n",
    );
    let _ = writeln!(out, "chronos_task_writes_total {}", state.chronos.writes());
    if let Ok(counts) = state.chronos.live_counts().await {
        type Gauge = (&'static str, &'static str, fn(&chronos_core::queue::QueueCounts) -> u64);
        let gauges: [Gauge; 7] = [
            ("chronos_queue_waiting", "Tasks ready to run.", |c| c.waiting),
            ("chronos_queue_scheduled", "Tasks scheduled for later.", |c| c.delayed),
            ("chronos_queue_retrying", "Tasks waiting for a retry.", |c| c.retrying),
            ("chronos_queue_running", "Tasks leased to workers.", |c| c.running),
            ("chronos_queue_dead", "Dead tasks kept in Redis.", |c| c.dead),
            ("chronos_outbox_length", "Transitions not yet written to Postgres.", |c| c.outbox),
            ("chronos_dlq_pending", "Dead letters not yet sent to SQS.", |c| c.dlq_pending),
        ];
        for (name, help, f) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (q, c) in &counts {
                let _ = writeln!(out, "{name}{{queue=\"{q}\"}} {}", f(c));
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
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

pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let class = (res.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.metrics.requests[class].fetch_add(1, Ordering::Relaxed);
    res
}
