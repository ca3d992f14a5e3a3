//! The worker loop: claim → run handler → ack / retry / dead-letter.
//!
//! One fetch loop per process claims batches for all free slots, then blocks on Redis (BLPOP on
//! the queues' wake lists) with a local timer for the next delayed task, so an idle worker costs
//! nothing and a due task starts within milliseconds. Each attempt runs in its own tokio task
//! (a panic fails the attempt, not the worker) under its timeout. One heartbeat call per lease
//! third extends every lease and carries cancellations back; acks are batched per round trip.
//! On shutdown the loop stops claiming, waits for running attempts up to the grace period, then
//! hands the rest straight back to the queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_core::audit::AuditWriter;
use chronos_core::dlq::{Dlq, run_forwarder};
use chronos_core::queue::{Engine, FailKind, FailOutcome, LeaseState};
use chronos_core::{ClaimedTask, Store, TaskId};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::handler::{HandlerError, Task, TaskContext};
use crate::registry::Registry;

/// Claims ask for at most this many tasks per script call.
const MAX_CLAIM_BATCH: usize = 100;
/// How long an idle BLPOP waits before re-arming (it is woken early by new work).
const IDLE_BLOCK: Duration = Duration::from_secs(5);
/// A cancelled handler that ignores its context is aborted after this long.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

struct Inflight {
    queue: String,
    token: u64,
    cancel: CancellationToken,
    /// Set when the heartbeat learned the task was cancelled (not merely the lease lost).
    cancel_requested: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
}

/// Counters of one worker process (for metrics and for tests that check behaviour such as
/// "an idle worker does not poll").
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Claim script calls.
    pub claim_calls: AtomicU64,
    /// Tasks received from claims.
    pub claimed: AtomicU64,
    /// Attempts that completed successfully.
    pub completed: AtomicU64,
    /// Attempts that failed (retry, dead or cancelled).
    pub failed: AtomicU64,
    /// Ack script calls (each carries a batch).
    pub ack_calls: AtomicU64,
}

struct Shared {
    stats: Arc<WorkerStats>,
    engine: Engine,
    registry: Registry,
    cfg: WorkerConfig,
    inflight: Mutex<HashMap<TaskId, Inflight>>,
    slot_freed: Notify,
    acks: mpsc::UnboundedSender<(String, TaskId, u64)>,
}

