//! Write coalescing (`Chronos::with_write_coalescing`, what `chronos api` runs): concurrent
//! single-task submissions share Postgres transactions and Redis round trips, and each caller
//! still gets exactly its own answer, only after its task is durable.

use std::collections::HashMap;

use chronos_core::model::NewTask;
use chronos_tests::{PrivateRedis, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_share_writes_and_each_gets_its_own_answer() {
    let env = TestEnv::new().await;
    let client = env.client.clone().with_write_coalescing(4);
    let n = 600;
    let mut handles = Vec::new();
    for i in 0..n {
        let c = client.clone();
        handles.push(tokio::spawn(async move {
            let mut t = NewTask::new("noop", json!({ "i": i }));
            // 60 of them share 10 idempotency keys.
            if i % 10 == 0 {
                t = t.idempotency_key(format!("k{}", (i / 10) % 10));
            }
            (i, c.enqueue(t).await.unwrap())
        }));
    }
    let mut by_key: HashMap<String, Vec<(uuid::Uuid, bool)>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (i, s) = h.await.unwrap();
        if i % 10 == 0 {
            by_key.entry(format!("k{}", (i / 10) % 10)).or_default().push((s.id, s.created));
        } else {
            assert!(s.created);
        }
        ids.insert(s.id);
    }
    // Each key created one task; every other submission with it got that task's id.
    assert_eq!(by_key.len(), 10);
    for (k, subs) in &by_key {
        assert_eq!(subs.iter().filter(|(_, c)| *c).count(), 1, "{k}: {subs:?}");
        assert!(subs.iter().all(|(id, _)| *id == subs[0].0), "{k}: {subs:?}");
    }
    let unique = n - 60 + 10;
    assert_eq!(ids.len(), unique);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows as usize, unique);
    let mut conn = env.engine.connection();
    let ready: usize = redis::cmd("ZCARD").arg(env.engine.keys("default").ready).query_async(&mut conn).await.unwrap();
    assert_eq!(ready, unique);
    let writes = client.writes();
    println!("{n} submissions written in {writes} Postgres transactions and Redis round trips");
    assert!(writes < n as u64 / 4, "submissions were coalesced: {writes} writes for {n}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_redis_refuses_every_caller_gets_a_retryable_error_and_no_row_stays() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    let client = env.client.clone().with_write_coalescing(2);
    client.enqueue(NewTask::new("noop", json!({}))).await.unwrap();
    drop(redis);
    let mut handles = Vec::new();
    for i in 0..50 {
        let c = client.clone();
        handles.push(tokio::spawn(async move { c.enqueue(NewTask::new("noop", json!({ "i": i }))).await }));
    }
    for h in handles {
        let e = h.await.unwrap().expect_err("Redis is down");
        assert!(e.is_retryable(), "{e}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows, 1, "rows of refused tasks were taken back");
    env.cleanup().await;
}
