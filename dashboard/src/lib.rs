//! The operator's dashboard: queue health, live task events, log search with stack traces,
//! and Retry now / Cancel / Redrive, as server-rendered HTML. It reaches the engine only
//! through `chronos_core` (the same use cases as the API) and decides nothing about roles
//! itself: [`chronos_core::access::Role::allows`] does.
//!
//! # Layout
//! - [`app`] / [`DashState`] — the router and what it shares; built once per process. Every
//!   response carries a strict `Content-Security-Policy` (no inline script or style); every
//!   POST must come from this origin and carry the session's CSRF token.
//! - [`session`] — sign-in with an API key, the session cookie, sessions in Postgres (hashed
//!   ids, expiry, the key's live role), CSRF tokens, flash messages.
//! - [`live`] — the outbox reader's events fanned out to browsers over SSE (bounded
//!   broadcast, replay on reconnect) and the server-side counter refresher.
//! - [`pages`] — one module per page: `overview` (`/`), `tasks` (`/tasks`, `/tasks/{id}` and
//!   their actions), `dlq` (`/dlq`, grouped by error, bulk redrive with progress),
//!   `schedules` (`/schedules`), `login`.
//! - [`ui`] — the page shell and shared pieces (badges, times, the SVG throughput chart).
//! - [`cron_words`] — a cron expression in words.
//! - [`assets`] — CSS, JS and icon compiled in, served under content-hashed names.
//! - [`error`] — errors as pages (404, 403, 409, 503).
//! - [`config`] — [`config::DashboardConfig`] from the environment.

pub mod assets;
pub mod config;
pub mod cron_words;
pub mod error;
pub mod live;
pub mod pages;
pub mod session;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chronos_core::Chronos;
use chronos_core::schedule::Scheduler;
use tokio::sync::watch;

use crate::config::DashboardConfig;
use crate::error::PageError;

/// What every handler shares.
#[derive(Clone)]
pub struct DashState(pub Arc<Inner>);

pub struct Inner {
    pub chronos: Chronos,
    pub scheduler: Scheduler,
    pub cfg: DashboardConfig,
    pub live: Arc<live::Live>,
}

impl std::ops::Deref for DashState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl DashState {
    /// Build the state and start the live machinery (outbox reader, counter refresher); it
    /// stops when `stop` turns true. Needs a Tokio runtime.
    pub fn start(chronos: Chronos, scheduler: Scheduler, cfg: DashboardConfig, stop: watch::Receiver<bool>) -> Self {
        chronos_core::metrics::install();
        let live = Arc::new(live::Live::new(stop.clone()));
        live.start(chronos.clone());
        tokio::spawn(pages::jobs::watch(chronos.clone(), live.clone(), stop));
        DashState(Arc::new(Inner { chronos, scheduler, cfg, live }))
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every response; pages are never cached (they show live, private state).
async fn headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !is_asset && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A POST from another site is refused before any handler runs (browsers send `Origin` and
/// `Sec-Fetch-Site` with every form post). The CSRF token is checked as well, by the handler.
async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let h = req.headers();
        let cross_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site" || v == "same-site");
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let foreign_origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|o| {
            let authority = o.split_once("://").map(|(_, a)| a);
            o == "null" || authority != host
        });
        if cross_site || foreign_origin {
            return PageError::Forbidden("This form was sent from another site.".into()).into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> PageError {
    PageError::NotFound("There is no page at this address.".into())
}

async fn healthz(State(state): State<DashState>) -> Response {
    let h = state.chronos.health().await;
    let ok = h.redis.is_ok() && h.postgres.is_ok();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "redis": h.redis.err().unwrap_or_else(|| "ok".into()),
        "postgres": h.postgres.err().unwrap_or_else(|| "ok".into()),
        "live_watchers": state.live.watchers(),
    });
    let code = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

/// Prometheus text format: the process's recorder (`chronos_core::metrics`), with every queue's
/// depth and ages read live. Unauthenticated, like the API's.
async fn metrics(State(state): State<DashState>) -> Response {
    let body = chronos_core::metrics::render_with_queues(&state.chronos.engine).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The whole dashboard.
pub fn app(state: DashState) -> Router {
    use pages::*;
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/", get(overview::page))
        .route("/queues/{queue}/pause", post(overview::pause))
        .route("/queues/{queue}/resume", post(overview::resume))
        .route("/queues/{queue}/limits", post(overview::limits))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::detail))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/redrive", post(tasks::redrive))
        .route("/dlq", get(dlq::page))
        .route("/dlq/redrive", post(dlq::redrive))
        .route("/jobs", get(jobs::page))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{id}/pause", post(schedules::pause))
        .route("/schedules/{id}/resume", post(schedules::resume))
        .route("/schedules/{id}/trigger", post(schedules::trigger))
        .route("/events", get(live::events))
        .route("/assets/{name}", get(assets::serve))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(same_origin))
        .layer(middleware::from_fn(headers))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .with_state(state)
}

/// Serve [`app`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: DashState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
