//! Recurring schedules: stored in Postgres, planned ahead by the tick.
//!
//! Each tick plans every occurrence in `(planned_until, now + horizon]` as a delayed task and
//! advances `planned_until`, while a transaction holds the schedule's row lock
//! (`FOR NO KEY UPDATE SKIP LOCKED`): two ticks never plan one schedule at once, and a tick that
//! stops half-way leaves `planned_until` where it was, so the next one plans the same window.
//! An occurrence's task id is derived from (schedule, fire instant) ([`Origin::task_id`]).
//!
//! Under the lock, in this order:
//! 1. the occurrences' task rows are inserted and committed (`ON CONFLICT (id) DO NOTHING`) on
//!    a connection of their own, so the audit writer finds a row for every event a worker
//!    produces, however fast the task runs;
//! 2. the new occurrences, and any earlier-inserted ones Postgres still shows as not started,
//!    are enqueued in Redis, which skips an id it holds live and one that already ran (the
//!    tombstone `done:<id>` that finishing an occurrence leaves for six hours);
//! 3. `planned_until` moves and the lock's transaction commits.
//!
//! So a tick that dies anywhere, a retried Lambda or two ticks racing never enqueue an
//! occurrence twice, and never lose one: the window is planned again and step 2 fills the gap.
//!
//! Sub-minute schedules are exact because the delayed set fires them, not the tick.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use crate::client::Chronos;
use crate::cron::{CronExpr, Tz, parse_timezone};
use crate::error::{Error, Result};
use crate::model::{Backoff, NewTask, Origin, Overlap, Priority, TaskId};
use crate::store::{Store, TaskRecord};

/// The shortest planning horizon: a tick runs every minute, so one late or failed tick must
/// not leave a gap.
pub const MIN_HORIZON: Duration = Duration::from_secs(120);
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(180);
/// Occurrences one schedule gets per planning pass; a schedule further behind (every second,
/// after a long outage with `run_all`) catches up over several passes of the same tick.
const PASS_LIMIT: usize = 1000;
/// Schedules locked per transaction.
const ROWS_PER_PASS: i64 = 50;
const MAX_SCHEDULE_NAME: usize = 128;

/// What a tick does with occurrences whose instant passed while no tick ran (an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Run every missed occurrence, oldest first.
    RunAll,
    /// Run the latest missed occurrence once.
    #[default]
    RunOnce,
    /// Run none of them.
    Skip,
}

impl Misfire {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::RunAll => "run_all",
            Misfire::RunOnce => "run_once",
            Misfire::Skip => "skip",
        }
    }
}

impl FromStr for Misfire {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Misfire::RunAll, Misfire::RunOnce, Misfire::Skip]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::invalid("misfire", format!("{s:?} is not a misfire policy; use run_all, run_once or skip")))
    }
}

/// The task each occurrence runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    pub name: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub priority: Priority,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
}

impl TaskTemplate {
    /// A template with the same defaults as a task submitted without options.
    pub fn new(name: impl Into<String>, payload: serde_json::Value) -> Self {
        let t = NewTask::new(name, payload);
        TaskTemplate {
            name: t.name,
            queue: t.queue,
            payload: t.payload,
            priority: t.priority,
            max_attempts: t.max_attempts,
            backoff: t.backoff,
            timeout_ms: t.timeout.as_millis() as u64,
        }
    }

    pub fn task(&self) -> NewTask {
        NewTask::new(self.name.clone(), self.payload.clone())
            .queue(self.queue.clone())
            .priority(self.priority)
            .max_attempts(self.max_attempts)
            .backoff(self.backoff)
            .timeout(Duration::from_millis(self.timeout_ms))
    }

    /// Validate as a task would be validated when submitted.
    pub fn validate(&self, max_payload: usize) -> Result<()> {
        self.task().prepare(max_payload).map(|_| ())
    }
}

/// A schedule as a user describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub paused: bool,
    pub overlap: Overlap,
    pub misfire: Misfire,
}

impl ScheduleSpec {
    pub fn new(name: impl Into<String>, cron: impl Into<String>, task: TaskTemplate) -> Self {
        ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            timezone: "UTC".into(),
            task,
            paused: false,
            overlap: Overlap::Allow,
            misfire: Misfire::RunOnce,
        }
    }

    /// Check every part; the error names the field to fix.
    pub fn validate(&self, max_payload: usize) -> Result<(CronExpr, Tz)> {
        validate_schedule_name(&self.name)?;
        let expr = CronExpr::parse(&self.cron)?;
        let tz = parse_timezone(&self.timezone)?;
        self.task.validate(max_payload)?;
        Ok((expr, tz))
    }
}

pub fn validate_schedule_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > MAX_SCHEDULE_NAME || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)) {
        return Err(Error::invalid(
            "name",
            format!("{n:?} is not a valid schedule name; use 1–{MAX_SCHEDULE_NAME} of A–Z a–z 0–9 _ - . : /"),
        ));
    }
    Ok(())
}

/// Changes to a schedule; `None` leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulePatch {
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub task: Option<TaskTemplate>,
    pub overlap: Option<Overlap>,
    pub misfire: Option<Misfire>,
}

impl SchedulePatch {
    pub fn is_empty(&self) -> bool {
        *self == SchedulePatch::default()
    }
}