/// A worker process's runtime. Build with [`Worker::new`], optionally attach the audit writer
/// and DLQ forwarder, then [`Worker::run`] until the shutdown future resolves.
pub struct Worker {
    engine: Engine,
    registry: Registry,
    cfg: WorkerConfig,
    store: Option<Store>,
    dlq: Option<Dlq>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    pub fn new(engine: Engine, registry: Registry, cfg: WorkerConfig) -> Self {
        Worker { engine, registry, cfg, store: None, dlq: None, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Also drain the audit outbox into Postgres from this process.
    pub fn with_audit(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Also forward dead tasks to SQS from this process.
    pub fn with_dlq(mut self, dlq: Dlq) -> Self {
        self.dlq = Some(dlq);
        self
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) -> chronos_core::Result<()> {
        let Worker { engine, registry, cfg, store, dlq, stats } = self;
        if let Some(store) = &store {
            chronos_core::reconcile::settle_before_claiming(&engine, store, &cfg.worker_id).await;
        }
        for q in &cfg.queues {
            engine.register_queue(q).await?;
        }
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stats,
            engine: engine.clone(),
            registry,
            cfg,
            inflight: Mutex::new(HashMap::new()),
            slot_freed: Notify::new(),
            acks: ack_tx,
        });
        // Two stop signals: the task machinery stops first, then the audit writer and DLQ
        // forwarder, so they flush the last transitions (acks, hand-backs) before exiting.
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stop_bg_tx, stop_bg_rx) = watch::channel(false);

        let acker = tokio::spawn(run_acker(shared.clone(), ack_rx));
        let heart = tokio::spawn(run_heartbeat(shared.clone(), stop_rx.clone()));
        let reaper = tokio::spawn(run_reaper(shared.clone(), store.clone(), stop_rx.clone()));
        let stop_rx = stop_bg_rx;
        let mut background: Vec<JoinHandle<()>> = Vec::new();
        let dead_seen = Arc::new(Notify::new());
        if let Some(store) = store {
            let writer = Arc::new(AuditWriter::new(engine.clone(), store, shared.cfg.worker_id.clone()));
            let seen = writer.dead_seen.clone();
            background.push(tokio::spawn(writer.run(stop_rx.clone())));
            let relay = dead_seen.clone();
            let mut stop = stop_rx.clone();
            background.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = seen.notified() => relay.notify_one(),
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
        if let Some(dlq) = dlq {
            background.push(tokio::spawn(run_forwarder(engine.clone(), dlq, dead_seen, Duration::from_secs(5), stop_rx.clone())));
        }

        tracing::info!(worker = %shared.cfg.worker_id, queues = ?shared.cfg.queues, concurrency = shared.cfg.concurrency, handlers = ?shared.registry.kinds(), "worker started");
        let slots = Arc::new(Semaphore::new(shared.cfg.concurrency));
        let fetch = fetch_loop(shared.clone(), slots.clone(), shutdown).await;
        tracing::info!(worker = %shared.cfg.worker_id, "stopped claiming; draining");

        // Let running attempts finish within the grace period.
        let all = shared.cfg.concurrency as u32;
        let drained = tokio::time::timeout(shared.cfg.shutdown_grace, slots.acquire_many(all)).await.is_ok();
        if !drained {
            hand_back(&shared).await;
        }
        let _ = stop_tx.send(true);
        drop(shared);
        let _ = heart.await;
        let _ = reaper.await;
        let _ = acker.await; // ends once every sender (runners) is gone
        let _ = stop_bg_tx.send(true);
        for b in background {
            let _ = b.await;
        }
        tracing::info!("worker stopped");
        fetch
    }
}

/// Release every unfinished lease straight back to its queue and stop its handler.
async fn hand_back(shared: &Arc<Shared>) {
    let taken: Vec<(TaskId, Inflight)> = shared.inflight.lock().unwrap().drain().collect();
    let mut by_queue: HashMap<String, Vec<(TaskId, u64)>> = HashMap::new();
    for (id, f) in &taken {
        by_queue.entry(f.queue.clone()).or_default().push((*id, f.token));
    }
    for (queue, leases) in by_queue {
        match shared.engine.release(&queue, &shared.cfg.worker_id, &leases).await {
            Ok(r) => tracing::info!(queue, released = r.iter().filter(|x| **x).count(), "unfinished tasks handed back"),
            Err(e) => tracing::warn!(queue, error = %e, "could not hand tasks back; their leases will expire"),
        }
    }
    for (_, f) in taken {
        f.cancel.cancel();
        if let Some(a) = f.abort {
            a.abort();
        }
    }
}

async fn fetch_loop(shared: Arc<Shared>, slots: Arc<Semaphore>, shutdown: impl Future<Output = ()>) -> chronos_core::Result<()> {
    tokio::pin!(shutdown);
    let engine = shared.engine.clone();
    let queues = shared.cfg.queues.clone();
    let mut blocker: Option<JoinHandle<(redis::aio::MultiplexedConnection, chronos_core::Result<bool>)>> = None;
    let mut spare_conn = Some(engine.blocking_connection().await?);
    let mut error_backoff = Duration::from_millis(50);
    let mut rotate = 0usize;
    loop {
        let mut next_due: Option<Instant> = None;
        let mut more = false;
        let mut failed = false;
        for i in 0..queues.len() {
            let queue = &queues[(i + rotate) % queues.len()];
            let free = slots.available_permits();
            if free == 0 {
                more = true;
                break;
            }
            let want = free.min(MAX_CLAIM_BATCH);
            shared.stats.claim_calls.fetch_add(1, Ordering::Relaxed);
            match engine.claim(queue, &shared.cfg.worker_id, want, shared.cfg.lease).await {
                Ok(batch) => {
                    shared.stats.claimed.fetch_add(batch.tasks.len() as u64, Ordering::Relaxed);
                    if let Some(due) = batch.next_due_ms {
                        let wait = Duration::from_millis((due - batch.now_ms).max(0) as u64);
                        let at = Instant::now() + wait;
                        next_due = Some(next_due.map_or(at, |n| n.min(at)));
                    }
                    if batch.tasks.len() == want {
                        more = true;
                    }
                    for task in batch.tasks {
                        let permit = slots.clone().try_acquire_owned().expect("claimed no more than the free slots");
                        start(&shared, task, permit);
                    }
                }
                Err(e) => {
                    tracing::warn!(queue, error = %e, "claim failed; backing off");
                    failed = true;
                }
            }
        }
        rotate = rotate.wrapping_add(1);
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(error_backoff) => {}
                _ = &mut shutdown => break,
            }
            error_backoff = (error_backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        error_backoff = Duration::from_millis(50);
        // One reading decides both what to wait for: read twice, a slot freed between the
        // readings left the loop waiting for neither new work (no blocking wait started) nor
        // a free slot (not full) — a worker that never claimed again.
        let free = slots.available_permits();
        if more && free > 0 {
            continue;
        }
        if blocker.is_none() && free > 0 {
            let mut conn = match spare_conn.take() {
                Some(c) => c,
                None => match engine.blocking_connection().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open blocking connection");
                        tokio::time::sleep(error_backoff).await;
                        continue;
                    }
                },
            };
            let (e, q) = (engine.clone(), queues.clone());
            blocker = Some(tokio::spawn(async move {
                let r = e.wait_for_work(&mut conn, &q, IDLE_BLOCK).await;
                (conn, r)
            }));
        }
        // A slot freed after `free` was read stores a permit in `slot_freed` (notify_one),
        // so the wait below still wakes.
        let full = free == 0;
        let due_sleep = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let woken = async {
            match blocker.as_mut() {
                Some(b) => Some(b.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = woken => {
                blocker = None;
                match r {
                    Some(Ok((conn, Ok(_)))) => spare_conn = Some(conn),
                    Some(Ok((_, Err(e)))) => {
                        tracing::warn!(error = %e, "blocking wait failed; reconnecting");
                        tokio::time::sleep(error_backoff).await;
                    }
                    _ => {}
                }
            }
            _ = due_sleep => {}
            _ = shared.slot_freed.notified(), if full => {
                // Let other attempts that finish at the same moment free their slots too, so
                // the next claim fetches a batch rather than one task per round trip.
                tokio::task::yield_now().await;
            }
            _ = &mut shutdown => break,
        }
    }
    if let Some(b) = blocker {
        b.abort();
    }
    Ok(())
}

fn start(shared: &Arc<Shared>, task: ClaimedTask, permit: OwnedSemaphorePermit) {
    let cancel = CancellationToken::new();
    let cancel_requested = Arc::new(AtomicBool::new(false));
    shared.inflight.lock().unwrap().insert(
        task.id,
        Inflight {
            queue: task.queue.clone(),
            token: task.token,
            cancel: cancel.clone(),
            cancel_requested: cancel_requested.clone(),
            abort: None,
        },
    );
    let s = shared.clone();
    tokio::spawn(async move {
        let id = task.id;
        let result = run_attempt(&s, &task, cancel, cancel_requested.clone()).await;
        finish(&s, &task, result, cancel_requested.load(Ordering::Acquire)).await;
        s.inflight.lock().unwrap().remove(&id);
        drop(permit);
        s.slot_freed.notify_one();
    });
}

/// Run one attempt under its timeout; a panic or timeout becomes a retryable error.
async fn run_attempt(
    shared: &Arc<Shared>,
    task: &ClaimedTask,
    cancel: CancellationToken,
    cancel_requested: Arc<AtomicBool>,
) -> Result<(), HandlerError> {
    let Some(handler) = shared.registry.get(&task.name) else {
        // Retryable: during a rolling deploy another worker may have the handler.
        return Err(HandlerError::retryable_msg(format!("no handler for task kind {:?} on worker {}", task.name, shared.cfg.worker_id)));
    };
    let timeout = handler.timeout().unwrap_or(task.timeout);
    let ctx = TaskContext::new(task, &shared.cfg.worker_id, cancel.clone());
    let mut run = tokio::spawn(handler.call(ctx, Task { name: task.name.clone(), payload_json: task.payload.clone() }));
    if let Some(f) = shared.inflight.lock().unwrap().get_mut(&task.id) {
        f.abort = Some(run.abort_handle());
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let joined = tokio::select! {
        r = &mut run => r,
        _ = &mut deadline => {
            run.abort();
            return Err(HandlerError::Retryable { message: format!("timed out after {} ms", timeout.as_millis()), detail: String::new() });
        }
        _ = cancel.cancelled() => {
            // Give a cooperative handler a moment to stop on its own.
            match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                Ok(r) => r,
                Err(_) => {
                    run.abort();
                    return Err(if cancel_requested.load(Ordering::Acquire) { HandlerError::Cancelled } else { HandlerError::retryable_msg("lease lost") });
                }
            }
        }
    };
    match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Err(HandlerError::Retryable {
                message: format!("handler panicked: {msg}"),
                detail: format!("panic in handler {:?}: {msg}", task.name),
            })
        }
        Err(_) => Err(HandlerError::retryable_msg("handler aborted")),
    }
}

