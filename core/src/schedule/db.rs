//! The schedules table: every query the [`super::Scheduler`] makes, its columns and how a row
//! becomes a [`ScheduleRecord`]. Functions that take a `PgConnection` run inside the caller's
//! transaction (most hold the schedule's row lock).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::cron::{CronExpr, Tz};
use crate::model::{Priority, TaskId};

use super::{ScheduleRecord, ScheduleSpec, TaskTemplate};

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

/// Insert a new schedule, planned up to `now` (nothing planned yet).
pub(super) async fn insert(
    pool: &PgPool,
    id: Uuid,
    spec: &ScheduleSpec,
    expr: &CronExpr,
    tz: Tz,
    now: DateTime<Utc>,
    created_by: Option<&str>,
) -> sqlx::Result<()> {
    let q = sqlx::query(
        "INSERT INTO schedules (id, name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms,
                                enabled, overlap, misfire, planned_until, next_fire_at, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $15, $15)",
    );
    bind_definition(q, id, spec, expr, tz)
        .bind(!spec.paused)
        .bind(spec.overlap.as_str())
        .bind(spec.misfire.as_str())
        .bind(now)
        .bind(expr.next_after(tz, now))
        .bind(created_by)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn get<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> sqlx::Result<Option<ScheduleRecord>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1")))
        .bind(id)
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(schedule_from_row))
}

/// Schedules ordered by name, `limit` of them after `after_name`.
pub(super) async fn list(pool: &PgPool, after_name: Option<&str>, limit: i64) -> sqlx::Result<Vec<ScheduleRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2"
    )))
    .bind(after_name)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(schedule_from_row).collect())
}

/// The schedule, its row locked for the rest of the caller's transaction.
pub(super) async fn lock(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ScheduleRecord>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 FOR UPDATE")))
        .bind(id)
        .fetch_optional(tx)
        .await?;
    Ok(row.as_ref().map(schedule_from_row))
}

/// Write a changed definition; with `replan`, planning restarts at `now`.
pub(super) async fn update_definition(
    tx: &mut PgConnection,
    id: Uuid,
    spec: &ScheduleSpec,
    expr: &CronExpr,
    tz: Tz,
    replan: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let q = sqlx::query(
        "UPDATE schedules SET name = $2, cron = $3, timezone = $4, task_name = $5, queue = $6, payload = $7, priority = $8,
                max_attempts = $9, backoff = $10, timeout_ms = $11, overlap = $12, misfire = $13,
                planned_until = CASE WHEN $14 THEN $15 ELSE planned_until END, next_fire_at = $16, updated_at = $15
         WHERE id = $1",
    );
    bind_definition(q, id, spec, expr, tz)
        .bind(spec.overlap.as_str())
        .bind(spec.misfire.as_str())
        .bind(replan)
        .bind(now)
        .bind(expr.next_after(tz, now))
        .execute(tx)
        .await?;
    Ok(())
}

/// Whether the schedule is enabled (`None`: no such schedule), its row locked for the rest of
/// the caller's transaction.
pub(super) async fn lock_enabled(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar("SELECT enabled FROM schedules WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(tx).await
}

/// Pause or resume; planning restarts now either way (a paused stretch is not a misfire).
pub(super) async fn set_enabled(tx: &mut PgConnection, id: Uuid, enabled: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedules SET enabled = $2, planned_until = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(enabled)
        .execute(tx)
        .await?;
    Ok(())
}

pub(super) async fn delete(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(tx).await?;
    Ok(())
}

/// `(queue, task id)` of the schedule's occurrences not started (due after `after`, or all).
pub(super) async fn unstarted_occurrences(
    tx: &mut PgConnection,
    schedule: Uuid,
    after: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(String, TaskId)>> {
    sqlx::query_as(
        "SELECT queue, id FROM tasks WHERE schedule_id = $1 AND status IN ('scheduled', 'queued') AND attempts = 0
           AND ($2::timestamptz IS NULL OR fire_at > $2)",
    )
    .bind(schedule)
    .bind(after)
    .fetch_all(tx)
    .await
}

pub(super) async fn delete_tasks(tx: &mut PgConnection, ids: &[TaskId]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM tasks WHERE id = ANY($1)").bind(ids).execute(tx).await?;
    Ok(())
}

/// The enabled schedule if it is planned short of `until`, its row locked for the caller's
/// transaction (`FOR NO KEY UPDATE`: occurrence rows referencing it can still be inserted).
pub(super) async fn lock_behind(tx: &mut PgConnection, id: Uuid, until: DateTime<Utc>) -> sqlx::Result<Option<ScheduleRecord>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND enabled AND planned_until < $2 FOR NO KEY UPDATE"
    )))
    .bind(id)
    .bind(until)
    .fetch_optional(tx)
    .await?;
    Ok(row.as_ref().map(schedule_from_row))
}

/// Up to `limit` enabled schedules planned short of `until` (furthest behind first), except
/// `skip`, locked for the caller's transaction; schedules another tick holds are passed over.
pub(super) async fn lock_due(tx: &mut PgConnection, until: DateTime<Utc>, skip: &[Uuid], limit: i64) -> sqlx::Result<Vec<ScheduleRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules
         WHERE enabled AND planned_until < $1 AND id <> ALL($2)
         ORDER BY planned_until LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED"
    )))
    .bind(until)
    .bind(skip)
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows.iter().map(schedule_from_row).collect())
}

/// Those of `ids` that Postgres shows as not started.
pub(super) async fn not_started(conn: &mut PgConnection, ids: &[TaskId]) -> sqlx::Result<Vec<TaskId>> {
    sqlx::query_scalar("SELECT id FROM tasks WHERE id = ANY($1) AND status IN ('scheduled', 'queued') AND attempts = 0")
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Move `planned_until` after a pass, with the next and last fire instants as of `now`.
pub(super) async fn advance(
    tx: &mut PgConnection,
    id: Uuid,
    planned_to: DateTime<Utc>,
    next_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedules SET planned_until = $2, next_fire_at = $3,
                last_fire_at = (SELECT max(fire_at) FROM tasks WHERE schedule_id = $1 AND fire_at <= $4)
         WHERE id = $1",
    )
    .bind(id)
    .bind(planned_to)
    .bind(next_fire)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}