/// A schedule as Postgres records it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub paused: bool,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// Every occurrence up to here has been planned (or skipped by the misfire policy).
    pub planned_until: DateTime<Utc>,
    pub last_fire_at: Option<DateTime<Utc>>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRecord {
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            task: self.task.clone(),
            paused: self.paused,
            overlap: self.overlap,
            misfire: self.misfire,
        }
    }

    /// The next `n` fire instants strictly after `after`.
    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        match (CronExpr::parse(&self.cron), parse_timezone(&self.timezone)) {
            (Ok(e), Ok(tz)) => e.next_n(tz, after, n),
            _ => Vec::new(),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Bind `$1` (the id) and `$2`–`$11`, the definition columns INSERT and UPDATE share:
/// name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms.
fn bind_definition<'q>(q: PgQuery<'q>, id: Uuid, spec: &'q ScheduleSpec, expr: &CronExpr, tz: Tz) -> PgQuery<'q> {
    let t = &spec.task;
    q.bind(id)
        .bind(&spec.name)
        .bind(expr.source().to_owned())
        .bind(tz.name())
        .bind(&t.name)
        .bind(&t.queue)
        .bind(&t.payload)
        .bind(t.priority.get() as i16)
        .bind(t.max_attempts as i32)
        .bind(serde_json::to_value(t.backoff).unwrap_or_default())
        .bind(t.timeout_ms as i64)
}

const SCHEDULE_COLUMNS: &str = "id, name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms, \
     enabled, overlap, misfire, planned_until, last_fire_at, next_fire_at, created_by, created_at, updated_at";

fn schedule_from_row(r: &sqlx::postgres::PgRow) -> ScheduleRecord {
    let backoff: serde_json::Value = r.get("backoff");
    let priority: i16 = r.get("priority");
    ScheduleRecord {
        id: r.get("id"),
        name: r.get("name"),
        cron: r.get("cron"),
        timezone: r.get("timezone"),
        task: TaskTemplate {
            name: r.get("task_name"),
            queue: r.get("queue"),
            payload: r.get("payload"),
            priority: Priority::new(priority.into()).unwrap_or_default(),
            max_attempts: r.get::<i32, _>("max_attempts") as u32,
            backoff: serde_json::from_value(backoff).unwrap_or_default(),
            timeout_ms: r.get::<i64, _>("timeout_ms") as u64,
        },
        paused: !r.get::<bool, _>("enabled"),
        overlap: r.get::<&str, _>("overlap").parse().unwrap_or_default(),
        misfire: r.get::<&str, _>("misfire").parse().unwrap_or_default(),
        planned_until: r.get("planned_until"),
        last_fire_at: r.get("last_fire_at"),
        next_fire_at: r.get("next_fire_at"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Schedules planned (a schedule caught up over several passes counts once per pass).
    pub schedules: usize,
    /// Occurrences enqueued as tasks.
    pub planned: usize,
    /// Missed occurrences (their instant passed while no tick ran) left out by the misfire policy.
    pub misfires_skipped: u64,
    /// Schedules that could not be planned (their error is logged); retried next tick.
    pub failed: usize,
}

/// Why a schedule change could not be made.
#[derive(Debug)]
pub enum ChangeError {
    NotFound,
    /// Another schedule has this name.
    NameTaken(String),
    Other(Error),
}

impl From<Error> for ChangeError {
    fn from(e: Error) -> Self {
        ChangeError::Other(e)
    }
}

impl From<sqlx::Error> for ChangeError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e
            && d.constraint() == Some("schedules_name_key")
        {
            return ChangeError::NameTaken(d.message().to_owned());
        }
        ChangeError::Other(e.into())
    }
}

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

    /// Plan the occurrences of `s` in `(planned_until, until]` (at most [`PASS_LIMIT`]),
    /// apply the misfire policy to those at or before `now`, and advance `planned_until`.
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
        let mut fires = Vec::new();
        let mut planned_to = s.planned_until;
        if s.planned_until < now {
            // Missed while no tick ran.
            let mut missed = expr.occurrences(tz, s.planned_until, now, PASS_LIMIT);
            let complete = missed.len() < PASS_LIMIT;
            match s.misfire {
                Misfire::RunAll => {
                    if let Some(&last) = missed.last() {
                        planned_to = last;
                    }
                    fires.append(&mut missed);
                }
                Misfire::RunOnce | Misfire::Skip => {
                    let mut skipped = missed.len() as u64;
                    let mut last = missed.last().copied();
                    // Only the latest matters: walk to it without keeping the rest.
                    while !missed.is_empty() && missed.len() == PASS_LIMIT {
                        missed = expr.occurrences(tz, missed[PASS_LIMIT - 1], now, PASS_LIMIT);
                        skipped += missed.len() as u64;
                        last = missed.last().copied().or(last);
                    }
                    if s.misfire == Misfire::RunOnce
                        && let Some(l) = last
                    {
                        fires.push(l);
                        skipped -= 1;
                    }
                    report.misfires_skipped += skipped;
                    planned_to = now;
                }
            }
            if s.misfire == Misfire::RunAll && !complete {
                // More missed occurrences than one pass takes: the next pass continues.
                return self.record(tx, s, &expr, tz, fires, planned_to, now, report).await;
            }
            planned_to = planned_to.max(now);
        }
        let room = PASS_LIMIT.saturating_sub(fires.len()).max(1);
        let ahead = expr.occurrences(tz, planned_to, until, room);
        planned_to = if ahead.len() == room { *ahead.last().unwrap_or(&until) } else { until };
        fires.extend(ahead);
        self.record(tx, s, &expr, tz, fires, planned_to, now, report).await
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
