//! Benchmark figures for Chronos. A benchmark, not a test: it prints figures and asserts nothing.
//!
//! ```text
//! cargo run --release -p chronos-tests --example bench -- [--json FILE] [--tasks N] [--concurrency 1,10,100,200]
//!     [--skip-no-audit] [--commandstats]
//! ```
//!
//! Scenarios, each on a fresh namespace and database (dropped afterwards):
//! - enqueue: `Engine::enqueue` (Redis only, comparable with BullMQ's `addBulk`) and
//!   `Chronos::enqueue_batch` (Postgres row + Redis), batches of 1,000 `noop` tasks;
//! - drain: N pre-enqueued `noop` tasks, one in-process worker at each concurrency, with the
//!   audit writer (the real configuration) and without; time from worker start until the queue
//!   is empty, plus the Redis calls, Redis CPU and worker CPU spent per task;
//! - delayed: 200 tasks due 1–5 s ahead, handler start minus due time;
//! - pickup: an idle worker, one task every 10 ms, enqueue call → handler start;
//! - memory: Redis `used_memory` growth (and the keys' own `MEMORY USAGE`) per waiting task
//!   with a 200-byte JSON payload.
//!
//! `scripts/bench` runs this next to the BullMQ side (`scripts/bench-bullmq`) on the same Redis
//! and prints both side by side. `--commandstats` also prints, for each drain, the Redis commands
//! per task by command (calls and the time Redis spent in them). Redis and Postgres come from `REDIS_URL` / `DATABASE_URL`, as
//! for the tests. The Redis figures are server-wide deltas: anything else using the same Redis
//! at the time counts too.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chronos_core::model::PreparedTask;
use chronos_core::{Engine, NewTask, TaskId};
use chronos_tests::{TestEnv, diag_registry, worker_config};
use chronos_workers::{Handler, HandlerError, Registry, Task, TaskContext, Worker, WorkerStats};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const QUEUE: &str = "bench";
const BATCH: usize = 1000;
const DELAYED_TASKS: usize = 200;
const PICKUP_TASKS: usize = 200;
const PICKUP_EVERY: Duration = Duration::from_millis(10);
const MEMORY_TASKS: usize = 10_000;
const PAYLOAD_BYTES: usize = 200;
/// A drain that takes longer than this is reported as far as it got.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

