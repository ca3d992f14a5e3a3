//! Rebuilding Redis from Postgres after Redis lost its data (a restart without persistence, a
//! failover to an empty replica, a flush). Postgres holds every accepted task, so nothing
//! accepted is lost: the queues are rebuilt and the tasks run (a task that was running runs
//! again — at-least-once).
//!
//! Detection: an epoch key is set once Redis holds the namespace's state, in the slot of the
//! set of queues; each queue has an `intact` mark in its own slot, set when it joins that set and
//! by a rebuild. A worker that finds no epoch key rebuilds every queue (Redis restarted empty or
//! was flushed, or the node holding the set of queues did); one that finds queues of the set
//! without their mark rebuilds those (on a Redis Cluster one master can restart empty before its
//! replica took over, and only its queues are gone). Either way it waits until those queues'
//! audit outboxes are drained (so Postgres is up to date), pauses their claims, takes a short
//! lock (`SET NX PX`), waits until none of their tasks is leased and their outboxes are drained
//! again, and only then restores their live and dead tasks from Postgres with `restore.lua`,
//! which leaves alone any task already in Redis; then it marks them and resumes them. The first
//! worker of a new namespace does the same and finds nothing to restore. Workers starting up
//! wait for the rebuild before they claim ([`settle_before_claiming`]).
//!
//! Why the pause: a task that completes while the rebuild reads Postgres leaves Redis at once,
//! but its row says `queued` or `running` until the audit writer commits the completion; a
//! rebuild reading that row then would put the task back and it would run again. With claims
//! paused and leases and outboxes drained, every completion is in Postgres before the first
//! row is read, so a task that completed after the data loss never runs again. What the pause
//! cannot save is what Redis lost itself: an attempt that was running (or whose completion was
//! still in the outbox) when the data went runs again (at-least-once). The pause is the
//! queue's `paused` key holding [`REBUILD_PAUSE`], renewed with the lock (a few seconds' lifetime,
//! extended every second while the rebuild works), so a rebuild that dies leaves a queue paused
//! for seconds at most, and a pause an operator set is never lifted by a rebuild.
//! An attempt that was running when Redis lost its data is closed in Postgres as `lost`: no
//! attempt stays open.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::keys::{epoch_key, queues_set, rebuild_lock};
use crate::queue::Engine;
use crate::queue::script::RESTORE;
use crate::store::Store;

