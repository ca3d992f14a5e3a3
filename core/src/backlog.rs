//! What a queue owes its workers right now, read from Redis for the scaler: tasks waiting to
//! start (ready, plus delayed and retrying tasks whose due time has passed but that no claim
//! has promoted yet), attempts running, and how long the oldest of the waiting ones has waited.
//!
//! The reads are plain commands over [`Engine::connection`] (two pipelined round trips per
//! queue), not a script: the scaler runs once a minute and acts on a trend, so a reading that
//! is a few microseconds apart between its parts is as good as an atomic one, and it never
//! blocks a claim. Time is Redis's `TIME`, the clock the scripts schedule by.

use redis::{FromRedisValue, Value};

use crate::error::{Error, Result};
use crate::queue::Engine;

/// `2^46`: the priority band width of the ready set's score, `(100 - priority) · 2^46 + seq`
/// (`ready_score` in `queue/scripts/lib.lua`, the only other place it is written).
const BAND: i64 = 1 << 46;
/// Priorities are 0–100, so the ready set has at most 101 bands.
const BANDS: i64 = 101;

fn parse<T: FromRedisValue>(v: Value) -> Result<T> {
    redis::from_redis_value(v).map_err(|e| Error::Protocol { script: "backlog", detail: e.to_string() })
}

/// One queue's backlog at `now_ms` (Redis time).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub queue: String,
    /// Redis time of the reading (ms since the epoch).
    pub now_ms: i64,
    /// In the ready set.
    pub ready: u64,
    /// Delayed (first run) tasks whose due time has passed.
    pub due_delayed: u64,
    /// Retrying tasks whose next attempt is due.
    pub due_retrying: u64,
    /// Attempts running (leased).
    pub running: u64,
    /// Delayed and retrying tasks not due yet (not backlog; shown for context).
    pub later: u64,
    /// A paused queue is not claimed from: its backlog needs no workers.
    pub paused: bool,
    /// Transitions in the audit outbox, not yet written to Postgres.
    pub outbox: u64,
    /// Dead tasks kept in Redis.
    pub dead: u64,
    /// Age of the task that has waited longest since it was due, `None` when nothing waits.
    pub oldest_waiting_ms: Option<u64>,
}

impl Backlog {
    /// Tasks that could start now if a worker were free: waiting + due scheduled + due retrying.
    pub fn waiting(&self) -> u64 {
        self.ready + self.due_delayed + self.due_retrying
    }
}

/// Read `queue`'s backlog.
pub async fn read(engine: &Engine, queue: &str) -> Result<Backlog> {
    let k = engine.keys(queue);
    let mut conn = engine.connection();
    // Round trip 1: the clock, the sizes, and the head of every priority band of the ready
    // set (FIFO within a band, so each head is its band's oldest; across bands a low-priority
    // task may have waited longest).
    let mut pipe = redis::pipe();
    pipe.cmd("TIME")
        .zcard(&k.ready)
        .zcard(&k.active)
        .exists(&k.paused)
        .zcard(&k.delayed)
        .zcard(&k.retry)
        .xlen(&k.outbox)
        .zcard(&k.dead)
        .get(&k.grouped);
    for b in 0..BANDS {
        pipe.cmd("ZRANGEBYSCORE").arg(&k.ready).arg(b * BAND).arg(format!("({}", (b + 1) * BAND)).arg("LIMIT").arg(0).arg(1);
    }
    let mut r: Vec<Value> = pipe.query_async(&mut conn).await?;
    let heads: Vec<String> = r.drain(9..).filter_map(|v| redis::from_redis_value::<Vec<String>>(v).ok()?.into_iter().next()).collect();
    let mut it = r.into_iter();
    let now_ms = match it.next() {
        Some(v) => {
            let (s, us): (i64, i64) = parse(v)?;
            s * 1000 + us / 1000
        }
        None => return Err(Error::Protocol { script: "backlog", detail: "no TIME reply".into() }),
    };
    let mut next_u64 = || -> Result<u64> { parse(it.next().unwrap_or(Value::Int(0))) };
    let (ready, running, paused, delayed, retrying) = (next_u64()?, next_u64()?, next_u64()? == 1, next_u64()?, next_u64()?);
    let (outbox, dead) = (next_u64()?, next_u64()?);
    // Grouped tasks wait in their groups' sets (see `crate::limits`): they count as ready. The
    // oldest-waiting age is read from the ready set's band heads only.
    let grouped = match it.next() {
        Some(Value::Nil) | None => 0,
        Some(v) => parse::<i64>(v)?.max(0) as u64,
    };
    let ready = ready + grouped;

    // Round trip 2: what is due, the earliest due time of each timed set, and when each band
    // head became ready (`ra`, set when it was enqueued, came due or was retried).
    let mut pipe = redis::pipe();
    pipe.zcount(&k.delayed, "-inf", now_ms).zcount(&k.retry, "-inf", now_ms);
    pipe.cmd("ZRANGE").arg(&k.delayed).arg(0).arg(0).arg("WITHSCORES");
    pipe.cmd("ZRANGE").arg(&k.retry).arg(0).arg(0).arg("WITHSCORES");
    for id in &heads {
        pipe.hget(k.task(id), "ra");
    }
    let mut r: Vec<Value> = pipe.query_async(&mut conn).await?;
    let ready_since: Vec<i64> = r.drain(4..).filter_map(|v| redis::from_redis_value::<Option<i64>>(v).ok().flatten()).collect();
    let mut it = r.into_iter();
    let due_delayed: u64 = parse(it.next().unwrap_or(Value::Int(0)))?;
    let due_retrying: u64 = parse(it.next().unwrap_or(Value::Int(0)))?;
    let first_due = |v: Option<Value>| -> Result<Option<i64>> {
        let pairs: Vec<(String, f64)> = parse(v.unwrap_or(Value::Array(vec![])))?;
        Ok(pairs.first().map(|(_, s)| *s as i64).filter(|due| *due <= now_ms))
    };
    let (d, t) = (first_due(it.next())?, first_due(it.next())?);
    let oldest_since = ready_since.into_iter().chain(d).chain(t).min();
    Ok(Backlog {
        queue: queue.to_owned(),
        now_ms,
        ready,
        due_delayed,
        due_retrying,
        running,
        later: (delayed + retrying).saturating_sub(due_delayed + due_retrying),
        paused,
        outbox,
        dead,
        oldest_waiting_ms: oldest_since.map(|since| now_ms.saturating_sub(since).max(0) as u64),
    })
}
