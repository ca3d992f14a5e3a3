//! The HTTP API (`chronos api`, the release binary): the batch endpoint's enqueue rate, then
//! `POST /v1/tasks` under `wrk` (64 connections), and whether every accepted task is in
//! Postgres afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::Opts;
use crate::env::{Bench, BenchEnv, ChildProc, free_port, poll_until};
use crate::probe::{Probe, rss};
use crate::report::Report;
use crate::throughput::BATCH;

pub async fn start_api(b: &Bench, env: &BenchEnv, key: &str) -> Result<(ChildProc, String)> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut api =
        env.spawn(b, "api", "api", &[("CHRONOS_API_ADDR", format!("127.0.0.1:{port}")), ("CHRONOS_ADMIN_KEY", key.to_owned())])?;
    let http = reqwest::Client::new();
    let url = format!("{base}/healthz");
    let up = poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let (http, url) = (http.clone(), url.clone());
        async move { Ok(http.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false)) }
    })
    .await?;
    if !up || api.exited() {
        bail!("chronos api did not answer /healthz within 30 s (rerun with --log-dir to see why)");
    }
    Ok((api, base))
}

pub async fn api(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let env = BenchEnv::new(b).await?;
    let key = format!("chk_bench_{:032x}", rand::random::<u128>());
    let (api, base) = start_api(b, &env, &key).await?;
    let result = measure(b, o, &env, &api, &base, &key, r).await;
    api.stop(Duration::from_secs(10)).await;
    env.cleanup(b).await;
    result
}

async fn measure(b: &Bench, o: &Opts, env: &BenchEnv, api: &ChildProc, base: &str, key: &str, r: &mut Report) -> Result<()> {
    let _ = b;
    // The batch endpoint: N tasks, 1,000 per request, one request at a time (like addBulk).
    let n = o.tasks / BATCH * BATCH;
    eprintln!("enqueue: {n} noop tasks via POST /v1/tasks/batch × {BATCH}");
    let http = reqwest::Client::new();
    let body = |queue: &str, k: usize| {
        json!({"tasks": (0..k).map(|_| json!({"name": "noop", "queue": queue})).collect::<Vec<Value>>()}).to_string()
    };
    let post_batch = |body: String| {
        let req = http.post(format!("{base}/v1/tasks/batch")).bearer_auth(key).header("content-type", "application/json").body(body);
        async move {
            let resp = req.send().await?;
            if resp.status().as_u16() != 201 {
                bail!("POST /v1/tasks/batch answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            resp.bytes().await?;
            Ok(())
        }
    };
    post_batch(body("warmup", 10)).await?;
    let batch_body = body("bench-batch", BATCH);
    let t = Instant::now();
    for _ in 0..n / BATCH {
        post_batch(batch_body.clone()).await?;
    }
    r.add(
        "enqueue_api_per_s",
        "enqueue, POST /v1/tasks/batch × 1,000 (HTTP → Postgres + Redis)",
        n as f64 / t.elapsed().as_secs_f64(),
        "tasks/s",
    );

    // POST /v1/tasks under wrk.
    eprintln!("api: POST /v1/tasks, {} connections, {} s (wrk)", o.api_connections, o.api_secs);
    let before = Probe::take(&env.engine, &[api.pid]).await?;
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{}", o.api_connections), &format!("-d{}s", o.api_secs), "--timeout", "10s", "-s"])
        .arg(&o.wrk_script)
        .arg(format!("{base}/v1/tasks"))
        .env("CHRONOS_BENCH_KEY", key)
        .env("CHRONOS_BENCH_QUEUE", "bench-api")
        .output()
        .await
        .context("run wrk (apt-get install wrk; scripts/bench installs it)")?;
    let cost = Probe::take(&env.engine, &[api.pid]).await?.since(&before);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHRONOS_WRK "))
        .with_context(|| format!("wrk printed no summary (exit {}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr)))?;
    let w: Value = serde_json::from_str(line).context("wrk summary")?;
    let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
    let secs = f("duration_us") / 1e6;
    let ok = f("ok");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE queue = 'bench-api'")
        .fetch_one(env.store.pool())
        .await
        .context("count rows")?;
    r.add("api_rps", "POST /v1/tasks: 2xx responses / s", ok / secs, "req/s");
    r.add("api_p50_ms", "POST /v1/tasks latency p50", f("p50_us") / 1000.0, "ms");
    r.add("api_p99_ms", "POST /v1/tasks latency p99", f("p99_us") / 1000.0, "ms");
    r.add("api_max_ms", "POST /v1/tasks latency max", f("max_us") / 1000.0, "ms");
    r.add("api_2xx", "POST /v1/tasks: 2xx responses", ok, "requests");
    r.add("api_rows", "POST /v1/tasks: task rows in Postgres afterwards", rows as f64, "rows");
    r.add("api_non2xx", "POST /v1/tasks: other responses", f("other"), "requests");
    r.add("api_socket_errors", "POST /v1/tasks: socket errors and timeouts", f("socket_errors"), "errors");
    if (rows as f64) < ok {
        r.note(format!("api: {ok} tasks accepted (2xx) but only {rows} rows in Postgres"));
    }
    let per = |s: f64| s * 1e6 / ok.max(1.0);
    r.add("api_cpu_api_us_per_req", "POST /v1/tasks: API process CPU / request", per(cost.procs_cpu_s), "µs");
    r.add("api_cpu_redis_us_per_req", "POST /v1/tasks: Redis CPU / request", per(cost.redis_cpu_s), "µs");
    r.add("api_cpu_pg_us_per_req", "POST /v1/tasks: Postgres CPU / request", per(cost.pg_cpu_s), "µs");
    let rest = cost.machine_busy_s - cost.procs_cpu_s - cost.redis_cpu_s - cost.pg_cpu_s;
    r.add("api_cpu_rest_us_per_req", "POST /v1/tasks: other CPU (wrk, kernel, rest) / request", per(rest), "µs");
    r.add("api_busy_cores", "POST /v1/tasks: machine busy (cores)", cost.machine_busy_s / secs.max(1e-9), "cores");
    r.add("api_redis_calls_per_req", "POST /v1/tasks: Redis commands / request", cost.calls as f64 / ok.max(1.0), "calls");
    if let Some((_, hwm)) = rss(api.pid) {
        r.add("api_rss_peak_mb", "chronos api RSS, peak", hwm as f64 / 1e6, "MB");
    }
    Ok(())
}

/// The wrk script beside this crate (`bench/wrk-post-task.lua` at the repository root).
pub fn default_wrk_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/wrk-post-task.lua").display().to_string()
}
