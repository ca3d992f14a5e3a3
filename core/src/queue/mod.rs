//! The Redis queue engine. Each state change of a task is one atomic Lua script (one file per
//! transition under `scripts/`), guarded by the lease's fencing token, and appends its audit
//! event to the queue's outbox stream inside the same script.
//!
//! - [`script`] — the boundary: one [`script::ScriptDef`] per script (its KEYS in the order its
//!   header documents, `lib.lua` prepended) and [`script::Reply`], the one reader of replies.
//! - `scripts/*.lua` — `lib.lua` (clock, ready score, key names, backoff, overlap guard) and one
//!   file per transition: `enqueue`, `claim`, `ack`, `fail` (the retry decision), `heartbeat`,
//!   `cancel`, `retry_now`, `reap`, `release`, `drop`, `restore` (the Redis-loss rebuild),
//!   `purge_dead` (retention); `ack_claim` runs `ack` then `claim` in one call.
//! - [`conn`] — one Redis node or a Redis Cluster behind one connection type; on a cluster,
//!   commands over several queues are grouped per slot ([`Engine::slot_groups`]).

pub mod conn;
mod presence;
pub mod script;

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use redis::cluster_routing::Slot;
use uuid::Uuid;

use crate::error::Result;
use crate::keys::{QueueKeys, queues_set, queues_wake};
use crate::model::{Backoff, ClaimedTask, PreparedTask, Schedule, TaskId};
use conn::Target;
pub use conn::{BlockingConnection, Connection};
pub use presence::WorkerPresence;
use script::{
    ACK, ACK_CLAIM, CANCEL, CLAIM, Code, DROP, ENQUEUE, FAIL, HEARTBEAT, LIMITS, PURGE_DEAD, REAP, RELEASE, RETRY_NOW, Reply, unexpected,
};

/// How many due delayed tasks one claim promotes at most.
const PROMOTE_LIMIT: usize = 1000;

/// Result of one claim call.
#[derive(Debug)]
pub struct ClaimBatch {
    /// Redis time when the claim ran (ms since the epoch).
    pub now_ms: i64,
    /// Due time of the earliest delayed task, in Redis time, if any.
    pub next_due_ms: Option<i64>,
    pub tasks: Vec<ClaimedTask>,
}

/// How a worker ends an attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Retry if attempts are left.
    Retryable,
    /// Skip the remaining attempts: dead now.
    Permanent,
    /// The handler stopped because the task was cancelled.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Will run again at this Redis time (ms).
    Retrying {
        due_ms: i64,
    },
    Dead,
    Cancelled,
    /// The fencing token was stale: another worker owns the task now. Nothing changed.
    Stale,
}

/// What cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Removed from its queue; was in this status.
    Cancelled { was: String },
    /// Running: the handler is told through the next heartbeat.
    Cancelling,
    /// Already being cancelled.
    AlreadyCancelling,
    /// Not live in Redis (finished, or unknown).
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryNowOutcome {
    Queued {
        was: String,
    },
    /// Already waiting or running.
    Refused {
        status: String,
    },
    NotFound,
}

/// One attempt that succeeded, as [`Engine::ack_with`] records it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: TaskId,
    pub token: u64,
    /// The handler's captured log lines.
    pub logs: Option<String>,
    /// What the handler returned, as JSON text.
    pub result: Option<String>,
}

/// Answer to one lease in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Extended,
    CancelRequested,
    Lost,
}

/// Live counts of one queue in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    pub waiting: u64,
    /// Scheduled for a first run later.
    pub delayed: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    pub running: u64,
    pub dead: u64,
    pub outbox: u64,
    pub dlq_pending: u64,
    pub paused: bool,
}

/// Why [`Engine::wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A queue's wake list had a token: work may be ready.
    Work,
    /// A queue was added to `<ns>:queues`.
    NewQueue,
    Timeout,
}

/// Handle to the queue engine; cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct Engine {
    target: Target,
    conn: Connection,
    namespace: String,
}

