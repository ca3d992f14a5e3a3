//! Chronos worker runtime.
//!
//! # Layout
//! - [`handler`] — the [`Handler`] trait, [`HandlerError`] (`Retryable` / `Permanent` / `Cancelled`),
//!   [`TaskContext`] (attempt, idempotency key, cancellation).
//! - [`registry`] — task name → handler; refuses two handlers for one kind.
//! - [`runtime`] — [`Worker`]: `fetch` (the loop: claim batches, block when idle, wake at the
//!   next due time, back off), `attempt` (one attempt → [`runtime::Outcome`]: timeout, panic
//!   isolation, cancellation), `recorder` (writes outcomes: batched acks, retried failures),
//!   `lease` (heartbeats, the shutdown hand-back). Background services (audit writer, DLQ
//!   forwarder, reaper, rebuild) come from `chronos_core::services`, chosen per process.
//! - [`handlers`] — built-ins: `http`, `email`, and the diagnostic `noop`, `sleep`, `fail`.
//! - [`config`] — [`WorkerConfig`] from the environment.
//! - [`queues`] — which queues a worker serves (`*`, weights, strict order) and the order of
//!   each claim round.
//! - [`logs`] — [`logs::CaptureLayer`]: a handler's log lines during an attempt, kept (bounded)
//!   and stored with the attempt.

pub mod config;
pub mod handler;
pub mod handlers;
pub mod logs;
pub mod queues;
pub mod registry;
pub mod runtime;

pub use config::WorkerConfig;
pub use handler::{Handler, HandlerError, Task, TaskContext};
pub use queues::QueueSpec;
pub use registry::{DuplicateKind, Registry};
pub use runtime::{Worker, WorkerStats};

/// The registry a stock worker runs: diagnostic handlers (unless turned off), `http`, and
/// `email` when an SMTP server is configured.
pub fn builtin_registry(cfg: &WorkerConfig) -> Result<Registry, String> {
    let mut r = Registry::new();
    let dup = |e: DuplicateKind| e.to_string();
    if cfg.diagnostic_handlers {
        r.register(handlers::Noop).map_err(dup)?;
        r.register(handlers::Sleep).map_err(dup)?;
        r.register(handlers::Fail).map_err(dup)?;
        r.register(handlers::Gather).map_err(dup)?;
    }
    r.register(handlers::HttpHandler::new(cfg.webhook_secret.clone())).map_err(dup)?;
    if let Some(url) = &cfg.smtp_url {
        r.register(handlers::EmailHandler::new(url, cfg.email_from.clone())?).map_err(dup)?;
    }
    Ok(r)
}
