//! Redis Cluster specifics: queues whose hash tags fall in different slots (on different
//! masters) are waited on per slot, never with a cross-slot BLPOP. These tests need the
//! cluster (`CHRONOS_TEST_REDIS_URL` with its seeds: `scripts/test`'s cluster pass sets it from
//! `ensure_redis_cluster`); against one node they say so and return.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_core::model::NewTask;
use chronos_core::queue::Woken;
use chronos_tests::{TestEnv, on_cluster, start_worker, wait_until, worker_config};
use chronos_workers::{Handler, HandlerError, Registry, Task, TaskContext};
use serde_json::json;

/// One queue name per third of the slot space, i.e. one per master of a 3-master cluster.
async fn queues_on_each_master(env: &TestEnv) -> Vec<String> {
    let mut conn = env.engine.connection();
    let mut picked: [Option<String>; 3] = Default::default();
    for i in 0.. {
        let name = format!("spread{i}");
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&name).query_async(&mut conn).await.unwrap();
        let third = (slot as usize * 3 / 16384).min(2);
        picked[third].get_or_insert(name);
        if picked.iter().all(Option::is_some) {
            break;
        }
    }
    picked.into_iter().map(Option::unwrap).collect()
}

fn cluster_only() -> bool {
    if !on_cluster() {
        eprintln!("not on a Redis Cluster (set CHRONOS_TEST_REDIS_URL to its seeds); skipped");
    }
    on_cluster()
}

/// Records which queue each task ran from (its payload says), and when.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, Instant)>>>);

impl Handler for Recorder {
    fn kind(&self) -> &'static str {
        "record"
    }
    async fn handle(&self, _ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: serde_json::Value = task.payload()?;
        self.0.lock().unwrap().push((p["queue"].as_str().unwrap_or_default().to_owned(), Instant::now()));
        Ok(())
    }
}

#[tokio::test]
async fn a_wait_over_queues_in_different_slots_blocks_per_slot_and_wakes_on_the_queue_that_got_work() {
    if !cluster_only() {
        return;
    }
    let env = TestEnv::new().await;
    let queues = queues_on_each_master(&env).await;
    let with_new = env.engine.wait_groups(&queues, true);
    assert_eq!(with_new.len(), 4, "three queues and the new-queue list, each in a slot of its own: {with_new:?}");
    for q in &queues {
        env.engine.register_queue(q).await.unwrap();
    }
    // One BLPOP per group, each on its own connection; work in the second queue wakes its wait.
    let groups = env.engine.wait_groups(&queues, false);
    assert_eq!(groups.len(), 3);
    let mut waits = Vec::new();
    for g in groups {
        let engine = env.engine.clone();
        let mut conn = engine.blocking_connection().await.unwrap();
        waits.push(tokio::spawn(async move { engine.wait_for_work(&mut conn, &g, Duration::from_secs(5)).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    env.client.enqueue(NewTask::new("noop", json!({})).queue(&queues[1])).await.unwrap();
    let woken = waits.remove(1).await.unwrap().unwrap();
    assert_eq!(woken, Woken::Work);
    assert!(t.elapsed() < Duration::from_secs(1), "woken after {:?}", t.elapsed());
    for w in &waits {
        assert!(!w.is_finished(), "a wait on another slot's lists answered");
    }
    for w in waits {
        w.abort();
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_serving_queues_on_every_master_sleeps_while_idle_and_takes_each_queues_task_at_once() {
    if !cluster_only() {
        return;
    }
    let env = TestEnv::new().await;
    let queues = queues_on_each_master(&env).await;
    let rec = Recorder::default();
    let mut reg = Registry::new();
    reg.register(rec.clone()).unwrap();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let w = start_worker(&env, reg, worker_config(&names), None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = w.stats.claim_calls.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claims_while_idle = w.stats.claim_calls.load(std::sync::atomic::Ordering::Relaxed) - before;
    // Blocked on every slot's wake list; a cross-slot BLPOP would fail and turn into polling.
    assert!(claims_while_idle <= queues.len() as u64, "{claims_while_idle} claim calls in 2 s while idle");
    for q in &queues {
        let sent = Instant::now();
        let id = env.client.enqueue(NewTask::new("record", json!({ "queue": q })).queue(q)).await.unwrap().id;
        wait_until(Duration::from_secs(5), "task ran", || async { rec.0.lock().unwrap().iter().any(|(rq, _)| rq == q) }).await;
        let at = rec.0.lock().unwrap().iter().find(|(rq, _)| rq == q).unwrap().1;
        println!("pickup from queue {q}: {:.1} ms", at.duration_since(sent).as_secs_f64() * 1000.0);
        assert!(at.duration_since(sent) < Duration::from_millis(500), "queue {q}: picked up after {:?}", at.duration_since(sent));
        wait_until(Duration::from_secs(10), "completed in Postgres", || async { env.status(id).await == "completed" }).await;
    }
    w.stop().await;
    env.cleanup().await;
}
