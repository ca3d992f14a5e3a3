//! Retention, through `chronos tick --once`: finished tasks past `CHRONOS_RETENTION_DAYS`
//! (completed, cancelled) and `CHRONOS_DEAD_RETENTION_DAYS` (dead, their letter sent) leave
//! Postgres with their attempts, in batches; everything younger, live, or still owed to SQS stays.

use std::collections::HashMap;
use std::time::Duration;

use chronos_core::{NewTask, TaskId};
use chronos_tests::{TestEnv, chronos_bin, diag_registry, start_worker, wait_until, worker_config};
use serde_json::json;
use uuid::Uuid;

const QUEUE: &str = "keep";

/// Move a task `days` into the past, as if it had been created and had finished then: its
/// UUIDv7 timestamp, `created_at` and `finished_at` (and its attempts follow the new id).
async fn age(env: &TestEnv, id: TaskId, days: i64) -> TaskId {
    let at = chrono::Utc::now() - chrono::Duration::days(days);
    let mut b = *id.as_bytes();
    b[..6].copy_from_slice(&(at.timestamp_millis() as u64).to_be_bytes()[2..]);
    let old = Uuid::from_bytes(b);
    let mut tx = env.store.pool().begin().await.unwrap();
    sqlx::query("UPDATE tasks SET id = $2, created_at = $3, finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE $3 END, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(old)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE task_attempts SET task_id = $2 WHERE task_id = $1").bind(id).bind(old).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    old
}

async fn count(env: &TestEnv, sql: &str, id: TaskId) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(id).fetch_one(env.store.pool()).await.unwrap()
}

#[tokio::test]
async fn the_tick_deletes_finished_tasks_past_their_retention_in_batches_and_keeps_the_rest() {
    let env = TestEnv::new().await;
    let worker = start_worker(&env, diag_registry(), worker_config(&[QUEUE]), Some(env.dlq().await));
    // 2,500 completed tasks (more than two batches), 4 dead ones (failing once, no retry).
    let mut completed = Vec::new();
    for _ in 0..5 {
        let batch = (0..500).map(|_| NewTask::new("noop", json!({})).queue(QUEUE)).collect();
        completed.extend(env.client.enqueue_batch(batch).await.unwrap().into_iter().map(|s| s.id));
    }
    let mut dead = Vec::new();
    for _ in 0..4 {
        dead.push(env.client.enqueue(NewTask::new("fail", json!({"times": 9})).queue(QUEUE).max_attempts(1)).await.unwrap().id);
    }
    let cancelled = env.client.enqueue(NewTask::new("noop", json!({})).queue(QUEUE).delay(Duration::from_secs(3600))).await.unwrap().id;
    env.engine.cancel(QUEUE, cancelled, "test").await.unwrap();
    let k = env.engine.keys(QUEUE);
    let mut conn = env.engine.connection();
    wait_until(Duration::from_secs(60), "every task finished (in Postgres) and every dead letter sent", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status IN ('completed', 'dead', 'cancelled')")
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        let pending: u64 = redis::cmd("ZCARD").arg(&k.dlq).query_async(&mut env.engine.connection()).await.unwrap();
        n == 2505 && pending == 0
    })
    .await;
    worker.stop().await;
    let queued = env.client.enqueue(NewTask::new("noop", json!({})).queue(QUEUE).delay(Duration::from_secs(3600))).await.unwrap().id;

    // What each task's age makes of it: (id, expected to be deleted).
    let mut cases: Vec<(&str, TaskId, bool)> = Vec::new();
    for (i, id) in completed.iter().enumerate() {
        let days = if i < 2_499 { 31 } else { 29 };
        cases.push(("completed", age(&env, *id, days).await, days > 30));
    }
    cases.push(("cancelled 31 days ago", age(&env, cancelled, 31).await, true));
    cases.push(("queued, created 100 days ago", age(&env, queued, 100).await, false));
    cases.push(("dead 31 days ago", age(&env, dead[0], 31).await, false));
    cases.push(("dead 89 days ago", age(&env, dead[1], 89).await, false));
    cases.push(("dead 91 days ago", age(&env, dead[2], 91).await, true));
    let owed = age(&env, dead[3], 91).await;
    cases.push(("dead 91 days ago, its SQS message still pending", owed, false));
    // Redis holds the dead tasks under their ids: move them along, the last one owed to SQS.
    let moved =
        [(dead[0], cases[cases.len() - 4].1), (dead[1], cases[cases.len() - 3].1), (dead[2], cases[cases.len() - 2].1), (dead[3], owed)];
    for (was, now) in moved {
        let (was, now) = (was.to_string(), now.to_string());
        let _: () = redis::pipe()
            .rename(k.task(&was), k.task(&now))
            .rename(k.payload(&was), k.payload(&now))
            .zrem(&k.dead, &was)
            .zadd(&k.dead, &now, 1)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("ZADD").arg(&k.dlq).arg(1).arg(owed.to_string()).query_async(&mut conn).await.unwrap();

    let out = tokio::process::Command::new(chronos_bin())
        .args(["tick", "--once"])
        .envs(env.child_env())
        .env("CHRONOS_RETENTION_DAYS", "30")
        .env("CHRONOS_DEAD_RETENTION_DAYS", "90")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "chronos tick --once: {}", String::from_utf8_lossy(&out.stderr));

    let mut wrong: HashMap<&str, usize> = HashMap::new();
    for (what, id, deleted) in &cases {
        let rows = count(&env, "SELECT count(*) FROM tasks WHERE id = $1", *id).await;
        let attempts = count(&env, "SELECT count(*) FROM task_attempts WHERE task_id = $1", *id).await;
        let kept = rows == 1 && (attempts > 0 || what.starts_with("queued") || what.starts_with("cancelled"));
        if *deleted != (rows == 0 && attempts == 0) || (!*deleted && !kept) {
            *wrong.entry(what).or_default() += 1;
        }
    }
    assert!(wrong.is_empty(), "tasks not as their retention says: {wrong:?}");
    // The purged dead task left Redis too; the others are still there to retry or redrive.
    let in_dead: Vec<String> = redis::cmd("ZRANGE").arg(&k.dead).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(in_dead.len(), 3, "dead set after the tick: {in_dead:?}");
    assert!(!in_dead.contains(&cases[cases.len() - 2].1.to_string()));
    env.cleanup().await;
}
