//! The Chronos side of `scripts/bench`: one run of every scenario, as figures on stderr and
//! JSON (`--json FILE`). A benchmark, not a test: it prints figures and asserts nothing.
//! `scripts/bench` runs it next to the BullMQ side (`bench/bullmq.mjs`) on a private Redis,
//! three times each, and reports medians and ratios (`bench/report.mjs`).
//!
//! ```text
//! cargo build --release -p chronos-cli -p chronos-tests --example bench
//! REDIS_URL=redis://127.0.0.1:6399 target/release/examples/bench --chronos-bin target/release/chronos [--quick] [--json FILE]
//!     [--tasks N] [--concurrency 1,10,100,200] [--procs 1,2] [--only drain,api,...] [--commandstats] [--log-dir DIR]
//! ```
//!
//! # Layout
//! - `env.rs` — per-scenario database and namespace ([`env::BenchEnv`]), `chronos` child processes,
//!   the refusal to run on a Redis holding data the bench did not create.
//! - `throughput.rs` — enqueue (Rust client, Redis only) and drains with `chronos worker` processes.
//! - `api.rs` — `chronos api`: the batch endpoint, then `POST /v1/tasks` under `wrk`.
//! - `latency.rs` — pickup, delayed lateness, retry gaps, SIGKILL → re-delivery.
//! - `footprint.rs` — Redis bytes per waiting task.
//! - `curve.rs` — the cost curve: a drain's cost with 10k–1M waiting, 1–1,000 queues, 1M delayed
//!   (`--only curve`; not in the default run).
//! - `burst.rs` — the curve's burst row: 1M tasks through `POST /v1/tasks/batch` while a worker
//!   drains them (peaks of Redis memory and outbox, time until audited, lost counted).
//! - `probe.rs` — Redis `INFO commandstats`/`cpu` and /proc CPU readings turned into costs per task.
//! - `report.rs` — the figures and their JSON.
//!
//! Redis comes from `REDIS_URL` (it must hold no keys at start), Postgres from `DATABASE_URL`
//! (a fresh database per scenario, dropped afterwards), SQS (for `chronos worker`'s dead-letter
//! queue, never used here) from `AWS_ENDPOINT_URL`.

mod api;
mod burst;
mod curve;
mod env;
mod footprint;
mod latency;
mod probe;
mod report;
mod throughput;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

const SCENARIOS: &[&str] = &["enqueue", "drain", "observability", "pickup", "delayed", "retry", "memory", "api", "crash"];
/// Scenarios run only when `--only` names them (long, and Chronos only).
const EXTRA: &[&str] = &["curve"];

pub struct Opts {
    json: Option<String>,
    chronos_bin: PathBuf,
    log_dir: Option<PathBuf>,
    quick: bool,
    only: Vec<String>,
    commandstats: bool,
    pub tasks: usize,
    pub concurrency: Vec<usize>,
    pub procs: Vec<usize>,
    pub pickup_tasks: usize,
    pub pickup_every: Duration,
    pub delayed_tasks: usize,
    pub retry_tasks: usize,
    pub memory_tasks: usize,
    pub api_secs: u64,
    pub api_connections: usize,
    pub wrk_script: String,
    pub crash_lease: Duration,
}

fn list(v: Option<String>, what: &str) -> Result<Vec<usize>> {
    v.with_context(|| format!("{what} needs a list, e.g. 1,10,100"))?
        .split(',')
        .map(|c| c.trim().parse::<usize>().with_context(|| format!("{what}: {c:?} is not a number")))
        .collect()
}

