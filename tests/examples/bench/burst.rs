//! The burst row of the cost curve: N tasks (1,000,000; 100,000 with `--quick`) through
//! `POST /v1/tasks/batch` × 1,000 from 4 concurrent clients, while one `chronos worker`
//! (concurrency 100, audit writer on) drains them. Reports the burst's enqueue rate, the time
//! from the first request until Postgres shows every accepted task completed, the peaks of
//! Redis memory and of the queue's outbox (sampled every 100 ms), and the accepted tasks that
//! are not completed in Postgres at the end (counted: must be 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::Opts;
use crate::api::start_api;
use crate::env::{Bench, BenchEnv, QUEUE};
use crate::report::Report;
use crate::throughput::{BATCH, start_workers};

const CLIENTS: usize = 4;
const CONCURRENCY: usize = 100;
/// The burst is reported as far as it got after this long.
const LIMIT: Duration = Duration::from_secs(900);

pub async fn burst(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = if o.quick { 100_000 } else { 1_000_000 };
    let label = format!("burst of {n} via POST /v1/tasks/batch");
    eprintln!("{label}: starting the API and one worker");
    let env = BenchEnv::new(b).await?;
    let key = format!("chk_bench_{:032x}", rand::random::<u128>());
    let (api, base) = start_api(b, &env, &key).await?;
    let workers = match start_workers(b, &env, 1, CONCURRENCY, &[("CHRONOS_QUEUES", QUEUE.to_owned())]).await {
        Ok(w) => w,
        Err(e) => {
            api.stop(Duration::from_secs(10)).await;
            env.cleanup(b).await;
            return Err(e);
        }
    };
    let result = measure(&env, &base, &key, n, &label, r).await;
    for w in workers {
        w.stop(Duration::from_secs(30)).await;
    }
    api.stop(Duration::from_secs(10)).await;
    env.cleanup(b).await;
    result
}

async fn measure(env: &BenchEnv, base: &str, key: &str, n: usize, label: &str, r: &mut Report) -> Result<()> {
    let body: Arc<String> =
        Arc::new(json!({"tasks": (0..BATCH).map(|_| json!({"name": "noop", "queue": QUEUE})).collect::<Vec<Value>>()}).to_string());
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/tasks/batch");

    // Peaks, sampled every 100 ms until the burst is audited.
    let done = Arc::new(AtomicBool::new(false));
    let (peak_mem, peak_outbox) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let base_mem = crate::footprint::used_memory(&env.engine).await?;
    let sampler = {
        let (engine, done, peak_mem, peak_outbox) = (env.engine.clone(), done.clone(), peak_mem.clone(), peak_outbox.clone());
        let outbox = env.engine.keys(QUEUE).outbox;
        tokio::spawn(async move {
            let mut conn = engine.connection();
            while !done.load(Ordering::Relaxed) {
                if let Ok(m) = crate::footprint::used_memory(&engine).await {
                    peak_mem.fetch_max(m.max(0) as u64, Ordering::Relaxed);
                }
                if let Ok(len) = redis::cmd("XLEN").arg(&outbox).query_async::<u64>(&mut conn).await {
                    peak_outbox.fetch_max(len, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    eprintln!("{label}: sending");
    let t = Instant::now();
    let requests = n / BATCH;
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (http, url, key, body, next, accepted) =
            (http.clone(), url.clone(), key.to_owned(), body.clone(), next.clone(), accepted.clone());
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests as u64 {
                let resp = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await?;
                let status = resp.status();
                let text = resp.text().await?;
                if status.as_u16() != 201 {
                    bail!("POST /v1/tasks/batch answered {status}: {text}");
                }
                let v: Value = serde_json::from_str(&text)?;
                let got = v["tasks"].as_array().map_or(0, |a| a.len()) as u64;
                accepted.fetch_add(got, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    let sent_secs = t.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    eprintln!("{label}: {accepted} accepted in {sent_secs:.1} s; waiting until audited");

    let mut completed = 0i64;
    while t.elapsed() < LIMIT {
        completed = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'").fetch_one(env.store.pool()).await?;
        if completed as u64 >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audited_secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await?;
    let lost = accepted.saturating_sub(completed.max(0) as u64);
    if lost > 0 {
        r.note(format!("{label}: {lost} of {accepted} accepted tasks not completed in Postgres after {:.0} s ({rows} rows)", audited_secs));
    }
    let k = format!("curve_burst_{n}");
    r.add(format!("{k}_enqueue_per_s"), format!("{label}: accepted (4 clients)"), accepted as f64 / sent_secs, "tasks/s");
    r.add(format!("{k}_audited_s"), format!("{label}: first request → every task completed in Postgres"), audited_secs, "s");
    r.add(format!("{k}_per_s"), format!("{label}: audited"), completed as f64 / audited_secs, "tasks/s");
    r.add(
        format!("{k}_peak_redis_mb"),
        format!("{label}: peak Redis memory above the start"),
        (peak_mem.load(Ordering::Relaxed) as f64 - base_mem as f64).max(0.0) / 1e6,
        "MB",
    );
    r.add(format!("{k}_peak_outbox"), format!("{label}: peak outbox length"), peak_outbox.load(Ordering::Relaxed) as f64, "entries");
    r.add(format!("{k}_lost"), format!("{label}: accepted but not completed"), lost as f64, "tasks");
    Ok(())
}
