//! The Postgres store: the durable record of every task (written before enqueue returns),
//! its attempts, idempotency keys and the manual-action audit log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{PreparedTask, Schedule, TaskId};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// `Debug` names the type only (the pool's settings are not worth printing).
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// When a caller last found Postgres unreachable ([`Store::note_unreachable`]).
    unreachable_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long after Postgres was found unreachable the reads that have another answer (a cached
/// key, Redis) give it straight away instead of waiting out the pool's acquire timeout again.
pub const SKIP_AFTER_UNREACHABLE: Duration = Duration::from_secs(2);

/// A task as Postgres records it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub queue: String,
    pub name: String,
    pub payload: serde_json::Value,
    pub priority: i16,
    pub status: String,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub backoff: serde_json::Value,
    pub timeout_ms: i64,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    /// The schedule that planned this task, and the occurrence's fire instant.
    pub schedule_id: Option<Uuid>,
    pub fire_at: Option<DateTime<Utc>>,
    /// The task's group (tenant), if it has one.
    pub group: Option<String>,
    /// What the handler returned on completion.
    pub result: Option<serde_json::Value>,
    /// No attempt starts after this instant.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last progress its handler reported: `{"pct": 0–100, "message": "..."}`.
    pub progress: Option<serde_json::Value>,
    /// The producer's W3C `traceparent`, when it sent one (see [`crate::telemetry`]).
    pub trace_context: Option<String>,
    /// While `pending`: how many of the tasks it waits for have not finished yet.
    pub pending_deps: i32,
    /// `Some("ignore")`: a task it waits for that ends dead or cancelled does not fail it.
    pub on_child_failure: Option<String>,
    /// A cancel reached the running attempt (live state from Redis; never stored in Postgres).
    pub cancel_requested: bool,
}

/// A manual action on a task (cancel, retry now, redrive, …): who did it, and when.
#[derive(Debug, Clone, Serialize)]
pub struct ManualAction {
    pub at: DateTime<Utc>,
    /// The API key id (or `cli`, `admin`) that acted.
    pub actor: String,
    pub action: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub detail: Option<String>,
    /// The handler's own log lines during the attempt (the last ones, when it logged more than
    /// the capture keeps; a first line says so).
    pub logs: Option<String>,
}

const TASK_COLUMNS: &str = "id, queue, name, payload, priority, status, run_at, attempts, max_attempts, backoff, timeout_ms, idempotency_key, last_error, created_at, updated_at, finished_at, created_by, schedule_id, fire_at, task_group, result, expires_at, progress, trace_context, pending_deps, on_child_failure";

/// Filters of a task listing; all optional, combined with AND. Newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub queue: Option<String>,
    pub name: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Full-text search over name, payload strings, the last error and the attempts' captured
    /// log lines (web-search syntax).
    pub q: Option<String>,
    /// Only tasks created by this key.
    pub created_by: Option<String>,
    /// Only tasks older than this id (ids are time-ordered UUIDv7): the page cursor.
    pub before_id: Option<TaskId>,
    /// Only tasks whose last error's first line (cut at 200 characters, [`ERROR_GROUP`]) is
    /// this: the dead-letter view's groups.
    pub error_group: Option<String>,
    pub limit: i64,
}

/// The SQL for a task's error group: the first line of its last error, cut at 200 characters.
/// The dashboard's dead-letter groups and [`TaskFilter::error_group`] must agree on it.
pub const ERROR_GROUP: &str = "left(split_part(coalesce(last_error, ''), E'\\n', 1), 200)";

/// The WHERE clause of [`Store::list_tasks`] and [`Store::count_tasks`], binding $1–$9.
const TASK_FILTER: &str = "($1::text IS NULL OR status = $1)
               AND ($2::text IS NULL OR queue = $2)
               AND ($3::text IS NULL OR name = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)
               AND ($6::text IS NULL OR search @@ websearch_to_tsquery('simple', $6)
                    OR id IN (SELECT task_id FROM task_attempts WHERE log_search @@ websearch_to_tsquery('simple', $6)))
               AND ($7::text IS NULL OR created_by = $7)
               AND ($8::uuid IS NULL OR id < $8)";

