//! [`Scheduler`]: schedules' use cases (create, change, pause, delete, trigger) and the tick,
//! which plans occurrences ([`super::planner`]) and records them in Postgres and Redis.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::client::Chronos;
use crate::cron::{CronExpr, Tz, parse_timezone};
use crate::error::Result;
use crate::model::{Origin, Overlap, TaskId};
use crate::store::{Store, TaskRecord};

use super::db;
use super::planner;
use super::{ChangeError, MIN_HORIZON, SchedulePatch, ScheduleRecord, ScheduleSpec, TickReport};

/// Schedules locked per transaction.
const ROWS_PER_PASS: i64 = 50;

/// Schedules over a [`Chronos`] (its store and engine).
#[derive(Clone)]
pub struct Scheduler {
    pub chronos: Chronos,
    pub horizon: Duration,
}

impl Scheduler {
    pub fn new(chronos: Chronos, horizon: Duration) -> Self {
        Scheduler { chronos, horizon: horizon.max(MIN_HORIZON) }
    }

    fn store(&self) -> &Store {
        &self.chronos.store
    }

    /// Create a schedule and plan its first occurrences at once (so a new every-second
    /// schedule does not wait for the next tick; if that planning fails, the next tick does it).
    pub async fn create(&self, spec: &ScheduleSpec, created_by: Option<&str>) -> Result<ScheduleRecord, ChangeError> {
        let (expr, tz) = spec.validate(self.chronos.max_payload_bytes)?;
        let now = Utc::now();
        let id = Uuid::now_v7();
        let t = &spec.task;
        self.chronos.engine.register_queue(&t.queue).await?;
        db::insert(self.store().pool(), id, spec, &expr, tz, now, created_by).await?;
        self.plan_now(id).await;
        self.get(id).await?.ok_or(ChangeError::NotFound)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<ScheduleRecord>> {
        Ok(db::get(self.store().pool(), id).await?)
    }

    /// Schedules ordered by name, `limit` of them after `after_name`.
    pub async fn list(&self, after_name: Option<&str>, limit: i64) -> Result<Vec<ScheduleRecord>> {
        Ok(db::list(self.store().pool(), after_name, limit).await?)
    }

    /// Apply a patch. Occurrences planned for later under the old definition and not started
    /// are dropped, and the schedule is planned again from now.
    pub async fn update(&self, id: Uuid, patch: &SchedulePatch) -> Result<ScheduleRecord, ChangeError> {
        let mut tx = self.store().pool().begin().await?;
        let cur = db::lock(&mut tx, id).await?.ok_or(ChangeError::NotFound)?;
        let mut spec = cur.spec();
        if let Some(v) = &patch.name {
            spec.name = v.clone();
        }
        if let Some(v) = &patch.cron {
            spec.cron = v.clone();
        }
        if let Some(v) = &patch.timezone {
            spec.timezone = v.clone();
        }
        if let Some(v) = &patch.task {
            spec.task = v.clone();
        }
        if let Some(v) = patch.overlap {
            spec.overlap = v;
        }
        if let Some(v) = patch.misfire {
            spec.misfire = v;
        }
        let (expr, tz) = spec.validate(self.chronos.max_payload_bytes)?;
        let now = Utc::now();
        // Only a change to when or what runs invalidates the occurrences already planned.
        let replan = spec.cron != cur.cron || spec.timezone != cur.timezone || spec.task != cur.task || spec.overlap != cur.overlap;
        if replan {
            self.drop_unstarted(&mut tx, id, Some(now)).await?;
        }
        let t = &spec.task;
        db::update_definition(&mut tx, id, &spec, &expr, tz, replan, now).await?;
        self.chronos.engine.register_queue(&t.queue).await?;
        tx.commit().await?;
        if replan {
            self.plan_now(id).await;
        }
        self.get(id).await?.ok_or(ChangeError::NotFound)
    }

    /// Pause (drop every occurrence not started) or resume (plan from now: the paused
    /// stretch is not a misfire). Idempotent.
    pub async fn set_paused(&self, id: Uuid, paused: bool) -> Result<ScheduleRecord, ChangeError> {
        let mut tx = self.store().pool().begin().await?;
        let was = !db::lock_enabled(&mut tx, id).await?.ok_or(ChangeError::NotFound)?;
        if was != paused {
            if paused {
                self.drop_unstarted(&mut tx, id, None).await?;
            }
            db::set_enabled(&mut tx, id, !paused).await?;
        }
        tx.commit().await?;
        if was != paused && !paused {
            self.plan_now(id).await;
        }
        self.get(id).await?.ok_or(ChangeError::NotFound)
    }

    /// Delete a schedule and its occurrences that have not started. Past runs stay (their
    /// `schedule_id` becomes null).
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.store().pool().begin().await?;
        if db::lock_enabled(&mut tx, id).await?.is_none() {
            return Ok(false);
        }
        self.drop_unstarted(&mut tx, id, None).await?;
        db::delete(&mut tx, id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Run the schedule's task now, once, outside its cron times (and outside its overlap
    /// policy: an operator asked for it).
    pub async fn trigger(&self, id: Uuid) -> Result<Option<TaskId>> {
        let Some(s) = self.get(id).await? else { return Ok(None) };
        let mut task = s.task.task();
        task.origin = Some(Origin { schedule_id: id, fire_at: Utc::now(), overlap: Overlap::Allow });
        task.created_by = s.created_by.clone();
        Ok(Some(self.chronos.enqueue(task).await?.id))
    }

    /// The latest runs (occurrences whose instant has come), newest first.
    pub async fn runs(&self, id: Uuid, limit: i64) -> Result<Vec<TaskRecord>> {
        self.store().schedule_runs(id, limit).await
    }

    /// Remove the schedule's occurrences that have not started (those due after `after`, or
    /// all), from Redis and then from Postgres. Runs inside the caller's transaction, which
    /// holds the schedule's row lock, so no tick plans it meanwhile.
    async fn drop_unstarted(&self, tx: &mut sqlx::PgConnection, id: Uuid, after: Option<DateTime<Utc>>) -> Result<usize> {
        let mut by_queue: HashMap<String, Vec<TaskId>> = HashMap::new();
        for (queue, task) in db::unstarted_occurrences(&mut *tx, id, after).await? {
            by_queue.entry(queue).or_default().push(task);
        }
        let mut dropped = Vec::new();
        for (queue, ids) in by_queue {
            for chunk in ids.chunks(1000) {
                dropped.extend(self.chronos.engine.drop_unstarted(&queue, chunk).await?);
            }
        }
        if !dropped.is_empty() {
            db::delete_tasks(&mut *tx, &dropped).await?;
        }
        Ok(dropped.len())
    }

    /// Plan one schedule now (after create, edit or resume) rather than at the next tick. A
    /// failure is logged: the change itself is made, and the next tick plans it.
    async fn plan_now(&self, id: Uuid) {
        if let Err(e) = self.plan_one(id).await {
            tracing::warn!(schedule = %id, error = %e, "could not plan the schedule now; the next tick will");
        }
    }

    async fn plan_one(&self, id: Uuid) -> Result<()> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.horizon).unwrap_or_default();
        let mut report = TickReport::default();
        loop {
            let mut tx = self.store().pool().begin().await?;
            let Some(s) = db::lock_behind(&mut tx, id, until).await? else { return Ok(()) };
            self.plan(&mut tx, &s, now, until, &mut report).await?;
            tx.commit().await?;
        }
    }

