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

/// How often `CHRONOS_METRICS=emf` writes its lines (`CHRONOS_METRICS_INTERVAL_S`, 1–3600).
const EMF_INTERVAL_S: u64 = 60;

/// `CHRONOS_METRICS=emf`: install the recorder and write every metric as CloudWatch
/// embedded-metric-format lines on stdout each interval, dimension `Service` =
/// `CHRONOS_METRICS_SERVICE` (default `chronos-worker`). Returns whether it runs.
pub fn start_emf(engine: &Engine, stop: impl Future<Output = ()> + Send + 'static) -> Result<bool> {
    match chronos_core::config::var("CHRONOS_METRICS").as_deref().map(str::trim) {
        None | Some("prometheus") => return Ok(false),
        Some("emf") => {}
        Some(other) => {
            return Err(ConfigError { var: "CHRONOS_METRICS", message: format!("{other:?} is neither emf nor prometheus") }.into());
        }
    }
    let every = chronos_core::config::parse_var("CHRONOS_METRICS_INTERVAL_S", EMF_INTERVAL_S, "a number of seconds from 1 to 3600", |v| {
        v.parse().ok().filter(|s| (1..=3600).contains(s))
    })?;
    let service = chronos_core::config::var("CHRONOS_METRICS_SERVICE").unwrap_or_else(|| "chronos-worker".into());
    chronos_core::metrics::install();
    let engine = engine.clone();
    tokio::spawn(async move {
        use std::io::Write;
        let mut deltas = chronos_core::metrics::emf::Deltas::default();
        let mut timer = tokio::time::interval(std::time::Duration::from_secs(every));
        timer.tick().await;
        tokio::pin!(stop);
        loop {
            // The last period is written on the way out too: a stopping worker's final counts.
            let stopping = tokio::select! {
                _ = timer.tick() => false,
                _ = &mut stop => true,
            };
            let text = chronos_core::metrics::render_with_queues(&engine).await;
            let at = chrono::Utc::now().timestamp_millis();
            let mut out = std::io::stdout().lock();
            for l in chronos_core::metrics::emf::lines(&text, &mut deltas, &service, at) {
                let _ = writeln!(out, "{l}");
            }
            let _ = out.flush();
            if stopping {
                return;
            }
        }
    });
    Ok(true)
}
