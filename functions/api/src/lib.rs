//! Chronos REST API: one axum [`app`] that runs under `lambda_http` on AWS (API Gateway HTTP
//! API) and under `axum::serve` locally (`chronos api`).
//!
//! # Layout
//! - [`app`] / [`AppState`] — the router and what it shares; built once per process.
//! - [`auth`] — the one place that authenticates a bearer key and checks the route's permission.
//! - [`routes`] — handlers: `tasks`, `schedules`, `queues`, `dlq`, `jobs` (bulk operations), `keys`, `system` (health,
//!   metrics, spec).
//! - [`views`] — request and response bodies with their OpenAPI schemas.
//! - [`json`] — strict JSON/query parsing that names the field at fault.
//! - [`error`] — `application/problem+json` errors with stable types.
//! - [`openapi`] — the spec, generated from the handlers so it cannot drift.
//! - [`config`] — [`config::ApiConfig`] from the environment.

pub mod auth;
pub mod config;
pub mod error;
pub mod json;
pub mod openapi;
pub mod routes;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, patch, post};
use chronos_core::Chronos;
use chronos_core::config::Secret;
use chronos_core::dlq::Dlq;
use chronos_core::schedule::Scheduler;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub chronos: Chronos,
    /// Schedules over the same stores; creating, changing or resuming one plans its
    /// occurrences up to its horizon at once.
    pub scheduler: Scheduler,
    /// `CHRONOS_ADMIN_KEY`: accepted as an admin key (bootstrap).
    pub admin_key: Option<Secret>,
    /// For removing redriven tasks' messages; `None` when SQS was unreachable at start-up.
    pub dlq: Option<Dlq>,
    pub metrics: Metrics,
    /// API keys looked up recently, for while Postgres is down.
    pub keys: auth::KeyCache,
}

#[derive(Default)]
pub struct Metrics {
    pub requests: [AtomicU64; 5],
    pub tasks_created: AtomicU64,
}

impl AppState {
    /// `schedule_horizon`: how far ahead a schedule is planned when it is created, changed or
    /// resumed (`CHRONOS_SCHEDULE_HORIZON_S`, as the tick uses).
    pub fn new(chronos: Chronos, admin_key: Option<Secret>, dlq: Option<Dlq>, schedule_horizon: Duration) -> Self {
        // `/metrics` renders the process's recorder; installing it is idempotent.
        chronos_core::metrics::install();
        let chronos = chronos.with_dlq(dlq.clone());
        let scheduler = Scheduler::new(chronos.clone(), schedule_horizon);
        AppState(Arc::new(Inner { chronos, scheduler, admin_key, dlq, metrics: Metrics::default(), keys: Default::default() }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Request headers, summed over names and values, the API accepts (API Gateway's HTTP API
/// takes 10 KB); beyond it a `431` problem document says so.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuse oversized headers with a problem document (the server in front must read them in
/// first: `chronos api` buffers up to a few MiB of headers, hyper's own bare `431` is beyond).
async fn limit_headers(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if size > MAX_HEADER_BYTES {
        return error::ApiError::headers_too_large(format!(
            "the request headers are {size} bytes; at most {MAX_HEADER_BYTES} bytes are accepted"
        ))
        .into_response();
    }
    next.run(req).await
}

/// The whole API. `max_body_bytes` bounds every request body (413 beyond it).
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    use routes::*;
    let v1 = Router::new()
        .route("/tasks", post(tasks::create).get(tasks::list))
        .route("/tasks/batch", post(tasks::create_batch))
        .route("/tasks/{id}", get(tasks::get_one))
        .route("/tasks/{id}/attempts", get(tasks::attempts))
        .route("/tasks/{id}/dependencies", get(tasks::dependencies))
        .route("/flows", post(flows::create))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/schedules", post(schedules::create).get(schedules::list))
        // A static segment wins over `{id}` in axum's router, so `preview` is never taken for an id.
        .route("/schedules/preview", get(schedules::preview))
        .route("/schedules/{id}", get(schedules::get_one).patch(schedules::update).delete(schedules::delete))
        .route("/schedules/{id}/pause", post(schedules::pause))
        .route("/schedules/{id}/resume", post(schedules::resume))
        .route("/schedules/{id}/trigger", post(schedules::trigger))
        .route("/queues", get(queues::list))
        .route("/queues/{queue}", patch(queues::update))
        .route("/queues/{queue}/pause", post(queues::pause))
        .route("/queues/{queue}/resume", post(queues::resume))
        .route("/dlq", get(dlq::list))
        .route("/dlq/redrive", post(dlq::redrive_all))
        .route("/dlq/{id}/redrive", post(dlq::redrive_one))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get_one))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{id}", delete(keys::revoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authorize));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), system::count_requests))
        .layer(middleware::from_fn(system::trace_requests))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(limit_headers))
        .with_state(state)
}