/// Task counts per status of one queue, from Postgres.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    pub completed: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Age in seconds of the oldest task due to run but not started.
    pub oldest_waiting_age_s: Option<f64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connect with a pool whose acquire timeout is short: an unavailable database must turn
    /// into a quick, retryable error, not a hung request.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts: PgConnectOptions = url.parse::<PgConnectOptions>()?.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new().max_connections(10).acquire_timeout(Duration::from_secs(3)).connect_lazy_with(opts);
        Ok(Store { pool, unreachable_at: Default::default() })
    }

    /// Say that a query just failed for want of Postgres.
    pub fn note_unreachable(&self) {
        *self.unreachable_at.lock().unwrap() = Some(std::time::Instant::now());
    }

    /// Postgres was found unreachable within [`SKIP_AFTER_UNREACHABLE`]: a read with another
    /// answer should give it without asking Postgres (one caller per period asks again).
    pub fn recently_unreachable(&self) -> bool {
        self.unreachable_at.lock().unwrap().is_some_and(|t| t.elapsed() < SKIP_AFTER_UNREACHABLE)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Record new tasks in one transaction. Returns `(id, created)` per input: for a task whose
    /// idempotency key is still held by another task, that task's id and `false`.
    pub async fn insert_tasks(&self, tasks: &[PreparedTask], idempotency_retention: Duration) -> Result<Vec<(TaskId, bool)>> {
        let mut tx = self.pool.begin().await?;
        let out = Self::insert_tasks_in(&mut tx, tasks, idempotency_retention).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// [`Store::insert_tasks`] inside the caller's transaction. A task whose id already has a row
    /// (a schedule's occurrence planned again) is reported as `(id, false)` and left as it is.
    pub async fn insert_tasks_in(
        tx: &mut sqlx::PgConnection,
        tasks: &[PreparedTask],
        idempotency_retention: Duration,
    ) -> Result<Vec<(TaskId, bool)>> {
        let now = Utc::now();
        let mut out: Vec<(TaskId, bool)> = tasks.iter().map(|t| (t.id, true)).collect();
        let dedupe: Vec<Option<String>> = tasks.iter().map(PreparedTask::dedupe_key).collect();
        let keyed: Vec<usize> = (0..tasks.len()).filter(|&i| dedupe[i].is_some()).collect();
        if !keyed.is_empty() {
            // One row per (queue, key): within a batch the first task with a key wins.
            let mut seen = std::collections::HashSet::new();
            let mut first: Vec<usize> =
                keyed.iter().copied().filter(|&i| seen.insert((tasks[i].task.queue.as_str(), dedupe[i].as_deref()))).collect();
            // Rows in key order: two batches taking overlapping keys in different orders
            // deadlock (seen in coalesce.rs, 600 concurrent submissions sharing 10 keys).
            first.sort_unstable_by(|&a, &b| (tasks[a].task.queue.as_str(), &dedupe[a]).cmp(&(tasks[b].task.queue.as_str(), &dedupe[b])));
            let queues: Vec<&str> = first.iter().map(|&i| tasks[i].task.queue.as_str()).collect();
            let keys: Vec<&str> = first.iter().map(|&i| dedupe[i].as_deref().unwrap_or_default()).collect();
            let ids: Vec<Uuid> = first.iter().map(|&i| tasks[i].id).collect();
            let expires = now + chrono::Duration::from_std(idempotency_retention).unwrap_or_default();
            // Take each key unless a live (unexpired) holder exists; then read every holder.
            sqlx::query(
                "INSERT INTO idempotency_keys (queue, key, task_id, expires_at)
                 SELECT q, k, i, $4 FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS u(q, k, i)
                 ON CONFLICT (queue, key) DO UPDATE SET task_id = EXCLUDED.task_id, expires_at = EXCLUDED.expires_at
                 WHERE idempotency_keys.expires_at < now()",
            )
            .bind(&queues)
            .bind(&keys)
            .bind(&ids)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
            let rows = sqlx::query(
                "SELECT queue, key, task_id FROM idempotency_keys WHERE (queue, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            )
            .bind(&queues)
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            for &i in &keyed {
                let q = tasks[i].task.queue.as_str();
                if let Some(r) = rows.iter().find(|r| r.get::<&str, _>(0) == q && Some(r.get::<&str, _>(1)) == dedupe[i].as_deref()) {
                    let holder: Uuid = r.get(2);
                    out[i] = (holder, holder == tasks[i].id);
                }
            }
        }
        let new: Vec<usize> = (0..tasks.len()).filter(|&i| out[i].1).collect();
        if !new.is_empty() {
            let mut ids = Vec::with_capacity(new.len());
            let mut queues = Vec::with_capacity(new.len());
            let mut names = Vec::with_capacity(new.len());
            let mut payloads = Vec::with_capacity(new.len());
            let mut prios = Vec::with_capacity(new.len());
            let mut statuses = Vec::with_capacity(new.len());
            let mut run_ats = Vec::with_capacity(new.len());
            let mut maxes = Vec::with_capacity(new.len());
            let mut backoffs = Vec::with_capacity(new.len());
            let mut timeouts = Vec::with_capacity(new.len());
            let mut ikeys: Vec<Option<&str>> = Vec::with_capacity(new.len());
            let mut creators: Vec<Option<&str>> = Vec::with_capacity(new.len());
            let mut schedules: Vec<Option<Uuid>> = Vec::with_capacity(new.len());
            let mut fires: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(new.len());
            let mut created: Vec<DateTime<Utc>> = Vec::with_capacity(new.len());
            let mut groups: Vec<Option<&str>> = Vec::with_capacity(new.len());
            let mut expires: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(new.len());
            let mut traces: Vec<Option<&str>> = Vec::with_capacity(new.len());
            for &i in &new {
                let p = &tasks[i];
                ids.push(p.id);
                queues.push(p.task.queue.as_str());
                names.push(p.task.name.as_str());
                payloads.push(p.payload_json.as_str());
                prios.push(p.task.priority.get() as i16);
                statuses.push(if matches!(p.task.schedule, Schedule::Now) || p.approx_run_at(now) <= now { "queued" } else { "scheduled" });
                run_ats.push(p.approx_run_at(now));
                maxes.push(p.task.max_attempts as i32);
                backoffs.push(serde_json::to_string(&p.task.backoff).unwrap_or_default());
                timeouts.push(p.task.timeout.as_millis() as i64);
                ikeys.push(p.task.idempotency_key.as_deref());
                creators.push(p.task.created_by.as_deref());
                schedules.push(p.task.origin.map(|o| o.schedule_id));
                fires.push(p.task.origin.map(|o| o.fire_at));
                created.push(p.task.submitted_at.unwrap_or(now));
                groups.push(p.task.group.as_deref());
                expires.push(p.task.expires_at);
                traces.push(p.task.trace_context.as_deref());
            }
            let inserted: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO tasks (id, queue, name, payload, priority, status, run_at, max_attempts, backoff, timeout_ms, idempotency_key, created_by,
                                    schedule_id, fire_at, created_at, updated_at, task_group, expires_at, trace_context)
                 SELECT id, q, n, p::jsonb, pr, st, ra, ma, bk::jsonb, t, ik, cb, sid, fa, ca, ca, g, ex, tc
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[], $7::timestamptz[],
                             $8::int4[], $9::text[], $10::int8[], $11::text[], $12::text[], $13::uuid[], $14::timestamptz[],
                             $15::timestamptz[], $16::text[], $17::timestamptz[], $18::text[])
                      AS u(id, q, n, p, pr, st, ra, ma, bk, t, ik, cb, sid, fa, ca, g, ex, tc)
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .bind(&ids)
            .bind(&queues)
            .bind(&names)
            .bind(&payloads)
            .bind(&prios)
            .bind(&statuses)
            .bind(&run_ats)
            .bind(&maxes)
            .bind(&backoffs)
            .bind(&timeouts)
            .bind(&ikeys)
            .bind(&creators)
            .bind(&schedules)
            .bind(&fires)
            .bind(&created)
            .bind(&groups)
            .bind(&expires)
            .bind(&traces)
            .fetch_all(&mut *tx)
            .await?;
            if inserted.len() < new.len() {
                let fresh: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
                for &i in &new {
                    if !fresh.contains(&tasks[i].id) {
                        out[i].1 = false;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Undo [`Store::insert_tasks`] for tasks Redis refused (so a retry can succeed cleanly).
    pub async fn delete_tasks(&self, ids: &[TaskId]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE task_id = ANY($1)").bind(ids).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM tasks WHERE id = ANY($1)").bind(ids).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| task_from_row(&r)))
    }

    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {TASK_FILTER} AND ($9::text IS NULL OR {ERROR_GROUP} = $9)
             ORDER BY id DESC LIMIT $10"
        )));
        let rows = bind_filter(rows, f).bind(f.limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// How many tasks match `f` (its `limit` ignored).
    pub async fn count_tasks(&self, f: &TaskFilter) -> Result<i64> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM tasks WHERE {TASK_FILTER} AND ($9::text IS NULL OR {ERROR_GROUP} = $9)"
        )));
        Ok(bind_filter(q, f).fetch_one(&self.pool).await?.get(0))
    }

    /// A schedule's runs whose instant has come, newest first.
    pub async fn schedule_runs(&self, schedule: Uuid, limit: i64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE schedule_id = $1 AND fire_at <= now() ORDER BY fire_at DESC, id DESC LIMIT $2"
        )))
        .bind(schedule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Queues that Postgres knows of (every queue that ever received a task).
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT queue FROM tasks ORDER BY queue").fetch_all(&self.pool).await?)
    }

    pub async fn status_counts(&self, queue: &str) -> Result<StatusCounts> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'dead'),
                    count(*) FILTER (WHERE status = 'cancelled'),
                    extract(epoch FROM now() - min(run_at) FILTER (WHERE status IN ('queued', 'scheduled') AND run_at <= now()))::float8
             FROM tasks WHERE queue = $1",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        Ok(StatusCounts { completed: row.get(0), dead: row.get(1), cancelled: row.get(2), oldest_waiting_age_s: row.get(3) })
    }

    pub async fn attempts(&self, id: TaskId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT attempt, worker, started_at, finished_at, outcome, error, detail, logs,
                    (extract(epoch FROM finished_at - started_at) * 1000)::int8 AS duration_ms
             FROM task_attempts WHERE task_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                attempt: r.get("attempt"),
                worker: r.get("worker"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                duration_ms: r.get("duration_ms"),
                outcome: r.get("outcome"),
                error: r.get("error"),
                detail: r.get("detail"),
                logs: r.get("logs"),
            })
            .collect())
    }
}

