//! Bounded growth: what a task leaves behind in Redis and Postgres shrinks back on its own.
//! Idempotency keys expire after their retention, tombstones after 6 h, the outbox stream is
//! emptied as the audit writer commits, a rate limit's log expires with its period, a group's
//! keys go with its last task, and finished bulk jobs leave Postgres after the retention.

use std::time::Duration;

use chronos_core::access::{Caller, Role};
use chronos_core::jobs::{JobKind, Selection};
use chronos_core::model::{Origin, Overlap};
use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_core::{Chronos, NewTask};
use chronos_tests::*;
use serde_json::json;

fn admin() -> Caller {
    Caller { key_id: "test".into(), role: Role::Admin }
}

async fn pttl(env: &TestEnv, key: &str) -> i64 {
    let mut conn = env.engine.connection();
    redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap()
}

async fn exists(env: &TestEnv, keys: &[String]) -> i64 {
    let mut conn = env.engine.connection();
    let mut n = 0;
    for k in keys {
        n += redis::cmd("EXISTS").arg(k).query_async::<i64>(&mut conn).await.unwrap();
    }
    n
}

#[tokio::test]
async fn what_a_task_leaves_in_redis_expires_or_is_removed() {
    let env = TestEnv::new().await;
    let q = "bounded";
    let k = env.engine.keys(q);

    // An idempotency key lives for the retention (1 s here), then Redis drops it.
    let short = Chronos::new(env.engine.clone(), env.store.clone(), 256 * 1024, Duration::from_secs(1));
    short
        .enqueue_batch(vec![NewTask::new("noop", json!({})).queue(q).delay(Duration::from_secs(3600)).idempotency_key("once")])
        .await
        .unwrap();
    let idem = k.idempotency("once");
    let ttl = pttl(&env, &idem).await;
    assert!((1..=1000).contains(&ttl), "the idempotency key expires within its retention: PTTL {ttl}");

    // A schedule's occurrence leaves a tombstone for 6 h when it finishes; nothing else stays.
    let spec = ScheduleSpec {
        paused: true,
        ..ScheduleSpec::new("bounded-yearly", "0 0 1 1 *", TaskTemplate { queue: q.into(), ..TaskTemplate::new("noop", json!({})) })
    };
    let schedule =
        Scheduler::new(env.client.clone(), DEFAULT_HORIZON).create(&spec, Some("test")).await.map_err(|e| format!("{e:?}")).unwrap();
    let origin = Origin { schedule_id: schedule.id, fire_at: chrono::Utc::now(), overlap: Overlap::Allow };
    let mut occurrence = NewTask::new("noop", json!({})).queue(q);
    occurrence.origin = Some(origin);
    let id = env.client.enqueue_batch(vec![occurrence]).await.unwrap()[0].id;
    // A rate limit's log of starts expires with its period.
    env.client
        .set_queue_limits(&admin(), q, &serde_json::from_value(json!({"rate": {"limit": 50, "period_ms": 300}})).unwrap())
        .await
        .unwrap();
    // Grouped tasks: their group's keys go with the last of them.
    let grouped: Vec<NewTask> = (0..20).map(|i| NewTask::new("noop", json!({})).queue(q).group(format!("g{}", i % 3))).collect();
    env.client.enqueue_batch(grouped).await.unwrap();

    let worker = start_worker(&env, diag_registry(), worker_config(&[q]), None);
    wait_until(Duration::from_secs(20), "21 tasks completed in Postgres", || async {
        env.store.status_counts(q).await.unwrap().completed == 21
    })
    .await;
    let tomb = pttl(&env, &k.done(&id.to_string())).await;
    assert!((1..=6 * 3600 * 1000).contains(&tomb), "the tombstone expires within 6 h: PTTL {tomb}");
    let rate = pttl(&env, &k.rate).await;
    assert!((1..=300).contains(&rate), "the rate log expires with its period: PTTL {rate}");
    wait_until(Duration::from_secs(10), "the outbox emptied by the audit writer", || async {
        let mut conn = env.engine.connection();
        redis::cmd("XLEN").arg(&k.outbox).query_async::<i64>(&mut conn).await.unwrap() == 0
    })
    .await;
    worker.stop().await;
    let groups: Vec<String> = (0..3)
        .flat_map(|g| [k.group_ready(&format!("g{g}")), k.group_active(&format!("g{g}"))])
        .chain([k.waiting_groups.clone()])
        .collect();
    assert_eq!(exists(&env, &groups).await, 0, "no group key outlives its tasks");
    let mut conn = env.engine.connection();
    let gn: i64 = redis::cmd("GET").arg(&k.grouped).query_async::<Option<i64>>(&mut conn).await.unwrap().unwrap_or(0);
    assert_eq!(gn, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(exists(&env, &[idem, k.rate.clone()]).await, 0, "the idempotency key and the rate log are gone");
    env.cleanup().await;
}

#[tokio::test]
async fn finished_bulk_jobs_leave_postgres_after_the_retention() {
    let env = TestEnv::new().await;
    let pick = |q: &str| Selection { queue: Some(q.into()), ..Default::default() };
    let old = env.client.start_job(&admin(), JobKind::Cancel, pick("a")).await.unwrap();
    let young = env.client.start_job(&admin(), JobKind::Cancel, pick("b")).await.unwrap();
    let open = env.client.start_job(&admin(), JobKind::Cancel, pick("c")).await.unwrap();
    env.client.cancel_job(&admin(), old.id).await.unwrap();
    env.client.cancel_job(&admin(), young.id).await.unwrap();
    sqlx::query("UPDATE jobs SET created_at = now() - interval '40 days', finished_at = now() - interval '40 days' WHERE id = $1")
        .bind(old.id)
        .execute(env.store.pool())
        .await
        .unwrap();
    let purged = chronos_core::retention::purge(&env.engine, &env.store, Default::default(), chrono::Utc::now()).await.unwrap();
    assert_eq!(purged.jobs, 1, "{purged:?}");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY created_at").fetch_all(env.store.pool()).await.unwrap();
    assert!(!left.contains(&old.id) && left.contains(&young.id) && left.contains(&open.id), "{left:?}");
    env.cleanup().await;
}
