//! The worker runtime end to end, in process, against real Redis, Postgres and the SQS
//! emulator: delays, retries and their gaps, permanent failures, dead letters, timeouts,
//! panics and cancellation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chronos_core::dlq::DeadLetter;
use chronos_core::model::{Backoff, Jitter, NewTask};
use chronos_core::queue::CancelOutcome;
use chronos_tests::{TestEnv, diag_registry, start_worker, wait_until, worker_config};
use chronos_workers::{Handler, HandlerError, Registry, Task, TaskContext};
use serde_json::json;

fn no_jitter(base_ms: u64) -> Backoff {
    Backoff::exponential(Duration::from_millis(base_ms), Duration::from_secs(60), Jitter::None)
}

/// Records when each attempt of each task started (wall clock, same clock as Redis here).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, SystemTime)>>>);

impl Handler for Recorder {
    fn kind(&self) -> &'static str {
        "record"
    }
    async fn handle(&self, _ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: serde_json::Value = task.payload()?;
        self.0.lock().unwrap().push((p["tag"].as_str().unwrap_or_default().to_owned(), SystemTime::now()));
        Ok(())
    }
}

#[tokio::test]
async fn delayed_tasks_never_start_early_and_start_within_milliseconds_of_their_due_time() {
    let env = TestEnv::new().await;
    let rec = Recorder::default();
    let mut reg = diag_registry();
    reg.register(rec.clone()).unwrap();
    let w = start_worker(&env, reg, worker_config(&["default"]), None);
    let now = SystemTime::now();
    let mut due = Vec::new();
    for i in 0..12u64 {
        let delay = Duration::from_millis(500 + i * 227); // 0.5 s … 3 s
        let at = now + delay;
        let at_ms = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
        let at_chrono = chrono::DateTime::from_timestamp_millis(at_ms).unwrap();
        env.client.enqueue(NewTask::new("record", json!({ "tag": i.to_string() })).run_at(at_chrono)).await.unwrap();
        due.push((i.to_string(), SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms as u64)));
    }
    wait_until(Duration::from_secs(10), "all delayed tasks ran", || async { rec.0.lock().unwrap().len() == 12 }).await;
    let started = rec.0.lock().unwrap().clone();
    let mut lateness_ms = Vec::new();
    for (tag, at) in &due {
        let (_, s) = started.iter().find(|(t, _)| t == tag).unwrap();
        let late = s.duration_since(*at).unwrap_or_else(|e| panic!("task {tag} started {:?} early", e.duration()));
        lateness_ms.push(late.as_secs_f64() * 1000.0);
    }
    lateness_ms.sort_by(f64::total_cmp);
    let p50 = lateness_ms[lateness_ms.len() / 2];
    let max = *lateness_ms.last().unwrap();
    println!("delayed-task lateness over {} tasks: p50 {p50:.1} ms, max {max:.1} ms", lateness_ms.len());
    // A few ms is the target; the bound is loose so a loaded CI machine does not flap.
    assert!(max < 250.0, "a delayed task started {max:.1} ms late");
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_task_failing_three_times_completes_on_attempt_four_with_gaps_that_follow_the_backoff() {
    let env = TestEnv::new().await;
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let id = env.client.enqueue(NewTask::new("fail", json!({ "times": 3 })).backoff(no_jitter(100))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "task completed in Postgres", || async { env.status(id).await == "completed" }).await;
    let attempts = env.store.attempts(id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.clone().unwrap_or_default()).collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "completed"]);
    assert!(attempts[0].error.as_deref().unwrap().contains("attempt 1"), "error recorded: {:?}", attempts[0].error);
    assert!(attempts[0].detail.as_deref().unwrap_or_default().contains("Fail::handle"), "error detail recorded");
    let mut gaps = Vec::new();
    for pair in attempts.windows(2) {
        let gap = (pair[1].started_at.unwrap() - pair[0].finished_at.unwrap()).num_milliseconds();
        gaps.push(gap);
    }
    println!("retry gaps for base 100 ms, no jitter: {gaps:?} ms (policy: 100, 200, 400)");
    for (gap, want) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= want - 1, "gap {gap} ms shorter than the policy's {want} ms");
        assert!(*gap <= want + 150, "gap {gap} ms far longer than the policy's {want} ms");
    }
    let task = env.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 4);
    w.stop().await;
    env.cleanup().await;
}