pub(crate) fn task_from_row(r: &sqlx::postgres::PgRow) -> TaskRecord {
    TaskRecord {
        id: r.get("id"),
        queue: r.get("queue"),
        name: r.get("name"),
        payload: r.get("payload"),
        priority: r.get("priority"),
        status: r.get("status"),
        run_at: r.get("run_at"),
        attempts: r.get("attempts"),
        max_attempts: r.get("max_attempts"),
        backoff: r.get("backoff"),
        timeout_ms: r.get("timeout_ms"),
        idempotency_key: r.get("idempotency_key"),
        last_error: r.get("last_error"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        finished_at: r.get("finished_at"),
        created_by: r.get("created_by"),
        schedule_id: r.get("schedule_id"),
        fire_at: r.get("fire_at"),
        group: r.get("task_group"),
        result: r.get("result"),
        expires_at: r.get("expires_at"),
        progress: r.get("progress"),
        trace_context: r.get("trace_context"),
        pending_deps: r.get("pending_deps"),
        on_child_failure: r.get("on_child_failure"),
        cancel_requested: false,
    }
}

impl Store {
    /// The manual actions taken on a task, oldest first.
    pub async fn manual_actions(&self, id: TaskId) -> Result<Vec<ManualAction>> {
        let rows = sqlx::query("SELECT at, actor, action, detail FROM audit_log WHERE task_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ManualAction { at: r.get("at"), actor: r.get("actor"), action: r.get("action"), detail: r.get("detail") })
            .collect())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Open one connection of its own now, for start-up checks: the pool connects lazily and
    /// reports an unreachable server as its own acquire timeout, while this reports the cause
    /// (connection refused, unknown database, …) within `within`.
    pub async fn probe(&self, within: Duration) -> Result<()> {
        use sqlx::Connection;
        let opts = self.pool.connect_options();
        let connect = sqlx::PgConnection::connect_with(&opts);
        let conn = tokio::time::timeout(within, connect).await.map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {} s", within.as_secs())))
        })??;
        conn.close().await?;
        Ok(())
    }
}

fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    f: &'q TaskFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&f.status)
        .bind(&f.queue)
        .bind(&f.name)
        .bind(f.created_after)
        .bind(f.created_before)
        .bind(&f.q)
        .bind(&f.created_by)
        .bind(f.before_id)
        .bind(&f.error_group)
}
