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
    // Every third task fails once; the rest take 20 ms: about 2 s of work at concurrency 8.
    let tasks: Vec<NewTask> = (0..N)
        .map(|i| match i % 3 {
            0 => NewTask::new("fail", json!({ "times": 1 })).backoff(chronos_core::Backoff::fixed(Duration::from_millis(20))),
            _ => NewTask::new("sleep", json!({ "ms": 20 })),
        })
        .collect();
    for chunk in tasks.chunks(200) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    let mut cfg = worker_config(&["default"]);
    cfg.concurrency = 8;
    let w = start_worker(&env, diag_registry(), cfg, None);
    // Under load: stop Postgres once part of the work is recorded.
    wait_until(Duration::from_secs(30), "some tasks completed in Postgres", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'completed'")
            .fetch_one(env.store.pool())
            .await
            .map(|n| n >= 50)
            .unwrap_or(false)
    })
    .await;
    pg.down();
    let left = env.engine.counts("default").await.unwrap();
    assert!(left.waiting > 100, "Postgres stopped while work remained: {left:?}");

    // Postgres is down: the queue drains anyway.
    wait_until(Duration::from_secs(60), "queue drained with Postgres down", || async {
        let c = env.engine.counts("default").await.unwrap();
        c.waiting == 0 && c.delayed == 0 && c.retrying == 0 && c.running == 0
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_wait_while_sqs_is_unreachable_and_are_sent_when_it_returns() {
    use chronos_tests::{TcpProxy, aws_endpoint, sqs_client, sqs_client_at};
    let env = TestEnv::new().await;
    let target: std::net::SocketAddr = aws_endpoint().trim_start_matches("http://").parse().expect("AWS_ENDPOINT_URL as http://ip:port");
    let proxy = TcpProxy::start(target).await;
    // The worker's SQS client goes through the proxy; the test reads SQS directly.
    let dlq = chronos_core::dlq::Dlq::with_client(sqs_client_at(&proxy.url()).await, &env.dlq_name()).await.unwrap();
    proxy.cut();
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), Some(dlq));
    let id = env.client.enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true }))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "task dead", || async { env.status(id).await == "dead" }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.engine.counts("default").await.unwrap().dlq_pending, 1, "the letter waits in Redis while SQS is unreachable");

    proxy.restore();
    wait_until(Duration::from_secs(40), "letter sent once SQS is back", || async {
        env.engine.counts("default").await.unwrap().dlq_pending == 0
    })
    .await;
    let direct = sqs_client().await;
    let url = direct.get_queue_url().queue_name(env.dlq_name()).send().await.unwrap().queue_url().unwrap().to_owned();
    let msgs = direct.receive_message().queue_url(&url).max_number_of_messages(10).wait_time_seconds(2).send().await.unwrap();
    let bodies: Vec<serde_json::Value> = msgs.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["id"], id.to_string());
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_loses_all_its_data_the_queues_are_rebuilt_from_postgres_and_every_task_completes() {
    let redis = chronos_tests::PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    let mut cfg = worker_config(&["default", "other"]);
    cfg.concurrency = 4;
    let w = start_worker(&env, diag_registry(), cfg, None);
    // Work of every kind in flight: done, running, waiting, scheduled, retrying, dead.
    let done = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "first task completed", || async { env.status(done).await == "completed" }).await;
    let dead = env.client.enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true }))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "dead task recorded", || async { env.status(dead).await == "dead" }).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let t = NewTask::new("sleep", json!({ "ms": 400 })).queue(if i % 2 == 0 { "default" } else { "other" });
        ids.push(env.client.enqueue(t).await.unwrap().id);
    }
    ids.push(env.client.enqueue(NewTask::new("noop", json!({})).delay(Duration::from_millis(1500))).await.unwrap().id);
    ids.push(
        env.client
            .enqueue(NewTask::new("fail", json!({ "times": 1 })).backoff(chronos_core::Backoff::fixed(Duration::from_millis(1200))))
            .await
            .unwrap()
            .id,
    );
    wait_until(Duration::from_secs(10), "tasks running", || async {
        let (a, b) = (env.engine.counts("default").await.unwrap(), env.engine.counts("other").await.unwrap());
        a.running + b.running > 0
    })
    .await;

    // Redis loses everything (a restart without persistence).
    let mut conn = env.engine.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    wait_until(Duration::from_secs(30), "every task completed after the rebuild", || async {
        let mut all = true;
        for id in &ids {
            all &= env.status(*id).await == "completed";
        }
        all
    })
    .await;
    assert_eq!(env.status(done).await, "completed", "a finished task is not run again");
    let done_attempts = env.store.attempts(done).await.unwrap().len();
    assert_eq!(done_attempts, 1);
    assert_eq!(
        env.engine.task_fields("default", dead).await.unwrap().get("st").map(String::as_str),
        Some("dead"),
        "dead tasks are back for inspection and redrive"
    );
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_running_when_redis_loses_its_data_are_closed_as_lost_so_every_attempt_has_an_outcome() {
    let redis = chronos_tests::PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    let mut cfg = worker_config(&["default"]);
    cfg.concurrency = 8;
    let w = start_worker(&env, diag_registry(), cfg, None);
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(env.client.enqueue(NewTask::new("sleep", json!({ "ms": 1500 }))).await.unwrap().id);
    }
    let started = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_attempts WHERE started_at IS NOT NULL AND finished_at IS NULL")
            .fetch_one(env.store.pool())
            .await
            .unwrap()
    };
    wait_until(Duration::from_secs(10), "every attempt recorded as started in Postgres", || async { started().await == 8 }).await;

    let mut conn = env.engine.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    wait_until(Duration::from_secs(30), "every task completed after the rebuild", || async {
        let mut all = true;
        for id in &ids {
            all &= env.status(*id).await == "completed";
        }
        all
    })
    .await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE finished_at IS NULL OR outcome IS NULL")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(open, 0, "no attempt stays open after the rebuild");
    for id in &ids {
        let attempts = env.store.attempts(*id).await.unwrap();
        assert_eq!(attempts[0].outcome.as_deref(), Some("lost"), "the attempt Redis lost is recorded as lost: {attempts:?}");
        assert!(attempts[0].error.as_deref().unwrap_or_default().contains("Redis lost its data"), "{attempts:?}");
        assert_eq!(attempts.last().unwrap().outcome.as_deref(), Some("completed"), "{attempts:?}");
    }
    w.stop().await;
    env.cleanup().await;
}