/// The lifetime of the rebuild's lock and of its pause of claims. The rebuilder renews both every
/// [`RENEW_EVERY`] while it works, however long that takes; a rebuilder that dies (SIGKILL, a
/// lost node) stops renewing, and claims resume and another worker may take over within this.
const REBUILD_LOCK: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a starting worker waits for another process's rebuild before it claims anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Extend a key's lifetime only while it still holds the value this process wrote (never a
/// pause an operator set meanwhile, never another rebuilder's lock).
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
/// How long a rebuild waits, claims paused, for running attempts to finish and outboxes to
/// drain. Past it, attempts still leased keep running (their tasks are in Redis, the rebuild
/// leaves them alone); outboxes still pending mean Postgres is behind, and the rebuild waits
/// for a later check.
const REBUILD_DRAIN: Duration = Duration::from_secs(30);
const PAGE: i64 = 500;
/// The value of a queue's `paused` key while a rebuild holds its claims.
pub const REBUILD_PAUSE: &str = "rebuild";

/// Check that Redis still holds this namespace's state; rebuild from Postgres what it lost.
/// Returns the number of tasks restored when this call rebuilt, `None` otherwise. Cheap when
/// all is well (a GET and an SMEMBERS on one node, one EXISTS per queue, pipelined per slot),
/// so workers call it every second.
pub async fn ensure_redis_state(engine: &Engine, store: &Store, worker: &str) -> Result<Option<usize>> {
    let ns = engine.namespace().to_owned();
    let mut conn = engine.connection();
    let (epoch, known): (Option<String>, Vec<String>) =
        redis::pipe().get(epoch_key(&ns)).smembers(queues_set(&ns)).query_async(&mut conn).await?;
    // The whole namespace (the node holding the set of queues lost it, or this is the first
    // worker of a new namespace), or only the queues whose mark is gone (their node lost its
    // data alone, on a cluster).
    let whole = epoch.is_none();
    let mut queues = if whole {
        let mut q = store.queue_names().await?;
        // The set of queues went with the epoch key: put back the queues Postgres knows, so
        // that audit writers (which read their outboxes from that set) drain the outboxes this
        // rebuild waits for. No `intact` mark: this rebuild marks them once it restored them.
        let missing: Vec<&String> = q.iter().filter(|n| !known.contains(n)).collect();
        if !missing.is_empty() {
            let _: () = redis::cmd("SADD").arg(queues_set(&ns)).arg(&missing).query_async(&mut conn).await?;
        }
        q.extend(known);
        q.sort();
        q.dedup();
        q
    } else {
        let lost = engine.unmarked(&known).await?;
        if lost.is_empty() {
            return Ok(None);
        }
        lost
    };
    queues.sort();
    let held: Option<String> = redis::cmd("GET").arg(rebuild_lock(&ns)).query_async(&mut conn).await?;
    if held.is_some() {
        return Ok(None); // another worker is rebuilding
    }
    // Rebuild only once these queues' outboxes are drained: then Postgres has every transition
    // that happened before this moment, and a task it lists as live but Redis lacks was lost with
    // Redis. (After a real data loss the outboxes are gone too; while Postgres is down they
    // grow, and the check waits.)
    for q in &queues {
        let pending: u64 = redis::cmd("XLEN").arg(engine.keys(q).outbox).query_async(&mut conn).await?;
        if pending > 0 {
            return Ok(None);
        }
    }
    // Pause first, lock second: once anyone sees the lock, no claim can start any more.
    pause_claims(engine, &queues).await?;
    let lock = format!("rebuilding by {worker}");
    let locked: Option<String> = redis::cmd("SET")
        .arg(rebuild_lock(&ns))
        .arg(&lock)
        .arg("NX")
        .arg("PX")
        .arg(REBUILD_LOCK.as_millis() as u64)
        .query_async(&mut conn)
        .await?;
    if locked.is_none() {
        // Someone else holds the lock (and resumes the queues), or finished already.
        let held: Option<String> = redis::cmd("GET").arg(rebuild_lock(&ns)).query_async(&mut conn).await?;
        if held.is_none() {
            resume_claims(engine, &queues).await?;
        }
        return Ok(None);
    }
    let work = async {
        if !drain(engine, &queues).await? {
            return Ok(None);
        }
        rebuild_queues(engine, store, (!whole).then_some(queues.as_slice())).await.map(Some)
    };
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tokio::time::sleep(RENEW_EVERY) => renew(engine, &lock, &queues).await,
        }
    };
    let restored = match outcome {
        Ok(Some(restored)) => {
            let names: Vec<&str> = queues.iter().map(String::as_str).collect();
            engine.mark_intact(&names).await?;
            if whole {
                let _: () = redis::cmd("SET").arg(epoch_key(&ns)).arg("ok").query_async(&mut conn).await?;
            }
            if restored > 0 {
                tracing::warn!(restored, queues = ?queues, "Redis had lost its data: queues rebuilt from Postgres");
            }
            Ok(Some(restored))
        }
        // Postgres is behind (or failed): let claims go on; a later check tries again.
        other => other.map(|_| None),
    };
    let held: Option<String> = redis::cmd("GET").arg(rebuild_lock(&ns)).query_async(&mut conn).await?;
    if held.as_deref() == Some(lock.as_str()) {
        let _: () = redis::cmd("DEL").arg(rebuild_lock(&ns)).query_async(&mut conn).await?;
    }
    resume_claims(engine, &queues).await?;
    restored
}

