//! The worker runtime: claim → run handler → ack / retry / dead-letter.
//!
//! - [`fetch`] — the loop, the only place that decides to claim, block or back off.
//! - [`attempt`] — runs one attempt (timeout, panic isolation, cancellation) and returns its
//!   [`Outcome`]; it never touches Redis.
//! - [`recorder`] — writes outcomes: completions batched per round trip, failures each in its
//!   own task, every write retried with one backoff. Completions that end while the fetch loop
//!   waits for a free slot are carried by its next claim instead ([`Carry`]).
//! - [`lease`] — heartbeats that extend leases and carry cancellations back; the shutdown
//!   hand-back.
//!
//! Each attempt runs in its own tokio task (a panic fails the attempt, not the worker). The
//! process's background services (audit writer, DLQ forwarder, reaper, Redis-loss rebuild) are
//! [`chronos_core::services::Services`], chosen with [`Worker::with_audit`] / [`Worker::with_dlq`]
//! or given whole with [`Worker::with_services`]. On shutdown the loop stops claiming, waits for
//! running attempts up to the grace period, hands the rest straight back, lets the recorder
//! finish, and only then stops the services, so they flush the last transitions.

mod attempt;
mod fetch;
mod lease;
mod recorder;

pub use attempt::Outcome;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_core::dlq::Dlq;
use chronos_core::queue::{Engine, WorkerPresence};
use chronos_core::services::Services;
use chronos_core::telemetry;
use chronos_core::{ClaimedTask, Store, TaskId};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::logs::Capture;
use crate::registry::Registry;
use recorder::{Record, Slot, ToRecord};

struct Inflight {
    queue: String,
    token: u64,
    cancel: CancellationToken,
    state: Arc<AttemptState>,
    abort: Option<AbortHandle>,
}

/// What a running attempt shares with the runtime (one allocation per attempt).
#[derive(Debug, Default)]
pub(crate) struct AttemptState {
    /// Set when the heartbeat learned the task was cancelled (not merely the lease lost).
    cancel_requested: AtomicBool,
    /// The handler's own log lines.
    logs: Capture,
    /// A retry delay the receiver asked for ([`crate::TaskContext::retry_after`]), in ms; 0: none.
    retry_after_ms: AtomicU64,
    /// What the handler returned ([`crate::TaskContext::set_result`]), as JSON text.
    result: std::sync::Mutex<Option<String>>,
    /// Progress reported since the last heartbeat ([`crate::TaskContext::progress`]), as JSON
    /// text; the heartbeat takes it, so a handler reporting often costs one write per beat.
    progress: std::sync::Mutex<Option<String>>,
}

