//! The Redis-loss rebuild never re-runs a task that completed while it ran: claims are paused
//! and leases and outboxes drained before the rebuild reads Postgres.

use std::time::{Duration, Instant};

use chronos_core::NewTask;
use chronos_core::reconcile::ensure_redis_state;
use chronos_tests::{PrivateRedis, TestEnv};
use serde_json::json;

const QUEUE: &str = "rb";

#[tokio::test]
async fn a_task_that_completes_while_the_rebuild_runs_is_never_run_again() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    ensure_redis_state(&env.engine, &env.store, "setup").await.unwrap();
    // Enough live tasks that the rebuild reads many pages of Postgres.
    for _ in 0..20 {
        let batch = (0..500).map(|_| NewTask::new("noop", json!({})).queue(QUEUE)).collect();
        env.client.enqueue_batch(batch).await.unwrap();
    }
    let mut conn = env.engine.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Accepted after the data loss: in Postgres and in Redis, first in line, and (ids are
    // time-ordered) on the last page the rebuild reads.
    let late = env.client.enqueue(NewTask::new("noop", json!({})).queue(QUEUE)).await.unwrap().id;

    let rebuild = {
        let (engine, store) = (env.engine.clone(), env.store.clone());
        tokio::spawn(async move { ensure_redis_state(&engine, &store, "rebuilder").await })
    };
    // Once the rebuild holds its lock, a worker claims and completes what it can get. No audit
    // writer runs, so Postgres still says the task is queued.
    let lock = chronos_core::keys::rebuild_lock(&env.namespace);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Option<String> = redis::cmd("GET").arg(&lock).query_async(&mut conn).await.unwrap();
        if v.is_some_and(|v| v.starts_with("rebuilding")) {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild never took its lock");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let batch = env.engine.claim(QUEUE, "w", 1, Duration::from_secs(30)).await.unwrap();
    let completed_during_rebuild: Vec<_> = batch.tasks.iter().map(|t| t.id).collect();
    let leases: Vec<_> = batch.tasks.iter().map(|t| (t.id, t.token)).collect();
    assert!(env.engine.ack(QUEUE, "w", &leases).await.unwrap().iter().all(|ok| *ok));
    rebuild.await.unwrap().unwrap();

    // Everything left in the queue, once each: no task that completed may come back.
    let mut seen = std::collections::HashSet::new();
    loop {
        let batch = env.engine.claim(QUEUE, "w", 1000, Duration::from_secs(30)).await.unwrap();
        if batch.tasks.is_empty() {
            break;
        }
        for t in &batch.tasks {
            assert!(
                !completed_during_rebuild.contains(&t.id),
                "task {} completed while the rebuild ran and was put back to run again",
                t.id
            );
            assert!(seen.insert(t.id), "task {} claimed twice", t.id);
        }
        let leases: Vec<_> = batch.tasks.iter().map(|t| (t.id, t.token)).collect();
        env.engine.ack(QUEUE, "w", &leases).await.unwrap();
    }
    // Every accepted task ran: the ones restored, and the late one exactly once.
    assert_eq!(seen.len() + completed_during_rebuild.len(), 10_001);
    assert!(seen.contains(&late) ^ completed_during_rebuild.contains(&late));
    env.cleanup().await;
}

/// One queue's keys gone and nothing else: what a Redis Cluster shows when one master restarts
/// empty before its replica took over (that shard's queues lose everything, the set of queues
/// and the epoch key on other masters survive). The check rebuilds that queue alone.
#[tokio::test]
async fn a_queue_whose_node_lost_its_data_alone_is_rebuilt_and_the_others_are_left_alone() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    ensure_redis_state(&env.engine, &env.store, "setup").await.unwrap();
    // The first enqueue into a fresh Redis loads the script (NOSCRIPT, the pipeline runs again)
    // and leaves its queue for the check to mark.
    env.client.enqueue(NewTask::new("noop", json!({})).queue("warm-up")).await.unwrap();
    assert_eq!(ensure_redis_state(&env.engine, &env.store, "w").await.unwrap(), Some(0));
    let (lost, kept) = ("shard-lost", "shard-kept");
    for q in [lost, kept] {
        let batch = (0..300).map(|_| NewTask::new("noop", json!({})).queue(q)).collect();
        env.client.enqueue_batch(batch).await.unwrap();
    }
    assert_eq!(ensure_redis_state(&env.engine, &env.store, "w").await.unwrap(), None, "nothing was lost yet");

    // Every key of `lost` (its hash tag), as its node restarting empty would leave it.
    let mut conn = env.engine.connection();
    let pattern = format!("{}:{{{lost}}}:*", env.namespace);
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
    assert!(keys.len() > 300, "{} keys matched {pattern}", keys.len());
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();

    let restored = ensure_redis_state(&env.engine, &env.store, "w").await.unwrap();
    assert_eq!(restored, Some(300), "only the lost queue's tasks are restored");
    assert_eq!(ensure_redis_state(&env.engine, &env.store, "w").await.unwrap(), None, "marked intact again");
    for q in [lost, kept] {
        let batch = env.engine.claim(q, "w", 1000, Duration::from_secs(30)).await.unwrap();
        assert_eq!(batch.tasks.len(), 300, "queue {q}: every task once");
    }
    // A queue that is new to Redis is not taken for a lost one.
    env.client.enqueue(NewTask::new("noop", json!({})).queue("shard-new")).await.unwrap();
    assert_eq!(ensure_redis_state(&env.engine, &env.store, "w").await.unwrap(), None);
    env.cleanup().await;
}