/// Keep the rebuild's lock and its pauses alive while it works. A failed renewal is only logged:
/// at worst the pause lapses and a claim runs beside the rebuild, which `restore.lua` tolerates
/// (it leaves a task Redis holds alone).
async fn renew(engine: &Engine, lock: &str, queues: &[String]) {
    let ttl = REBUILD_LOCK.as_millis() as u64;
    let keys =
        std::iter::once((rebuild_lock(engine.namespace()), lock)).chain(queues.iter().map(|q| (engine.keys(q).paused, REBUILD_PAUSE)));
    let cmds = keys.map(|(key, value)| {
        let cmd = redis::cmd("EVAL").arg(RENEW).arg(1).arg(&key).arg(value).arg(ttl).to_owned();
        (key, cmd)
    });
    // One pipeline per slot, as the pause was set.
    if let Err(e) = engine.pipeline_per_slot(cmds.collect()).await {
        tracing::warn!(error = %e, "could not renew the rebuild's lock or pause");
    }
}

/// Stop claims in `queues` for the rebuild (a queue an operator paused stays as it is).
async fn pause_claims(engine: &Engine, queues: &[String]) -> Result<()> {
    if queues.is_empty() {
        return Ok(());
    }
    let cmds = queues
        .iter()
        .map(|q| {
            let key = engine.keys(q).paused;
            let cmd = redis::cmd("SET").arg(&key).arg(REBUILD_PAUSE).arg("NX").arg("PX").arg(REBUILD_LOCK.as_millis() as u64).to_owned();
            (key, cmd)
        })
        .collect();
    engine.pipeline_per_slot(cmds).await?;
    Ok(())
}

/// Lift the rebuild's pause from `queues` (never an operator's) and wake their workers.
async fn resume_claims(engine: &Engine, queues: &[String]) -> Result<()> {
    let mut conn = engine.connection();
    for q in queues {
        let held: Option<String> = redis::cmd("GET").arg(engine.keys(q).paused).query_async(&mut conn).await?;
        if held.as_deref() == Some(REBUILD_PAUSE) {
            engine.set_paused(q, false).await?;
        }
    }
    Ok(())
}

/// With claims paused: wait until no task of `queues` is leased and every outbox is drained
/// into Postgres. False when the outboxes did not drain within [`REBUILD_DRAIN`].
async fn drain(engine: &Engine, queues: &[String]) -> Result<bool> {
    if queues.is_empty() {
        return Ok(true);
    }
    let deadline = tokio::time::Instant::now() + REBUILD_DRAIN;
    loop {
        let mut cmds = Vec::with_capacity(queues.len() * 2);
        for q in queues {
            let k = engine.keys(q);
            cmds.push((k.active.clone(), redis::cmd("ZCARD").arg(&k.active).to_owned()));
            cmds.push((k.outbox.clone(), redis::cmd("XLEN").arg(&k.outbox).to_owned()));
        }
        let counts: Vec<u64> = engine.pipeline_per_slot(cmds).await?.into_iter().map(|v| redis::from_redis_value(v).unwrap_or(0)).collect();
        if counts.iter().step_by(2).any(|n| *n > 0) {
            // A lease whose worker died counts until it expires; requeue it then (the queue
            // stays paused, and the rebuild leaves a task that is in Redis alone).
            for q in queues {
                engine.reap(q, 1000).await?;
            }
        }
        let leased: u64 = counts.iter().step_by(2).sum();
        let pending: u64 = counts.iter().skip(1).step_by(2).sum();
        if leased == 0 && pending == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            if pending > 0 {
                tracing::warn!(pending, "rebuild postponed: audit outboxes are not drained into Postgres");
                return Ok(false);
            }
            tracing::warn!(leased, "rebuilding while attempts are still running (they are in Redis and stay as they are)");
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restore every queue's limits, then every scheduled, queued, running, retrying and dead task,
/// from Postgres.
pub async fn rebuild(engine: &Engine, store: &Store) -> Result<usize> {
    rebuild_queues(engine, store, None).await
}

/// [`rebuild`] for `only` these queues (`None`: all of them).
async fn rebuild_queues(engine: &Engine, store: &Store, only: Option<&[String]>) -> Result<usize> {
    for (queue, limits) in crate::limits::load_all(store.pool()).await? {
        if only.is_none_or(|o| o.contains(&queue)) {
            engine.set_limits(&queue, &limits).await?;
        }
    }
    let mut restored = 0;
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RESTORE_COLUMNS} FROM tasks t LEFT JOIN schedules s ON s.id = t.schedule_id
                 WHERE t.status IN ('scheduled', 'queued', 'running', 'retrying', 'dead') AND t.id > $1
                   AND ($3::text[] IS NULL OR t.queue = ANY($3))
                 ORDER BY t.id LIMIT $2"
        )))
        .bind(after)
        .bind(PAGE)
        .bind(only)
        .fetch_all(store.pool())
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get("id");
        let full_page = rows.len() as i64 == PAGE;
        let mut by_queue: std::collections::HashMap<String, Vec<&sqlx::postgres::PgRow>> = Default::default();
        for r in &rows {
            by_queue.entry(r.get("queue")).or_default().push(r);
        }
        for (queue, rows) in by_queue {
            restored += restore_rows(engine, store, &queue, &rows).await?;
        }
        if !full_page {
            break;
        }
    }
    Ok(restored)
}

