//! The audit writer: drains each queue's outbox stream into Postgres in batches and acks the
//! entries only after the transaction commits. Postgres down means the outbox grows and
//! nothing is dropped; several writers may run (one consumer group), and an older event never
//! overwrites a newer task state (`tasks.event_seq`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::Value;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::error::Result;
use crate::queue::{BlockingConnection, Engine};
use crate::store::Store;

const GROUP: &str = "audit";
/// Below this many entries a batch is small: wait [`GATHER`] before the next read.
const SMALL_BATCH: usize = 64;
const GATHER: Duration = Duration::from_millis(15);
/// Entries another writer took but never acked (it died) are taken over after this long.
/// A live writer re-reads its own pending entries (which resets their idle time), so only a
/// dead writer's entries ever get this old.
const ORPHAN_IDLE: Duration = Duration::from_secs(10);

pub struct AuditWriter {
    engine: Engine,
    store: Store,
    consumer: String,
    batch: usize,
    groups: Mutex<HashSet<String>>,
    /// Signalled when a batch contained dead tasks, so the DLQ forwarder sends them now.
    pub dead_seen: Arc<Notify>,
    last_orphan_check: Mutex<Instant>,
}

/// One applied transition, decoded from an outbox entry.
#[derive(Debug, Default, Clone)]
struct AttemptRow {
    worker: Option<String>,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    outcome: Option<&'static str>,
    error: Option<String>,
    detail: Option<String>,
    /// The handler's captured log lines.
    logs: Option<String>,
}

#[derive(Debug, Clone)]
struct TaskUpdate {
    seq: i64,
    status: &'static str,
    attempts: Option<i32>,
    last_error: Option<String>,
    run_at: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    /// A retry-now of a dead task gave it a fresh attempt budget.
    max_attempts: Option<i32>,
    /// What the handler returned (JSON text), on completion.
    result: Option<String>,
}

#[derive(Default)]
struct Batch {
    attempts: HashMap<(Uuid, i32), AttemptRow>,
    tasks: HashMap<Uuid, TaskUpdate>,
    log: Vec<(String, &'static str, Uuid, serde_json::Value)>,
    dead: usize,
    /// The last progress each running task reported in this batch (JSON text).
    progress: HashMap<Uuid, String>,
}

impl Batch {
    fn attempt(&mut self, id: Uuid, a: i32) -> &mut AttemptRow {
        self.attempts.entry((id, a)).or_default()
    }

    fn task(&mut self, id: Uuid, seq: i64, status: &'static str, at: DateTime<Utc>) -> &mut TaskUpdate {
        let terminal = matches!(status, "completed" | "dead" | "cancelled");
        let u = self.tasks.entry(id).or_insert(TaskUpdate {
            seq,
            status,
            attempts: None,
            last_error: None,
            run_at: None,
            finished: None,
            max_attempts: None,
            result: None,
        });
        if seq >= u.seq {
            u.seq = seq;
            u.status = status;
            u.finished = terminal.then_some(at);
        }
        u
    }