impl AttemptState {
    pub(crate) fn set_retry_after(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
        self.retry_after_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set_progress(&self, json: String) {
        *self.progress.lock().unwrap() = Some(json);
    }

    pub(crate) fn take_progress(&self) -> Option<String> {
        self.progress.lock().unwrap().take()
    }

    pub(crate) fn set_result(&self, json: String) {
        *self.result.lock().unwrap() = Some(json);
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let ms = self.retry_after_ms.load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

tokio::task_local! {
    /// The attempt whose handler runs in this task, for [`crate::logs::CaptureLayer`].
    static ATTEMPT: Arc<AttemptState>;
}

/// Run `f` on the capture of the attempt whose handler is running here, if any.
pub(crate) fn with_capture(f: impl FnOnce(&Capture)) {
    let _ = ATTEMPT.try_with(|a| f(&a.logs));
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
    /// Ack script calls (each carries a batch), `ack_claim` calls included.
    pub ack_calls: AtomicU64,
    /// Completions acked by a claim (`ack_claim`) rather than by an ack call of their own.
    pub acks_carried: AtomicU64,
}

/// Completions on their way to the fetch loop's next claim. While the loop waits for a free
/// slot (every slot busy), a completion frees its slot and its ack goes with the claim that
/// fills it: `ack_claim`, one round trip for both (at concurrency 1: one call per task, where
/// an ack and a claim were two). While the loop waits for anything else, or is stopping, `on`
/// is false and completions go to the recorder as before. The flag and the records share one
/// lock, so a completion is either carried by a loop that will wake for it (its slot's
/// release notifies the loop) or sent to the recorder, never left behind.
#[derive(Default)]
struct Carry {
    on: bool,
    done: Vec<Record>,
}

impl Shared {
    /// A completed attempt's record: carried by the next claim, or sent to the recorder.
    fn completed(&self, r: Record) {
        let mut c = self.carry.lock().unwrap();
        if c.on {
            c.done.push(r);
        } else {
            drop(c);
            let _ = self.records.send(ToRecord::One(r));
        }
    }

    /// Carry completions from now (the loop is about to wait for a free slot).
    fn carry_from_now(&self) {
        self.carry.lock().unwrap().on = true;
    }

    /// What was carried so far, for this round's claims.
    fn take_carried(&self) -> Vec<Record> {
        std::mem::take(&mut self.carry.lock().unwrap().done)
    }

    /// Stop carrying: what is carried goes to the recorder, and so does every completion after.
    fn stop_carrying(&self) {
        let done = {
            let mut c = self.carry.lock().unwrap();
            c.on = false;
            std::mem::take(&mut c.done)
        };
        self.send_uncarried(done);
    }

    /// Carried completions no claim took (their queue was not claimed from this round, or the
    /// claim failed): the recorder acks them.
    fn send_uncarried(&self, done: Vec<Record>) {
        for r in done {
            let _ = self.records.send(ToRecord::One(r));
        }
    }
}

struct Shared {
    stats: Arc<WorkerStats>,
    engine: Engine,
    registry: Registry,
    cfg: WorkerConfig,
    inflight: Mutex<HashMap<TaskId, Inflight>>,
    slot_freed: Arc<Notify>,
    records: mpsc::UnboundedSender<ToRecord>,
    /// Completions the fetch loop's next claim carries (see [`Carry`]).
    carry: Mutex<Carry>,
    /// Cleared when the fetch loop stops: a draining worker no longer says it serves its queues.
    claiming: AtomicBool,
    /// Postgres, when the worker was given one (handlers read their children's results).
    store: Option<Store>,
}

/// A worker process's runtime. Build with [`Worker::new`], choose its background services,
/// then [`Worker::run`] until the shutdown future resolves.
pub struct Worker {
    engine: Engine,
    registry: Registry,
    cfg: WorkerConfig,
    services: Services,
    /// With a store, Redis's state is settled before the first claim.
    store: Option<Store>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker with no background services.
    pub fn new(engine: Engine, registry: Registry, cfg: WorkerConfig) -> Self {
        let services = if cfg.queues.is_all() {
            Services::new(engine.clone()).reaper_all(reap_every(cfg.lease))
        } else {
            Services::new(engine.clone()).reaper(cfg.queues.names(), reap_every(cfg.lease))
        };
        Worker { engine, registry, cfg, services, store: None, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Also drain the audit outbox into Postgres from this process, and rebuild Redis from
    /// Postgres when Redis lost its data.
    pub fn with_audit(mut self, store: Store) -> Self {
        let who = self.cfg.worker_id.clone();
        self.services = self.services.audit_writer(store.clone(), who.clone()).rebuild(store.clone(), who);
        self.store = Some(store);
        self
    }

    /// Also forward dead tasks to SQS from this process.
    pub fn with_dlq(mut self, dlq: Dlq) -> Self {
        self.services = self.services.dlq_forwarder(dlq);
        self
    }

    /// Also forward dead tasks to the SQS queue `queue_name`, reached in the background: the
    /// worker claims and runs tasks whatever SQS does, dead letters wait in Redis meanwhile.
    pub fn with_dlq_queue(mut self, queue_name: impl Into<String>) -> Self {
        self.services = self.services.dlq_forwarder_connecting(queue_name);
        self
    }

    /// Also work bulk-operation jobs (redrive, cancel or retry by filter) from this process;
    /// `dlq_queue` names the SQS queue a redrive removes messages from.
    pub fn with_jobs(mut self, store: Store, dlq_queue: Option<String>) -> Self {
        self.services = self.services.job_runner(store, dlq_queue, self.cfg.worker_id.clone());
        self
    }

    /// Before the first claim, make sure Redis holds its state (rebuilt from `store`, or by
    /// another process) without running the audit writer here.
    pub fn settling_with(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Run exactly these background services beside the fetch loop (e.g. none, when a separate
    /// process runs the audit writer). `store` settles Redis's state before the first claim.
    pub fn with_services(mut self, services: Services, store: Option<Store>) -> Self {
        self.services = services;
        self.store = store;
        self
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) -> chronos_core::Result<()> {
        let Worker { engine, registry, cfg, services, store, stats } = self;
        tokio::pin!(shutdown);
        // The background services start before settling: a rebuild waits until the audit
        // outboxes are drained into Postgres, and this process's audit writer may be the one
        // that drains them (when every worker is starting at once, e.g. after a crash loop, a
        // writer started only after settling would leave the rebuild waiting for itself).
        let background = services.start();
        // A stop during start-up (settling may wait for another process's rebuild) stops here:
        // nothing was claimed yet, so nothing needs handing back.
        let start_up = async {
            if let Some(store) = &store {
                chronos_core::reconcile::settle_before_claiming(&engine, store, &cfg.worker_id).await;
            }
            // Redis refusing these writes (out of memory with `noeviction`, or away for a
            // moment) must not end the worker: it waits, as it waits for a first connection.
            let mut said = false;
            loop {
                let registered = async {
                    for q in cfg.queues.names() {
                        engine.register_queue(&q).await?;
                    }
                    engine.announce_worker(&presence(&cfg)).await
                };
                match registered.await {
                    Err(e) if e.is_retryable() => {
                        if !said {
                            tracing::warn!(worker = %cfg.worker_id, error = %e, "cannot register with Redis yet; retrying every second");
                            said = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    r => break r,
                }
            }
        };
        let started = tokio::select! {
            r = start_up => Some(r),
            _ = &mut shutdown => None,
        };
        if !matches!(started, Some(Ok(()))) {
            if started.is_none() {
                tracing::info!(worker = %cfg.worker_id, "stopped during start-up");
            }
            background.stop().await;
            return started.unwrap_or(Ok(()));
        }
        let (record_tx, record_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(recorder::run_recorder(engine.clone(), cfg.worker_id.clone(), stats.clone(), record_rx));
        let shared = Arc::new(Shared {
            stats,
            engine,
            registry,
            cfg,
            inflight: Mutex::new(HashMap::new()),
            slot_freed: Arc::new(Notify::new()),
            records: record_tx,
            carry: Mutex::default(),
            claiming: AtomicBool::new(true),
            store: store.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let heart = tokio::spawn(lease::run_heartbeat(shared.clone(), stop_rx));

        tracing::info!(worker = %shared.cfg.worker_id, queues = %shared.cfg.queues.describe(), concurrency = shared.cfg.concurrency, handlers = ?shared.registry.kinds(), "worker started");
        let slots = Arc::new(Semaphore::new(shared.cfg.concurrency));
        let fetch = fetch::fetch_loop(shared.clone(), slots.clone(), shutdown).await;
        tracing::info!(worker = %shared.cfg.worker_id, "stopped claiming; draining");
        // No longer counted as serving its queues; were this lost, the entry expires anyway.
        shared.claiming.store(false, std::sync::atomic::Ordering::Release);
        if let Err(e) = shared.engine.forget_worker(&shared.cfg.worker_id).await {
            tracing::debug!(error = %e, "could not remove this worker from the live workers");
        }

        // Let running attempts finish within the grace period.
        let all = shared.cfg.concurrency as u32;
        let drained = tokio::time::timeout(shared.cfg.shutdown_grace, slots.acquire_many(all)).await.is_ok();
        if !drained {
            lease::hand_back(&shared).await;
        }
        let _ = stop_tx.send(true);
        drop(shared);
        let _ = heart.await;
        let _ = recorder.await; // ends once every sender (runners) is gone
        background.stop().await;
        tracing::info!("worker stopped");
        fetch
    }
}

/// What this worker tells `<ns>:workers`: it is refreshed every heartbeat period (a lease third)
/// and lives a whole lease plus a second, so three missed refreshes in a row mark it gone.
fn presence(cfg: &WorkerConfig) -> WorkerPresence {
    WorkerPresence {
        worker_id: cfg.worker_id.clone(),
        queues: if cfg.queues.is_all() { vec!["*".into()] } else { cfg.queues.names() },
        spec: cfg.queues.describe(),
        seen_at_ms: 0,
        ttl_ms: cfg.lease.as_millis() as i64 + 1000,
    }
}

/// The reaper's period: a lease quarter, between 100 ms and 1 s.
fn reap_every(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The span of one attempt for traces: a consumer span in the trace the task was submitted in,
/// with a first child `chronos.claim` that says how long the task waited for a worker.
fn task_span(task: &ClaimedTask) -> tracing::Span {
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        parent: None,
        "chronos.task",
        otel.kind = "consumer",
        chronos.task_id = %task.id,
        chronos.queue = %task.queue,
        chronos.task_name = %task.name,
        chronos.attempt = task.attempt,
        chronos.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, task.trace_context.as_deref());
    drop(
        tracing::info_span!(target: telemetry::TARGET, parent: &span, "chronos.claim", chronos.waited_ms = task.waited.as_millis() as u64, chronos.token = task.token),
    );
    span
}

/// Start one attempt in its own task; its outcome goes to the recorder.
fn start(shared: &Arc<Shared>, task: ClaimedTask, permit: OwnedSemaphorePermit) {
    let cancel = CancellationToken::new();
    let state = Arc::new(AttemptState::default());
    shared.inflight.lock().unwrap().insert(
        task.id,
        Inflight { queue: task.queue.clone(), token: task.token, cancel: cancel.clone(), state: state.clone(), abort: None },
    );
    // Cached per (queue, name): no label set is built per task.
    let metrics = chronos_core::metrics::task(&task.queue, &task.name);
    metrics.started.increment(1);
    metrics.waited(task.waited);
    let s = shared.clone();
    // With traces on, the attempt is a span continuing the producer's trace (its claim, run
    // and ack are children); with traces off, Span::none costs nothing.
    let span = if telemetry::enabled() { task_span(&task) } else { tracing::Span::none() };
    tokio::spawn(async move {
        let slot = Slot::new(permit, s.slot_freed.clone());
        let began = std::time::Instant::now();
        let outcome = attempt::run_attempt(&s, &task, cancel, &state).instrument(span.clone()).await;
        metrics.ran(began.elapsed());
        let completed = outcome == Outcome::Completed;
        let (slot, kept) = if completed { (Some(slot), None) } else { (None, Some(slot)) };
        let logs = state.logs.take();
        let result = if completed { state.result.lock().unwrap().take() } else { None };
        let span = (!span.is_none()).then_some(span);
        let record = Record { queue: task.queue, id: task.id, token: task.token, outcome, logs, result, metrics, slot: kept, span };
        if completed {
            s.completed(record);
        } else {
            let _ = s.records.send(ToRecord::One(record));
        }
        s.inflight.lock().unwrap().remove(&task.id);
        // Freed after the record is carried or sent: the fetch loop this wakes finds it.
        drop(slot);
    });
}
