//! Queue health and pausing: the use cases the API, the CLI and the dashboard share.

use serde::Serialize;

use super::Chronos;
use crate::access::Caller;
use crate::error::{Error, Result};
use crate::limits::{self, LimitsPatch, QueueLimits};
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
    /// Concurrency and rate limits, per queue and per group (see [`crate::limits`]).
    pub limits: QueueLimits,
    /// Postgres could not be read (an outage): `completed`, `dead` and `cancelled` are 0 and
    /// `oldest_waiting_age_s` is absent; the live counts are Redis's as always.
    pub postgres_unavailable: bool,
}

impl Chronos {
    /// Every queue Redis or Postgres knows of (tasks or limits), by name.
    pub async fn queues(&self) -> Result<Vec<QueueSummary>> {
        // While Postgres is down, the limits are not listed (Redis's copy still applies).
        let all_limits: std::collections::HashMap<String, QueueLimits> = match limits::load_all(self.store.pool()).await {
            Ok(all) => all.into_iter().collect(),
            Err(Error::Postgres(_)) => Default::default(),
            Err(e) => return Err(e),
        };
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
        // A queue given limits before its first task is listed with them.
        names.extend(all_limits.keys().cloned());
        names.sort();
        names.dedup();
        let workers = self.engine.live_workers().await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let l = all_limits.get(&n).copied().unwrap_or_default();
            out.push(self.summary(&n, &workers, l).await?);
        }
        Ok(out)
    }

    /// One queue's summary (all zero for a queue that never had a task).
    pub async fn queue(&self, name: &str) -> Result<QueueSummary> {
        let workers = self.engine.live_workers().await?;
        let l = match limits::load(self.store.pool(), name).await {
            Ok(l) => l,
            Err(Error::Postgres(_)) => QueueLimits::default(),
            Err(e) => return Err(e),
        };
        self.summary(name, &workers, l).await
    }

    async fn summary(&self, name: &str, workers: &[WorkerPresence], limits: QueueLimits) -> Result<QueueSummary> {
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
            limits,
            postgres_unavailable,
        })
    }

    /// Change a queue's limits (absent fields stay, `null` removes one; an empty change changes
    /// nothing and is not audited, as a JSON merge patch); audited. Recorded in
    /// Postgres first (the record the rebuild restores), then set in Redis: the next claim
    /// applies it.
    pub async fn set_queue_limits(&self, caller: &Caller, queue: &str, patch: &LimitsPatch) -> Result<QueueSummary> {
        validate_queue_name(queue)?;
        if patch.is_empty() {
            return self.queue(queue).await;
        }
        // One change at a time per queue, and Redis set before the commit: two concurrent
        // changes can neither lose a field nor leave Redis with the older one.
        let mut tx = self.store.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('chronos.queue_limits:' || $1))").bind(queue).execute(&mut *tx).await?;
        let before = limits::load(&mut *tx, queue).await?;
        let after = patch.apply(before);
        after.validate()?;
        limits::save(&mut *tx, queue, &after, &caller.key_id).await?;
        self.engine.set_limits(queue, &after).await?;
        tx.commit().await?;
        let detail = serde_json::json!({ "queue": queue, "before": before, "after": after });
        self.store.audit(&caller.key_id, "queue_limits", None, detail).await?;
        self.queue(queue).await
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