struct Opts {
    json: Option<String>,
    tasks: usize,
    concurrency: Vec<usize>,
    no_audit_runs: bool,
    /// Print each drain's Redis commands per task, by command.
    commandstats: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts { json: None, tasks: 20_000, concurrency: vec![1, 10, 100, 200], no_audit_runs: true, commandstats: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => o.json = Some(args.next().context("--json needs a file")?),
            "--tasks" => o.tasks = args.next().context("--tasks needs a number")?.parse().context("--tasks")?,
            "--concurrency" => {
                o.concurrency = args
                    .next()
                    .context("--concurrency needs a list, e.g. 1,10,100")?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--concurrency")?;
            }
            "--skip-no-audit" => o.no_audit_runs = false,
            "--commandstats" => o.commandstats = true,
            "-h" | "--help" => {
                println!("usage: bench [--json FILE] [--tasks N] [--concurrency 1,10,100,200] [--skip-no-audit] [--commandstats]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if o.tasks < BATCH || o.concurrency.is_empty() || o.concurrency.contains(&0) {
        bail!("--tasks must be at least {BATCH} and every concurrency at least 1");
    }
    Ok(o)
}

/// One reported figure. `key` matches the BullMQ side's key for the same figure.
struct Metric {
    key: String,
    label: String,
    value: f64,
    unit: &'static str,
    /// "higher", "lower" or "info".
    better: &'static str,
}

#[derive(Default)]
struct Report {
    metrics: Vec<Metric>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, key: impl Into<String>, label: impl Into<String>, value: f64, unit: &'static str, better: &'static str) {
        let (key, label) = (key.into(), label.into());
        eprintln!("  {label:<52} {} {unit}", fmt_num(value));
        self.metrics.push(Metric { key, label, value, unit, better });
    }

    fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("  note: {n}");
        self.notes.push(n);
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Server-wide Redis counters and this process's CPU time, to turn into per-task costs.
#[derive(Clone, Default)]
struct Probe {
    calls: u64,
    scripts: u64,
    redis_cpu_s: f64,
    client_cpu_s: f64,
    /// CPU seconds of each local Postgres server process by pid (empty when none is visible);
    /// in a difference, only `pg_cpu_s` is set.
    pg: HashMap<u32, f64>,
    pg_cpu_s: f64,
    /// Per command: calls and microseconds (a script's time includes the commands it runs,
    /// which are counted under their own names too).
    by_command: HashMap<String, (u64, u64)>,
}

impl Probe {
    async fn take(engine: &Engine) -> Result<Probe> {
        let mut conn = engine.connection();
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let mut p = Probe { client_cpu_s: process_cpu_s(), pg: postgres_cpu(), ..Probe::default() };
        for line in stats.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let field = |f: &str| -> u64 { rest.split(',').find_map(|kv| kv.strip_prefix(f)).and_then(|c| c.parse().ok()).unwrap_or(0) };
            let calls = field("calls=");
            p.by_command.insert(name.to_owned(), (calls, field("usec=")));
            p.calls += calls;
            if matches!(name, "evalsha" | "eval" | "evalsha_ro" | "eval_ro" | "fcall" | "fcall_ro") {
                p.scripts += calls;
            }
        }
        for line in cpu.lines() {
            if let Some((k, v)) = line.trim().split_once(':')
                && (k == "used_cpu_sys" || k == "used_cpu_user")
            {
                p.redis_cpu_s += v.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(p)
    }

    fn since(self, before: &Probe) -> Probe {
        let by_command = self
            .by_command
            .iter()
            .map(|(k, (c, u))| {
                let (c0, u0) = before.by_command.get(k).copied().unwrap_or_default();
                (k.clone(), (c.saturating_sub(c0), u.saturating_sub(u0)))
            })
            .filter(|(_, (c, _))| *c > 0)
            .collect();
        Probe {
            calls: self.calls.saturating_sub(before.calls),
            scripts: self.scripts.saturating_sub(before.scripts),
            redis_cpu_s: self.redis_cpu_s - before.redis_cpu_s,
            client_cpu_s: self.client_cpu_s - before.client_cpu_s,
            pg: HashMap::new(),
            pg_cpu_s: self.pg.iter().map(|(pid, s)| s - before.pg.get(pid).copied().unwrap_or(0.0)).sum(),
            by_command,
        }
    }

    /// Commands per task, most frequent first, to stderr.
    fn print_by_command(&self, label: &str, tasks: usize) {
        let mut v: Vec<_> = self.by_command.iter().collect();
        v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        eprintln!("  {label}: Redis commands per task (µs = time inside Redis per task; scripts include their commands)");
        for (name, (calls, usec)) in v {
            eprintln!("    {name:<16} {:>8.3} calls  {:>8.2} µs", *calls as f64 / tasks as f64, *usec as f64 / tasks as f64);
        }
    }

    /// Calls, script calls, Redis CPU and client CPU per task (and Postgres CPU with `pg`).
    fn report(&self, r: &mut Report, key: &str, label: &str, tasks: usize, pg: bool) {
        let n = tasks as f64;
        r.add(format!("{key}_redis_calls_per_task"), format!("{label}: Redis commands / task"), self.calls as f64 / n, "calls", "lower");
        r.add(format!("{key}_scripts_per_task"), format!("{label}: script calls / task"), self.scripts as f64 / n, "calls", "lower");
        r.add(format!("{key}_redis_cpu_us_per_task"), format!("{label}: Redis CPU / task"), self.redis_cpu_s * 1e6 / n, "µs", "lower");
        r.add(format!("{key}_client_cpu_us_per_task"), format!("{label}: client CPU / task"), self.client_cpu_s * 1e6 / n, "µs", "lower");
        if pg {
            r.add(format!("{key}_pg_cpu_us_per_task"), format!("{label}: Postgres CPU / task"), self.pg_cpu_s * 1e6 / n, "µs", "lower");
        }
    }
}

/// Command name and user + system CPU seconds (all threads) of one process, from its
/// /proc/<pid>/stat. /proc counts in clock ticks, which are 100 per second on Linux.
fn proc_cpu(stat_path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_owned();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
    Some((comm, (tick(11) + tick(12)) / 100.0))
}

fn process_cpu_s() -> f64 {
    proc_cpu("/proc/self/stat").map_or(0.0, |(_, s)| s)
}

/// CPU seconds of each Postgres server process on this machine, by pid. A backend that exits
/// between two readings takes its time with it; the pools here keep theirs open.
fn postgres_cpu() -> HashMap<u32, f64> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match proc_cpu(&format!("/proc/{pid}/stat"))? {
            (comm, s) if comm == "postgres" => Some((pid, s)),
            _ => None,
        })
        .collect()
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A JSON payload of exactly `PAYLOAD_BYTES` serialized bytes (the BullMQ side builds the same).
fn payload_200(i: usize) -> Value {
    let mut v = json!({"to": format!("user-{i:06}@example.com"), "template": "welcome", "locale": "en-GB", "pad": ""});
    let len = serde_json::to_string(&v).expect("json").len();
    v["pad"] = Value::String("x".repeat(PAYLOAD_BYTES.saturating_sub(len)));
    v
}

fn noop_tasks(n: usize) -> Vec<NewTask> {
    (0..n).map(|_| NewTask::new("noop", json!({})).queue(QUEUE)).collect()
}

fn prepare(env: &TestEnv, tasks: Vec<NewTask>) -> Result<Vec<PreparedTask>> {
    Ok(tasks.into_iter().map(|t| t.prepare(env.client.max_payload_bytes)).collect::<chronos_core::Result<_>>()?)
}

/// Records when each attempt's handler started.
struct Recorder {
    starts: Arc<Mutex<HashMap<TaskId, SystemTime>>>,
}

impl Handler for Recorder {
    fn kind(&self) -> &'static str {
        "record"
    }
    async fn handle(&self, ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        let now = SystemTime::now();
        self.starts.lock().unwrap().insert(ctx.id, now);
        Ok(())
    }
}

/// An in-process worker like the harness's `start_worker`, with the audit writer optional.
struct BenchWorker {
    stop: oneshot::Sender<()>,
    stats: Arc<WorkerStats>,
    handle: JoinHandle<chronos_core::Result<()>>,
}

impl BenchWorker {
    fn start(env: &TestEnv, registry: Registry, concurrency: usize, audit: bool) -> BenchWorker {
        let mut cfg = worker_config(&[QUEUE]);
        cfg.concurrency = concurrency;
        let mut w = Worker::new(env.engine.clone(), registry, cfg);
        if audit {
            w = w.with_audit(env.store.clone());
        }
        let stats = w.stats();
        let (stop, rx) = oneshot::channel();
        let handle = tokio::spawn(w.run(async move {
            let _ = rx.await;
        }));
        BenchWorker { stop, stats, handle }
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.handle.await??;
        Ok(())
    }
}

/// Scenario a: enqueue throughput, Redis only and end to end.
async fn bench_enqueue(o: &Opts, r: &mut Report) -> Result<()> {
    eprintln!("enqueue: {} noop tasks in batches of {BATCH}", o.tasks);
    let env = TestEnv::new().await;
    let retention = env.client.idempotency_retention;
    // Warm-up (script load, connections) on another queue, untimed.
    env.engine.enqueue(&prepare(&env, vec![NewTask::new("noop", json!({})).queue("warmup")])?, retention).await?;
    env.client.enqueue_batch(vec![NewTask::new("noop", json!({})).queue("warmup")]).await?;

    let before = Probe::take(&env.engine).await?;
    let t = Instant::now();
    for _ in 0..o.tasks / BATCH {
        let batch = prepare(&env, noop_tasks(BATCH))?;
        env.engine.enqueue(&batch, retention).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    let cost = Probe::take(&env.engine).await?.since(&before);
    let n = o.tasks / BATCH * BATCH;
    r.add("enqueue_bulk_per_s", "enqueue, Engine::enqueue × 1,000 (Redis only)", n as f64 / secs, "tasks/s", "higher");
    cost.report(r, "enqueue", "enqueue", n, false);
    env.cleanup().await;

    let env = TestEnv::new().await;
    env.client.enqueue_batch(vec![NewTask::new("noop", json!({})).queue("warmup")]).await?;
    let before = Probe::take(&env.engine).await?;
    let t = Instant::now();
    for _ in 0..o.tasks / BATCH {
        env.client.enqueue_batch(noop_tasks(BATCH)).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    let cost = Probe::take(&env.engine).await?.since(&before);
    r.add("enqueue_e2e_per_s", "enqueue, Chronos::enqueue_batch × 1,000 (Postgres + Redis)", n as f64 / secs, "tasks/s", "higher");
    cost.report(r, "enqueue_e2e", "enqueue_batch", n, true);
    env.cleanup().await;
    Ok(())
}

/// Scenario b: drain N pre-enqueued tasks with one worker at `concurrency`.
async fn bench_drain(o: &Opts, concurrency: usize, audit: bool, r: &mut Report) -> Result<()> {
    let what = if audit { "with audit writer" } else { "without audit writer" };
    eprintln!("drain: {} noop tasks, concurrency {concurrency}, {what}", o.tasks);
    let env = TestEnv::new().await;
    let retention = env.client.idempotency_retention;
    let n = o.tasks / BATCH * BATCH;
    for _ in 0..o.tasks / BATCH {
        if audit {
            // Rows in Postgres too, so the audit writer updates real rows.
            env.client.enqueue_batch(noop_tasks(BATCH)).await?;
        } else {
            env.engine.enqueue(&prepare(&env, noop_tasks(BATCH))?, retention).await?;
        }
    }
    let before = Probe::take(&env.engine).await?;
    let t = Instant::now();
    let worker = BenchWorker::start(&env, diag_registry(), concurrency, audit);
    // Watch the worker's own counter first (no Redis traffic), then confirm with the engine.
    while (worker.stats.completed.load(Ordering::Relaxed) as usize) < n && t.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut counts = env.engine.counts(QUEUE).await?;
    while counts.waiting + counts.running + counts.delayed + counts.retrying > 0 && t.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(1)).await;
        counts = env.engine.counts(QUEUE).await?;
    }
    let drain = t.elapsed().as_secs_f64();
    let done = (n as u64).saturating_sub(counts.waiting + counts.running + counts.delayed + counts.retrying);
    let key = if audit { format!("drain_c{concurrency}") } else { format!("drain_c{concurrency}_noaudit") };
    let label = if audit { format!("drain, concurrency {concurrency}") } else { format!("drain, concurrency {concurrency}, no audit") };
    if done < n as u64 {
        r.note(format!("{label}: only {done} of {n} tasks finished within {} s", DRAIN_LIMIT.as_secs()));
    }
    r.add(format!("{key}_per_s"), label.clone(), done as f64 / drain, "tasks/s", "higher");
    if audit {
        // Until the outbox is empty, i.e. every transition is committed to Postgres.
        while env.engine.counts(QUEUE).await?.outbox > 0 && t.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let lag = t.elapsed().as_secs_f64() - drain;
        r.add(format!("{key}_audit_lag_ms"), format!("{label}: audit done after queue empty"), lag * 1000.0, "ms", "lower");
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'").fetch_one(env.store.pool()).await?;
        if completed != done as i64 {
            r.note(format!("{label}: Postgres shows {completed} of {done} tasks completed after the outbox emptied"));
        }
    }
    let cost = Probe::take(&env.engine).await?.since(&before);
    cost.report(r, &key, &label, n, audit);
    if o.commandstats {
        cost.print_by_command(&label, n);
    }
    let (claims, acks) = (worker.stats.claim_calls.load(Ordering::Relaxed), worker.stats.ack_calls.load(Ordering::Relaxed));
    r.add(format!("{key}_tasks_per_claim"), format!("{label}: tasks per claim call"), n as f64 / claims.max(1) as f64, "tasks", "info");
    r.add(format!("{key}_tasks_per_ack"), format!("{label}: tasks per ack call"), n as f64 / acks.max(1) as f64, "tasks", "info");
    worker.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// Scenario c: tasks due 1–5 s ahead; handler start minus due time.
async fn bench_delayed(r: &mut Report) -> Result<()> {
    eprintln!("delayed: {DELAYED_TASKS} tasks due 1–5 s ahead");
    let env = TestEnv::new().await;
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let mut reg = diag_registry();
    reg.register(Recorder { starts: starts.clone() })?;
    let worker = BenchWorker::start(&env, reg, 50, true);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let now_ms = epoch_ms(SystemTime::now()) as i64;
    let mut due: HashMap<TaskId, i64> = HashMap::new();
    let tasks: Vec<NewTask> = (0..DELAYED_TASKS)
        .map(|i| {
            let at = now_ms + 1000 + (i as i64 * 4000) / (DELAYED_TASKS as i64 - 1);
            NewTask::new("record", json!({})).queue(QUEUE).run_at(chrono::DateTime::from_timestamp_millis(at).expect("time"))
        })
        .collect();
    let prepared = prepare(&env, tasks)?;
    for p in &prepared {
        if let chronos_core::model::Schedule::At(at) = p.task.schedule {
            due.insert(p.id, at.timestamp_millis());
        }
    }
    env.engine.enqueue(&prepared, env.client.idempotency_retention).await?;
    let t = Instant::now();
    while starts.lock().unwrap().len() < DELAYED_TASKS && t.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut late: Vec<f64> = starts.lock().unwrap().iter().filter_map(|(id, s)| due.get(id).map(|d| epoch_ms(*s) - *d as f64)).collect();
    late.sort_by(f64::total_cmp);
    if late.len() < DELAYED_TASKS {
        r.note(format!("delayed: only {} of {DELAYED_TASKS} tasks started within 15 s", late.len()));
    }
    r.add("delayed_p50_ms", "delayed lateness p50", pct(&late, 0.50), "ms", "lower");
    r.add("delayed_p99_ms", "delayed lateness p99", pct(&late, 0.99), "ms", "lower");
    r.add("delayed_max_ms", "delayed lateness max", late.last().copied().unwrap_or(f64::NAN), "ms", "lower");
    r.add("delayed_early", "delayed tasks started before due", late.iter().filter(|l| **l < 0.0).count() as f64, "tasks", "lower");
    worker.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// Scenario d: an idle worker, one task every 10 ms; enqueue call → handler start.
/// `end_to_end` enqueues through `Chronos::enqueue` (Postgres first) instead of the engine.
async fn bench_pickup(end_to_end: bool, r: &mut Report) -> Result<()> {
    let via = if end_to_end { "Chronos::enqueue" } else { "Engine::enqueue" };
    eprintln!("pickup: {PICKUP_TASKS} tasks {} ms apart via {via}", PICKUP_EVERY.as_millis());
    let env = TestEnv::new().await;
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let mut reg = diag_registry();
    reg.register(Recorder { starts: starts.clone() })?;
    let worker = BenchWorker::start(&env, reg, 50, true);
    // Warm-up task, then let the worker go idle (blocked, waiting for work).
    env.client.enqueue(NewTask::new("noop", json!({})).queue(QUEUE)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut sent: HashMap<TaskId, SystemTime> = HashMap::new();
    let mut tick = tokio::time::interval(PICKUP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..PICKUP_TASKS {
        tick.tick().await;
        let task = NewTask::new("record", json!({})).queue(QUEUE);
        if end_to_end {
            let at = SystemTime::now();
            let s = env.client.enqueue(task).await?;
            sent.insert(s.id, at);
        } else {
            let p = prepare(&env, vec![task])?;
            sent.insert(p[0].id, SystemTime::now());
            env.engine.enqueue(&p, env.client.idempotency_retention).await?;
        }
    }
    let t = Instant::now();
    while starts.lock().unwrap().len() < PICKUP_TASKS && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lat: Vec<f64> = starts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, s)| sent.get(id).map(|e| s.duration_since(*e).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)))
        .collect();
    lat.sort_by(f64::total_cmp);
    if lat.len() < PICKUP_TASKS {
        r.note(format!("pickup via {via}: only {} of {PICKUP_TASKS} tasks started within 10 s", lat.len()));
    }
    let (key, label) = if end_to_end { ("pickup_e2e", "pickup via Chronos::enqueue (Postgres + Redis)") } else { ("pickup", "pickup") };
    r.add(format!("{key}_p50_ms"), format!("{label} p50"), pct(&lat, 0.50), "ms", "lower");
    r.add(format!("{key}_p99_ms"), format!("{label} p99"), pct(&lat, 0.99), "ms", "lower");
    r.add(format!("{key}_max_ms"), format!("{label} max"), lat.last().copied().unwrap_or(f64::NAN), "ms", "lower");
    worker.stop().await?;
    env.cleanup().await;
    Ok(())
}

async fn used_memory(engine: &Engine) -> Result<i64> {
    let mut conn = engine.connection();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    info.lines().find_map(|l| l.trim().strip_prefix("used_memory:")).and_then(|v| v.parse().ok()).context("INFO memory has no used_memory")
}

/// Scenario e: Redis memory per waiting task with a 200-byte JSON payload.
async fn bench_memory(r: &mut Report) -> Result<()> {
    eprintln!("memory: {MEMORY_TASKS} waiting tasks with a {PAYLOAD_BYTES}-byte JSON payload");
    let env = TestEnv::new().await;
    let retention = env.client.idempotency_retention;
    env.engine.enqueue(&prepare(&env, vec![NewTask::new("noop", json!({})).queue("warmup")])?, retention).await?;
    let before = used_memory(&env.engine).await?;
    for b in 0..MEMORY_TASKS / BATCH {
        let tasks = (0..BATCH).map(|i| NewTask::new("noop", payload_200(b * BATCH + i)).queue(QUEUE)).collect();
        env.engine.enqueue(&prepare(&env, tasks)?, retention).await?;
    }
    let after = used_memory(&env.engine).await?;
    r.add(
        "memory_used_bytes_per_task",
        "Redis used_memory growth / waiting task",
        (after - before) as f64 / MEMORY_TASKS as f64,
        "B",
        "lower",
    );

    // The queue's keys alone, which other clients of the same Redis cannot disturb.
    let mut conn = env.engine.connection();
    let pattern = format!("{}*", env.engine.keys(QUEUE).prefix);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, mut page): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(&mut conn).await?;
        keys.append(&mut page);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut total = 0i64;
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        total += sizes.into_iter().flatten().sum::<i64>();
    }
    r.add("memory_keys_bytes_per_task", "the queue's keys (MEMORY USAGE) / waiting task", total as f64 / MEMORY_TASKS as f64, "B", "lower");
    env.cleanup().await;
    Ok(())
}

