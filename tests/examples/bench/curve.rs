//! The cost curve: how a drain's cost grows with the work around it (Chronos only; the BullMQ
//! side has no such figures). Each row drains the same sample of `noop` tasks with one
//! `chronos worker` process (concurrency 100, audit writer on) and reports tasks/s, the claim
//! round trip, Redis CPU per task, Redis memory, and Postgres rows and size:
//! - `backlog`: the sample taken from the head of 10k, 100k (and 1M, full run) waiting tasks;
//! - `queues`: the sample dealt over 1, 100 and 1,000 queues served by one `*` worker;
//! - `delayed`: the sample ready while 100k (1M, full run) tasks wait in the future;
//! - `schedules`: the sample drained while 10,000 every-minute schedules (of another queue)
//!   are planned ahead by a running `chronos tick`; the row also times one `chronos tick
//!   --once` over them (the tick's cost is per schedule, never per task drained).
//!
//! The claim round trip is timed from this process (`Engine::claim` of one task from the first
//! queue, then its ack, up to 200 times before the worker starts): what a claim costs at that
//! size, free of the drain's batching. Not part of the default run (`scripts/bench --only curve`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronos_core::NewTask;
use serde_json::json;

use crate::Opts;
use crate::env::{Bench, BenchEnv, QUEUE};
use crate::probe::Probe;
use crate::report::{Report, median};
use crate::throughput::{BATCH, noop_tasks, start_workers};

/// Tasks drained (and timed) per row.
const SAMPLE: usize = 10_000;
const CONCURRENCY: usize = 100;
/// Claim round trips timed per row.
const CLAIM_PROBES: usize = 200;
/// A row whose drain takes longer than this is reported as far as it got.
const LIMIT: Duration = Duration::from_secs(180);

pub fn sizes(o: &Opts) -> (Vec<usize>, Vec<usize>, usize) {
    if o.quick {
        (vec![10_000, 100_000], vec![1, 100, 1000], 100_000)
    } else {
        (vec![10_000, 100_000, 1_000_000], vec![1, 100, 1000], 1_000_000)
    }
}

/// Schedules of the `schedules` row, and the queue their occurrences go to (no worker serves it).
const SCHEDULES: usize = 10_000;
const SCHEDULE_QUEUE: &str = "bench-sched";

pub async fn curve(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let (backlogs, queue_counts, delayed) = sizes(o);
    for w in backlogs {
        row(b, r, &format!("curve_backlog_{w}"), &format!("curve, {w} waiting"), Shape { waiting: w, queues: 1, future: 0, schedules: 0 })
            .await?;
    }
    for q in queue_counts {
        row(
            b,
            r,
            &format!("curve_queues_{q}"),
            &format!("curve, {SAMPLE} over {q} queue(s)"),
            Shape { waiting: SAMPLE, queues: q, future: 0, schedules: 0 },
        )
        .await?;
    }
    row(
        b,
        r,
        &format!("curve_delayed_{delayed}"),
        &format!("curve, {SAMPLE} ready + {delayed} in the future"),
        Shape { waiting: SAMPLE, queues: 1, future: delayed, schedules: 0 },
    )
    .await?;
    row(
        b,
        r,
        &format!("curve_schedules_{SCHEDULES}"),
        &format!("curve, {SAMPLE} ready + {SCHEDULES} schedules ticking"),
        Shape { waiting: SAMPLE, queues: 1, future: 0, schedules: SCHEDULES },
    )
    .await?;
    Ok(())
}

struct Shape {
    /// Ready tasks, dealt over `queues` queues.
    waiting: usize,
    queues: usize,
    /// Tasks due in an hour (in the delayed set), beside them.
    future: usize,
    /// Every-minute schedules of [`SCHEDULE_QUEUE`], planned ahead by a `chronos tick` running
    /// through the drain.
    schedules: usize,
}

