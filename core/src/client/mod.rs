//! The producer-side client: validate, record in Postgres, then enqueue in Redis. A task is
//! acknowledged only once both hold it; if Postgres is down, enqueue fails with a retryable
//! error instead of accepting a task it could lose.
//!
//! A long-running server (`chronos api`) turns on write coalescing
//! ([`Chronos::with_write_coalescing`]): single-task submissions that arrive while earlier ones
//! are being written share the next Postgres transaction and Redis round trip. Each caller still
//! returns only after its task is committed in Postgres and enqueued in Redis. Nothing waits on
//! a timer: an idle server writes a lone task at once; a busy one writes bigger batches.

//!
//! The use cases the API, the CLI and the dashboard share live beside it, each a method on
//! [`Chronos`], so a handler is parse → one call → view:
//! - [`tasks`] — submit, read (with Redis's live state on top), list, attempts, manual
//!   actions, cancel, retry now.
//! - [`queues`] — queue summaries, pause and resume.
//! - [`dlq`] — dead tasks, redrive one (removing its SQS message); bulk operations are jobs
//!   ([`crate::jobs`]).
//! - [`admin`] — API keys, the manual-action log, health, raw live counts.
//! - `schedules` — operators' actions on a [`crate::schedule::Scheduler`] (pause, resume,
//!   delete, trigger), each audited.

mod admin;
mod dlq;
mod queues;
mod schedules;
mod tasks;

pub use admin::Health;
pub use dlq::{Sweep, sweep_letters};
pub use queues::QueueSummary;
pub use tasks::{SubmittedTask, TaskPage};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::model::{NewTask, PreparedTask, TaskId};
use crate::queue::Engine;
use crate::store::Store;

#[derive(Clone)]
pub struct Chronos {
    pub engine: Engine,
    pub store: Store,
    pub max_payload_bytes: usize,
    pub idempotency_retention: Duration,
    /// For removing redriven tasks' messages; `None` when SQS is not configured or was
    /// unreachable at start-up.
    dlq: Option<Dlq>,
    coalescer: Option<mpsc::Sender<Job>>,
    /// Postgres transactions + Redis round trips made for submissions (for `/metrics`).
    writes: Arc<AtomicU64>,
}

/// One submission waiting for the next coalesced write.
struct Job {
    task: PreparedTask,
    reply: oneshot::Sender<Result<(TaskId, bool)>>,
}

/// Tasks one coalesced write takes at most.
const COALESCE_MAX: usize = 512;

/// The result of submitting one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub id: TaskId,
    /// False when an idempotency key matched an earlier task (whose id this is).
    pub created: bool,
}

impl Chronos {
    pub fn new(engine: Engine, store: Store, max_payload_bytes: usize, idempotency_retention: Duration) -> Self {
        Chronos { engine, store, max_payload_bytes, idempotency_retention, dlq: None, coalescer: None, writes: Arc::default() }
    }

    /// Remove redriven tasks' messages from this SQS dead-letter queue.
    pub fn with_dlq(mut self, dlq: Option<Dlq>) -> Self {
        self.dlq = dlq;
        self
    }

    pub fn dlq(&self) -> Option<&Dlq> {
        self.dlq.as_ref()
    }

    /// Coalesce concurrent [`Chronos::enqueue`] calls into shared writes, with up to `writers`
    /// writes in flight at once. Needs a Tokio runtime; the background task ends when the last
    /// clone of this client is dropped.
    pub fn with_write_coalescing(mut self, writers: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(COALESCE_MAX * 8);
        let writer = self.clone();
        let permits = Arc::new(Semaphore::new(writers.max(1)));
        tokio::spawn(async move {
            loop {
                // Wait for a free writer first: submissions arriving meanwhile join this batch.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut jobs = vec![first];
                while jobs.len() < COALESCE_MAX
                    && let Ok(j) = rx.try_recv()
                {
                    jobs.push(j);
                }
                let writer = writer.clone();
                tokio::spawn(async move {
                    let (tasks, replies): (Vec<PreparedTask>, Vec<_>) = jobs.into_iter().map(|j| (j.task, j.reply)).unzip();
                    match writer.write(tasks).await {
                        Ok(done) => {
                            for (reply, r) in replies.into_iter().zip(done) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.replicate()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        self.coalescer = Some(tx);
        self
    }

    pub async fn enqueue(&self, task: NewTask) -> Result<Submitted> {
        let Some(coalescer) = &self.coalescer else {
            return Ok(self.enqueue_batch(vec![task]).await?[0]);
        };
        let task = task.prepare(self.max_payload_bytes)?;
        let (reply, answer) = oneshot::channel();
        let gone = || Error::Protocol { script: "enqueue", detail: "the write coalescer stopped".into() };
        coalescer.send(Job { task, reply }).await.map_err(|_| gone())?;
        let (id, created) = answer.await.map_err(|_| gone())??;
        Ok(Submitted { id, created })
    }

    /// All-or-nothing validation, then one Postgres transaction and one Redis round trip.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        let prepared: Vec<PreparedTask> = tasks.into_iter().map(|t| t.prepare(self.max_payload_bytes)).collect::<Result<_>>()?;
        Ok(self.write(prepared).await?.into_iter().map(|(id, created)| Submitted { id, created }).collect())
    }

    /// How many writes (one Postgres transaction and one Redis round trip each) submissions
    /// have taken so far, through this client and its clones.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Postgres first, then Redis; on a Redis failure the rows are taken back.
    async fn write(&self, prepared: Vec<PreparedTask>) -> Result<Vec<(TaskId, bool)>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
        for p in &fresh {
            crate::metrics::task(&p.task.queue, &p.task.name).enqueued.increment(1);
        }
        Ok(recorded)
    }
}
