//! Enqueue and drain throughput. Drains run the real `chronos worker` binary (one or two
//! processes, each with the audit writer) against N pre-enqueued `noop` tasks: the workers
//! start on a paused queue, and the clock starts when the queue is resumed, so process
//! start-up is not timed (the BullMQ side starts its workers the same way).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronos_core::NewTask;
use chronos_core::model::PreparedTask;
use serde_json::json;

use crate::Opts;
use crate::env::{Bench, BenchEnv, ChildProc, QUEUE, poll_until};
use crate::probe::{Probe, rss};
use crate::report::Report;

pub const BATCH: usize = 1000;
/// A drain that takes longer than this is reported as far as it got.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How often the bench asks Redis whether the queue is empty (two ZCARDs per ask).
const POLL: Duration = Duration::from_millis(2);

pub fn noop_tasks(queue: &str, n: usize) -> Vec<NewTask> {
    (0..n).map(|_| NewTask::new("noop", json!({})).queue(queue)).collect()
}

fn prepare(env: &BenchEnv, tasks: Vec<NewTask>) -> Result<Vec<PreparedTask>> {
    Ok(tasks.into_iter().map(|t| t.prepare(env.client.max_payload_bytes)).collect::<chronos_core::Result<_>>()?)
}

/// `Chronos::enqueue_batch` (Postgres rows, then Redis) and, for reference, `Engine::enqueue`
/// (Redis only), N tasks in batches of 1,000. The HTTP batch API is measured in `api.rs`.
pub async fn enqueue(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = o.tasks / BATCH * BATCH;
    eprintln!("enqueue: {n} noop tasks in batches of {BATCH}, Rust client (Postgres + Redis)");
    let env = BenchEnv::new(b).await?;
    env.client.enqueue_batch(noop_tasks("warmup", 1)).await?;
    let before = Probe::take(&env.engine, &[]).await?;
    let t = Instant::now();
    for _ in 0..n / BATCH {
        env.client.enqueue_batch(noop_tasks(QUEUE, BATCH)).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    let cost = Probe::take(&env.engine, &[]).await?.since(&before);
    r.add("enqueue_client_per_s", "enqueue, Chronos::enqueue_batch × 1,000 (Postgres + Redis)", n as f64 / secs, "tasks/s");
    let mut cost_self = cost.clone();
    cost_self.procs_cpu_s = cost.self_cpu_s;
    cost_self.report(r, "enqueue_client", "enqueue_batch", n, "client", secs);
    env.cleanup(b).await;

    eprintln!("enqueue: {n} noop tasks in batches of {BATCH}, Engine::enqueue (Redis only)");
    let env = BenchEnv::new(b).await?;
    let retention = env.client.idempotency_retention;
    env.engine.enqueue(&prepare(&env, noop_tasks("warmup", 1))?, retention).await?;
    let t = Instant::now();
    for _ in 0..n / BATCH {
        env.engine.enqueue(&prepare(&env, noop_tasks(QUEUE, BATCH))?, retention).await?;
    }
    r.add("enqueue_redis_per_s", "enqueue, Engine::enqueue × 1,000 (Redis only)", n as f64 / t.elapsed().as_secs_f64(), "tasks/s");
    env.cleanup(b).await;
    Ok(())
}

/// How many clients are blocked in BLPOP: an idle Chronos worker has one (its claim loop).
async fn blocked_in_blpop(env: &BenchEnv) -> Result<usize> {
    let mut conn = env.engine.connection();
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await?;
    Ok(list.lines().filter(|l| l.contains(" cmd=blpop ")).count())
}

/// Start `procs` worker processes on the paused queue and wait until each is idle, blocked
/// waiting for work.
pub async fn start_workers(
    b: &Bench,
    env: &BenchEnv,
    procs: usize,
    concurrency: usize,
    extra: &[(&str, String)],
) -> Result<Vec<ChildProc>> {
    let before = blocked_in_blpop(env).await?;
    let mut workers = Vec::new();
    for i in 0..procs {
        let mut vars = vec![
            ("CHRONOS_QUEUES", QUEUE.to_owned()),
            ("CHRONOS_CONCURRENCY", concurrency.to_string()),
            ("CHRONOS_WORKER_ID", format!("bench-w{i}")),
        ];
        vars.extend(extra.iter().cloned());
        workers.push(env.spawn(b, "worker", &format!("w{i}"), &vars)?);
    }
    let ready =
        poll_until(Duration::from_secs(60), Duration::from_millis(20), || async { Ok(blocked_in_blpop(env).await? >= before + procs) })
            .await?;
    for w in &mut workers {
        if w.exited() {
            anyhow::bail!("a chronos worker exited during start-up (rerun with --log-dir to see why)");
        }
    }
    if !ready {
        anyhow::bail!("{procs} chronos worker(s) not idle within 60 s");
    }
    Ok(workers)
}

async fn stop_all(workers: Vec<ChildProc>) {
    for w in workers {
        w.stop(Duration::from_secs(30)).await;
    }
}

/// Drain N tasks with `procs` worker processes of `concurrency` each; processed/s until the
/// last task completed in Redis, audited/s until Postgres shows every task completed.
/// `footprint`: also report the worker's resident memory idle and at peak.
pub async fn drain(b: &Bench, o: &Opts, concurrency: usize, procs: usize, footprint: bool, r: &mut Report) -> Result<()> {
    let key = format!("drain_p{procs}_c{concurrency}");
    let label = format!("drain, {procs} proc × concurrency {concurrency}");
    drain_as(b, o, concurrency, procs, footprint, &[], &key, &label, r).await
}

/// What observability costs a drain (one process, concurrency 100): the same drain with the
/// worker recording nothing (the default), with its Prometheus recorder on
/// (`CHRONOS_METRICS_ADDR`), and with metrics and traces on (OTLP/HTTP to a collector in this
/// process that takes every request and keeps nothing), one after the other, each `runs` times
/// by scripts/bench.
pub async fn observability(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let c = if o.concurrency.contains(&100) { 100 } else { *o.concurrency.iter().max().expect("non-empty") };
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = format!("http://{}", collector.local_addr()?);
    let sink = axum::Router::new().route("/v1/traces", axum::routing::post(|_: axum::body::Bytes| async { "" }));
    let server = tokio::spawn(async move { axum::serve(collector, sink).await });
    type Variant = (&'static str, &'static str, Vec<(&'static str, String)>);
    let variants: [Variant; 3] = [
        ("off", "metrics and traces off", vec![]),
        ("metrics", "metrics on (CHRONOS_METRICS_ADDR)", vec![("CHRONOS_METRICS_ADDR", metrics_addr.clone())]),
        (
            "traces",
            "metrics and traces on (OTLP/HTTP)",
            vec![("CHRONOS_METRICS_ADDR", metrics_addr), ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)],
        ),
    ];
    for (tag, what, extra) in &variants {
        let key = format!("observability_{tag}_c{c}");
        let label = format!("drain, 1 proc × concurrency {c}, {what}");
        drain_as(b, o, c, 1, false, extra, &key, &label, r).await?;
    }
    server.abort();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drain_as(
    b: &Bench,
    o: &Opts,
    concurrency: usize,
    procs: usize,
    footprint: bool,
    extra: &[(&str, String)],
    key: &str,
    label: &str,
    r: &mut Report,
) -> Result<()> {
    let n = o.tasks / BATCH * BATCH;
    eprintln!("{label}: {n} noop tasks");
    let env = BenchEnv::new(b).await?;
    let k = env.engine.keys(QUEUE);
    let mut conn = env.engine.connection();
    let _: () = redis::cmd("SET").arg(&k.paused).arg(1).query_async(&mut conn).await?;
    for _ in 0..n / BATCH {
        env.client.enqueue_batch(noop_tasks(QUEUE, BATCH)).await?;
    }
    let workers = match start_workers(b, &env, procs, concurrency, extra).await {
        Ok(w) => w,
        Err(e) => {
            env.cleanup(b).await;
            return Err(e);
        }
    };
    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    if footprint {
        // Settled: connected, idle, blocked on Redis.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = pids.iter().filter_map(|p| rss(*p)).map(|(now, _)| now).max().unwrap_or(0);
        r.add("worker_rss_idle_mb", "worker RSS, idle (chronos worker)", idle as f64 / 1e6, "MB");
    }

    let before = Probe::take(&env.engine, &pids).await?;
    let t = Instant::now();
    // Resume as `POST /v1/queues/{q}/resume` does: one wake signal per blocked worker.
    let mut resume = redis::pipe();
    resume.cmd("DEL").arg(&k.paused).ignore();
    for _ in 0..procs {
        resume.cmd("LPUSH").arg(&k.wake).arg(1).ignore();
    }
    let _: () = resume.query_async(&mut conn).await?;
    let mut left = n as u64;
    while t.elapsed() < DRAIN_LIMIT {
        let (w, a): (u64, u64) = redis::pipe().zcard(&k.ready).zcard(&k.active).query_async(&mut conn).await?;
        left = w + a;
        if left == 0 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let drained = left == 0;
    let processed = t.elapsed().as_secs_f64();
    if !drained {
        r.note(format!("{label}: {left} of {n} tasks left after {} s", DRAIN_LIMIT.as_secs()));
    }
    r.add(format!("{key}_per_s"), format!("{label}: processed"), (n as u64 - left) as f64 / processed, "tasks/s");

    // Audited: the outbox is empty (every transition committed, then acked) and Postgres shows
    // every task completed.
    let mut emptied = false;
    while !emptied && t.elapsed() < DRAIN_LIMIT {
        emptied = redis::cmd("XLEN").arg(&k.outbox).query_async::<u64>(&mut conn).await? == 0;
        if !emptied {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let count_completed = || async {
        let c: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE queue = $1 AND status = 'completed'")
            .bind(QUEUE)
            .fetch_one(env.store.pool())
            .await
            .context("count completed tasks")?;
        Ok::<i64, anyhow::Error>(c)
    };
    let mut completed = count_completed().await?;
    while emptied && completed < n as i64 && t.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        completed = count_completed().await?;
    }
    let audited = t.elapsed().as_secs_f64();
    if completed < n as i64 {
        r.note(format!("{label}: Postgres shows {completed} of {n} tasks completed after {audited:.1} s"));
    }
    r.add(format!("{key}_audited_per_s"), format!("{label}: audited (completed in Postgres)"), completed as f64 / audited, "tasks/s");
    let cost = Probe::take(&env.engine, &pids).await?.since(&before);
    cost.report(r, key, label, n, "worker", audited);
    if o.commandstats {
        cost.print_by_command(label, n);
    }
    if footprint {
        let peak = pids.iter().filter_map(|p| rss(*p)).map(|(_, hwm)| hwm).max().unwrap_or(0);
        r.add("worker_rss_load_mb", format!("worker RSS, peak under load ({label})"), peak as f64 / 1e6, "MB");
    }
    stop_all(workers).await;
    env.cleanup(b).await;
    Ok(())
}
