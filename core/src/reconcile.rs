//! Rebuilding Redis from Postgres after Redis lost its data (a restart without persistence, a
//! failover to an empty replica, a flush). Postgres holds every accepted task, so nothing
//! accepted is lost: the queues are rebuilt and the tasks run (a task that was running runs
//! again — at-least-once).
//!
//! Detection: an epoch key is set once Redis holds the namespace's state. A worker that finds no
//! epoch key waits until every audit outbox is drained (so Postgres is up to date), takes a
//! short lock (the epoch key itself, `SET NX PX`) and restores every live and dead task from
//! Postgres with `restore.lua`, which leaves alone any task already in Redis. The first worker
//! of a new namespace does the same and finds nothing to restore. Workers starting up wait for
//! the rebuild before they claim ([`settle_before_claiming`]); after a data loss in mid-run,
//! tasks that complete while the rebuild runs may run once more (at-least-once). An attempt that
//! was running when Redis lost its data is closed in Postgres as `lost`: no attempt stays open.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::queue::Engine;
use crate::queue::script::RESTORE;
use crate::store::Store;

/// How long a rebuild may hold the lock before another worker may take over.
const REBUILD_LOCK: Duration = Duration::from_secs(60);
const PAGE: i64 = 500;

fn epoch_key(namespace: &str) -> String {
    format!("{namespace}:epoch")
}

/// Check that Redis still holds this namespace's state; rebuild it from Postgres when it does
/// not. Returns the number of tasks restored when this call rebuilt, `None` otherwise. Cheap
/// when all is well (one GET), so workers call it every second.
pub async fn ensure_redis_state(engine: &Engine, store: &Store, worker: &str) -> Result<Option<usize>> {
    let ns = engine.namespace().to_owned();
    let mut conn = engine.connection();
    let epoch: Option<String> = redis::cmd("GET").arg(epoch_key(&ns)).query_async(&mut conn).await?;
    if epoch.as_deref() == Some("ok") {
        return Ok(None);
    }
    if epoch.is_some() {
        return Ok(None); // another worker is rebuilding
    }
    // Rebuild only once every outbox is drained: then Postgres has every transition that
    // happened before this moment, and a task it lists as live but Redis lacks was lost with
    // Redis. (After a real data loss the outboxes are gone too; while Postgres is down they
    // grow, and the check waits.)
    let mut queues = engine.queues().await?;
    queues.extend(store.queue_names().await?);
    queues.sort();
    queues.dedup();
    for q in &queues {
        let pending: u64 = redis::cmd("XLEN").arg(engine.keys(q).outbox).query_async(&mut conn).await?;
        if pending > 0 {
            return Ok(None);
        }
    }
    let locked: Option<String> = redis::cmd("SET")
        .arg(epoch_key(&ns))
        .arg(format!("rebuilding by {worker}"))
        .arg("NX")
        .arg("PX")
        .arg(REBUILD_LOCK.as_millis() as u64)
        .query_async(&mut conn)
        .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let restored = rebuild(engine, store).await?;
    let _: () = redis::cmd("SET").arg(epoch_key(&ns)).arg("ok").query_async(&mut conn).await?;
    if restored > 0 {
        tracing::warn!(restored, "Redis had lost its data: queues rebuilt from Postgres");
    }
    Ok(Some(restored))
}

