//! The tick: what runs once a minute, on AWS as a Lambda function triggered by an EventBridge
//! `rate(1 minute)` rule, locally as the loop of `chronos tick` (and inside `chronos dev`).
//!
//! # Layout
//! - [`tick`] — one run: plan schedules ([`chronos_core::schedule::Scheduler::tick`]), check
//!   Redis still holds its state (rebuild from Postgres if it lost it), reap expired leases,
//!   delete finished tasks past their retention ([`chronos_core::retention`]), work
//!   bulk-operation jobs whose runner died or that no process runs ([`chronos_core::jobs`]),
//!   and enqueue tasks whose submission died between Postgres and Redis
//!   ([`chronos_core::reconcile::sweep_never_enqueued`]).
//! - [`run_loop`] — the local loop around it.
//! - `main.rs` — the Lambda binary `chronos-tick-lambda`.
//!
//! Each part is safe to run concurrently with another tick (a retried Lambda, two regions, a
//! local loop beside the Lambda): planning locks schedule rows with `SKIP LOCKED` and names each
//! occurrence deterministically, the rebuild takes a Redis lock, and reaping is one script per
//! queue guarded by fencing tokens; retention deletes by primary key, each row once; a job is
//! worked only by the holder of its lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chronos_core::jobs::{self, DlqHandle};
use chronos_core::retention::{Purged, Retention};
use chronos_core::schedule::{Scheduler, TickReport};
use chronos_core::{Result, reconcile, retention};
use serde::Serialize;

/// Expired leases reaped per queue per tick (workers reap too; this catches a fleet scaled to zero).
const REAP_LIMIT: usize = 1000;

/// What one tick did; the Lambda returns it and logs it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TickOutput {
    #[serde(flatten)]
    pub schedules: TickReport,
    /// Tasks restored from Postgres because Redis had lost its data.
    pub restored: Option<usize>,
    /// Expired leases handed back (or dead-lettered).
    pub reaped: usize,
    /// Finished tasks deleted for retention.
    pub purged: Purged,
    /// Bulk-operation jobs worked on (resumed after their runner died, or with no runner).
    pub jobs: usize,
    /// Tasks Postgres accepted whose enqueue never reached Redis (their writer died), enqueued
    /// now ([`reconcile::sweep_never_enqueued`]).
    pub never_enqueued: usize,
}

/// How long one tick works on bulk-operation jobs at most (the Lambda's timeout is 60 s).
const JOBS_BUDGET: Duration = Duration::from_secs(20);

/// One tick. `who` names this ticker in the rebuild lock; `keep` is the retention, read from
/// the environment once at start-up ([`Retention::from_env`]).
/// `dlq_queue` names the SQS queue a resumed redrive removes messages from.
pub async fn tick(scheduler: &Scheduler, who: &str, keep: Retention, dlq_queue: Option<&str>) -> Result<TickOutput> {
    tick_at(scheduler, who, keep, dlq_queue, Utc::now()).await
}

/// [`tick`] planning as if the clock read `now` (to replay or simulate time; Redis still
/// decides when each planned task is due).
pub async fn tick_at(scheduler: &Scheduler, who: &str, keep: Retention, dlq_queue: Option<&str>, now: DateTime<Utc>) -> Result<TickOutput> {
    let chronos = &scheduler.chronos;
    // First make sure Redis holds its state: planning into an empty Redis that is about to be
    // rebuilt would be undone by nothing, but restoring first keeps the order of events plain.
    let restored = reconcile::ensure_redis_state(&chronos.engine, &chronos.store, who).await?;
    if restored.is_none() {
        // Another process may be rebuilding: plan only once it is done. A rebuild reads the rows
        // this tick commits before it enqueues them, and would put an occurrence already due
        // into ready instead of the delayed set.
        reconcile::settle_before_claiming(&chronos.engine, &chronos.store, who).await;
    }
    let schedules = scheduler.tick_at(now).await?;
    let mut reaped = 0;
    for q in chronos.engine.queues().await? {
        reaped += chronos.engine.reap(&q, REAP_LIMIT).await?.0;
    }
    let purged = retention::purge(&chronos.engine, &chronos.store, keep, now).await?;
    let mut dlq = DlqHandle::new(chronos.dlq().cloned(), dlq_queue.map(str::to_owned));
    let jobs = jobs::run_due(chronos, &mut dlq, who, JOBS_BUDGET).await?;
    let never_enqueued = reconcile::sweep_never_enqueued(&chronos.engine, &chronos.store).await?;
    Ok(TickOutput { schedules, restored, reaped, purged, jobs, never_enqueued })
}

/// Tick every `every` until `stop` resolves; an error is logged and the next tick retries.
pub async fn run_loop(
    scheduler: Scheduler,
    who: String,
    keep: Retention,
    dlq_queue: Option<String>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = timer.tick() => {}
        }
        match tick(&scheduler, &who, keep, dlq_queue.as_deref()).await {
            Ok(out)
                if out.schedules.planned > 0
                    || out.reaped > 0
                    || out.restored.is_some()
                    || out.schedules.failed > 0
                    || out.purged != Purged::default()
                    || out.jobs > 0
                    || out.never_enqueued > 0 =>
            {
                tracing::info!(?out, "tick")
            }
            Ok(out) => tracing::debug!(?out, "tick"),
            Err(e) => tracing::warn!(error = %e, "tick failed; retrying at the next one"),
        }
    }
}
