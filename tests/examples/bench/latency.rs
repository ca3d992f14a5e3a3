//! Latency and timing: pickup (enqueue → handler start on an idle worker), delayed-task
//! lateness, retry gaps, and the cost of a crash (SIGKILL → re-delivery). These record when
//! each handler starts, so they run the production worker runtime in this process with a
//! recording handler (and the audit writer, as deployed); the crash victim is a real
//! `chronos worker` process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use chronos_core::model::{Backoff, Jitter, Schedule};
use chronos_core::{NewTask, TaskId};
use chronos_workers::{Handler, HandlerError, Registry, Task, TaskContext, Worker, WorkerStats};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Opts;
use crate::env::{Bench, BenchEnv, QUEUE};
use crate::report::{Report, median};
use crate::throughput::start_workers;

pub fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

type Starts = Arc<Mutex<Vec<(TaskId, u32, SystemTime)>>>;

/// Records each attempt's start; fails the first `fail_first` attempts of every task.
struct Recorder {
    kind: &'static str,
    starts: Starts,
    fail_first: u32,
}

impl Handler for Recorder {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn handle(&self, ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        let now = SystemTime::now();
        self.starts.lock().unwrap().push((ctx.id, ctx.attempt, now));
        if ctx.attempt <= self.fail_first { Err(HandlerError::retryable_msg("failing on purpose")) } else { Ok(()) }
    }
}

/// The production worker runtime in this process, with the audit writer.
struct InProc {
    stop: oneshot::Sender<()>,
    _stats: Arc<WorkerStats>,
    handle: JoinHandle<chronos_core::Result<()>>,
}

impl InProc {
    fn start(env: &BenchEnv, registry: Registry, concurrency: usize, lease: Duration) -> InProc {
        let mut cfg = chronos_tests::worker_config(&[QUEUE]);
        cfg.concurrency = concurrency;
        cfg.lease = lease;
        let w = Worker::new(env.engine.clone(), registry, cfg).with_audit(env.store.clone());
        let stats = w.stats();
        let (stop, rx) = oneshot::channel();
        let handle = tokio::spawn(w.run(async move {
            let _ = rx.await;
        }));
        InProc { stop, _stats: stats, handle }
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.handle.await??;
        Ok(())
    }
}

fn recorder(kind: &'static str, fail_first: u32) -> (Registry, Starts) {
    let starts: Starts = Arc::default();
    let mut reg = Registry::new();
    reg.register(chronos_workers::handlers::Noop).expect("noop");
    reg.register(Recorder { kind, starts: starts.clone(), fail_first }).expect("recorder");
    (reg, starts)
}

async fn wait_for(starts: &Starts, n: usize, limit: Duration) {
    let t = Instant::now();
    while starts.lock().unwrap().len() < n && t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An idle worker; one task every 5 ms; enqueue call → handler start. `client`: through
/// `Chronos::enqueue` (the Postgres row first, as producers do), else `Engine::enqueue`
/// (the task straight into Redis, as BullMQ's `add`).
pub async fn pickup(b: &Bench, o: &Opts, client: bool, r: &mut Report) -> Result<()> {
    let via = if client { "Chronos::enqueue (Postgres + Redis)" } else { "Engine::enqueue (Redis)" };
    eprintln!("pickup: {} tasks {} ms apart via {via}", o.pickup_tasks, o.pickup_every.as_millis());
    let env = BenchEnv::new(b).await?;
    let (reg, starts) = recorder("record", 0);
    let worker = InProc::start(&env, reg, 50, Duration::from_secs(30));
    // Warm-up, then let the worker go idle (blocked, waiting for work).
    env.client.enqueue(NewTask::new("noop", json!({})).queue(QUEUE)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut sent: HashMap<TaskId, SystemTime> = HashMap::new();
    let mut tick = tokio::time::interval(o.pickup_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = env.client.idempotency_retention;
    for _ in 0..o.pickup_tasks {
        tick.tick().await;
        let task = NewTask::new("record", json!({})).queue(QUEUE);
        if client {
            let at = SystemTime::now();
            let s = env.client.enqueue(task).await?;
            sent.insert(s.id, at);
        } else {
            let p = vec![task.prepare(env.client.max_payload_bytes)?];
            sent.insert(p[0].id, SystemTime::now());
            env.engine.enqueue(&p, retention).await?;
        }
    }
    wait_for(&starts, o.pickup_tasks, Duration::from_secs(10)).await;
    let mut lat: Vec<f64> = starts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, _, s)| sent.get(id).map(|e| s.duration_since(*e).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)))
        .collect();
    if lat.len() < o.pickup_tasks {
        r.note(format!("pickup via {via}: only {} of {} tasks started within 10 s", lat.len(), o.pickup_tasks));
    }
    let (key, label) = if client { ("pickup_client", "pickup via Chronos::enqueue") } else { ("pickup", "pickup via Engine::enqueue") };
    r.distribution(key, label, &mut lat);
    worker.stop().await?;
    env.cleanup(b).await;
    Ok(())
}