    fn add(&mut self, seq: i64, f: &HashMap<String, Value>) {
        let s = |k: &str| f.get(k).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
        let kind = s("k").unwrap_or_default();
        let at = s("t").and_then(|t| t.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis).unwrap_or_else(Utc::now);
        let worker = s("w").filter(|w| !w.is_empty());
        let id = s("i").and_then(|i| Uuid::parse_str(&i).ok());
        let a = s("a").and_then(|a| a.parse::<i32>().ok()).unwrap_or(0);
        let each = |x: Option<String>| -> Vec<(Uuid, i32)> {
            x.unwrap_or_default()
                .split(',')
                .filter_map(|p| {
                    let (id, a) = p.split_once(':')?;
                    Some((Uuid::parse_str(id).ok()?, a.parse().ok()?))
                })
                .collect()
        };
        match kind.as_str() {
            // batch kinds: claimed, done, released
            "c" | "d" | "B" => {
                // Beside k, t, w and x, a completion carries `l<id>` for each attempt that logged
                // and `r<id>` for each that returned a result.
                let with_logs = (kind == "d" || kind == "B") && f.len() > 4;
                for (tid, a) in each(s("x")) {
                    let logs = if with_logs { s(&format!("l{tid}")) } else { None };
                    let row = self.attempt(tid, a);
                    if logs.is_some() {
                        row.logs = logs;
                    }
                    row.worker = worker.clone().or(row.worker.take());
                    let status = match kind.as_str() {
                        "c" => {
                            row.started = Some(at);
                            "running"
                        }
                        "d" => {
                            row.finished = Some(at);
                            row.outcome = Some("completed");
                            "completed"
                        }
                        _ => {
                            row.finished = Some(at);
                            row.outcome = Some("released");
                            row.error = Some("worker shut down; handed back".into());
                            "queued"
                        }
                    };
                    let u = self.task(tid, seq, status, at);
                    u.attempts = Some(u.attempts.unwrap_or(0).max(a));
                    if with_logs
                        && kind == "d"
                        && let Some(r) = s(&format!("r{tid}"))
                    {
                        u.result = Some(r);
                    }
                }
            }
            "r" | "x" | "C" | "L" => {
                let Some(id) = id else { return };
                let (outcome, status) = match kind.as_str() {
                    "r" => ("failed", "retrying"),
                    "x" => (if s("o").as_deref() == Some("lost") { "lost" } else { "failed" }, "dead"),
                    "C" => ("cancelled", "cancelled"),
                    _ => ("lost", "queued"),
                };
                let err = s("e");
                let row = self.attempt(id, a);
                row.worker = worker.clone().or(row.worker.take());
                row.finished = Some(at);
                row.outcome = Some(outcome);
                if err.is_some() {
                    row.error = err.clone();
                }
                if let Some(d) = s("s").filter(|d| !d.is_empty()) {
                    row.detail = Some(d);
                }
                if let Some(l) = s("l") {
                    row.logs = Some(l);
                }
                let ra = s("ra").and_then(|t| t.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis);
                let u = self.task(id, seq, status, at);
                u.attempts = Some(u.attempts.unwrap_or(0).max(a));
                if err.is_some() {
                    u.last_error = err;
                }
                if ra.is_some() {
                    u.run_at = ra;
                }
                if kind == "x" {
                    self.dead += 1;
                }
            }
            // progress a running handler reported (a heartbeat carried it); status unchanged
            "P" => {
                let (Some(id), Some(p)) = (id, s("p")) else { return };
                self.progress.insert(id, p);
            }
            // a schedule's occurrence dropped by its overlap policy (never started), or a task
            // past its deadline
            "S" => {
                let Some(id) = id else { return };
                let u = self.task(id, seq, "cancelled", at);
                u.last_error = s("e");
            }
            // manual actions: cancel of a waiting task, cancel requested on a running one, retry-now
            "X" | "Q" | "R" => {
                let Some(id) = id else { return };
                let actor = s("by").unwrap_or_else(|| "unknown".into());
                let was = s("st").unwrap_or_default();
                let action = match kind.as_str() {
                    "X" => {
                        self.task(id, seq, "cancelled", at);
                        "cancel"
                    }
                    "Q" => "cancel_requested",
                    _ => {
                        let u = self.task(id, seq, "queued", at);
                        u.run_at = Some(at);
                        let ma = s("ma").and_then(|m| m.parse::<i32>().ok());
                        u.max_attempts = u.max_attempts.max(ma);
                        "retry_now"
                    }
                };
                self.log.push((actor, action, id, serde_json::json!({ "previous_status": was, "at": at })));
            }
            other => tracing::warn!(kind = other, "unknown outbox entry kind; skipped"),
        }
    }
}

fn stream_seq(id: &str) -> i64 {
    let (ms, n) = id.split_once('-').unwrap_or((id, "0"));
    ms.parse::<i64>().unwrap_or(0).saturating_mul(1_000_000).saturating_add(n.parse::<i64>().unwrap_or(0).min(999_999))
}

impl AuditWriter {
    pub fn new(engine: Engine, store: Store, consumer: impl Into<String>) -> Self {
        AuditWriter {
            engine,
            store,
            consumer: consumer.into(),
            batch: 1000,
            groups: Mutex::new(HashSet::new()),
            dead_seen: Arc::new(Notify::new()),
            last_orphan_check: Mutex::new(Instant::now() - ORPHAN_IDLE),
        }
    }