fn parse_args() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Opts {
        json: None,
        chronos_bin: PathBuf::new(),
        log_dir: None,
        quick,
        only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        commandstats: false,
        tasks: if quick { 10_000 } else { 100_000 },
        concurrency: if quick { vec![100] } else { vec![1, 10, 100, 200] },
        procs: if quick { vec![1] } else { vec![1, 2] },
        pickup_tasks: if quick { 200 } else { 1000 },
        pickup_every: Duration::from_millis(5),
        delayed_tasks: if quick { 200 } else { 2000 },
        retry_tasks: if quick { 5 } else { 10 },
        memory_tasks: if quick { 10_000 } else { 100_000 },
        api_secs: if quick { 5 } else { 20 },
        api_connections: 64,
        wrk_script: api::default_wrk_script(),
        crash_lease: Duration::from_secs(5),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--json" => o.json = Some(it.next().context("--json needs a file")?),
            "--chronos-bin" => o.chronos_bin = it.next().context("--chronos-bin needs a path")?.into(),
            "--log-dir" => o.log_dir = Some(it.next().context("--log-dir needs a directory")?.into()),
            "--wrk-script" => o.wrk_script = it.next().context("--wrk-script needs a file")?,
            "--tasks" => o.tasks = it.next().context("--tasks needs a number")?.parse().context("--tasks")?,
            "--concurrency" => o.concurrency = list(it.next(), "--concurrency")?,
            "--procs" => o.procs = list(it.next(), "--procs")?,
            "--api-secs" => o.api_secs = it.next().context("--api-secs needs a number")?.parse().context("--api-secs")?,
            "--commandstats" => o.commandstats = true,
            "--only" => {
                o.only = it.next().context("--only needs a list")?.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = o.only.iter().find(|s| !SCENARIOS.contains(&s.as_str()) && !EXTRA.contains(&s.as_str())) {
                    bail!("--only: unknown scenario {bad:?} (one of {}, {})", SCENARIOS.join(", "), EXTRA.join(", "));
                }
            }
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("main.rs").lines().skip_while(|l| !l.contains("```text")).skip(1).take(4).collect::<Vec<_>>().join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if o.chronos_bin.as_os_str().is_empty() {
        let exe = std::env::current_exe()?;
        o.chronos_bin = exe.parent().and_then(|d| d.parent()).context("target dir")?.join("chronos");
    }
    if o.tasks < throughput::BATCH
        || o.concurrency.is_empty()
        || o.concurrency.contains(&0)
        || o.procs.is_empty()
        || o.procs.contains(&0)
        || o.memory_tasks < throughput::BATCH
    {
        bail!("--tasks must be at least {} and every concurrency and process count at least 1", throughput::BATCH);
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let b = env::Bench::new(o.chronos_bin.clone(), o.log_dir.clone())?;
    b.check_redis_is_ours().await?;
    let started = Instant::now();
    let mut r = report::Report::default();
    let on = |s: &str| o.only.iter().any(|x| x == s);
    if on("enqueue") {
        throughput::enqueue(&b, &o, &mut r).await?;
    }
    if on("drain") {
        // Footprint (worker RSS idle and at peak) from one drain: concurrency 100, one process.
        let fc = if o.concurrency.contains(&100) { 100 } else { *o.concurrency.iter().max().expect("non-empty") };
        for &p in &o.procs {
            for &c in &o.concurrency {
                throughput::drain(&b, &o, c, p, p == o.procs[0] && c == fc, &mut r).await?;
            }
        }
    }
    if on("observability") {
        throughput::observability(&b, &o, &mut r).await?;
    }
    if on("pickup") {
        latency::pickup(&b, &o, false, &mut r).await?;
        latency::pickup(&b, &o, true, &mut r).await?;
    }
    if on("delayed") {
        latency::delayed(&b, &o, &mut r).await?;
    }
    if on("retry") {
        latency::retry(&b, &o, &mut r).await?;
    }
    if on("memory") {
        footprint::memory(&b, &o, &mut r).await?;
    }
    if on("api") {
        api::api(&b, &o, &mut r).await?;
    }
    if on("crash") {
        latency::crash(&b, &o, &mut r).await?;
    }
    if on("curve") {
        curve::curve(&b, &o, &mut r).await?;
        burst::burst(&b, &o, &mut r).await?;
    }
    eprintln!("(Chronos side took {:.0} s)", started.elapsed().as_secs_f64());

    if let Some(path) = &o.json {
        let mut doc = r.to_json();
        doc["system"] = json!("chronos");
        doc["version"] = json!(env!("CARGO_PKG_VERSION"));
        doc["params"] = json!({
            "quick": o.quick,
            "tasks": o.tasks,
            "batch": throughput::BATCH,
            "concurrency": o.concurrency,
            "procs": o.procs,
            "pickup_tasks": o.pickup_tasks,
            "pickup_every_ms": o.pickup_every.as_millis() as u64,
            "delayed_tasks": o.delayed_tasks,
            "retry_tasks": o.retry_tasks,
            "memory_tasks": o.memory_tasks,
            "api_secs": o.api_secs,
            "api_connections": o.api_connections,
            "crash_lease_ms": o.crash_lease.as_millis() as u64,
        });
        doc["seconds"] = json!(started.elapsed().as_secs_f64());
        std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("write {path}"))?;
    }
    Ok(())
}
