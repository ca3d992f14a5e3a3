//! Postgres stopped under load (a private server of the test's own, never the shared one):
//! workers keep processing, the outbox grows, new enqueues are refused with a retryable error,
//! and once Postgres is back every transition reaches it.

use std::time::Duration;

use chronos_core::model::NewTask;
use chronos_tests::{PrivatePostgres, TestEnv, diag_registry, start_worker, wait_until, worker_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_processing_continues_and_every_transition_arrives_after_it_returns() {
    let pg = PrivatePostgres::start();
    let env = TestEnv::with_admin_url(&pg.admin_url()).await;
    const N: usize = 600;
    let tasks: Vec<NewTask> = (0..N)
        .map(|i| {
            NewTask::new("fail", json!({ "times": (i % 3 == 0) as u32 })).backoff(chronos_core::Backoff::fixed(Duration::from_millis(20)))
        })
        .collect();
    for chunk in tasks.chunks(200) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    pg.down();
    let mut cfg = worker_config(&["default"]);
    cfg.concurrency = 8;
    let w = start_worker(&env, diag_registry(), cfg, None);

    // Postgres is down: the queue drains anyway.
    wait_until(Duration::from_secs(60), "queue drained with Postgres down", || async {
        let c = env.engine.counts("default").await.unwrap();
        c.waiting == 0 && c.delayed == 0 && c.running == 0
    })
    .await;
    let outbox = env.engine.counts("default").await.unwrap().outbox;
    assert!(outbox > 0, "transitions wait in the outbox");
    let refused = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap_err();
    assert!(refused.is_retryable(), "enqueue refused with a retryable error: {refused}");
    println!("outbox held {outbox} entries while Postgres was down");

    pg.up();
    wait_until(Duration::from_secs(60), "all tasks completed in Postgres", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'completed'")
            .fetch_one(env.store.pool())
            .await
            .map(|n| n == N as i64)
            .unwrap_or(false)
    })
    .await;
    let (completed, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'completed'), count(*) FILTER (WHERE outcome = 'failed') FROM task_attempts",
    )
    .fetch_one(env.store.pool())
    .await
    .unwrap();
    assert_eq!(completed, N as i64, "every completed attempt recorded");
    assert_eq!(failed, N.div_ceil(3) as i64, "every failed attempt recorded");
    wait_until(Duration::from_secs(10), "outbox emptied", || async { env.engine.counts("default").await.unwrap().outbox == 0 }).await;
    w.stop().await;
    env.cleanup().await;
}
