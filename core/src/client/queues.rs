//! Queue health and pausing: the use cases the API, the CLI and the dashboard share.

use serde::Serialize;

use super::Chronos;
use crate::access::Caller;
use crate::error::{Error, Result};
use crate::model::validate_queue_name;
use crate::queue::WorkerPresence;

/// One queue as an operator sees it: live counts from Redis, finished counts from Postgres.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSummary {
    pub name: String,
    pub waiting: u64,
    /// Scheduled for a first run later.
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub completed: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub paused: bool,
    /// Seconds the oldest due task has waited to start; `None` when none waits.
    pub oldest_waiting_age_s: Option<f64>,
    /// Audit events not yet written to Postgres.
    pub outbox: u64,
    /// Live workers serving this queue (by name or as `*`).
    pub workers: u32,
    /// It has tasks to run (waiting, scheduled or retrying) and no live worker serves it:
    /// they will wait until one is started with the queue in its `CHRONOS_QUEUES`.
    pub unserved: bool,
    /// Postgres could not be read (an outage): `completed`, `dead` and `cancelled` are 0 and
    /// `oldest_waiting_age_s` is absent; the live counts are Redis's as always.
    pub postgres_unavailable: bool,
}

impl Chronos {
    /// Every queue Redis or Postgres knows of, by name.
    pub async fn queues(&self) -> Result<Vec<QueueSummary>> {
        let mut names = self.engine.queues().await?;
        // While Postgres is down, the queues Redis knows of, with Redis's counts.
        if !self.store.recently_unreachable() {
            match self.store.queue_names().await {
                Ok(pg) => names.extend(pg),
                Err(Error::Postgres(e)) => {
                    self.store.note_unreachable();
                    tracing::warn!(error = %e, "queue listing without Postgres");
                }
                Err(e) => return Err(e),
            }
        }
        names.sort();
        names.dedup();
        let workers = self.engine.live_workers().await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.summary(&n, &workers).await?);
        }
        Ok(out)
    }

    /// One queue's summary (all zero for a queue that never had a task).
    pub async fn queue(&self, name: &str) -> Result<QueueSummary> {
        let workers = self.engine.live_workers().await?;
        self.summary(name, &workers).await
    }

    async fn summary(&self, name: &str, workers: &[WorkerPresence]) -> Result<QueueSummary> {
        let live = self.engine.counts(name).await?;
        let serving = workers.iter().filter(|w| w.serves(name)).count() as u32;
        let (pg, postgres_unavailable) = match self.store.recently_unreachable() {
            true => (Default::default(), true),
            false => match self.store.status_counts(name).await {
                Ok(pg) => (pg, false),
                Err(Error::Postgres(_)) => {
                    self.store.note_unreachable();
                    (Default::default(), true)
                }
                Err(e) => return Err(e),
            },
        };
        Ok(QueueSummary {
            name: name.to_owned(),
            waiting: live.waiting,
            scheduled: live.delayed,
            running: live.running,
            retrying: live.retrying,
            completed: pg.completed,
            dead: pg.dead,
            cancelled: pg.cancelled,
            paused: live.paused,
            oldest_waiting_age_s: if live.waiting > 0 { pg.oldest_waiting_age_s } else { None },
            outbox: live.outbox,
            workers: serving,
            unserved: serving == 0 && live.waiting + live.delayed + live.retrying > 0,
            postgres_unavailable,
        })
    }

    /// Pause (workers stop claiming; the queue still accepts tasks) or resume a queue; audited.
    pub async fn set_queue_paused(&self, caller: &Caller, queue: &str, paused: bool) -> Result<QueueSummary> {
        validate_queue_name(queue)?;
        self.engine.set_paused(queue, paused).await?;
        let action = if paused { "pause_queue" } else { "resume_queue" };
        self.store.audit(&caller.key_id, action, None, serde_json::json!({ "queue": queue })).await?;
        self.queue(queue).await
    }
}
