//! The handler contract: a handler names its kind and runs one attempt of a task. It says
//! whether a failure is worth retrying; it can override its timeout and next retry delay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chronos_core::{ClaimedTask, TaskId};
use tokio_util::sync::CancellationToken;

use crate::runtime::AttemptState;

/// Why an attempt failed. `Retryable` uses the task's backoff (or [`Handler::next_retry`]);
/// `Permanent` skips the remaining attempts and dead-letters the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    Retryable {
        message: String,
        detail: String,
    },
    Permanent {
        message: String,
        detail: String,
    },
    /// The handler stopped because the task was cancelled (see [`TaskContext::cancelled`]).
    Cancelled,
}

impl HandlerError {
    /// A retryable error from anything that implements `Error`, keeping its source chain.
    pub fn retryable(err: impl std::error::Error) -> Self {
        let (message, detail) = describe(&err);
        HandlerError::Retryable { message, detail }
    }

    pub fn permanent(err: impl std::error::Error) -> Self {
        let (message, detail) = describe(&err);
        HandlerError::Permanent { message, detail }
    }

    pub fn retryable_msg(message: impl Into<String>) -> Self {
        HandlerError::Retryable { message: message.into(), detail: String::new() }
    }

    pub fn permanent_msg(message: impl Into<String>) -> Self {
        HandlerError::Permanent { message: message.into(), detail: String::new() }
    }

    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retryable { message, .. } | HandlerError::Permanent { message, .. } => message,
            HandlerError::Cancelled => "cancelled",
        }
    }
}

/// The error's message and its chain of causes, one per line.
fn describe(err: &dyn std::error::Error) -> (String, String) {
    let mut chain = String::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        chain.push_str("caused by: ");
        chain.push_str(&e.to_string());
        chain.push('\n');
        cur = e.source();
    }
    (err.to_string(), chain)
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub id: TaskId,
    pub queue: String,
    /// 1-based; handlers that must not repeat side effects use it with `idempotency_key`.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The producer's idempotency key, or the task id when none was given.
    pub idempotency_key: String,
    pub worker_id: String,
    cancel: CancellationToken,
    /// Shared with the runtime: where [`TaskContext::retry_after`] leaves its delay.
    state: Arc<AttemptState>,
    /// The worker's Postgres, for [`TaskContext::children_results`].
    store: Option<chronos_core::store::Store>,
}

