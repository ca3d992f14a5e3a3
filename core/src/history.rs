//! Read-only history over the audit record, for the dashboard: attempts finished per minute,
//! dead tasks grouped by their error, and tasks created since an instant. Every query here
//! reads what the audit writer already wrote; none writes.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::error::Result;
use crate::model::TaskId;
use crate::store::Store;

/// Attempts that ended in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start (UTC).
    pub at: DateTime<Utc>,
    pub completed: i64,
    /// Failed or lost attempts (a retry or a death each).
    pub failed: i64,
}

/// Dead tasks that share an error (its first line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadGroup {
    /// The first line of the last error, at most 200 characters ("" for none).
    pub error: String,
    pub count: i64,
    pub queues: Vec<String>,
    pub names: Vec<String>,
    pub latest: Option<DateTime<Utc>>,
    /// The newest few, to link to.
    pub sample: Vec<TaskId>,
}

/// The SQL for a dead task's group key, shared with [`crate::store::TaskFilter::error_group`].
const GROUP_KEY: &str = crate::store::ERROR_GROUP;

/// An attempt that ran longer than this is left out of [`throughput`] (the bound lets the
/// query use the BRIN index on `started_at`, which the audit writer never changes).
pub const LONGEST_COUNTED_ATTEMPT: Duration = Duration::hours(1);

/// Attempts finished per minute over the last `minutes` minutes (the current one included),
/// oldest first, one entry per minute even when nothing finished.
pub async fn throughput(store: &Store, minutes: u32) -> Result<Vec<Minute>> {
    throughput_at(store, Utc::now(), minutes).await
}

pub async fn throughput_at(store: &Store, now: DateTime<Utc>, minutes: u32) -> Result<Vec<Minute>> {
    let minutes = minutes.clamp(1, 24 * 60) as i64;
    let current = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let from = current - Duration::minutes(minutes - 1);
    let rows = sqlx::query(
        "SELECT date_trunc('minute', finished_at) AS m,
                count(*) FILTER (WHERE outcome = 'completed'),
                count(*) FILTER (WHERE outcome IN ('failed', 'lost'))
         FROM task_attempts
         WHERE started_at >= $1 AND finished_at >= $2 AND finished_at < $3
         GROUP BY 1",
    )
    .bind(from - LONGEST_COUNTED_ATTEMPT)
    .bind(from)
    .bind(current + Duration::minutes(1))
    .fetch_all(store.pool())
    .await?;
    let mut out: Vec<Minute> = (0..minutes).map(|i| Minute { at: from + Duration::minutes(i), completed: 0, failed: 0 }).collect();
    for r in rows {
        let m: DateTime<Utc> = r.get(0);
        let i = (m - from).num_minutes();
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            slot.completed = r.get(1);
            slot.failed = r.get(2);
        }
    }
    Ok(out)
}

/// Dead tasks grouped by error, largest group first; only `queue`'s when given.
pub async fn dead_groups(store: &Store, queue: Option<&str>, limit: i64) -> Result<Vec<DeadGroup>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_KEY} AS err, count(*), array_agg(DISTINCT queue), array_agg(DISTINCT name),
                max(finished_at), (array_agg(id ORDER BY id DESC))[1:5]
         FROM tasks WHERE status = 'dead' AND ($1::text IS NULL OR queue = $1)
         GROUP BY 1 ORDER BY 2 DESC, 5 DESC NULLS LAST LIMIT $2"
    )))
    .bind(queue)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| DeadGroup { error: r.get(0), count: r.get(1), queues: r.get(2), names: r.get(3), latest: r.get(4), sample: r.get(5) })
        .collect())
}

/// The ids of dead tasks whose error's group key is `error` (all groups when `None`), in
/// `queue` when given, oldest first, at most `limit`.
pub async fn dead_ids(store: &Store, error: Option<&str>, queue: Option<&str>, limit: i64) -> Result<Vec<TaskId>> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM tasks WHERE status = 'dead' AND ($1::text IS NULL OR {GROUP_KEY} = $1)
           AND ($2::text IS NULL OR queue = $2) ORDER BY id LIMIT $3"
    )))
    .bind(error)
    .bind(queue)
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

/// The newest creation instant, and the queues that received tasks after `since` (at most 64
/// distinct, from the newest 1,000 tasks): what a live listing needs to know to look again.
pub async fn created_since(store: &Store, since: DateTime<Utc>) -> Result<(Option<DateTime<Utc>>, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT max(created_at), array_agg(DISTINCT queue) FROM (
           SELECT created_at, queue FROM tasks WHERE created_at > $1 ORDER BY created_at DESC LIMIT 1000) t",
    )
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    let mut queues: Vec<String> = rows.get::<Option<Vec<String>>, _>(1).unwrap_or_default();
    queues.truncate(64);
    Ok((rows.get(0), queues))
}

/// The newest creation instant of any task (the starting point for [`created_since`]).
pub async fn newest_created(store: &Store) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar("SELECT max(created_at) FROM tasks").fetch_one(store.pool()).await?)
}