/// Tasks due 1–5 s ahead on an idle worker; handler start minus due time.
pub async fn delayed(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = o.delayed_tasks;
    eprintln!("delayed: {n} tasks due 1–5 s ahead");
    let env = BenchEnv::new(b).await?;
    let (reg, starts) = recorder("record", 0);
    let worker = InProc::start(&env, reg, 50, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now_ms = epoch_ms(SystemTime::now()) as i64;
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| {
            let at = now_ms + 1000 + (i as i64 * 4000) / (n as i64 - 1).max(1);
            NewTask::new("record", json!({})).queue(QUEUE).run_at(chrono::DateTime::from_timestamp_millis(at).expect("time"))
        })
        .collect();
    let mut due: HashMap<TaskId, i64> = HashMap::new();
    for chunk in tasks.chunks(1000) {
        let submitted = env.client.enqueue_batch(chunk.to_vec()).await?;
        for (s, t) in submitted.iter().zip(chunk) {
            if let Schedule::At(at) = t.schedule {
                due.insert(s.id, at.timestamp_millis());
            }
        }
    }
    wait_for(&starts, n, Duration::from_secs(15)).await;
    let mut late: Vec<f64> = starts.lock().unwrap().iter().filter_map(|(id, _, s)| due.get(id).map(|d| epoch_ms(*s) - *d as f64)).collect();
    if late.len() < n {
        r.note(format!("delayed: only {} of {n} tasks started within 15 s", late.len()));
    }
    r.add("delayed_early", "delayed tasks started before due", late.iter().filter(|l| **l < 0.0).count() as f64, "tasks");
    r.distribution("delayed", "delayed lateness", &mut late);
    worker.stop().await?;
    env.cleanup(b).await;
    Ok(())
}

/// Tasks that fail 3 times with an exponential 100 ms base (no jitter), then succeed: the
/// gaps between attempt starts (expected 100, 200, 400 ms).
pub async fn retry(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = o.retry_tasks;
    eprintln!("retry: {n} tasks failing 3 times, exponential backoff from 100 ms, no jitter");
    let env = BenchEnv::new(b).await?;
    let (reg, starts) = recorder("flaky", 3);
    let worker = InProc::start(&env, reg, 50, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(60), Jitter::None);
    let tasks = (0..n).map(|_| NewTask::new("flaky", json!({})).queue(QUEUE).max_attempts(4).backoff(backoff)).collect();
    env.client.enqueue_batch(tasks).await?;
    wait_for(&starts, n * 4, Duration::from_secs(15)).await;
    let mut by_task: HashMap<TaskId, Vec<(u32, SystemTime)>> = HashMap::new();
    for (id, a, s) in starts.lock().unwrap().iter() {
        by_task.entry(*id).or_default().push((*a, *s));
    }
    let mut gaps: [Vec<f64>; 3] = Default::default();
    for runs in by_task.values_mut() {
        runs.sort_by_key(|(a, _)| *a);
        for (i, w) in runs.windows(2).enumerate().take(3) {
            gaps[i].push(w[1].1.duration_since(w[0].1).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0));
        }
    }
    if gaps[2].len() < n {
        r.note(format!("retry: only {} of {n} tasks reached their 4th attempt within 15 s", gaps[2].len()));
    }
    for (i, g) in gaps.iter_mut().enumerate() {
        r.add(format!("retry_gap{}_ms", i + 1), format!("retry gap {} (expected {} ms), median", i + 1, 100 << i), median(g), "ms");
    }
    worker.stop().await?;
    env.cleanup(b).await;
    Ok(())
}

/// A `chronos worker` holding tasks is SIGKILLed; a surviving worker (already running) picks
/// them up once their leases expire. Both use the same lease, `o.crash_lease`.
pub async fn crash(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = 10;
    eprintln!("crash: a worker holding {n} tasks is SIGKILLed; lease {} ms", o.crash_lease.as_millis());
    let env = BenchEnv::new(b).await?;
    let tasks = (0..n).map(|_| NewTask::new("sleep", json!({"ms": 600_000})).queue(QUEUE).timeout(Duration::from_secs(900))).collect();
    let victim = start_workers(b, &env, 1, n, &[("CHRONOS_LEASE_MS", o.crash_lease.as_millis().to_string())]).await?;
    let ids: Vec<TaskId> = env.client.enqueue_batch(tasks).await?.iter().map(|s| s.id).collect();
    let k = env.engine.keys(QUEUE);
    let mut conn = env.engine.connection();
    let t = Instant::now();
    while redis::cmd("ZCARD").arg(&k.active).query_async::<usize>(&mut conn).await? < n && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The survivor's "sleep" handler records its start and returns at once.
    let (reg, starts) = recorder("sleep", 0);
    let survivor = InProc::start(&env, reg, 50, o.crash_lease);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = SystemTime::now();
    for v in victim {
        v.kill().await;
    }
    wait_for(&starts, n, o.crash_lease * 4 + Duration::from_secs(10)).await;
    let mut lat: Vec<f64> = starts
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _, _)| ids.contains(id))
        .map(|(_, _, s)| s.duration_since(killed).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0))
        .collect();
    if lat.len() < n {
        r.note(format!("crash: only {} of {n} tasks were re-delivered", lat.len()));
    }
    r.distribution("crash_redelivery", "SIGKILL → re-delivery", &mut lat);
    survivor.stop().await?;
    env.cleanup(b).await;
    Ok(())
}
