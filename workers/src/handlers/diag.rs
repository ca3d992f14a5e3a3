//! Diagnostic handlers. `CHRONOS_DIAGNOSTIC_HANDLERS=0` leaves them out of a worker.

use std::time::Duration;

use chronos_core::builtin::{FailPayload, SleepPayload};

use crate::handler::{Handler, HandlerError, Task, TaskContext};

/// Succeeds at once.
pub struct Noop;

impl Handler for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }
    async fn handle(&self, _ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Sleeps `{ms}` and returns `{"slept_ms": ms}`; returns early as cancelled when the task is cancelled.
pub struct Sleep;

impl Handler for Sleep {
    fn kind(&self) -> &'static str {
        "sleep"
    }
    async fn handle(&self, ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: SleepPayload = task.payload()?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(p.ms)) => ctx.set_result(&serde_json::json!({ "slept_ms": p.ms })),
            _ = ctx.cancelled() => Err(HandlerError::Cancelled),
        }
    }
}

/// Fails its first `times` attempts (permanently if `permanent`), then succeeds and returns
/// `{"succeeded_on_attempt": n}`.
pub struct Fail;

impl Handler for Fail {
    fn kind(&self) -> &'static str {
        "fail"
    }
    async fn handle(&self, ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: FailPayload = task.payload()?;
        if ctx.attempt > p.times {
            return ctx.set_result(&serde_json::json!({ "succeeded_on_attempt": ctx.attempt }));
        }
        let message = p.message.unwrap_or_else(|| format!("fail: attempt {} of the first {} fails by request", ctx.attempt, p.times));
        // Logged before failing, so anyone can see a handler's lines stored with its attempt.
        tracing::warn!("{message}");
        let detail = format!("at chronos_workers::handlers::diag::Fail::handle (attempt {})\n", ctx.attempt);
        Err(if p.permanent { HandlerError::Permanent { message, detail } } else { HandlerError::Retryable { message, detail } })
    }
}

/// A flow's parent: returns the tasks it waited for, `{"children": [{"id", "name", "status",
/// "result"}, ...]}` (see [`TaskContext::children_results`]); any payload.
pub struct Gather;

impl Handler for Gather {
    fn kind(&self) -> &'static str {
        "gather"
    }
    async fn handle(&self, ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        let children: Vec<serde_json::Value> = ctx
            .children_results()
            .await?
            .into_iter()
            .map(|d| serde_json::json!({ "id": d.id, "name": d.name, "status": d.status, "result": d.result }))
            .collect();
        ctx.set_result(&serde_json::json!({ "children": children }))
    }
}
