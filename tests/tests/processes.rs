//! Real `chronos worker` processes: killed with SIGKILL mid-task (nothing is lost), and
//! stopped with SIGTERM (running tasks finish, or go straight back to the queue).

use std::time::{Duration, Instant};

use chronos_core::model::NewTask;
use chronos_tests::{TestEnv, spawn_worker_process, wait_until};
use serde_json::json;

async fn count(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(env.store.pool()).await.unwrap()
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running child").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_with_sigkill_mid_task_lose_none_of_two_thousand_tasks() {
    let env = TestEnv::new().await;
    const N: usize = 2000;
    let tasks: Vec<NewTask> = (0..N).map(|_| NewTask::new("sleep", json!({ "ms": 150 })).max_attempts(20)).collect();
    for chunk in tasks.chunks(500) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    let cfg = [("CHRONOS_LEASE_MS", "1500"), ("CHRONOS_CONCURRENCY", "12"), ("CHRONOS_QUEUES", "default")];
    let mut workers: Vec<_> = (0..3).map(|_| spawn_worker_process(&env, &cfg)).collect();
    let mut kills = 0;
    let started = Instant::now();
    while kills < 5 {
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let victim = kills % workers.len();
        workers[victim].start_kill().unwrap(); // SIGKILL: no chance to hand anything back
        let _ = workers[victim].wait().await;
        kills += 1;
        workers[victim] = spawn_worker_process(&env, &cfg);
    }
    wait_until(Duration::from_secs(180), "every task completed in Postgres", || async {
        count(&env, "SELECT count(*) FROM tasks WHERE status = 'completed'").await == N as i64
    })
    .await;
    // A killed worker may have died holding outbox entries it had read but not committed;
    // another writer adopts them after a while. Every transition is in Postgres once the
    // outbox is empty (entries are deleted only after commit).
    wait_until(Duration::from_secs(60), "outbox drained into Postgres", || async {
        env.engine.counts("default").await.unwrap().outbox == 0
    })
    .await;
    let attempts = count(&env, "SELECT count(*) FROM task_attempts").await;
    let lost = count(&env, "SELECT count(*) FROM task_attempts WHERE outcome = 'lost'").await;
    let rerun = count(&env, "SELECT count(*) FROM tasks WHERE attempts > 1").await;
    println!(
        "SIGKILL test: {N} tasks, {kills} kills, {lost} attempts lost with their worker, {rerun} tasks ran more than once \
         ({} attempts in all), finished in {:.1} s",
        attempts,
        started.elapsed().as_secs_f64()
    );
    assert!(lost > 0, "the kills hit running tasks (otherwise this test proves nothing)");
    assert_eq!(
        count(&env, "SELECT count(*) FROM task_attempts WHERE outcome = 'completed'").await,
        N as i64,
        "one completed attempt per task"
    );
    let c = env.engine.counts("default").await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.retrying, c.running, c.dead), (0, 0, 0, 0, 0), "queue drained: {c:?}");
    for w in &mut workers {
        let _ = w.start_kill();
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_tasks_finish_within_the_grace_period() {
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(env.client.enqueue(NewTask::new("sleep", json!({ "ms": 1500 }))).await.unwrap().id);
    }
    let mut w = spawn_worker_process(&env, &[("CHRONOS_SHUTDOWN_GRACE_MS", "10000"), ("CHRONOS_CONCURRENCY", "8")]);
    wait_until(Duration::from_secs(10), "5 tasks running", || async { env.engine.counts("default").await.unwrap().running == 5 }).await;
    let t0 = Instant::now();
    sigterm(&w);
    let status = tokio::time::timeout(Duration::from_secs(8), w.wait()).await.expect("worker exits after draining").unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "exited once the tasks finished, not at the end of the grace period");
    // The worker's audit writer drained its own transitions before exiting? Not necessarily:
    // any writer may; run one to be sure the transitions are all there.
    let mut w2 = spawn_worker_process(&env, &[]);
    wait_until(Duration::from_secs(10), "all 5 completed", || async {
        count(&env, "SELECT count(*) FROM tasks WHERE status = 'completed'").await == 5
    })
    .await;
    assert_eq!(count(&env, "SELECT count(*) FROM task_attempts").await, 5, "each ran exactly once");
    w2.start_kill().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_unfinished_tasks_straight_back_instead_of_waiting_for_lease_expiry() {
    let env = TestEnv::new().await;
    for _ in 0..5 {
        env.client.enqueue(NewTask::new("sleep", json!({ "ms": 60_000 })).max_attempts(1)).await.unwrap();
    }
    // a 60 s lease: were the tasks not handed back, they would sit for a minute
    let cfg = [("CHRONOS_SHUTDOWN_GRACE_MS", "300"), ("CHRONOS_LEASE_MS", "60000")];
    let mut w = spawn_worker_process(&env, &cfg);
    wait_until(Duration::from_secs(10), "5 tasks running", || async { env.engine.counts("default").await.unwrap().running == 5 }).await;
    sigterm(&w);
    let status = tokio::time::timeout(Duration::from_secs(5), w.wait()).await.expect("worker exits after the grace period").unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let c = env.engine.counts("default").await.unwrap();
    assert_eq!((c.waiting, c.running), (5, 0), "handed back to ready at once: {c:?}");
    // another worker takes them over right away; the handed-back attempt did not use up the
    // single attempt these tasks have
    let mut w2 = spawn_worker_process(&env, &cfg);
    wait_until(Duration::from_secs(5), "another worker runs them", || async { env.engine.counts("default").await.unwrap().running == 5 })
        .await;
    wait_until(Duration::from_secs(10), "released attempts audited", || async {
        count(&env, "SELECT count(*) FROM task_attempts WHERE outcome = 'released'").await == 5
    })
    .await;
    w2.start_kill().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_writer_can_run_in_its_own_process_apart_from_the_workers() {
    let env = TestEnv::new().await;
    const N: usize = 200;
    let tasks: Vec<NewTask> = (0..N).map(|_| NewTask::new("noop", json!({}))).collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    let mut worker = spawn_worker_process(&env, &[("CHRONOS_WORKER_AUDIT", "0"), ("CHRONOS_QUEUES", "default")]);
    // The worker runs every task, but writes nothing to Postgres: the transitions wait in the
    // outbox for an audit writer.
    wait_until(Duration::from_secs(60), "every task ran", || async {
        let c = env.engine.counts("default").await.unwrap();
        c.waiting == 0 && c.running == 0 && c.outbox > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&env, "SELECT count(*) FROM tasks WHERE status = 'completed'").await, 0, "no audit writer ran in the worker");
    // `chronos services` drains the outbox from its own process.
    let mut cmd = tokio::process::Command::new(chronos_tests::chronos_bin());
    cmd.arg("services").kill_on_drop(true).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    if std::env::var("CHRONOS_TEST_LOGS").is_err() {
        cmd.stderr(std::process::Stdio::null());
    }
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    let mut services = cmd.spawn().expect("spawn chronos services");
    wait_until(Duration::from_secs(60), "every task completed in Postgres", || async {
        count(&env, "SELECT count(*) FROM tasks WHERE status = 'completed'").await == N as i64
    })
    .await;
    sigterm(&services);
    assert!(tokio::time::timeout(Duration::from_secs(10), services.wait()).await.expect("services stop on SIGTERM").unwrap().success());
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    env.cleanup().await;
}