async fn finish(shared: &Arc<Shared>, task: &ClaimedTask, result: Result<(), HandlerError>, cancel_requested: bool) {
    let worker = &shared.cfg.worker_id;
    let (kind, message, detail) = match result {
        Ok(()) => {
            shared.stats.completed.fetch_add(1, Ordering::Relaxed);
            let _ = shared.acks.send((task.queue.clone(), task.id, task.token));
            return;
        }
        Err(HandlerError::Cancelled) => (FailKind::Cancelled, "cancelled".to_owned(), String::new()),
        Err(_) if cancel_requested => (FailKind::Cancelled, "cancelled".to_owned(), String::new()),
        Err(HandlerError::Retryable { message, detail }) => (FailKind::Retryable, message, detail),
        Err(HandlerError::Permanent { message, detail }) => (FailKind::Permanent, message, detail),
    };
    shared.stats.failed.fetch_add(1, Ordering::Relaxed);
    let retry_in = match kind {
        FailKind::Retryable => shared
            .registry
            .get(&task.name)
            .and_then(|h| h.next_retry(task.attempt, &HandlerError::Retryable { message: message.clone(), detail: String::new() })),
        _ => None,
    };
    let mut backoff = Duration::from_millis(50);
    for _ in 0..8 {
        match shared.engine.fail(&task.queue, task.id, task.token, worker, kind, &message, &detail, retry_in).await {
            Ok(FailOutcome::Stale) => {
                tracing::info!(task = %task.id, "attempt result refused: the lease was taken over");
                return;
            }
            Ok(outcome) => {
                tracing::debug!(task = %task.id, attempt = task.attempt, ?outcome, error = %message, "attempt failed");
                return;
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "could not record failure; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(task = %task.id, "failure not recorded; the lease will expire and the task run again");
}

/// Batch acks: whatever completed while the previous ack was in flight goes in the next call.
async fn run_acker(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(String, TaskId, u64)>) {
    let worker = shared.cfg.worker_id.clone();
    let engine = shared.engine.clone();
    let stats = shared.stats.clone();
    drop(shared); // the channel closes when the last runner is gone, not kept open by us
    let mut buf = Vec::with_capacity(256);
    while rx.recv_many(&mut buf, 256).await > 0 {
        let mut by_queue: HashMap<&str, Vec<(TaskId, u64)>> = HashMap::new();
        for (q, id, tok) in &buf {
            by_queue.entry(q.as_str()).or_default().push((*id, *tok));
        }
        for (queue, leases) in by_queue {
            let mut backoff = Duration::from_millis(50);
            for _ in 0..8 {
                stats.ack_calls.fetch_add(1, Ordering::Relaxed);
                match engine.ack(queue, &worker, &leases).await {
                    Ok(r) => {
                        let refused = r.iter().filter(|x| !**x).count();
                        if refused > 0 {
                            tracing::info!(queue, refused, "acks refused: leases were taken over");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(queue, error = %e, "ack failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        buf.clear();
    }
}

async fn run_heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = shared.cfg.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let mut by_queue: HashMap<String, Vec<(TaskId, u64)>> = HashMap::new();
        for (id, f) in shared.inflight.lock().unwrap().iter() {
            by_queue.entry(f.queue.clone()).or_default().push((*id, f.token));
        }
        for (queue, leases) in by_queue {
            match shared.engine.heartbeat(&queue, shared.cfg.lease, &leases).await {
                Ok(states) => {
                    let inflight = shared.inflight.lock().unwrap();
                    for ((id, _), st) in leases.iter().zip(states) {
                        let Some(f) = inflight.get(id) else { continue };
                        match st {
                            LeaseState::Extended => {}
                            LeaseState::CancelRequested => {
                                f.cancel_requested.store(true, Ordering::Release);
                                f.cancel.cancel();
                            }
                            LeaseState::Lost => {
                                tracing::warn!(task = %id, "lease lost; stopping the attempt");
                                f.cancel.cancel();
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(queue, error = %e, "heartbeat failed"),
            }
        }
    }
}

/// Every lease quarter (at most every second): requeue expired leases, and check that Redis
/// still holds its state (rebuilding it from Postgres when Redis lost its data).
async fn run_reaper(shared: Arc<Shared>, store: Option<Store>, mut stop: watch::Receiver<bool>) {
    let every = (shared.cfg.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Some(store) = &store {
            match chronos_core::reconcile::ensure_redis_state(&shared.engine, store, &shared.cfg.worker_id).await {
                Ok(Some(n)) => {
                    tracing::info!(restored = n, "Redis state checked and rebuilt from Postgres");
                    for q in &shared.cfg.queues {
                        let _ = shared.engine.register_queue(q).await;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not check Redis state; will retry"),
            }
        }
        for q in &shared.cfg.queues {
            match shared.engine.reap(q, 1000).await {
                Ok((n, _)) if n > 0 => tracing::warn!(queue = %q, reaped = n, "expired leases requeued"),
                Ok(_) => {}
                Err(e) => tracing::warn!(queue = %q, error = %e, "reap failed"),
            }
        }
    }
}
