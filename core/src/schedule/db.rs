//! The schedules table: its columns, how a row becomes a [`ScheduleRecord`], and the binding
//! INSERT and UPDATE share.

use sqlx::Row;
use uuid::Uuid;

use crate::cron::{CronExpr, Tz};
use crate::model::Priority;

use super::{ScheduleRecord, ScheduleSpec, TaskTemplate};

pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Bind `$1` (the id) and `$2`–`$11`, the definition columns INSERT and UPDATE share:
/// name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms.
pub(super) fn bind_definition<'q>(q: PgQuery<'q>, id: Uuid, spec: &'q ScheduleSpec, expr: &CronExpr, tz: Tz) -> PgQuery<'q> {
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

pub(super) const SCHEDULE_COLUMNS: &str = "id, name, cron, timezone, task_name, queue, payload, priority, max_attempts, backoff, timeout_ms, \
     enabled, overlap, misfire, planned_until, last_fire_at, next_fire_at, created_by, created_at, updated_at";

pub(super) fn schedule_from_row(r: &sqlx::postgres::PgRow) -> ScheduleRecord {
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
