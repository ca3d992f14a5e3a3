//! `soak` (`scripts/chaos --soak [MINUTES]`, 10 by default; not part of the other runs): steady
//! load for the whole time — a producer enqueues [`RATE`] tasks a second (HTTP calls to the hit
//! endpoint, through `Chronos::enqueue_batch`; no idempotency keys, which by design stay in Redis
//! for their retention, 24 h by default) while two `chronos worker`
//! processes run them and write the audit record. Every [`SAMPLE`] it prints Redis's memory and
//! key count, the Postgres tables' sizes and each worker's RSS; the first sample is taken after
//! a warm-up (a tenth of the run, at least 30 s). At the end every accepted task must be
//! terminal, and Redis memory and worker RSS must be flat: at most 25 % (plus 2 MB) above the
//! warm-up sample. Postgres grows with the tasks it keeps (retention is counted in days), so its
//! growth is reported per task, not judged.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronos_core::{Backoff, NewTask};
use serde_json::{Value, json};

use super::{Env, Figures, Opts, QUEUE, RedisProc, start_hit_server};

/// Tasks enqueued per second.
const RATE: u64 = 200;
const SAMPLE: Duration = Duration::from_secs(30);

/// One reading of what the run holds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: u64,
    redis_bytes: u64,
    redis_keys: u64,
    pg_bytes: u64,
    /// The larger worker's resident memory.
    rss_bytes: u64,
    accepted: u64,
}

fn rss_of(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

async fn sample(env: &Env, pids: &[Option<u32>], started: Instant, accepted: u64) -> Result<Sample> {
    let mut conn = redis::Client::open(env.redis.url())?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let redis_bytes = info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let redis_keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let pg_bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
    .fetch_one(env.store.pool())
    .await?;
    let rss_bytes = pids.iter().map(|p| rss_of(*p)).max().unwrap_or(0);
    Ok(Sample { at_s: started.elapsed().as_secs(), redis_bytes, redis_keys, pg_bytes: pg_bytes.max(0) as u64, rss_bytes, accepted })
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_048_576.0)
}

pub(super) async fn soak(o: &Opts, minutes: u64) -> Result<Figures> {
    let run = Duration::from_secs(minutes * 60);
    let warmup = (run / 10).max(Duration::from_secs(30));
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (port, hits) = start_hit_server().await?;
    let workers: Vec<_> = (0..2).map(|i| env.worker(&format!("soak{i}"), &[])).collect::<Result<_>>()?;
    let pids: Vec<Option<u32>> = workers.iter().map(|w| w.id()).collect();
    let started = Instant::now();
    let mut accepted = 0u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = started + warmup;
    let tick = Duration::from_millis(250);
    let per_tick = RATE / 4;
    let mut next = Instant::now();
    while started.elapsed() < run {
        let batch: Vec<NewTask> = (accepted..accepted + per_tick)
            .map(|i| {
                NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": i, "ms": 0}}))
                    .queue(QUEUE)
                    .max_attempts(25)
                    .backoff(Backoff::fixed(Duration::from_millis(200)))
            })
            .collect();
        accepted += env.client.enqueue_batch(batch).await.context("enqueue")?.len() as u64;
        if Instant::now() >= next_sample {
            let s = sample(&env, &pids, started, accepted).await?;
            eprintln!(
                "soak: {:>4} s  accepted {:>7}  redis {} ({} keys)  postgres {}  worker rss {}",
                s.at_s,
                s.accepted,
                mb(s.redis_bytes),
                s.redis_keys,
                mb(s.pg_bytes),
                mb(s.rss_bytes)
            );
            samples.push(s);
            next_sample += SAMPLE;
        }
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
    let end = sample(&env, &pids, started, accepted).await?;
    let c = env.settle(accepted, Duration::from_secs(120)).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &[]);
    let first = samples.first().copied().unwrap_or(end);
    let row = |s: &Sample| {
        json!({"at_s": s.at_s, "accepted": s.accepted, "redis_bytes": s.redis_bytes, "redis_keys": s.redis_keys,
                                    "postgres_bytes": s.pg_bytes, "worker_rss_bytes": s.rss_bytes})
    };
    f.extra.insert("minutes".into(), json!(minutes));
    f.extra.insert("rate_per_s".into(), json!(RATE));
    f.extra.insert("start".into(), row(&first));
    f.extra.insert("end".into(), row(&end));
    let grown_tasks = end.accepted.saturating_sub(first.accepted).max(1);
    f.extra.insert("postgres_bytes_per_task".into(), json!(end.pg_bytes.saturating_sub(first.pg_bytes) / grown_tasks));
    f.extra.insert("redis_flat".into(), json!(flat(first.redis_bytes, end.redis_bytes)));
    f.extra.insert("rss_flat".into(), json!(flat(first.rss_bytes, end.rss_bytes)));
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

/// At most 25 % (plus 2 MB) above where it started.
fn flat(start: u64, end: u64) -> bool {
    end <= start + start / 4 + 2 * 1_048_576
}

pub(super) fn soak_failures(f: &Figures) -> Vec<String> {
    let mut out = Vec::new();
    for (k, what) in [("redis_flat", "Redis memory"), ("rss_flat", "worker RSS")] {
        if f.extra.get(k) != Some(&Value::Bool(true)) {
            out.push(format!("soak: {what} grew: start {} end {}", f.extra["start"], f.extra["end"]));
        }
    }
    out
}
