//! Redis memory per waiting task: N tasks with a 200-byte JSON payload, `INFO memory`
//! `used_memory` before and after (the BullMQ side does the same with `addBulk`). Worker RSS
//! is read in the drain (`throughput.rs`).

use anyhow::{Context, Result};
use chronos_core::{Engine, NewTask};
use serde_json::{Value, json};

use crate::Opts;
use crate::env::{Bench, BenchEnv, QUEUE};
use crate::report::Report;
use crate::throughput::{BATCH, noop_tasks};

const PAYLOAD_BYTES: usize = 200;

/// A JSON payload of exactly `PAYLOAD_BYTES` serialized bytes (the BullMQ side builds the same).
fn payload_200(i: usize) -> Value {
    let mut v = json!({"to": format!("user-{i:06}@example.com"), "template": "welcome", "locale": "en-GB", "pad": ""});
    let len = serde_json::to_string(&v).expect("json").len();
    v["pad"] = Value::String("x".repeat(PAYLOAD_BYTES.saturating_sub(len)));
    v
}

/// Redis's `used_memory` (bytes), from `INFO memory`.
pub async fn used_memory(engine: &Engine) -> Result<i64> {
    let mut conn = engine.connection();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    info.lines().find_map(|l| l.trim().strip_prefix("used_memory:")).and_then(|v| v.parse().ok()).context("INFO memory has no used_memory")
}

pub async fn memory(b: &Bench, o: &Opts, r: &mut Report) -> Result<()> {
    let n = o.memory_tasks / BATCH * BATCH;
    eprintln!("memory: {n} waiting tasks with a {PAYLOAD_BYTES}-byte JSON payload");
    let env = BenchEnv::new(b).await?;
    let retention = env.client.idempotency_retention;
    let prepare =
        |tasks: Vec<NewTask>| tasks.into_iter().map(|t| t.prepare(env.client.max_payload_bytes)).collect::<chronos_core::Result<Vec<_>>>();
    // The queue's fixed keys exist before the measurement, as BullMQ's do after its warm-up.
    env.engine.enqueue(&prepare(noop_tasks("warmup", 1))?, retention).await?;
    env.engine.register_queue(QUEUE).await?;
    let before = used_memory(&env.engine).await?;
    for c in 0..n / BATCH {
        let tasks = (0..BATCH).map(|i| NewTask::new("noop", payload_200(c * BATCH + i)).queue(QUEUE)).collect();
        env.engine.enqueue(&prepare(tasks)?, retention).await?;
    }
    let after = used_memory(&env.engine).await?;
    r.add("redis_bytes_per_task", "Redis used_memory growth / waiting task (200-byte payload)", (after - before) as f64 / n as f64, "B");
    env.cleanup(b).await;
    Ok(())
}