/// Restore every scheduled, queued, running, retrying and dead task from Postgres.
pub async fn rebuild(engine: &Engine, store: &Store) -> Result<usize> {
    let mut restored = 0;
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query(
            "SELECT t.id, t.queue, t.name, t.payload::text AS payload, t.priority, t.attempts, t.max_attempts, t.backoff, t.timeout_ms,
                    coalesce(t.idempotency_key, '') AS ik, t.status, (extract(epoch FROM t.run_at) * 1000)::int8 AS ra,
                    coalesce(s.overlap, 'allow') AS overlap, t.schedule_id
             FROM tasks t LEFT JOIN schedules s ON s.id = t.schedule_id
             WHERE t.status IN ('scheduled', 'queued', 'running', 'retrying', 'dead') AND t.id > $1
             ORDER BY t.id LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(store.pool())
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get("id");
        let full_page = rows.len() as i64 == PAGE;
        let mut by_queue: std::collections::HashMap<String, Vec<&sqlx::postgres::PgRow>> = Default::default();
        for r in &rows {
            by_queue.entry(r.get("queue")).or_default().push(r);
        }
        for (queue, rows) in by_queue {
            engine.register_queue(&queue).await?;
            let k = engine.keys(&queue);
            let mut inv = RESTORE.call(&k);
            inv.arg(rows.len());
            let attempts: std::collections::HashMap<String, i32> =
                rows.iter().map(|r| (r.get::<Uuid, _>("id").to_string(), r.get::<i32, _>("attempts"))).collect();
            for r in rows {
                let backoff: serde_json::Value = r.get("backoff");
                let backoff = serde_json::from_value::<crate::model::Backoff>(backoff).unwrap_or_default();
                inv.arg(r.get::<Uuid, _>("id").to_string())
                    .arg(r.get::<String, _>("name"))
                    .arg(r.get::<String, _>("payload"))
                    .arg(r.get::<i16, _>("priority"))
                    .arg(r.get::<i32, _>("attempts"))
                    .arg(r.get::<i32, _>("max_attempts"))
                    .arg(backoff.encode())
                    .arg(r.get::<i64, _>("timeout_ms"))
                    .arg(r.get::<String, _>("ik"))
                    .arg(r.get::<String, _>("status"))
                    .arg(r.get::<i64, _>("ra"));
                // Occurrences keep their schedule's overlap guard (a triggered run had none:
                // its origin's policy was allow, which the join cannot tell apart; it gets the guard).
                let overlap: crate::model::Overlap = r.get::<&str, _>("overlap").parse().unwrap_or_default();
                match r.get::<Option<Uuid>, _>("schedule_id") {
                    Some(sid) => inv.arg(sid.to_string()).arg(overlap.code()),
                    None => inv.arg("").arg(""),
                };
            }
            let mut conn = engine.connection();
            let ids: Vec<String> = inv.invoke_async(&mut conn).await?;
            restored += ids.len();
            let lost: Vec<(Uuid, i32)> = ids.iter().filter_map(|id| Some((id.parse().ok()?, *attempts.get(id)?))).collect();
            close_lost_attempts(store, &lost).await?;
        }
        if !full_page {
            break;
        }
    }
    Ok(restored)
}

/// Every attempt ends with an outcome: a restored task was absent from Redis, so no lease of it
/// exists any more and an attempt of it still open in Postgres can never report. It is closed
/// as `lost`, as the reaper closes an attempt whose worker died. Only attempts up to the count
/// the rebuild read (`(id, attempts)`): the restored task may already run its next attempt.
async fn close_lost_attempts(store: &Store, lost: &[(Uuid, i32)]) -> Result<()> {
    if lost.is_empty() {
        return Ok(());
    }
    let (ids, upto): (Vec<Uuid>, Vec<i32>) = lost.iter().copied().unzip();
    sqlx::query(
        "UPDATE task_attempts a SET finished_at = now(), outcome = 'lost',
                error = COALESCE(a.error, 'Redis lost its data while this attempt ran; the task was rebuilt from Postgres and runs again')
         FROM UNNEST($1::uuid[], $2::int4[]) AS l(id, upto)
         WHERE a.task_id = l.id AND a.attempt <= l.upto AND a.finished_at IS NULL",
    )
    .bind(&ids)
    .bind(&upto)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Before a worker starts claiming: make sure Redis holds the namespace's state, rebuilding it
/// (or waiting while another worker rebuilds it) first, so no task can complete and then be
/// restored by a rebuild running beside it. Gives up after the rebuild lock's lifetime, and at
/// once when Postgres is unreachable: workers keep working through a Postgres outage.
pub async fn settle_before_claiming(engine: &Engine, store: &Store, worker: &str) {
    let deadline = tokio::time::Instant::now() + REBUILD_LOCK;
    loop {
        match ensure_redis_state(engine, store, worker).await {
            Ok(_) => {}
            Err(e) => {
                // Name the store that failed: the check reads both, and an operator paged at
                // night should not go looking at Redis when Postgres is down.
                let store = match &e {
                    crate::Error::Postgres(_) => "Postgres (DATABASE_URL) is unreachable",
                    crate::Error::Redis(_) => "Redis (REDIS_URL) is unreachable",
                    _ => "the check failed",
                };
                tracing::warn!(error = %e, "{store}: cannot check whether Redis lost its data before claiming; starting anyway");
                return;
            }
        }
        let mut conn = engine.connection();
        let epoch: Option<String> = redis::cmd("GET").arg(epoch_key(engine.namespace())).query_async(&mut conn).await.unwrap_or(None);
        if epoch.as_deref() == Some("ok") || tokio::time::Instant::now() >= deadline {
            return;
        }
        // Another worker is rebuilding, or the outboxes are still draining.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
