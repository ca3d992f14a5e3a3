//! The recorder: writes attempt outcomes to the queue. Completions are batched (whatever
//! completed while the previous ack was in flight goes in the next call); failures are recorded
//! each in its own task, so a slow retry of one never holds up another. Every write is retried
//! with the same capped backoff ([`with_retries`]); one that never succeeds leaves the lease to
//! expire, and the task runs again.
//!
//! Completions that finish while the fetch loop waits for a free slot do not come here: the
//! fetch loop carries them in its next claim (`ack_claim`, see [`super::fetch`]), and sends
//! here only what it could not carry ([`ToRecord::Acks`], e.g. after a failed call).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chronos_core::TaskId;
use chronos_core::metrics::TaskMetrics;
use chronos_core::queue::{Completion, Engine, FailKind, FailOutcome};
use chronos_core::telemetry;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::WorkerStats;
use super::attempt::Outcome;

/// A worker slot: freeing it (dropping) wakes the fetch loop when it waits for one.
pub(super) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Slot {
    pub(super) fn new(permit: OwnedSemaphorePermit, freed: Arc<Notify>) -> Self {
        Slot { permit: Some(permit), freed }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

/// One attempt's outcome on its way to Redis.
pub(super) struct Record {
    pub queue: String,
    pub id: TaskId,
    pub token: u64,
    pub outcome: Outcome,
    /// The handler's captured log lines.
    pub logs: Option<String>,
    /// The handler's JSON result, on completion.
    pub result: Option<String>,
    /// Its task's counters, counted once the outcome is written.
    pub metrics: &'static TaskMetrics,
    /// A failed attempt's slot, held until the retry or death is written; a completion's slot
    /// is freed before it is sent, so the next claim need not wait for the batched ack.
    pub slot: Option<Slot>,
    /// The attempt's `chronos.task` span when traces are on: the ack or failure is its child.
    pub span: Option<tracing::Span>,
}

/// What the recorder is given: one outcome, or completions already gathered for one queue.
pub(super) enum ToRecord {
    One(Record),
    Acks(String, AckBatch),
}

/// Completed attempts of one queue on their way to one ack (the recorder's, or a claim's).
#[derive(Default)]
pub(super) struct AckBatch {
    pub leases: Vec<Completion>,
    metrics: Vec<&'static TaskMetrics>,
    /// Each attempt's `chronos.ack` span (traces on), ended when the batch is written.
    spans: Vec<tracing::Span>,
}

impl AckBatch {
    /// Add a completed attempt's record (counted as completed by this worker now).
    pub(super) fn push(&mut self, stats: &WorkerStats, r: Record) {
        stats.completed.fetch_add(1, Ordering::Relaxed);
        self.leases.push(Completion { id: r.id, token: r.token, logs: r.logs, result: r.result });
        self.metrics.push(r.metrics);
        if r.span.is_some() {
            self.spans.push(outcome_span(r.span.as_ref(), "chronos.ack", "completed", false));
        }
    }

    fn merge(&mut self, other: AckBatch) {
        self.leases.extend(other.leases);
        self.metrics.extend(other.metrics);
        self.spans.extend(other.spans);
    }

    /// Count what the ack wrote (`answers`, one per lease); the ack spans end here.
    pub(super) fn written(self, queue: &str, answers: &[bool]) {
        for (done, m) in answers.iter().zip(&self.metrics) {
            if *done {
                m.completed.increment(1);
            }
        }
        let refused = answers.iter().filter(|x| !**x).count();
        if refused > 0 {
            tracing::info!(queue, refused, "acks refused: leases were taken over");
        }
    }
}

/// The span of writing one attempt's outcome, under its task's span (none with traces off).
fn outcome_span(task: Option<&tracing::Span>, name: &'static str, outcome: &'static str, error: bool) -> tracing::Span {
    let Some(task) = task else { return tracing::Span::none() };
    task.record("chronos.outcome", outcome);
    if error {
        task.record("otel.status_code", "ERROR");
    }
    match name {
        "chronos.ack" => tracing::info_span!(target: telemetry::TARGET, parent: task, "chronos.ack", otel.kind = "client"),
        _ => tracing::info_span!(target: telemetry::TARGET, parent: task, "chronos.fail", otel.kind = "client"),
    }
}

const ATTEMPTS: usize = 8;

/// Run `op` until it succeeds, at most [`ATTEMPTS`] times, backing off 50 ms → 2 s.
async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = chronos_core::Result<T>>,
{
    let mut backoff = Duration::from_millis(50);
    for _ in 0..ATTEMPTS {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    None
}

/// Until every sender is gone (the last attempt finished): write what arrives.
pub(super) async fn run_recorder(engine: Engine, worker: String, stats: Arc<WorkerStats>, mut rx: mpsc::UnboundedReceiver<ToRecord>) {
    let mut buf = Vec::with_capacity(256);
    let mut failures = JoinSet::new();
    while rx.recv_many(&mut buf, 256).await > 0 {
        let mut acks: HashMap<String, AckBatch> = HashMap::new();
        for sent in buf.drain(..) {
            let mut r = match sent {
                ToRecord::Acks(queue, batch) => {
                    acks.entry(queue).or_default().merge(batch);
                    continue;
                }
                ToRecord::One(r) => r,
            };
            match r.outcome {
                Outcome::Completed => {
                    // The record's queue name becomes the key (moved, not copied).
                    acks.entry(std::mem::take(&mut r.queue)).or_default().push(&stats, r);
                }
                Outcome::Failed { kind, message, detail, retry_in } => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let (engine, worker) = (engine.clone(), worker.clone());
                    let span = outcome_span(
                        r.span.as_ref(),
                        "chronos.fail",
                        match kind {
                            FailKind::Retryable => "failed",
                            FailKind::Permanent => "failed_permanently",
                            FailKind::Cancelled => "cancelled",
                        },
                        true,
                    );
                    failures.spawn(
                        async move {
                            let slot = r.slot;
                            let logs = r.logs.as_deref().unwrap_or("");
                            let written = with_retries("recording a failure", || {
                                engine.fail_with_logs(&r.queue, r.id, r.token, &worker, kind, &message, &detail, retry_in, logs)
                            })
                            .await;
                            let m = r.metrics;
                            let how = match &written {
                                Some(FailOutcome::Retrying { .. }) => Some(&m.retried),
                                Some(FailOutcome::Dead) => Some(&m.dead),
                                Some(FailOutcome::Cancelled) => Some(&m.cancelled),
                                Some(FailOutcome::Stale) | None => None,
                            };
                            if let Some(c) = how {
                                c.increment(1);
                                m.failed.increment(1);
                            }
                            match written {
                                Some(FailOutcome::Stale) => {
                                    tracing::info!(task = %r.id, "attempt result refused: the lease was taken over")
                                }
                                Some(outcome) => tracing::debug!(task = %r.id, ?outcome, error = %message, "attempt failed"),
                                None => tracing::error!(task = %r.id, "failure not recorded; the lease will expire and the task run again"),
                            }
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
            }
        }
        for (queue, batch) in acks {
            let written = with_retries("ack", || {
                stats.ack_calls.fetch_add(1, Ordering::Relaxed);
                engine.ack_with(&queue, &worker, &batch.leases)
            })
            .await;
            if let Some(r) = written {
                batch.written(&queue, &r);
            }
        }
        while failures.try_join_next().is_some() {}
    }
    while failures.join_next().await.is_some() {}
}