fn print_table(r: &Report) {
    println!();
    println!("Chronos {}", env!("CARGO_PKG_VERSION"));
    println!("{:<62} {:>12}  unit", "figure", "value");
    println!("{}", "-".repeat(84));
    for m in &r.metrics {
        println!("{:<62} {:>12}  {}", m.label, fmt_num(m.value), m.unit);
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let started = Instant::now();
    let mut r = Report::default();
    bench_enqueue(&o, &mut r).await?;
    for &c in &o.concurrency {
        bench_drain(&o, c, true, &mut r).await?;
    }
    if o.no_audit_runs {
        for &c in &o.concurrency {
            bench_drain(&o, c, false, &mut r).await?;
        }
    }
    bench_delayed(&mut r).await?;
    bench_pickup(false, &mut r).await?;
    bench_pickup(true, &mut r).await?;
    bench_memory(&mut r).await?;
    print_table(&r);
    println!("(Chronos side took {:.0} s)", started.elapsed().as_secs_f64());

    if let Some(path) = &o.json {
        let metrics: Vec<Value> = r
            .metrics
            .iter()
            .map(|m| json!({"key": m.key, "label": m.label, "value": if m.value.is_finite() { json!(m.value) } else { Value::Null }, "unit": m.unit, "better": m.better}))
            .collect();
        let doc = json!({
            "system": "chronos",
            "version": env!("CARGO_PKG_VERSION"),
            "tasks": o.tasks,
            "batch": BATCH,
            "concurrency": o.concurrency,
            "metrics": metrics,
            "notes": r.notes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("write {path}"))?;
    }
    Ok(())
}