    async fn ensure_groups(&self, queues: &[String]) -> Result<()> {
        let missing: Vec<String> = {
            let g = self.groups.lock().unwrap();
            queues.iter().filter(|q| !g.contains(*q)).cloned().collect()
        };
        let mut conn = self.engine.connection();
        for q in missing {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.engine.keys(&q).outbox)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
            self.groups.lock().unwrap().insert(q);
        }
        Ok(())
    }

    /// Apply one batch: this consumer's unacked entries first (left by a failed commit), then
    /// entries another writer orphaned, then new ones, blocking up to `block` for them.
    /// Returns how many entries were written to Postgres.
    pub async fn drain_once(&self, conn: &mut BlockingConnection, block: Duration) -> Result<usize> {
        let queues = self.engine.queues().await?;
        if queues.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(0);
        }
        self.ensure_groups(&queues).await?;
        let streams: Vec<String> = queues.iter().map(|q| self.engine.keys(q).outbox).collect();

        let mine = self.read(conn, &streams, "0", None).await?;
        if mine.iter().any(|(_, e)| !e.is_empty()) {
            return self.apply(mine).await;
        }
        let orphan_check_due = self.last_orphan_check.lock().unwrap().elapsed() >= ORPHAN_IDLE / 2;
        if orphan_check_due {
            *self.last_orphan_check.lock().unwrap() = Instant::now();
            let mut taken = Vec::new();
            for s in &streams {
                let r: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(s)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(ORPHAN_IDLE.as_millis() as u64)
                    .arg("0")
                    .arg("COUNT")
                    .arg(self.batch)
                    .query_async(conn)
                    .await?;
                taken.push((s.clone(), r.claimed));
            }
            if taken.iter().any(|(_, e)| !e.is_empty()) {
                return self.apply(taken).await;
            }
        }
        let new = self.read(conn, &streams, ">", Some(block)).await?;
        self.apply(new).await
    }

    /// One XREADGROUP over `streams`; on a cluster one per slot group, each blocking for its
    /// share of `block` and the rest, once one found entries, not blocking at all.
    async fn read(
        &self,
        conn: &mut BlockingConnection,
        streams: &[String],
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<StreamId>)>> {
        let groups = self.engine.slot_groups(streams.iter().collect(), |s| s.as_str());
        let block = block.map(|b| (b.as_millis() as u64 / groups.len().max(1) as u64).max(1));
        let mut out: Vec<(String, Vec<StreamId>)> = Vec::new();
        for group in groups {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(self.batch);
            if let Some(b) = block
                && out.iter().all(|(_, ids)| ids.is_empty())
            {
                cmd.arg("BLOCK").arg(b);
            }
            cmd.arg("STREAMS").arg(&group);
            for _ in &group {
                cmd.arg(from);
            }
            let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
            out.extend(reply.map(|r| r.keys.into_iter().map(|k| (k.key, k.ids)).collect::<Vec<_>>()).unwrap_or_default());
        }
        Ok(out)
    }

    async fn apply(&self, entries: Vec<(String, Vec<StreamId>)>) -> Result<usize> {
        let mut batch = Batch::default();
        let mut n = 0;
        for (_, ids) in &entries {
            for e in ids {
                batch.add(stream_seq(&e.id), &e.map);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(0);
        }
        let released = self.write(&batch).await?;
        // Tasks whose last dependency just finished: into Redis now (after the commit); one this
        // misses (Redis down) is found by the tick's sweep.
        if let Err(e) = crate::flows::release(&self.engine, &self.store, &released).await {
            tracing::warn!(error = %e, tasks = released.len(), "could not enqueue tasks whose dependencies finished; the tick's sweep will");
        }
        let mut cmds = Vec::new();
        for (stream, ids) in &entries {
            if ids.is_empty() {
                continue;
            }
            let idv: Vec<&str> = ids.iter().map(|e| e.id.as_str()).collect();
            cmds.push((stream.clone(), redis::cmd("XACK").arg(stream).arg(GROUP).arg(&idv).to_owned()));
            cmds.push((stream.clone(), redis::cmd("XDEL").arg(stream).arg(&idv).to_owned()));
        }
        self.engine.pipeline_per_slot(cmds).await?;
        if batch.dead > 0 {
            self.dead_seen.notify_waiters();
            self.dead_seen.notify_one();
        }
        Ok(n)
    }

    /// Write a batch in one transaction; returns the tasks it released (their last dependency
    /// finished), for [`crate::flows::release`] after the commit.
    async fn write(&self, b: &Batch) -> Result<Vec<Uuid>> {
        let mut released = Vec::new();
        let mut tx = self.store.pool().begin().await?;
        if !b.attempts.is_empty() {
            let mut ids = Vec::new();
            let mut nums = Vec::new();
            let mut workers = Vec::new();
            let mut started = Vec::new();
            let mut finished = Vec::new();
            let mut outcomes = Vec::new();
            let mut errors = Vec::new();
            let mut details = Vec::new();
            let mut logs = Vec::new();
            // Rows in key order: two writers (two worker processes) may hold events of the same
            // tasks, and rows locked in different orders deadlock (each deadlock stalls both
            // for Postgres's deadlock_timeout).
            let mut attempts: Vec<_> = b.attempts.iter().collect();
            attempts.sort_unstable_by_key(|(k, _)| **k);
            for ((id, a), r) in attempts {
                ids.push(*id);
                nums.push(*a);
                workers.push(r.worker.as_deref());
                started.push(r.started);
                finished.push(r.finished);
                outcomes.push(r.outcome);
                errors.push(r.error.as_deref());
                details.push(r.detail.as_deref());
                logs.push(r.logs.as_deref());
            }
            sqlx::query(
                "INSERT INTO task_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error, detail, logs)
                 SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[])
                 ON CONFLICT (task_id, attempt) DO UPDATE SET
                   worker = COALESCE(EXCLUDED.worker, task_attempts.worker),
                   started_at = COALESCE(task_attempts.started_at, EXCLUDED.started_at),
                   finished_at = COALESCE(EXCLUDED.finished_at, task_attempts.finished_at),
                   outcome = COALESCE(EXCLUDED.outcome, task_attempts.outcome),
                   error = COALESCE(EXCLUDED.error, task_attempts.error),
                   detail = COALESCE(EXCLUDED.detail, task_attempts.detail),
                   logs = COALESCE(EXCLUDED.logs, task_attempts.logs)",
            )
            .bind(&ids)
            .bind(&nums)
            .bind(&workers)
            .bind(&started)
            .bind(&finished)
            .bind(&outcomes)
            .bind(&errors)
            .bind(&details)
            .bind(&logs)
            .execute(&mut *tx)
            .await?;
        }
        if !b.tasks.is_empty() {
            let mut ids = Vec::new();
            let mut sts = Vec::new();
            let mut ats = Vec::new();
            let mut les = Vec::new();
            let mut ras = Vec::new();
            let mut fts = Vec::new();
            let mut seqs = Vec::new();
            let mut mas = Vec::new();
            let mut results = Vec::new();
            let mut tasks: Vec<_> = b.tasks.iter().collect();
            tasks.sort_unstable_by_key(|(id, _)| **id);
            for (id, u) in tasks {
                ids.push(*id);
                sts.push(u.status);
                ats.push(u.attempts);
                les.push(u.last_error.as_deref());
                ras.push(u.run_at);
                fts.push(u.finished);
                seqs.push(u.seq);
                mas.push(u.max_attempts);
                results.push(u.result.as_deref());
            }
            let changed: Vec<(Uuid, String)> = sqlx::query_as(
                "UPDATE tasks SET status = u.st, attempts = GREATEST(tasks.attempts, u.a),
                   last_error = COALESCE(u.le, tasks.last_error), run_at = COALESCE(u.ra, tasks.run_at),
                   finished_at = u.ft, updated_at = now(), event_seq = u.seq,
                   max_attempts = GREATEST(tasks.max_attempts, COALESCE(u.ma, tasks.max_attempts)),
                   result = COALESCE(u.res::jsonb, tasks.result)
                 FROM (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::int8[], $8::int4[], $9::text[])
                       AS v(id, st, a, le, ra, ft, seq, ma, res) ORDER BY id) AS u
                 WHERE tasks.id = u.id AND tasks.event_seq < u.seq
                 RETURNING tasks.id, tasks.status",
            )
            .bind(&ids)
            .bind(&sts)
            .bind(&ats)
            .bind(&les)
            .bind(&ras)
            .bind(&fts)
            .bind(&seqs)
            .bind(&mas)
            .bind(&results)
            .fetch_all(&mut *tx)
            .await?;
            // Tasks that just finished close the edges of what waits for them (a replayed end
            // changes no row, so it counts once).
            let finished: Vec<(Uuid, &str)> = changed
                .iter()
                .filter_map(|(id, st): &(Uuid, String)| {
                    let st = match st.as_str() {
                        "completed" => "completed",
                        "dead" => "dead",
                        "cancelled" => "cancelled",
                        _ => return None,
                    };
                    Some((*id, st))
                })
                .collect();
            if !finished.is_empty() {
                released = crate::flows::resolve_in(&mut tx, &finished).await?;
            }
        }
        if !b.progress.is_empty() {
            let mut rows: Vec<(&Uuid, &String)> = b.progress.iter().collect();
            rows.sort_unstable_by_key(|(id, _)| **id);
            let ids: Vec<Uuid> = rows.iter().map(|(id, _)| **id).collect();
            let ps: Vec<&str> = rows.iter().map(|(_, p)| p.as_str()).collect();
            sqlx::query("UPDATE tasks SET progress = u.p::jsonb FROM UNNEST($1::uuid[], $2::text[]) AS u(id, p) WHERE tasks.id = u.id")
                .bind(&ids)
                .bind(&ps)
                .execute(&mut *tx)
                .await?;
        }
        if !b.log.is_empty() {
            let actors: Vec<&str> = b.log.iter().map(|l| l.0.as_str()).collect();
            let actions: Vec<&str> = b.log.iter().map(|l| l.1).collect();
            let ids: Vec<Uuid> = b.log.iter().map(|l| l.2).collect();
            let details: Vec<String> = b.log.iter().map(|l| l.3.to_string()).collect();
            sqlx::query("INSERT INTO audit_log (actor, action, task_id, detail) SELECT a, b, c, d::jsonb FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[]) AS u(a, b, c, d)")
                .bind(&actors)
                .bind(&actions)
                .bind(&ids)
                .bind(&details)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Drain until `stop` turns true. Errors (Postgres or Redis down) are logged and retried
    /// with a capped backoff; the entries stay in the stream meanwhile.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut conn = None;
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            if conn.is_none() {
                match self.engine.blocking_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "audit writer: cannot connect to Redis");
                        tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.changed() => {} }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            // Not cancelled by `stop`: an interrupted batch would stay pending until another
            // writer adopts it. The blocking read bounds how long this takes.
            let r = self.drain_once(c, Duration::from_millis(250)).await;
            match r {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    // A trickle of transitions would cost a Postgres transaction each; let a
                    // few milliseconds' worth gather so a commit carries a batch.
                    if n > 0 && n < SMALL_BATCH {
                        tokio::time::sleep(GATHER).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "audit writer: batch not written; will retry");
                    if let crate::Error::Redis(re) = &e {
                        // The stream or group vanished (Redis lost its data): create them again.
                        if re.code() == Some("NOGROUP") {
                            self.groups.lock().unwrap().clear();
                        }
                        conn = None;
                    }
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.changed() => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Flush what is left (e.g. the last acks of a draining worker).
        if let Some(c) = conn.as_mut() {
            for _ in 0..20 {
                match self.drain_once(c, Duration::from_millis(1)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_like_their_sequence_numbers() {
        assert!(stream_seq("1700000000000-2") > stream_seq("1700000000000-1"));
        assert!(stream_seq("1700000000001-0") > stream_seq("1700000000000-999"));
    }
}