async fn dead_letters(env: &TestEnv, dlq: &chronos_core::dlq::Dlq) -> Vec<DeadLetter> {
    let out =
        dlq.client().receive_message().queue_url(dlq.queue_url()).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
    let _ = env;
    out.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect()
}

#[tokio::test]
async fn exhausted_attempts_produce_an_sqs_dead_letter_and_a_dead_row_in_postgres() {
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), Some(dlq.clone()));
    let id = env
        .client
        .enqueue(NewTask::new("fail", json!({ "times": 10, "message": "smtp said no" })).max_attempts(2).backoff(no_jitter(50)))
        .await
        .unwrap()
        .id;
    wait_until(Duration::from_secs(10), "task dead in Postgres", || async { env.status(id).await == "dead" }).await;
    let task = env.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 2);
    assert_eq!(task.last_error.as_deref(), Some("smtp said no"));
    let mut letters = Vec::new();
    for _ in 0..10 {
        letters.extend(dead_letters(&env, &dlq).await);
        if !letters.is_empty() {
            break;
        }
    }
    assert_eq!(letters.len(), 1, "one dead letter in SQS");
    assert_eq!(letters[0].id, id.to_string());
    assert_eq!(letters[0].last_error, "smtp said no");
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(letters[0].payload["times"], 10);
    // still inspectable in Redis
    assert_eq!(env.engine.task_fields("default", id).await.unwrap()["st"], "dead");
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_goes_straight_to_dead() {
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), Some(dlq.clone()));
    let id = env.client.enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true })).max_attempts(5)).await.unwrap().id;
    wait_until(Duration::from_secs(10), "task dead", || async { env.status(id).await == "dead" }).await;
    assert_eq!(env.store.attempts(id).await.unwrap().len(), 1);
    let mut letters = Vec::new();
    for _ in 0..10 {
        letters.extend(dead_letters(&env, &dlq).await);
        if !letters.is_empty() {
            break;
        }
    }
    assert_eq!(letters.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![id.to_string()]);
    w.stop().await;
    env.cleanup().await;
}

struct Panics;
impl Handler for Panics {
    fn kind(&self) -> &'static str {
        "panic"
    }
    async fn handle(&self, ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        if ctx.attempt == 1 {
            panic!("handler bug on attempt 1");
        }
        Ok(())
    }
}

