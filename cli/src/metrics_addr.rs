//! A worker's metrics exporters: `CHRONOS_METRICS_ADDR`, its own `/metrics` (the API and the
//! dashboard serve theirs on their own address); `CHRONOS_METRICS=emf`, CloudWatch
//! embedded-metric-format lines on stdout. With neither, the worker installs no recorder and
//! its metrics cost nothing.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::routing::get;
use chronos_core::config::ConfigError;
use chronos_core::queue::Engine;

/// With `CHRONOS_METRICS_ADDR` set: install the recorder and serve `/metrics` there until `stop`.
pub async fn start(engine: &Engine, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let Some(raw) = chronos_core::config::var("CHRONOS_METRICS_ADDR") else { return Ok(()) };
    let addr: SocketAddr = raw
        .trim()
        .parse()
        .map_err(|_| ConfigError { var: "CHRONOS_METRICS_ADDR", message: format!("{raw:?} is not an address like 127.0.0.1:9090") })?;
    chronos_core::metrics::install();
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("CHRONOS_METRICS_ADDR: cannot listen on {addr}"))?;
    let engine = engine.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let engine = engine.clone();
            async move {
                let body = chronos_core::metrics::render_with_queues(&engine).await;
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
            }
        }),
    );
    tracing::info!(%addr, "worker metrics at /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// `CHRONOS_METRICS=emf`: install the recorder and write every metric as CloudWatch
/// embedded-metric-format lines on stdout each interval, dimension `Service` =
/// `CHRONOS_METRICS_SERVICE` (default `chronos-worker`). Returns whether it runs.
pub fn start_emf(engine: &Engine, stop: impl Future<Output = ()> + Send + 'static) -> Result<bool> {
    let Some(emitter) = chronos_core::metrics::emf::Emitter::from_env("chronos-worker", false)? else { return Ok(false) };
    tokio::spawn(emitter.run(engine.clone(), stop));
    Ok(true)
}