/// The node holding the epoch key and the set of queues lost its data while a queue on another
/// node still has transitions in its outbox that Postgres has not seen (what sigkill-cluster
/// hit when it bounced that master). The rebuild waits for that outbox to drain; a worker that
/// starts then drains it itself (its audit writer runs while it settles, and the check puts the
/// queues Postgres knows back into the set, where the writer finds their outboxes), so it
/// rebuilds and works within seconds instead of waiting out the settle deadline (60 s) — for
/// ever, when every worker is restarted before that.
#[tokio::test]
async fn a_worker_starting_after_the_set_of_queues_was_lost_drains_the_outboxes_the_rebuild_waits_for() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    ensure_redis_state(&env.engine, &env.store, "setup").await.unwrap();
    let batch = (0..200).map(|_| NewTask::new("noop", json!({})).queue(QUEUE)).collect();
    env.client.enqueue_batch(batch).await.unwrap();
    // 50 run with no audit writer anywhere: their claims and completions wait in the outbox.
    let claimed = env.engine.claim(QUEUE, "w", 50, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.tasks.len(), 50);
    let leases: Vec<_> = claimed.tasks.iter().map(|t| (t.id, t.token)).collect();
    assert!(env.engine.ack(QUEUE, "w", &leases).await.unwrap().iter().all(|ok| *ok));
    let mut conn = env.engine.connection();
    let pending: u64 = redis::cmd("XLEN").arg(env.engine.keys(QUEUE).outbox).query_async(&mut conn).await.unwrap();
    assert!(pending > 0, "the completions are in the outbox");
    // The epoch key and the set of queues gone; the queue's own keys are all there.
    let ns = &env.namespace;
    let _: () = redis::cmd("DEL")
        .arg(chronos_core::keys::epoch_key(ns))
        .arg(chronos_core::keys::queues_set(ns))
        .query_async(&mut conn)
        .await
        .unwrap();

    let started = Instant::now();
    let worker = chronos_tests::start_worker(&env, chronos_tests::diag_registry(), chronos_tests::worker_config(&[QUEUE]), None);
    let pool = env.store.pool().clone();
    chronos_tests::wait_until(Duration::from_secs(20), "all 200 tasks completed in Postgres", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'").fetch_one(&pool).await.unwrap();
            n == 200
        }
    })
    .await;
    // The 50 that completed before the worker started did not run again: one attempt each.
    let ids: Vec<uuid::Uuid> = claimed.tasks.iter().map(|t| t.id).collect();
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = ANY($1)").bind(&ids).fetch_one(&pool).await.unwrap();
    assert_eq!(attempts, 50, "a task that completed before the rebuild ran again");
    eprintln!("rebuilt and drained in {:?}", started.elapsed());
    worker.stop().await;
    env.cleanup().await;
}

/// The rebuild's lock and pause are renewed while it works, however long that takes, and lapse
/// within seconds when the rebuilder dies: a SIGKILLed rebuilder no longer holds every claim of
/// the namespace for a minute.
#[tokio::test]
async fn a_rebuild_keeps_its_lock_while_it_works_and_a_dead_rebuilder_frees_the_queues_within_seconds() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    ensure_redis_state(&env.engine, &env.store, "setup").await.unwrap();
    let batch = (0..10).map(|_| NewTask::new("noop", json!({})).queue(QUEUE)).collect();
    env.client.enqueue_batch(batch).await.unwrap();
    // A lease that outlives the wait: the rebuild waits for it (claims paused) for many seconds.
    let held = env.engine.claim(QUEUE, "w", 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(held.tasks.len(), 1);
    let mut conn = env.engine.connection();
    let k = env.engine.keys(QUEUE);
    // Its claim drained into Postgres (no audit writer here), and the epoch key gone.
    let _: () = redis::cmd("XTRIM").arg(&k.outbox).arg("MAXLEN").arg(0).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("DEL").arg(chronos_core::keys::epoch_key(&env.namespace)).query_async(&mut conn).await.unwrap();

    let rebuild = {
        let (engine, store) = (env.engine.clone(), env.store.clone());
        tokio::spawn(async move { ensure_redis_state(&engine, &store, "rebuilder").await })
    };
    let lock = chronos_core::keys::rebuild_lock(&env.namespace);
    let get = |key: String| {
        let mut conn = env.engine.connection();
        async move { redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut conn).await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(lock.clone()).await.is_none() {
        assert!(Instant::now() < deadline, "the rebuild never took its lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the lock's own lifetime, still waiting for the lease: lock and pause held.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!rebuild.is_finished(), "the rebuild should still wait for the held lease");
    assert_eq!(get(lock.clone()).await.as_deref(), Some("rebuilding by rebuilder"), "the lock was not renewed");
    assert_eq!(get(k.paused.clone()).await.as_deref(), Some(chronos_core::reconcile::REBUILD_PAUSE), "the pause was not renewed");
    assert!(env.engine.claim(QUEUE, "w2", 10, Duration::from_secs(30)).await.unwrap().tasks.is_empty(), "claims are paused");

    // The rebuilder dies: nothing renews, and within seconds the queue is claimable again.
    rebuild.abort();
    let died = Instant::now();
    let deadline = died + Duration::from_secs(8);
    while get(lock.clone()).await.is_some() || get(k.paused.clone()).await.is_some() {
        assert!(Instant::now() < deadline, "a dead rebuilder's lock or pause outlived it by {:?}", died.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!env.engine.claim(QUEUE, "w2", 10, Duration::from_secs(30)).await.unwrap().tasks.is_empty());
    env.cleanup().await;
}