impl Engine {
    /// Connect to Redis. `namespace` prefixes every key (tests use a fresh one each). `url`
    /// with several comma-separated seeds, or `CHRONOS_REDIS_CLUSTER=1`, means a Redis Cluster.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let (target, conn) = Target::connect(url, conn::cluster_from_env()).await?;
        Ok(Engine { target, conn, namespace: namespace.to_owned() })
    }

    /// Whether this engine talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    /// `items` split so that each group's keys (`key` of each item) share a cluster slot, in
    /// the order of their first appearance; on one node, one group of everything. A command
    /// or pipeline over one group's keys is legal on a cluster.
    pub fn slot_groups<T>(&self, items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
        if !self.is_cluster() {
            return if items.is_empty() { Vec::new() } else { vec![items] };
        }
        let mut slots: Vec<Slot> = Vec::new();
        let mut groups: Vec<Vec<T>> = Vec::new();
        for item in items {
            let slot = Slot::for_key(key(&item));
            match slots.iter().position(|s| *s == slot) {
                Some(i) => groups[i].push(item),
                None => {
                    slots.push(slot);
                    groups.push(vec![item]);
                }
            }
        }
        groups
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.namespace, queue)
    }

    /// Send `cmds`, each beside the key that routes it, as one pipeline on one node and as one
    /// pipeline per slot on a cluster; the replies in the order of `cmds`.
    pub async fn pipeline_per_slot(&self, cmds: Vec<(String, redis::Cmd)>) -> Result<Vec<Value>> {
        let n = cmds.len();
        let mut conn = self.conn.clone();
        let mut out = vec![Value::Nil; n];
        for group in self.slot_groups(cmds.into_iter().enumerate().collect(), |(_, (k, _))| k) {
            let mut pipe = redis::pipe();
            let mut at = Vec::with_capacity(group.len());
            for (i, (_, cmd)) in group {
                pipe.add_command(cmd);
                at.push(i);
            }
            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
            for (i, v) in at.into_iter().zip(replies) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// A connection of its own for blocking commands (BLPOP, XREADGROUP BLOCK), which would
    /// stall every other caller of a shared multiplexed connection. On a cluster, block on
    /// one slot group's keys per connection.
    pub async fn blocking_connection(&self) -> Result<BlockingConnection> {
        self.target.blocking().await
    }

    /// The shared connection, for callers that need a plain command.
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Enqueue tasks (any mix of queues); returns `(id, created)` in input order. `created` is
    /// false when an idempotency key already named a live task, whose id is returned.
    pub async fn enqueue(&self, tasks: &[PreparedTask], idempotency_retention: Duration) -> Result<Vec<(TaskId, bool)>> {
        let mut out = vec![(Uuid::nil(), false); tasks.len()];
        let mut by_queue: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, t) in tasks.iter().enumerate() {
            by_queue.entry(t.task.queue.as_str()).or_default().push(i);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let names: Vec<&str> = by_queue.keys().copied().collect();
        // Their replies (whether each queue is new) are read, not ignored: a new queue is marked
        // intact and wakes the `*` workers, with more commands only then (see `queues_joined`).
        for name in &names {
            pipe.sadd(queues_set(&self.namespace), name);
        }
        // On a cluster the set lives in a slot of its own and each queue in its own: one
        // pipeline per queue after the SADD (see `enqueue_per_queue`).
        let cluster = self.is_cluster();
        let mut per_queue = Vec::new();
        let mut order = Vec::new();
        for (queue, idx) in &by_queue {
            let k = self.keys(queue);
            for chunk in idx.chunks(500) {
                let mut cmd = ENQUEUE.cmd(&k);
                cmd.arg(idempotency_retention.as_millis() as u64).arg(chunk.len());
                for &i in chunk {
                    let p = &tasks[i];
                    let (run_at, delay) = match p.task.schedule {
                        Schedule::Now => (0i64, 0u64),
                        Schedule::At(at) => (at.timestamp_millis().max(1), 0),
                        Schedule::After(d) => (0, d.as_millis() as u64),
                    };
                    cmd.arg(p.id.to_string())
                        .arg(&p.task.name)
                        .arg(&p.payload_json)
                        .arg(p.task.priority.get())
                        .arg(p.task.max_attempts)
                        .arg(p.task.backoff.encode())
                        .arg(p.task.timeout.as_millis() as u64)
                        .arg(p.task.idempotency_key.as_deref().unwrap_or(""))
                        .arg(run_at)
                        .arg(delay)
                        .arg(p.dedupe_key().unwrap_or_default());
                    match &p.task.origin {
                        Some(o) => cmd.arg(o.schedule_id.to_string()).arg(o.overlap.code()),
                        None => cmd.arg("").arg(""),
                    };
                    cmd.arg(p.task.group.as_deref().unwrap_or(""));
                    cmd.arg(p.task.expires_at.map_or(0, |t| t.timestamp_millis().max(1)));
                    cmd.arg(p.task.trace_context.as_deref().unwrap_or(""));
                }
                // Pipelined EVALSHA, loaded again if a server answers NOSCRIPT.
                if cluster {
                    per_queue.push(cmd);
                } else {
                    pipe.add_command(cmd);
                }
                order.push(chunk.to_vec());
            }
        }
        let replies: Vec<Value> =
            if cluster { self.enqueue_per_queue(pipe, per_queue).await? } else { query_loading(&mut conn, &pipe).await? };
        let mut replies = replies.into_iter();
        // After a NOSCRIPT (the node restarted, or first use) the pipeline ran twice and its
        // SADDs answer 0: a queue new then stays unmarked and the Redis-loss check looks at it
        // once (`crate::reconcile`), which is what a restarted node needs anyway.
        let joined: Vec<&str> = names.iter().zip(replies.by_ref()).filter(|(_, v)| matches!(v, Value::Int(1))).map(|(q, _)| *q).collect();
        if !joined.is_empty() {
            self.queues_joined(&joined).await?;
        }
        for (reply, chunk) in replies.zip(order) {
            let Value::Array(reply) = reply else { return Err(unexpected(ENQUEUE.name, format!("{reply:?}"))) };
            let mut r = Reply::new(ENQUEUE.name, reply);
            r.skip(); // Redis time
            for i in chunk {
                let id = r.id()?;
                let created = r.int()? == 1;
                out[i] = (id, created);
            }
        }
        Ok(out)
    }

    /// The cluster form of the enqueue pipeline: the SADD, then each script call (a chunk of
    /// one queue: one slot) on its own; the replies in the same order as one pipeline's.
    async fn enqueue_per_queue(&self, sadd: redis::Pipeline, calls: Vec<redis::Cmd>) -> Result<Vec<Value>> {
        let mut conn = self.conn.clone();
        let mut out: Vec<Value> = sadd.query_async(&mut conn).await?;
        for cmd in calls {
            let mut pipe = redis::pipe();
            pipe.add_command(cmd);
            out.extend(query_loading(&mut conn, &pipe).await?);
        }
        Ok(out)
    }

    /// Lease up to `max` ready tasks of `queue` to `worker` (after promoting due delayed ones).
    pub async fn claim(&self, queue: &str, worker: &str, max: usize, lease: Duration) -> Result<ClaimBatch> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut inv = CLAIM.call(&k);
        inv.arg(worker).arg(max).arg(lease.as_millis() as u64).arg(PROMOTE_LIMIT);
        claim_batch(queue, Reply::new(CLAIM.name, inv.invoke_async(&mut conn).await?))
    }

    /// [`Engine::ack_with`] then [`Engine::claim`] in one script call (one round trip): the
    /// acks' answers, and the batch leased after them (the ack frees slots a limit counts).
    pub async fn ack_and_claim(
        &self,
        queue: &str,
        worker: &str,
        done: &[Completion],
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<bool>, ClaimBatch)> {
        if done.is_empty() {
            return Ok((Vec::new(), self.claim(queue, worker, max, lease).await?));
        }
        let mut inv = ACK_CLAIM.call(&self.keys(queue));
        inv.arg(worker).arg(max).arg(lease.as_millis() as u64).arg(PROMOTE_LIMIT);
        completion_args(&mut inv, done);
        let mut conn = self.conn.clone();
        let r: (Vec<i64>, Vec<Value>) = inv.invoke_async(&mut conn).await?;
        Ok((r.0.into_iter().map(|x| x == 1).collect(), claim_batch(queue, Reply::new(ACK_CLAIM.name, r.1))?))
    }

    /// Complete attempts; one bool per `(id, token)`, false when the token was stale.
    pub async fn ack(&self, queue: &str, worker: &str, leases: &[(TaskId, u64)]) -> Result<Vec<bool>> {
        let with: Vec<Completion> = leases.iter().map(|&(id, token)| Completion { id, token, logs: None, result: None }).collect();
        self.ack_with(queue, worker, &with).await
    }

    /// [`Engine::ack`] with each attempt's captured log lines (stored with the attempt) and the
    /// handler's JSON result (stored with the task).
    pub async fn ack_with(&self, queue: &str, worker: &str, leases: &[Completion]) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = ACK.call(&self.keys(queue));
        inv.arg(worker);
        completion_args(&mut inv, leases);
        let mut conn = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(r.into_iter().map(|x| x == 1).collect())
    }

    /// End an attempt that did not succeed; the script decides retry or dead.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        queue: &str,
        id: TaskId,
        token: u64,
        worker: &str,
        kind: FailKind,
        message: &str,
        detail: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome> {
        self.fail_with_logs(queue, id, token, worker, kind, message, detail, retry_in, "").await
    }

    /// [`Engine::fail`] with the attempt's captured log lines (`""`: none).
    #[allow(clippy::too_many_arguments)]
    pub async fn fail_with_logs(
        &self,
        queue: &str,
        id: TaskId,
        token: u64,
        worker: &str,
        kind: FailKind,
        message: &str,
        detail: &str,
        retry_in: Option<Duration>,
        logs: &str,
    ) -> Result<FailOutcome> {
        let k = self.keys(queue);
        let outcome = match kind {
            FailKind::Retryable => "error",
            FailKind::Permanent => "permanent",
            FailKind::Cancelled => "cancelled",
        };
        let mut conn = self.conn.clone();
        let mut inv = FAIL.call(&k);
        inv.arg(id.to_string())
            .arg(token)
            .arg(worker)
            .arg(outcome)
            .arg(message)
            .arg(detail)
            .arg(retry_in.map(|d| d.as_millis() as i64).unwrap_or(-1))
            .arg(rand::random::<f64>())
            .arg(logs);
        let mut r = Reply::new(FAIL.name, inv.invoke_async(&mut conn).await?);
        let (code, at) = (r.code()?, r.int()?);
        Ok(match code {
            Code::Retrying => FailOutcome::Retrying { due_ms: at },
            Code::Dead => FailOutcome::Dead,
            Code::Cancelled => FailOutcome::Cancelled,
            Code::Stale => FailOutcome::Stale,
            other => return Err(unexpected(FAIL.name, format!("{other:?}"))),
        })
    }

    /// Extend leases; one state per `(id, token)`.
    pub async fn heartbeat(&self, queue: &str, lease: Duration, leases: &[(TaskId, u64)]) -> Result<Vec<LeaseState>> {
        let with: Vec<(TaskId, u64, Option<String>)> = leases.iter().map(|&(id, tok)| (id, tok, None)).collect();
        self.heartbeat_with(queue, lease, &with).await
    }

    /// [`Engine::heartbeat`] carrying each attempt's progress reported since the last beat
    /// (JSON text; `None` = unchanged).
    pub async fn heartbeat_with(&self, queue: &str, lease: Duration, leases: &[(TaskId, u64, Option<String>)]) -> Result<Vec<LeaseState>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys(queue);
        let mut inv = HEARTBEAT.call(&k);
        inv.arg(lease.as_millis() as u64);
        for (id, tok, pg) in leases {
            inv.arg(id.to_string()).arg(tok).arg(pg.as_deref().unwrap_or(""));
        }
        let mut conn = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(r.into_iter()
            .map(|x| match x {
                0 => LeaseState::Extended,
                1 => LeaseState::CancelRequested,
                _ => LeaseState::Lost,
            })
            .collect())
    }

    pub async fn cancel(&self, queue: &str, id: TaskId, actor: &str) -> Result<CancelOutcome> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut inv = CANCEL.call(&k);
        inv.arg(id.to_string()).arg(actor);
        let mut r = Reply::new(CANCEL.name, inv.invoke_async(&mut conn).await?);
        let (code, was) = (r.code()?, r.string()?);
        Ok(match code {
            Code::Cancelled => CancelOutcome::Cancelled { was },
            Code::Cancelling => CancelOutcome::Cancelling,
            Code::Refused => CancelOutcome::AlreadyCancelling,
            Code::NotFound => CancelOutcome::NotFound,
            other => return Err(unexpected(CANCEL.name, format!("{other:?}"))),
        })
    }

    pub async fn retry_now(&self, queue: &str, id: TaskId, actor: &str) -> Result<RetryNowOutcome> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut inv = RETRY_NOW.call(&k);
        inv.arg(id.to_string()).arg(actor);
        let mut r = Reply::new(RETRY_NOW.name, inv.invoke_async(&mut conn).await?);
        let (code, was) = (r.code()?, r.string()?);
        Ok(match code {
            Code::Queued => RetryNowOutcome::Queued { was },
            Code::Refused => RetryNowOutcome::Refused { status: was },
            Code::NotFound => RetryNowOutcome::NotFound,
            other => return Err(unexpected(RETRY_NOW.name, format!("{other:?}"))),
        })
    }

    /// Requeue (or dead-letter) expired leases. Returns how many were reaped and the next
    /// lease deadline in Redis time.
    pub async fn reap(&self, queue: &str, limit: usize) -> Result<(usize, Option<i64>)> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut inv = REAP.call(&k);
        inv.arg(limit);
        let (n, next): (usize, i64) = inv.invoke_async(&mut conn).await?;
        Ok((n, (next >= 0).then_some(next)))
    }

    /// Take back occurrences that never started (their schedule was paused, edited or
    /// deleted); returns the ids dropped. Running or retried ones are left alone.
    pub async fn drop_unstarted(&self, queue: &str, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys(queue);
        let mut inv = DROP.call(&k);
        for id in ids {
            inv.arg(id.to_string());
        }
        let mut conn = self.conn.clone();
        Reply::new(DROP.name, inv.invoke_async(&mut conn).await?).ids()
    }

    /// Take dead tasks past their retention out of Redis (only those still dead with their letter
    /// sent, or not in Redis at all); returns the ids whose Postgres rows may go.
    pub async fn purge_dead(&self, queue: &str, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = PURGE_DEAD.call(&self.keys(queue));
        for id in ids {
            inv.arg(id.to_string());
        }
        let mut conn = self.conn.clone();
        Reply::new(PURGE_DEAD.name, inv.invoke_async(&mut conn).await?).ids()
    }

    /// Hand leases straight back to ready (graceful shutdown).
    pub async fn release(&self, queue: &str, worker: &str, leases: &[(TaskId, u64)]) -> Result<Vec<bool>> {
        let with: Vec<(TaskId, u64, Option<String>)> = leases.iter().map(|&(id, tok)| (id, tok, None)).collect();
        self.release_with_logs(queue, worker, &with).await
    }

    /// [`Engine::release`] with each interrupted attempt's captured log lines, stored with the
    /// attempt (outcome `released`). One bool per lease: false for a stale token.
    pub async fn release_with_logs(&self, queue: &str, worker: &str, leases: &[(TaskId, u64, Option<String>)]) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = RELEASE.call(&self.keys(queue));
        inv.arg(worker);
        for (id, tok, logs) in leases {
            inv.arg(id.to_string()).arg(tok).arg(logs.as_deref().unwrap_or(""));
        }
        let mut conn = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(r.into_iter().map(|x| x == 1).collect())
    }

    /// Queues that have ever received a task.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut q: Vec<String> = redis::cmd("SMEMBERS").arg(queues_set(&self.namespace)).query_async(&mut conn).await?;
        q.sort();
        Ok(q)
    }

    /// Queues that just joined `<ns>:queues`: mark their state intact (a queue new to the set has
    /// nothing to lose; one already in it that lacks the mark lost its data, see
    /// `crate::reconcile`) and wake the idle `*` workers.
    pub async fn queues_joined(&self, queues: &[&str]) -> Result<()> {
        self.mark_intact(queues).await?;
        self.announce_new_queues().await
    }

    /// Set the `intact` mark of `queues` (one pipeline per slot).
    pub async fn mark_intact(&self, queues: &[&str]) -> Result<()> {
        let cmds = queues
            .iter()
            .map(|q| {
                let key = self.keys(q).intact;
                let cmd = redis::cmd("SET").arg(&key).arg(1).to_owned();
                (key, cmd)
            })
            .collect();
        self.pipeline_per_slot(cmds).await?;
        Ok(())
    }

    /// Those of `queues` whose `intact` mark is gone: their node lost its data.
    pub async fn unmarked(&self, queues: &[String]) -> Result<Vec<String>> {
        let cmds = queues
            .iter()
            .map(|q| {
                let key = self.keys(q).intact;
                let cmd = redis::cmd("EXISTS").arg(&key).to_owned();
                (key, cmd)
            })
            .collect();
        let held = self.pipeline_per_slot(cmds).await?;
        Ok(queues.iter().zip(held).filter(|(_, v)| matches!(v, Value::Int(0))).map(|(q, _)| q.clone()).collect())
    }

    /// Make a queue known to workers and the audit writer before it receives a task.
    pub async fn register_queue(&self, queue: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let added: i64 = redis::cmd("SADD").arg(queues_set(&self.namespace)).arg(queue).query_async(&mut conn).await?;
        if added > 0 {
            self.queues_joined(&[queue]).await?;
        }
        Ok(())
    }

    /// Pause (workers stop claiming) or resume a queue. Resuming wakes idle workers, which are
    /// blocked waiting for a signal.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        if paused {
            pipe.set(&k.paused, 1).ignore();
        } else {
            pipe.del(&k.paused).ignore().lpush(&k.wake, 1).ignore();
        }
        let sadd = redis::cmd("SADD").arg(queues_set(&self.namespace)).arg(queue).to_owned();
        let added: i64 = if self.is_cluster() {
            // The set is in a slot of its own.
            let _: () = pipe.query_async(&mut conn).await?;
            sadd.query_async(&mut conn).await?
        } else {
            pipe.add_command(sadd);
            let (added,): (i64,) = pipe.query_async(&mut conn).await?;
            added
        };
        if added > 0 {
            self.queues_joined(&[queue]).await?;
        }
        Ok(())
    }

    /// Set Redis's copy of `queue`'s limits (the claim script reads it; Postgres keeps the
    /// record, see [`crate::limits`]). Applies to the next claim.
    pub async fn set_limits(&self, queue: &str, limits: &crate::limits::QueueLimits) -> Result<()> {
        let k = self.keys(queue);
        let mut inv = LIMITS.call(&k);
        for v in limits.encode() {
            inv.arg(v);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    pub async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let (waiting, grouped, delayed, retrying, running, dead, outbox, dlq, paused): (
            u64,
            Option<i64>,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            bool,
        ) = redis::pipe()
            .zcard(&k.ready)
            .get(&k.grouped)
            .zcard(&k.delayed)
            .zcard(&k.retry)
            .zcard(&k.active)
            .zcard(&k.dead)
            .xlen(&k.outbox)
            .zcard(&k.dlq)
            .exists(&k.paused)
            .query_async(&mut conn)
            .await?;
        let waiting = waiting + grouped.unwrap_or(0).max(0) as u64;
        Ok(QueueCounts { waiting, delayed, retrying, running, dead, outbox, dlq_pending: dlq, paused })
    }

    /// The raw task hash (field names as in the scripts); empty when the task is not live.
    pub async fn task_fields(&self, queue: &str, id: TaskId) -> Result<HashMap<String, String>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL").arg(self.keys(queue).task(&id.to_string())).query_async(&mut conn).await?)
    }

    /// [`Engine::task_fields`] for many tasks in one round trip.
    pub async fn task_fields_many(&self, tasks: &[(&str, TaskId)]) -> Result<Vec<HashMap<String, String>>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(usize, String)> = tasks.iter().map(|(queue, id)| self.keys(queue).task(&id.to_string())).enumerate().collect();
        let mut out = vec![HashMap::new(); tasks.len()];
        for group in self.slot_groups(keys, |(_, k)| k) {
            let mut pipe = redis::pipe();
            for (_, key) in &group {
                pipe.cmd("HGETALL").arg(key);
            }
            let mut conn = self.conn.clone();
            let fields: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            for ((i, _), f) in group.into_iter().zip(fields) {
                out[i] = f;
            }
        }
        Ok(out)
    }

    /// The lists a worker serving `queues` blocks on (with `new_queues`, also
    /// `<ns>:queues:wake`), in groups that one BLPOP each may wait on: one group on one node,
    /// one per slot on a cluster (a cross-slot BLPOP is refused there).
    pub fn wait_groups(&self, queues: &[String], new_queues: bool) -> Vec<Vec<String>> {
        let mut keys: Vec<String> = queues.iter().map(|q| self.keys(q).wake).collect();
        if new_queues {
            keys.push(queues_wake(&self.namespace));
        }
        self.slot_groups(keys, |k| k)
    }

    /// Block on `conn` until one of `wake_keys` (a group of [`Engine::wait_groups`]) has a
    /// token, or `timeout` passes.
    pub async fn wait_for_work(&self, conn: &mut BlockingConnection, wake_keys: &[String], timeout: Duration) -> Result<Woken> {
        let r: Option<(String, String)> = redis::cmd("BLPOP").arg(wake_keys).arg(timeout.as_secs_f64().max(0.01)).query_async(conn).await?;
        Ok(match r {
            None => Woken::Timeout,
            Some((key, _)) if key == queues_wake(&self.namespace) => Woken::NewQueue,
            Some(_) => Woken::Work,
        })
    }
}

