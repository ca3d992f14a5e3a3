//! One attempt: run the handler under its timeout and turn what happened into an [`Outcome`].
//! Nothing here talks to Redis; recording the outcome is the recorder's job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chronos_core::ClaimedTask;
use chronos_core::queue::FailKind;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ATTEMPT, AttemptState, Shared};
use crate::handler::{HandlerError, Task, TaskContext};

/// A cancelled handler that ignores its context is aborted after this long.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How one attempt ended, as the queue will record it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    /// Retry (if attempts are left), dead, or cancelled, as `kind` says. `retry_in` is the
    /// handler's own retry delay, overriding the task's backoff.
    Failed {
        kind: FailKind,
        message: String,
        detail: String,
        retry_in: Option<Duration>,
    },
}

/// Run one attempt; a panic, a timeout or a missing handler becomes a retryable failure, and
/// any failure of an attempt whose task was cancelled is a cancellation.
pub(super) async fn run_attempt(shared: &Arc<Shared>, task: &ClaimedTask, cancel: CancellationToken, state: &Arc<AttemptState>) -> Outcome {
    let cancel_requested = &state.cancel_requested;
    let result = run_handler(shared, task, cancel, state).await;
    let (kind, message, detail) = match result {
        Ok(()) => return Outcome::Completed,
        Err(HandlerError::Cancelled) => (FailKind::Cancelled, "cancelled".to_owned(), String::new()),
        Err(_) if cancel_requested.load(Ordering::Acquire) => (FailKind::Cancelled, "cancelled".to_owned(), String::new()),
        Err(HandlerError::Retryable { message, detail }) => (FailKind::Retryable, message, detail),
        Err(HandlerError::Permanent { message, detail }) => (FailKind::Permanent, message, detail),
    };
    let (mut message, mut retry_in) = (message, None);
    if kind == FailKind::Retryable {
        retry_in = match state.retry_after() {
            // The receiver said when to come back: that delay (within the task's backoff cap),
            // and the attempt's error says why the next one is due when it is.
            Some(asked) => {
                let (delay, why) = asked_delay(asked, Duration::from_millis(task.backoff.cap_ms));
                message.push_str(&why);
                Some(delay)
            }
            None => shared
                .registry
                .get(&task.name)
                .and_then(|h| h.next_retry(task.attempt, &HandlerError::Retryable { message: message.clone(), detail: String::new() })),
        };
    }
    Outcome::Failed { kind, message, detail, retry_in }
}

/// The next attempt's delay when the receiver asked for `asked` (at most `cap`), and the words
/// appended to the attempt's error.
fn asked_delay(asked: Duration, cap: Duration) -> (Duration, String) {
    let secs = |d: Duration| if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{:.3} s", d.as_secs_f64()) };
    if asked <= cap {
        (asked, format!("; next attempt in {}, as its Retry-After asked", secs(asked)))
    } else {
        (cap, format!("; its Retry-After asked for {}: next attempt in {}, the task's backoff cap", secs(asked), secs(cap)))
    }
}

async fn run_handler(
    shared: &Arc<Shared>,
    task: &ClaimedTask,
    cancel: CancellationToken,
    state: &Arc<AttemptState>,
) -> Result<(), HandlerError> {
    let cancel_requested = &state.cancel_requested;
    let Some(handler) = shared.registry.get(&task.name) else {
        // Retryable: during a rolling deploy another worker may have the handler.
        return Err(HandlerError::retryable_msg(format!("no handler for task kind {:?} on worker {}", task.name, shared.cfg.worker_id)));
    };
    let timeout = handler.timeout().unwrap_or(task.timeout);
    let ctx = TaskContext::new(task, &shared.cfg.worker_id, cancel.clone(), state.clone(), shared.store.clone());
    // Every event of the handler carries the attempt's identity, and its lines are captured.
    let span = tracing::info_span!("attempt", task_id = %task.id, queue = %task.queue, task_name = %task.name, attempt = task.attempt, worker = %shared.cfg.worker_id);
    let call = handler.call(ctx, Task { name: task.name.clone(), payload_json: task.payload.clone() });
    let mut run = tokio::spawn(ATTEMPT.scope(state.clone(), call.instrument(span)));
    if let Some(f) = shared.inflight.lock().unwrap().get_mut(&task.id) {
        f.abort = Some(run.abort_handle());
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let joined = tokio::select! {
        r = &mut run => r,
        _ = &mut deadline => {
            run.abort();
            return Err(HandlerError::Retryable { message: format!("timed out after {} ms", timeout.as_millis()), detail: String::new() });
        }
        _ = cancel.cancelled() => {
            // Give a cooperative handler a moment to stop on its own.
            match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                Ok(r) => r,
                Err(_) => {
                    run.abort();
                    return Err(if cancel_requested.load(Ordering::Acquire) { HandlerError::Cancelled } else { HandlerError::retryable_msg("lease lost") });
                }
            }
        }
    };
    match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Err(HandlerError::Retryable {
                message: format!("handler panicked: {msg}"),
                detail: format!("panic in handler {:?}: {msg}", task.name),
            })
        }
        Err(_) => Err(HandlerError::retryable_msg("handler aborted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_within_the_cap_is_the_delay_and_a_longer_one_is_cut_to_the_cap() {
        let cap = Duration::from_secs(60);
        let (d, why) = asked_delay(Duration::from_secs(30), cap);
        assert_eq!(d, Duration::from_secs(30));
        assert_eq!(why, "; next attempt in 30 s, as its Retry-After asked");
        let (d, why) = asked_delay(Duration::from_secs(7200), cap);
        assert_eq!(d, cap);
        assert_eq!(why, "; its Retry-After asked for 7200 s: next attempt in 60 s, the task's backoff cap");
        assert_eq!(asked_delay(Duration::from_millis(1500), cap).1, "; next attempt in 1.500 s, as its Retry-After asked");
    }
}