    /// One tick: plan every enabled schedule that is behind `now + horizon`. Schedules another
    /// tick is planning right now are skipped (it holds their lock).
    pub async fn tick(&self) -> Result<TickReport> {
        self.tick_at(Utc::now()).await
    }

    /// [`Scheduler::tick`] as if the clock read `now` (tests simulate time with it; Redis still
    /// decides when a planned task is due).
    pub async fn tick_at(&self, now: DateTime<Utc>) -> Result<TickReport> {
        let until = now + chrono::Duration::from_std(self.horizon).unwrap_or_default();
        let mut report = TickReport::default();
        let mut failed: Vec<Uuid> = Vec::new();
        loop {
            let mut tx = self.store().pool().begin().await?;
            let due = db::lock_due(&mut tx, until, &failed, ROWS_PER_PASS).await?;
            if due.is_empty() {
                break;
            }
            for s in due {
                // A savepoint per schedule: one that cannot be planned does not hold up the rest.
                let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                match self.plan(&mut sp, &s, now, until, &mut report).await {
                    Ok(()) => sp.commit().await?,
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => {
                        tracing::error!(schedule = %s.id, name = %s.name, error = %e, "schedule could not be planned");
                        sp.rollback().await?;
                        failed.push(s.id);
                        report.failed += 1;
                    }
                }
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    /// Plan the occurrences of `s` in `(planned_until, until]` ([`planner::plan`]), record them
    /// and advance `planned_until`.
    async fn plan(
        &self,
        tx: &mut sqlx::PgConnection,
        s: &ScheduleRecord,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<()> {
        let expr = CronExpr::parse(&s.cron)?;
        let tz = parse_timezone(&s.timezone)?;
        let p = planner::plan(&expr, tz, s.planned_until, s.misfire, now, until);
        report.misfires_skipped += p.misfires_skipped;
        self.record(tx, s, &expr, tz, p.fires, p.planned_to, now, report).await
    }

    /// Insert and enqueue the occurrences at `fires`, then move `planned_until` (see the module
    /// documentation for why in this order).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        tx: &mut sqlx::PgConnection,
        s: &ScheduleRecord,
        expr: &CronExpr,
        tz: Tz,
        fires: Vec<DateTime<Utc>>,
        planned_to: DateTime<Utc>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<()> {
        let mut prepared = Vec::with_capacity(fires.len());
        for at in &fires {
            let mut t = s.task.task().run_at(*at);
            t.origin = Some(Origin { schedule_id: s.id, fire_at: *at, overlap: s.overlap });
            t.created_by = s.created_by.clone();
            prepared.push(t.prepare(self.chronos.max_payload_bytes)?);
        }
        if !prepared.is_empty() {
            // Committed at once, on a connection of its own (the row lock is FOR NO KEY UPDATE,
            // so these rows' foreign-key check does not wait for it).
            let mut own = self.store().pool().acquire().await?;
            let recorded = Store::insert_tasks_in(&mut own, &prepared, self.chronos.idempotency_retention).await?;
            let seen: Vec<TaskId> = recorded.iter().filter(|(_, created)| !created).map(|(id, _)| *id).collect();
            let unstarted: Vec<TaskId> = if seen.is_empty() { Vec::new() } else { db::not_started(&mut own, &seen).await? };
            drop(own);
            let due: Vec<_> = prepared
                .into_iter()
                .zip(&recorded)
                .filter(|(p, (_, created))| *created || unstarted.contains(&p.id))
                .map(|(p, _)| p)
                .collect();
            if !due.is_empty() {
                let enqueued = self.chronos.engine.enqueue(&due, self.chronos.idempotency_retention).await?;
                report.planned += enqueued.iter().filter(|(_, created)| *created).count();
                for (p, _) in due.iter().zip(&enqueued).filter(|(_, (_, created))| *created) {
                    crate::metrics::task(&p.task.queue, &p.task.name).enqueued.increment(1);
                }
            }
        }
        report.schedules += 1;
        db::advance(tx, s.id, planned_to, expr.next_after(tz, now), now).await?;
        Ok(())
    }
}