/// Put these Postgres rows of one queue back into Redis with `restore.lua` (which leaves alone a
/// task Redis holds) and close the attempts they left open; how many were restored.
pub(crate) async fn restore_rows(engine: &Engine, store: &Store, queue: &str, rows: &[&sqlx::postgres::PgRow]) -> Result<usize> {
    engine.register_queue(queue).await?;
    let k = engine.keys(queue);
    let mut inv = RESTORE.call(&k);
    inv.arg(rows.len());
    let attempts: std::collections::HashMap<String, i32> =
        rows.iter().map(|r| (r.get::<Uuid, _>("id").to_string(), r.get::<i32, _>("attempts"))).collect();
    for r in rows {
        let backoff: serde_json::Value = r.get("backoff");
        let backoff = serde_json::from_value::<crate::model::Backoff>(backoff).unwrap_or_default();
        inv.arg(r.get::<Uuid, _>("id").to_string())
            .arg(r.get::<String, _>("name"))
            .arg(r.get::<String, _>("payload"))
            .arg(r.get::<i16, _>("priority"))
            .arg(r.get::<i32, _>("attempts"))
            .arg(r.get::<i32, _>("max_attempts"))
            .arg(backoff.encode())
            .arg(r.get::<i64, _>("timeout_ms"))
            .arg(r.get::<String, _>("ik"))
            .arg(r.get::<String, _>("status"))
            .arg(r.get::<i64, _>("ra"));
        // Occurrences keep their schedule's overlap guard (a triggered run had none:
        // its origin's policy was allow, which the join cannot tell apart; it gets the guard).
        let overlap: crate::model::Overlap = r.get::<&str, _>("overlap").parse().unwrap_or_default();
        match r.get::<Option<Uuid>, _>("schedule_id") {
            Some(sid) => inv.arg(sid.to_string()).arg(overlap.code()),
            None => inv.arg("").arg(""),
        };
        inv.arg(r.get::<String, _>("grp")).arg(r.get::<i64, _>("ex")).arg(r.get::<String, _>("tc"));
    }
    let mut conn = engine.connection();
    let ids: Vec<String> = inv.invoke_async(&mut conn).await?;
    let lost: Vec<(Uuid, i32)> = ids.iter().filter_map(|id| Some((id.parse().ok()?, *attempts.get(id)?))).collect();
    close_lost_attempts(store, &lost).await?;
    Ok(ids.len())
}

/// The columns [`restore_rows`] reads.
pub(crate) const RESTORE_COLUMNS: &str =
    "t.id, t.queue, t.name, t.payload::text AS payload, t.priority, t.attempts, t.max_attempts, t.backoff, t.timeout_ms,
    coalesce(t.idempotency_key, '') AS ik, t.status, (extract(epoch FROM t.run_at) * 1000)::int8 AS ra,
    coalesce(s.overlap, 'allow') AS overlap, t.schedule_id, coalesce(t.task_group, '') AS grp,
    coalesce(floor(extract(epoch FROM t.expires_at) * 1000)::int8, 0) AS ex, coalesce(t.trace_context, '') AS tc";