impl TaskContext {
    pub(crate) fn new(
        task: &ClaimedTask,
        worker_id: &str,
        cancel: CancellationToken,
        state: Arc<AttemptState>,
        store: Option<chronos_core::store::Store>,
    ) -> Self {
        TaskContext {
            id: task.id,
            queue: task.queue.clone(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            idempotency_key: task.idempotency_key.clone().unwrap_or_else(|| task.id.to_string()),
            worker_id: worker_id.to_owned(),
            cancel,
            state,
            store,
        }
    }

    /// A context not tied to a worker, for calling a handler directly in tests.
    pub fn detached(id: TaskId, attempt: u32) -> (Self, CancellationToken) {
        let cancel = CancellationToken::new();
        let ctx = TaskContext {
            id,
            queue: "default".into(),
            attempt,
            max_attempts: attempt.max(1),
            idempotency_key: id.to_string(),
            worker_id: "detached".into(),
            cancel: cancel.clone(),
            state: Arc::default(),
            store: None,
        };
        (ctx, cancel)
    }

    /// Resolves when the task is cancelled (or the lease was lost). Select on it in long work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The receiver asked to be tried again after `delay` (an HTTP `Retry-After`): if this
    /// attempt ends with a retryable error, the next one is due after `delay` instead of the
    /// task's backoff, at most the task's backoff cap, and the attempt's error says so.
    pub fn retry_after(&self, delay: Duration) {
        self.state.set_retry_after(delay);
    }

    /// The delay [`TaskContext::retry_after`] left, if any.
    pub fn requested_retry_after(&self) -> Option<Duration> {
        self.state.retry_after()
    }

    /// Report how far the attempt got: `pct` (0–100, clamped) and a short message (cut to 200
    /// characters). The next heartbeat (every lease third) carries the latest report to Redis,
    /// where `GET /v1/tasks/{id}` and the dashboard show it, and on to Postgres; reports between
    /// two beats replace each other, so calling this often costs nothing more.
    pub fn progress(&self, pct: u8, message: impl Into<String>) {
        let mut message: String = message.into();
        if let Some((cut, _)) = message.char_indices().nth(200) {
            message.truncate(cut);
        }
        let json = serde_json::json!({ "pct": pct.min(100), "message": message }).to_string();
        self.state.set_progress(json);
    }

    /// What this attempt returns if it completes: kept with the task in Postgres and shown as
    /// `result` by `GET /v1/tasks/{id}`. At most [`MAX_RESULT_BYTES`] of JSON; a larger one is
    /// refused with a permanent error (retrying would not shrink it). A later call replaces an
    /// earlier one; a failed attempt's result is not kept.
    pub fn set_result(&self, value: &impl serde::Serialize) -> Result<(), HandlerError> {
        let json = serde_json::to_string(value).map_err(|e| HandlerError::permanent_msg(format!("the result is not JSON: {e}")))?;
        if json.len() > MAX_RESULT_BYTES {
            return Err(HandlerError::permanent_msg(format!(
                "the result is {} bytes of JSON; the limit is {MAX_RESULT_BYTES}",
                json.len()
            )));
        }
        self.state.set_result(json);
        Ok(())
    }

    /// The tasks this one waited for (a flow's children, or its `depends_on`), in the order they
    /// were submitted, each with its status and, if it completed, the result its handler set.
    /// Read from Postgres, where every one of them had finished before this task was queued. A
    /// worker without Postgres (`DATABASE_URL`) cannot read them: a retryable error says so.
    pub async fn children_results(&self) -> Result<Vec<chronos_core::flows::Dependency>, HandlerError> {
        let Some(store) = &self.store else {
            return Err(HandlerError::retryable_msg("this worker has no Postgres (DATABASE_URL) to read the children's results from"));
        };
        chronos_core::flows::dependencies(store, self.id).await.map_err(HandlerError::retryable)
    }
}

/// The largest result a handler may return ([`TaskContext::set_result`]): 64 KiB of JSON.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// The task as a handler sees it.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    /// The JSON payload; use [`Task::payload`] to parse it into a type.
    pub payload_json: String,
}

impl Task {
    /// Parse the payload. A payload that does not fit is a permanent error: retrying cannot fix it.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(&self.payload_json).map_err(|e| HandlerError::permanent_msg(format!("invalid payload for {}: {e}", self.name)))
    }
}

/// Implement this for each kind of task. `handle` runs one attempt.
pub trait Handler: Send + Sync + 'static {
    /// The task name this handler runs (e.g. `"email"`).
    fn kind(&self) -> &'static str;

    fn handle(&self, ctx: TaskContext, task: Task) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Overrides the task's own timeout when set.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Overrides the backoff for the retry after this error when set.
    fn next_retry(&self, _attempt: u32, _err: &HandlerError) -> Option<Duration> {
        None
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Object-safe form of [`Handler`] so one registry can hold many kinds.
pub(crate) trait DynHandler: Send + Sync {
    fn call(&'static self, ctx: TaskContext, task: Task) -> BoxFuture;
    fn timeout(&self) -> Option<Duration>;
    fn next_retry(&self, attempt: u32, err: &HandlerError) -> Option<Duration>;
}

impl<H: Handler> DynHandler for H {
    fn call(&'static self, ctx: TaskContext, task: Task) -> BoxFuture {
        Box::pin(self.handle(ctx, task))
    }
    fn timeout(&self) -> Option<Duration> {
        Handler::timeout(self)
    }
    fn next_retry(&self, attempt: u32, err: &HandlerError) -> Option<Duration> {
        Handler::next_retry(self, attempt, err)
    }
}
