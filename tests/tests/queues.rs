//! Which queues a worker serves (`CHRONOS_QUEUES`, `CHRONOS_QUEUES_STRICT`), with real
//! `chronos worker` processes: `*` finds a queue created after it started without polling,
//! weights give picks in proportion, strict order drains the earlier queue first, and
//! `GET /v1/queues` flags a queue with work and no live worker.

use std::time::{Duration, Instant};

use chronos_core::model::NewTask;
use chronos_tests::{TestEnv, spawn_worker_process, start_api, wait_until};
use serde_json::{Value, json};

/// The queue of each attempt, in the order the attempts started.
async fn queues_in_start_order(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT t.queue FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE a.started_at IS NOT NULL \
         ORDER BY a.started_at, a.task_id",
    )
    .fetch_all(env.store.pool())
    .await
    .unwrap()
}

async fn started_attempts(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE started_at IS NOT NULL").fetch_one(env.store.pool()).await.unwrap()
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running child").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

/// Wait until `n` live workers are announced, so a test knows its workers are up (and idle).
async fn wait_for_live_workers(env: &TestEnv, n: usize) {
    wait_until(Duration::from_secs(20), &format!("{n} live workers announced"), || async {
        env.engine.live_workers().await.unwrap().len() == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_workers_pick_up_tasks_of_a_queue_created_after_they_started_within_a_second() {
    let env = TestEnv::new().await;
    // Two idle `*` workers with one slot each; no queue exists yet.
    let cfg = [("CHRONOS_QUEUES", "*"), ("CHRONOS_CONCURRENCY", "1")];
    let mut workers = [spawn_worker_process(&env, &cfg), spawn_worker_process(&env, &cfg)];
    wait_for_live_workers(&env, 2).await;
    // Both are blocked in their idle wait by now (a claim round takes milliseconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.engine.queues().await.unwrap().is_empty(), "no queue before the first task");

    for (round, queue) in ["fresh-one", "fresh-two"].into_iter().enumerate() {
        let t0 = Instant::now();
        for _ in 0..2 {
            env.client.enqueue(NewTask::new("sleep", json!({ "ms": 3000 })).queue(queue).max_attempts(1)).await.unwrap();
        }
        // Both tasks run at once only if both workers learned of the queue: the one woken by the
        // new-queue token, and the one it passed the word on to.
        wait_until(Duration::from_secs(10), &format!("both tasks of {queue} running"), || async {
            env.engine.counts(queue).await.unwrap().running == 2
        })
        .await;
        let took = t0.elapsed();
        println!("round {round}: a new queue's two tasks were running on two `*` workers after {took:?}");
        assert!(took < Duration::from_secs(1), "picked up within a second (the idle wait re-arms every 5 s): {took:?}");
        wait_until(Duration::from_secs(10), "the sleeps finished", || async { env.engine.counts(queue).await.unwrap().running == 0 }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for w in &mut workers {
        w.start_kill().unwrap();
        let _ = w.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_queues_are_picked_in_proportion_to_their_weights() {
    let env = TestEnv::new().await;
    for q in ["critical", "default", "low"] {
        let tasks: Vec<NewTask> = (0..150).map(|_| NewTask::new("sleep", json!({ "ms": 2 })).queue(q)).collect();
        env.client.enqueue_batch(tasks).await.unwrap();
    }
    // One slot: each claim round takes one task, from the first queue of the round's order.
    let mut w = spawn_worker_process(&env, &[("CHRONOS_QUEUES", "critical=6,default=3,low=1"), ("CHRONOS_CONCURRENCY", "1")]);
    wait_until(Duration::from_secs(60), "200 attempts started", || async { started_attempts(&env).await >= 200 }).await;
    w.start_kill().unwrap();
    let _ = w.wait().await;
    let order = queues_in_start_order(&env).await;
    let first: Vec<&String> = order.iter().take(200).collect();
    let n = |q: &str| first.iter().filter(|x| x.as_str() == q).count();
    let (c, d, l) = (n("critical"), n("default"), n("low"));
    println!("first 200 picks with weights 6:3:1: critical {c}, default {d}, low {l}");
    // Expected 120 / 60 / 20; the bounds are about four standard deviations of a binomial
    // draw wide, so this fails for taking queues in turn (67 each) or strictly (200 / 0 / 0).
    assert!((92..=148).contains(&c), "critical {c} of 200 (expected about 120)");
    assert!((34..=86).contains(&d), "default {d} of 200 (expected about 60)");
    assert!((5..=37).contains(&l), "low {l} of 200 (expected about 20): a low weight still gets picks");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_drains_the_earlier_listed_queue_before_the_next() {
    let env = TestEnv::new().await;
    // Enqueued in the opposite order to the worker's list, so FIFO across queues would not pass.
    for q in ["second", "first"] {
        let tasks: Vec<NewTask> = (0..30).map(|_| NewTask::new("sleep", json!({ "ms": 2 })).queue(q)).collect();
        env.client.enqueue_batch(tasks).await.unwrap();
    }
    let mut w =
        spawn_worker_process(&env, &[("CHRONOS_QUEUES", "first,second"), ("CHRONOS_QUEUES_STRICT", "1"), ("CHRONOS_CONCURRENCY", "1")]);
    wait_until(Duration::from_secs(60), "60 attempts started", || async { started_attempts(&env).await >= 60 }).await;
    w.start_kill().unwrap();
    let _ = w.wait().await;
    let order = queues_in_start_order(&env).await;
    let expected: Vec<&str> = std::iter::repeat_n("first", 30).chain(std::iter::repeat_n("second", 30)).collect();
    assert_eq!(order, expected, "every task of `first` started before any of `second`");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chronos_queues_stops_the_worker_with_exit_2_naming_the_variable() {
    let env = TestEnv::new().await;
    for (spec, strict, says) in [
        ("critical=six,low=1", "0", "CHRONOS_QUEUES: `critical=six`: a weight is a whole number from 1 to 1000"),
        ("*", "1", "CHRONOS_QUEUES: CHRONOS_QUEUES_STRICT=1 needs an order"),
        ("a", "yes", "CHRONOS_QUEUES_STRICT"),
    ] {
        let out = tokio::process::Command::new(chronos_tests::chronos_bin())
            .arg("worker")
            .envs(env.child_env())
            .env("CHRONOS_QUEUES", spec)
            .env("CHRONOS_QUEUES_STRICT", strict)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec:?}: {err}");
        assert!(err.contains(says), "{spec:?} strict={strict}: {err}");
    }
    env.cleanup().await;
}

async fn queue_view(api: &chronos_tests::RunningApi, name: &str) -> Value {
    let list: Value = api.admin(reqwest::Method::GET, "/v1/queues").send().await.unwrap().json().await.unwrap();
    list["queues"].as_array().unwrap().iter().find(|q| q["name"] == name).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_queues_flags_a_queue_with_work_and_no_live_worker_until_one_serves_it() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    // Scheduled an hour ahead, so it stays there whoever serves the queue.
    env.client.enqueue(NewTask::new("noop", json!({})).queue("reports").delay(Duration::from_secs(3600))).await.unwrap();
    let mut default_worker = spawn_worker_process(&env, &[("CHRONOS_QUEUES", "default")]);
    wait_for_live_workers(&env, 1).await;
    let q = queue_view(&api, "reports").await;
    assert_eq!((q["scheduled"].as_u64(), q["workers"].as_u64(), q["unserved"].as_bool()), (Some(1), Some(0), Some(true)), "{q}");
    let d = queue_view(&api, "default").await;
    assert_eq!((d["workers"].as_u64(), d["unserved"].as_bool()), (Some(1), Some(false)), "no work, nothing to flag: {d}");

    // A worker serving the queue by name: no longer flagged; stopped with SIGTERM, flagged again
    // at once (it removes itself).
    let mut reports = spawn_worker_process(&env, &[("CHRONOS_QUEUES", "critical=2,reports=1")]);
    wait_until(Duration::from_secs(20), "reports served", || async {
        let q = queue_view(&api, "reports").await;
        q["workers"] == 1 && q["unserved"] == false
    })
    .await;
    sigterm(&reports);
    assert!(reports.wait().await.unwrap().success());
    let q = queue_view(&api, "reports").await;
    assert_eq!((q["workers"].as_u64(), q["unserved"].as_bool()), (Some(0), Some(true)), "flagged once its worker stopped: {q}");

    // A `*` worker serves it too; killed with SIGKILL, its entry expires after its lease and a
    // second (1.5 s + 1 s here).
    let mut star = spawn_worker_process(&env, &[("CHRONOS_QUEUES", "*"), ("CHRONOS_LEASE_MS", "1500")]);
    wait_until(Duration::from_secs(20), "reports served by *", || async { queue_view(&api, "reports").await["unserved"] == false }).await;
    star.start_kill().unwrap();
    let _ = star.wait().await;
    let t0 = Instant::now();
    wait_until(Duration::from_secs(10), "the killed worker's entry expired", || async {
        queue_view(&api, "reports").await["unserved"] == true
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(5), "expired after about 2.5 s: {:?}", t0.elapsed());
    assert_eq!(env.engine.live_workers().await.unwrap().len(), 1, "only the default worker is left");
    default_worker.start_kill().unwrap();
    let _ = default_worker.wait().await;
    env.cleanup().await;
}