struct Hangs;
impl Handler for Hangs {
    fn kind(&self) -> &'static str {
        "hang"
    }
    async fn handle(&self, _ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        // ignores cancellation on purpose: only the timeout can stop it
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_only_that_attempt_and_a_hung_one_is_stopped_by_its_timeout() {
    let env = TestEnv::new().await;
    let mut reg = diag_registry();
    reg.register(Panics).unwrap();
    reg.register(Hangs).unwrap();
    let w = start_worker(&env, reg, worker_config(&["default"]), None);
    let p = env.client.enqueue(NewTask::new("panic", json!({})).backoff(no_jitter(10))).await.unwrap().id;
    let h = env.client.enqueue(NewTask::new("hang", json!({})).max_attempts(1).timeout(Duration::from_millis(300))).await.unwrap().id;
    let ok = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "panic task completed on retry", || async { env.status(p).await == "completed" }).await;
    wait_until(Duration::from_secs(10), "hung task dead after timeout", || async { env.status(h).await == "dead" }).await;
    wait_until(Duration::from_secs(10), "noop completed", || async { env.status(ok).await == "completed" }).await;
    let pa = env.store.attempts(p).await.unwrap();
    assert!(pa[0].error.as_deref().unwrap().contains("handler panicked: handler bug on attempt 1"), "{:?}", pa[0].error);
    let ha = env.store.attempts(h).await.unwrap();
    assert_eq!(ha[0].error.as_deref(), Some("timed out after 300 ms"));
    assert!(!w.handle.is_finished(), "the worker survived the panic");
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn cancelling_a_running_task_reaches_its_handler() {
    let env = TestEnv::new().await;
    let mut cfg = worker_config(&["default"]);
    cfg.lease = std::time::Duration::from_millis(600); // heartbeat every 200 ms
    let w = start_worker(&env, diag_registry(), cfg, None);
    let id = env.client.enqueue(NewTask::new("sleep", json!({ "ms": 60_000 }))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "task running", || async { env.status(id).await == "running" }).await;
    let t0 = std::time::Instant::now();
    assert_eq!(env.client.engine.cancel("default", id, "tester").await.unwrap(), CancelOutcome::Cancelling);
    wait_until(Duration::from_secs(5), "task cancelled", || async { env.status(id).await == "cancelled" }).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "the handler stopped promptly, not after its 60 s sleep");
    let a = env.store.attempts(id).await.unwrap();
    assert_eq!(a[0].outcome.as_deref(), Some("cancelled"));
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log WHERE task_id = $1").bind(id).fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(actors, vec![("tester".to_owned(), "cancel_requested".to_owned())]);
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_idle_worker_blocks_instead_of_polling_and_wakes_at_once_for_new_work() {
    let env = TestEnv::new().await;
    let rec = Recorder::default();
    let mut reg = Registry::new();
    reg.register(rec.clone()).unwrap();
    let w = start_worker(&env, reg, worker_config(&["default"]), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.stats.claim_calls.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claims_while_idle = w.stats.claim_calls.load(std::sync::atomic::Ordering::Relaxed) - before;
    // BLPOP re-arms every 5 s; a polling loop would claim hundreds of times
    assert!(claims_while_idle <= 1, "{claims_while_idle} claim calls in 2 s while idle");
    let sent = SystemTime::now();
    env.client.enqueue(NewTask::new("record", json!({ "tag": "x" }))).await.unwrap();
    wait_until(Duration::from_secs(5), "task ran", || async { !rec.0.lock().unwrap().is_empty() }).await;
    let pickup = rec.0.lock().unwrap()[0].1.duration_since(sent).unwrap();
    println!("pickup of a new task by an idle worker: {:.1} ms", pickup.as_secs_f64() * 1000.0);
    assert!(pickup < Duration::from_millis(500));
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn at_concurrency_one_each_task_costs_one_script_call_its_ack_carried_by_the_next_claim() {
    let env = TestEnv::new().await;
    let n = 300u64;
    let tasks: Vec<NewTask> = (0..n).map(|_| NewTask::new("noop", json!({}))).collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    let mut cfg = worker_config(&["default"]);
    cfg.concurrency = 1;
    let w = start_worker(&env, diag_registry(), cfg, None);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(Duration::from_secs(30), "every task completed", || async { load(&w.stats.completed) == n }).await;
    wait_until(Duration::from_secs(30), "every completion audited", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'completed'").fetch_one(env.store.pool()).await.unwrap()
            == n as i64
    })
    .await;
    let (claims, acks, carried) = (load(&w.stats.claim_calls), load(&w.stats.ack_calls), load(&w.stats.acks_carried));
    println!("{n} tasks at concurrency 1: {claims} claim calls, {acks} ack calls, {carried} acks carried by a claim");
    // Every completion but the last finished while the loop waited for its slot: its ack rode
    // the claim of its successor. Separate acks would make this 2 calls per task.
    assert!(carried >= n - 2, "only {carried} of {n} acks carried by a claim");
    // One claim per task (each carrying one ack), and at most the last acks on their own.
    assert!(claims <= n + 5, "{claims} claim calls for {n} tasks");
    assert!(acks - carried <= 2, "{} ack calls of their own beside the carried ones", acks - carried);
    w.stop().await;
    env.cleanup().await;
}