/// How old a row must be before [`restore_if_never_enqueued`] takes it for one whose enqueue
/// died: the process that wrote it has long since reached Redis, or died.
const NEVER_ENQUEUED_AGE: Duration = Duration::from_secs(5);
/// Outbox entries [`restore_if_never_enqueued`] reads at most; a longer outbox (Postgres
/// behind) postpones the repair.
const NEVER_ENQUEUED_SCAN: usize = 10_000;

/// A task whose row Postgres committed but whose enqueue never reached Redis, because the
/// process writing it died between the two (the API SIGKILLed mid-request): put it into Redis,
/// so the task that a retry with its idempotency key answers for also runs. True when it did.
///
/// Only a task Postgres says never started (`queued` or `scheduled`, no attempt), at least
/// [`NEVER_ENQUEUED_AGE`] old, that Redis does not hold and that no outbox entry names — read in
/// that order, Redis first: a task that was in Redis and finished has its transitions either in
/// Postgres already or named in an outbox, so a finished task is never put back. `restore.lua`
/// leaves a task Redis holds alone.
pub async fn restore_if_never_enqueued(engine: &Engine, store: &Store, queue: &str, id: Uuid) -> Result<bool> {
    let k = engine.keys(queue);
    let mut conn = engine.connection();
    let created: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT coalesce(released_at, created_at) FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(store.pool())
            .await?;
    let Some(created) = created else { return Ok(false) };
    let age = (chrono::Utc::now() - created).to_std().unwrap_or_default();
    if let Some(wait) = NEVER_ENQUEUED_AGE.checked_sub(age) {
        tokio::time::sleep(wait).await;
    }
    let (exists, entries): (bool, redis::Value) = redis::pipe()
        .atomic()
        .exists(k.task(&id.to_string()))
        .cmd("XRANGE")
        .arg(&k.outbox)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(NEVER_ENQUEUED_SCAN + 1)
        .query_async(&mut conn)
        .await?;
    let count = match &entries {
        redis::Value::Array(a) => a.len(),
        _ => 0,
    };
    if exists || count > NEVER_ENQUEUED_SCAN || mentions(&entries, id.to_string().as_bytes()) {
        return Ok(false);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RESTORE_COLUMNS} FROM tasks t LEFT JOIN schedules s ON s.id = t.schedule_id
         WHERE t.id = $1 AND t.status IN ('queued', 'scheduled') AND t.attempts = 0"
    )))
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let restored = restore_rows(engine, store, queue, &rows.iter().collect::<Vec<_>>()).await? > 0;
    if restored {
        tracing::warn!(task = %id, queue, "a task Postgres accepted never reached Redis (its writer died); enqueued it now");
    }
    Ok(restored)
}

/// How far back [`sweep_never_enqueued`] looks, and from what age: each row it can repair passes
/// through this window over several ticks.
const SWEEP_WINDOW: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(300));
/// Rows [`sweep_never_enqueued`] reads per run at most, oldest first.
const SWEEP_LIMIT: i64 = 5_000;

