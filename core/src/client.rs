//! The producer-side client: validate, record in Postgres, then enqueue in Redis. A task is
//! acknowledged only once both hold it; if Postgres is down, enqueue fails with a retryable
//! error instead of accepting a task it could lose.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::{NewTask, PreparedTask, TaskId};
use crate::queue::{CancelOutcome, Engine, RetryNowOutcome};
use crate::store::{Store, TaskRecord};

#[derive(Clone)]
pub struct Chronos {
    pub engine: Engine,
    pub store: Store,
    pub max_payload_bytes: usize,
    pub idempotency_retention: Duration,
}

/// The result of submitting one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub id: TaskId,
    /// False when an idempotency key matched an earlier task (whose id this is).
    pub created: bool,
}

impl Chronos {
    pub fn new(engine: Engine, store: Store, max_payload_bytes: usize, idempotency_retention: Duration) -> Self {
        Chronos { engine, store, max_payload_bytes, idempotency_retention }
    }

    pub async fn enqueue(&self, task: NewTask) -> Result<Submitted> {
        Ok(self.enqueue_batch(vec![task]).await?[0])
    }

    /// All-or-nothing validation, then one Postgres transaction and one Redis round trip.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        let prepared: Vec<PreparedTask> = tasks.into_iter().map(|t| t.prepare(self.max_payload_bytes)).collect::<Result<_>>()?;
        let recorded = self.store.insert_tasks(&prepared, self.idempotency_retention).await?;
        let fresh: Vec<PreparedTask> =
            prepared.iter().zip(&recorded).filter(|(_, (_, created))| *created).map(|(p, _)| p.clone()).collect();
        if !fresh.is_empty()
            && let Err(e) = self.engine.enqueue(&fresh, self.idempotency_retention).await
        {
            // Redis refused: take the rows back so the producer's retry starts clean. If
            // this also fails, the reconciler finds the rows and enqueues them.
            let ids: Vec<TaskId> = fresh.iter().map(|p| p.id).collect();
            if let Err(undo) = self.store.delete_tasks(&ids).await {
                tracing::error!(error = %undo, "could not undo task rows after Redis refused them");
            }
            return Err(e);
        }
        Ok(recorded.into_iter().map(|(id, created)| Submitted { id, created }).collect())
    }

    pub async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        self.store.get_task(id).await
    }

    pub async fn cancel(&self, id: TaskId, actor: &str) -> Result<CancelOutcome> {
        let rec = self.store.get_task(id).await?.ok_or_else(|| Error::invalid("id", format!("no task {id}")))?;
        self.engine.cancel(&rec.queue, id, actor).await
    }

    pub async fn retry_now(&self, id: TaskId, actor: &str) -> Result<RetryNowOutcome> {
        let rec = self.store.get_task(id).await?.ok_or_else(|| Error::invalid("id", format!("no task {id}")))?;
        self.engine.retry_now(&rec.queue, id, actor).await
    }
}