/// ack's quadruples (id, fencing token, log lines, result), as `ack` and `ack_claim` take them.
fn completion_args(inv: &mut redis::ScriptInvocation<'_>, done: &[Completion]) {
    for c in done {
        inv.arg(c.id.to_string()).arg(c.token).arg(c.logs.as_deref().unwrap_or("")).arg(c.result.as_deref().unwrap_or(""));
    }
}

/// A claim's reply (claim's own or ack_claim's second half) as a batch of `queue`'s tasks.
fn claim_batch(queue: &str, mut r: Reply) -> Result<ClaimBatch> {
    let now_ms = r.int()?;
    let next_due = r.int()?;
    let count = r.int()? as usize;
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.id()?;
        let token = r.int()? as u64;
        let attempt = r.int()? as u32;
        let max_attempts = r.int()? as u32;
        let name = r.string()?;
        let payload = r.string()?;
        let timeout = Duration::from_millis(r.int()? as u64);
        let backoff = Backoff::decode(&r.string()?).unwrap_or_default();
        let ik = r.string()?;
        let waited = Duration::from_millis(r.int()?.max(0) as u64);
        let tc = r.string()?;
        tasks.push(ClaimedTask {
            id,
            queue: queue.to_owned(),
            name,
            payload,
            token,
            attempt,
            max_attempts,
            timeout,
            backoff,
            idempotency_key: (!ik.is_empty()).then_some(ik),
            waited,
            trace_context: (!tc.is_empty()).then_some(tc),
        });
    }
    Ok(ClaimBatch { now_ms, next_due_ms: (next_due >= 0).then_some(next_due), tasks })
}

/// Send `pipe` (of script calls by SHA); a server that answers NOSCRIPT (a restarted node, a
/// replica promoted in a failover) gets the scripts loaded and the pipeline again.
async fn query_loading(conn: &mut Connection, pipe: &redis::Pipeline) -> Result<Vec<Value>> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            ENQUEUE.script().prepare_invoke().load_async(conn).await?;
            Ok(pipe.query_async(conn).await?)
        }
        r => Ok(r?),
    }
}
