//! [`Scheduler`]: schedules' use cases (create, change, pause, delete, trigger) and the tick,
//! which plans occurrences ([`super::planner`]) and records them in Postgres and Redis.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::client::Chronos;
use crate::cron::{CronExpr, Tz, parse_timezone};
use crate::error::Result;
use crate::model::{Origin, Overlap, TaskId};
use crate::store::{Store, TaskRecord};

use super::db::{SCHEDULE_COLUMNS, bind_definition, schedule_from_row};
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
        let q = sqlx::query(
            "INSERT INTO schedules (id, name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms,
                                    enabled, overlap, misfire, planned_until, next_fire_at, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $15, $15)",
        );
        bind_definition(q, id, spec, &expr, tz)
            .bind(!spec.paused)
            .bind(spec.overlap.as_str())
            .bind(spec.misfire.as_str())
            .bind(now)
            .bind(expr.next_after(tz, now))
            .bind(created_by)
            .execute(self.store().pool())
            .await?;
        self.plan_now(id).await;
        self.get(id).await?.ok_or(ChangeError::NotFound)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<ScheduleRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.store().pool())
            .await?;
        Ok(row.as_ref().map(schedule_from_row))
    }

    /// Schedules ordered by name, `limit` of them after `after_name`.
    pub async fn list(&self, after_name: Option<&str>, limit: i64) -> Result<Vec<ScheduleRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2"
        )))
        .bind(after_name)
        .bind(limit)
        .fetch_all(self.store().pool())
        .await?;
        Ok(rows.iter().map(schedule_from_row).collect())
    }

    /// Apply a patch. Occurrences planned for later under the old definition and not started
    /// are dropped, and the schedule is planned again from now.
    pub async fn update(&self, id: Uuid, patch: &SchedulePatch) -> Result<ScheduleRecord, ChangeError> {
        let mut tx = self.store().pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 FOR UPDATE")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ChangeError::NotFound)?;
        let cur = schedule_from_row(&row);
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
        let q = sqlx::query(
            "UPDATE schedules SET name = $2, cron = $3, timezone = $4, task_name = $5, queue = $6, payload = $7, priority = $8,
                    max_attempts = $9, backoff = $10, timeout_ms = $11, overlap = $12, misfire = $13,
                    planned_until = CASE WHEN $14 THEN $15 ELSE planned_until END, next_fire_at = $16, updated_at = $15
             WHERE id = $1",
        );
        bind_definition(q, id, &spec, &expr, tz)
            .bind(spec.overlap.as_str())
            .bind(spec.misfire.as_str())
            .bind(replan)
            .bind(now)
            .bind(expr.next_after(tz, now))
            .execute(&mut *tx)
            .await?;
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
        let was: bool = sqlx::query_scalar("SELECT NOT enabled FROM schedules WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ChangeError::NotFound)?;
        if was != paused {
            if paused {
                self.drop_unstarted(&mut tx, id, None).await?;
            }
            sqlx::query("UPDATE schedules SET enabled = $2, planned_until = now(), updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(!paused)
                .execute(&mut *tx)
                .await?;
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
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM schedules WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(false);
        }
        self.drop_unstarted(&mut tx, id, None).await?;
        sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(&mut *tx).await?;
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
        let rows = sqlx::query(
            "SELECT queue, id FROM tasks WHERE schedule_id = $1 AND status IN ('scheduled', 'queued') AND attempts = 0
               AND ($2::timestamptz IS NULL OR fire_at > $2)",
        )
        .bind(id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_queue: HashMap<String, Vec<TaskId>> = HashMap::new();
        for r in &rows {
            by_queue.entry(r.get(0)).or_default().push(r.get(1));
        }
        let mut dropped = Vec::new();
        for (queue, ids) in by_queue {
            for chunk in ids.chunks(1000) {
                dropped.extend(self.chronos.engine.drop_unstarted(&queue, chunk).await?);
            }
        }
        if !dropped.is_empty() {
            sqlx::query("DELETE FROM tasks WHERE id = ANY($1)").bind(&dropped).execute(&mut *tx).await?;
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
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND enabled AND planned_until < $2 FOR NO KEY UPDATE"
            )))
            .bind(id)
            .bind(until)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(()) };
            self.plan(&mut tx, &schedule_from_row(&row), now, until, &mut report).await?;
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
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules
                 WHERE enabled AND planned_until < $1 AND id <> ALL($2)
                 ORDER BY planned_until LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED"
            )))
            .bind(until)
            .bind(&failed)
            .bind(ROWS_PER_PASS)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let s = schedule_from_row(row);
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
            let unstarted: Vec<TaskId> = if seen.is_empty() {
                Vec::new()
            } else {
                sqlx::query_scalar("SELECT id FROM tasks WHERE id = ANY($1) AND status IN ('scheduled', 'queued') AND attempts = 0")
                    .bind(&seen)
                    .fetch_all(&mut *own)
                    .await?
            };
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
            }
        }
        report.schedules += 1;
        sqlx::query(
            "UPDATE schedules SET planned_until = $2, next_fire_at = $3,
                    last_fire_at = (SELECT max(fire_at) FROM tasks WHERE schedule_id = $1 AND fire_at <= $4)
             WHERE id = $1",
        )
        .bind(s.id)
        .bind(planned_to)
        .bind(expr.next_after(tz, now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