/// The tick's sweep for tasks whose submission died between Postgres and Redis and that no
/// retry named: rows that never started, 30 s to 5 minutes old, that Redis does not hold, each
/// handed to [`restore_if_never_enqueued`]. Returns how many it enqueued. One indexed range read
/// (`tasks_created`) and one pipelined `EXISTS` per queue; older rows are left to a retry or a
/// rebuild.
pub async fn sweep_never_enqueued(engine: &Engine, store: &Store) -> Result<usize> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, queue FROM tasks
         WHERE (created_at BETWEEN now() - make_interval(secs => $2) AND now() - make_interval(secs => $1)
                OR released_at BETWEEN now() - make_interval(secs => $2) AND now() - make_interval(secs => $1))
           AND status IN ('queued', 'scheduled') AND attempts = 0
         ORDER BY coalesce(released_at, created_at) LIMIT $3",
    )
    .bind(SWEEP_WINDOW.0.as_secs_f64())
    .bind(SWEEP_WINDOW.1.as_secs_f64())
    .bind(SWEEP_LIMIT)
    .fetch_all(store.pool())
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (id, queue) in &rows {
        pipe.exists(engine.keys(queue).task(&id.to_string()));
    }
    let mut conn = engine.connection();
    let held: Vec<bool> = pipe.query_async(&mut conn).await?;
    let mut restored = 0;
    for ((id, queue), held) in rows.iter().zip(held) {
        if !held && restore_if_never_enqueued(engine, store, queue, *id).await? {
            restored += 1;
        }
    }
    Ok(restored)
}

/// Whether a Redis reply holds `needle` in any of its strings.
fn mentions(v: &redis::Value, needle: &[u8]) -> bool {
    match v {
        redis::Value::BulkString(b) => b.windows(needle.len()).any(|w| w == needle),
        redis::Value::SimpleString(s) => s.as_bytes().windows(needle.len()).any(|w| w == needle),
        redis::Value::Array(a) | redis::Value::Set(a) => a.iter().any(|x| mentions(x, needle)),
        redis::Value::Map(m) => m.iter().any(|(a, b)| mentions(a, needle) || mentions(b, needle)),
        _ => false,
    }
}

/// Every attempt ends with an outcome: a restored task was absent from Redis, so no lease of it
/// exists any more and an attempt of it still open in Postgres can never report. It is closed
/// as `lost`, as the reaper closes an attempt whose worker died. Only attempts up to the count
/// the rebuild read (`(id, attempts)`): the restored task may already run its next attempt.
async fn close_lost_attempts(store: &Store, lost: &[(Uuid, i32)]) -> Result<()> {
    if lost.is_empty() {
        return Ok(());
    }
    let (ids, upto): (Vec<Uuid>, Vec<i32>) = lost.iter().copied().unzip();
    sqlx::query(
        "UPDATE task_attempts a SET finished_at = now(), outcome = 'lost',
                error = COALESCE(a.error, 'Redis lost its data while this attempt ran; the task was rebuilt from Postgres and runs again')
         FROM UNNEST($1::uuid[], $2::int4[]) AS l(id, upto)
         WHERE a.task_id = l.id AND a.attempt <= l.upto AND a.finished_at IS NULL",
    )
    .bind(&ids)
    .bind(&upto)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Before a worker starts claiming: make sure Redis holds the namespace's state, rebuilding it
/// (or waiting while another worker rebuilds it) first, so no task can complete and then be
/// restored by a rebuild running beside it. Gives up after [`SETTLE_LIMIT`], and at
/// once when Postgres is unreachable: workers keep working through a Postgres outage.
pub async fn settle_before_claiming(engine: &Engine, store: &Store, worker: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    loop {
        match ensure_redis_state(engine, store, worker).await {
            Ok(_) => {}
            Err(e) => {
                // Name the store that failed: the check reads both, and an operator paged at
                // night should not go looking at Redis when Postgres is down.
                let store = match &e {
                    crate::Error::Postgres(_) => "the audit store (Postgres, DATABASE_URL) failed",
                    crate::Error::Redis(_) => "the queue store (Redis, REDIS_URL) failed",
                    _ => "the check failed",
                };
                tracing::warn!(error = %e, "{store}: cannot check whether Redis lost its data before claiming; starting anyway");
                return;
            }
        }
        let mut conn = engine.connection();
        let epoch: Option<String> = redis::cmd("GET").arg(epoch_key(engine.namespace())).query_async(&mut conn).await.unwrap_or(None);
        if epoch.as_deref() == Some("ok") || tokio::time::Instant::now() >= deadline {
            return;
        }
        // Another worker is rebuilding, or the outboxes are still draining.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