/// Create `n` every-minute schedules (8 at a time), then time one `chronos tick --once` over
/// them; returns the tick's seconds.
async fn fill_schedules(b: &Bench, env: &BenchEnv, n: usize) -> Result<f64> {
    use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler};
    let mut makers = tokio::task::JoinSet::new();
    for part in 0..8 {
        let sched = Scheduler::new(env.client.clone(), DEFAULT_HORIZON);
        makers.spawn(async move {
            for i in (part..n).step_by(8) {
                let task = NewTask::new("noop", json!({})).queue(SCHEDULE_QUEUE).into();
                sched
                    .create(&ScheduleSpec::new(format!("bench-{i}"), "* * * * *", task), None)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = makers.join_next().await {
        r??;
    }
    let t = Instant::now();
    let out = tokio::process::Command::new(&b.chronos_bin).args(["tick", "--once"]).envs(env.child_env(b)).output().await?;
    if !out.status.success() {
        anyhow::bail!("chronos tick --once failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

fn queue_name(i: usize, queues: usize) -> String {
    if queues == 1 { QUEUE.to_owned() } else { format!("{QUEUE}-{i}") }
}

async fn row(b: &Bench, r: &mut Report, key: &str, label: &str, s: Shape) -> Result<()> {
    eprintln!("{label}: filling");
    let env = BenchEnv::new(b).await?;
    let names: Vec<String> = (0..s.queues).map(|i| queue_name(i, s.queues)).collect();
    let t = Instant::now();
    let mut left = s.future;
    while left > 0 {
        let n = left.min(BATCH);
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        env.client.enqueue_batch((0..n).map(|_| NewTask::new("noop", json!({})).queue(QUEUE).run_at(later)).collect()).await?;
        left -= n;
    }
    let mut dealt = 0;
    while dealt < s.waiting {
        let n = (s.waiting - dealt).min(BATCH);
        let batch: Vec<NewTask> = if s.queues == 1 {
            noop_tasks(QUEUE, n)
        } else {
            (dealt..dealt + n).map(|i| NewTask::new("noop", json!({})).queue(&names[i % s.queues])).collect()
        };
        env.client.enqueue_batch(batch).await?;
        dealt += n;
    }
    let (tick_secs, ticker) = if s.schedules > 0 {
        let secs = fill_schedules(b, &env, s.schedules).await?;
        (Some(secs), Some(env.spawn(b, "tick", "tick", &[])?))
    } else {
        (None, None)
    };
    eprintln!("{label}: filled in {:.1} s", t.elapsed().as_secs_f64());

    // The claim round trip at this size: one task claimed and acked at a time, from the queue
    // every row has.
    let mut conn = env.engine.connection();
    let probes = CLAIM_PROBES.min(s.waiting / s.queues / 2).max(1);
    let mut claims = Vec::with_capacity(probes);
    for _ in 0..probes {
        let t = Instant::now();
        let batch = env.engine.claim(&names[0], "probe", 1, Duration::from_secs(30)).await?;
        claims.push(t.elapsed().as_secs_f64() * 1e6);
        let leases: Vec<_> = batch.tasks.iter().map(|t| (t.id, t.token)).collect();
        env.engine.ack(&names[0], "probe", &leases).await?;
    }
    // The probes' completions reach Postgres with the drain's (no audit writer ran yet).
    let sample = SAMPLE.min(s.waiting - probes);
    let memory = crate::footprint::used_memory(&env.engine).await?;
    let (pg_rows, pg_bytes): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM tasks), pg_database_size(current_database())").fetch_one(env.store.pool()).await?;

    // Paused while the worker starts, so its start-up is not timed.
    let mut pause = redis::pipe();
    for q in &names {
        pause.cmd("SET").arg(env.engine.keys(q).paused).arg(1).ignore();
    }
    let _: () = pause.query_async(&mut conn).await?;
    // Counted before the worker starts: its audit writer records the probes' completions first.
    let completed_before = completed(&env).await?;
    let spec = if s.queues == 1 { QUEUE.to_owned() } else { "*".to_owned() };
    let workers = match start_workers(b, &env, 1, CONCURRENCY, &[("CHRONOS_QUEUES", spec)]).await {
        Ok(w) => w,
        Err(e) => {
            env.cleanup(b).await;
            return Err(e);
        }
    };
    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    let before = Probe::take(&env.engine, &pids).await?;
    let t = Instant::now();
    let mut resume = redis::pipe();
    for q in &names {
        let k = env.engine.keys(q);
        resume.cmd("DEL").arg(&k.paused).ignore().cmd("LPUSH").arg(&k.wake).arg(1).ignore();
    }
    let _: () = resume.query_async(&mut conn).await?;
    // Done when Postgres shows the sample completed (one count per 20 ms, whatever the number
    // of queues; the probes' completions counted out: polling a thousand queues' sets would load the Redis being measured).
    let mut done = 0;
    while t.elapsed() < LIMIT {
        done = ((completed(&env).await? - completed_before).max(0) as usize).saturating_sub(probes);
        if done >= sample {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let cost = Probe::take(&env.engine, &pids).await?.since(&before);
    // Redis CPU per task run: the worker claims ahead of the audit, and past the sample when
    // more waits, so the denominator is what left the queues (one pipelined read, once).
    let mut left = redis::pipe();
    for q in &names {
        let k = env.engine.keys(q);
        left.zcard(&k.ready).zcard(&k.active);
    }
    let counts: Vec<u64> = left.query_async(&mut conn).await?;
    let run = (s.waiting - probes).saturating_sub(counts.iter().sum::<u64>() as usize).max(1);
    for w in workers {
        w.stop(Duration::from_secs(30)).await;
    }
    if let Some(t) = ticker {
        t.stop(Duration::from_secs(10)).await;
    }
    if let Some(secs) = tick_secs {
        r.add(format!("{key}_tick_s"), format!("{label}: one tick over them (chronos tick --once)"), secs, "s");
    }
    if done < sample {
        r.note(format!("{label}: {done} of {sample} completed after {} s", LIMIT.as_secs()));
    }
    r.add(format!("{key}_per_s"), format!("{label}: audited"), done as f64 / secs, "tasks/s");
    r.add(format!("{key}_claim_us"), format!("{label}: claim round trip, median"), median(&mut claims), "µs");
    r.add(format!("{key}_redis_cpu_us_per_task"), format!("{label}: Redis CPU / task"), cost.redis_cpu_s * 1e6 / run as f64, "µs");
    r.add(format!("{key}_redis_mb"), format!("{label}: Redis memory before the drain"), memory as f64 / 1e6, "MB");
    r.add(format!("{key}_pg_rows"), format!("{label}: task rows in Postgres"), pg_rows as f64, "rows");
    r.add(format!("{key}_pg_mb"), format!("{label}: Postgres database size"), pg_bytes as f64 / 1e6, "MB");
    env.cleanup(b).await;
    Ok(())
}

async fn completed(env: &BenchEnv) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed' AND schedule_id IS NULL")
        .fetch_one(env.store.pool())
        .await
        .context("count completed tasks")
}
