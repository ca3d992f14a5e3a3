//! A process's background services, composed in one place: the audit writer (outbox →
//! Postgres), the DLQ forwarder (dead tasks → SQS), the reaper (expired leases back to their
//! queue), the Redis-loss check (rebuild from Postgres) and the job runner (bulk operations,
//! [`crate::jobs`]).
//!
//! Any binary picks what it runs: `chronos worker` runs all four beside its fetch loop,
//! `chronos dev` the same in one process, and a deployment may run the audit writer on its own
//! (`Services::new(engine).audit_writer(store, "audit-1")`) apart from the workers. Nothing here
//! runs a task; [`Services::start`] spawns the chosen loops and [`RunningServices::stop`] stops
//! them after they flushed what they hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::audit::AuditWriter;
use crate::dlq::{Dlq, connect_and_forward, run_forwarder};
use crate::queue::Engine;
use crate::reconcile::ensure_redis_state;
use crate::store::Store;

/// How often the DLQ forwarder looks again when nothing woke it (it retries SQS outages).
const DLQ_INTERVAL: Duration = Duration::from_secs(5);
/// How many expired leases one reap call requeues at most.
const REAP_LIMIT: usize = 1000;

/// Where the DLQ forwarder gets its queue: connected already, or reached in the background.
#[derive(Clone)]
enum DlqSource {
    Connected(Dlq),
    Named(String),
}

/// Which background services a process runs. Build with [`Services::new`] and the builder
/// methods, then [`Services::start`].
#[derive(Clone)]
pub struct Services {
    engine: Engine,
    audit: Option<(Store, String)>,
    dlq: Option<DlqSource>,
    /// The queues reaped (`None`: every queue, read each pass) and how often.
    reaper: Option<(Option<Vec<String>>, Duration)>,
    rebuild: Option<(Store, String)>,
    jobs: Option<(Store, Option<String>, String)>,
}

impl Services {
    pub fn new(engine: Engine) -> Self {
        Services { engine, audit: None, dlq: None, reaper: None, rebuild: None, jobs: None }
    }

    /// Drain every queue's audit outbox into Postgres; `consumer` names this writer in the
    /// stream's consumer group (unique per process).
    pub fn audit_writer(mut self, store: Store, consumer: impl Into<String>) -> Self {
        self.audit = Some((store, consumer.into()));
        self
    }

    /// Forward dead tasks to the SQS dead-letter queue (at once when the audit writer of this
    /// process sees one die, and every few seconds otherwise).
    pub fn dlq_forwarder(mut self, dlq: Dlq) -> Self {
        self.dlq = Some(DlqSource::Connected(dlq));
        self
    }

    /// The same, for the SQS queue named `queue_name`, reached in the background: the process
    /// does not wait for SQS (an unreachable SQS at start-up delays dead letters, which wait in
    /// Redis, and nothing else).
    pub fn dlq_forwarder_connecting(mut self, queue_name: impl Into<String>) -> Self {
        self.dlq = Some(DlqSource::Named(queue_name.into()));
        self
    }

    /// Requeue (or dead-letter) expired leases of `queues` every `every`.
    pub fn reaper(mut self, queues: Vec<String>, every: Duration) -> Self {
        self.reaper = Some((Some(queues), every));
        self
    }

    /// Requeue (or dead-letter) expired leases of every queue, including queues added later
    /// (for workers serving `*`), every `every`.
    pub fn reaper_all(mut self, every: Duration) -> Self {
        self.reaper = Some((None, every));
        self
    }

    /// Check on the reaper's period that Redis still holds its state, and rebuild the queues
    /// from Postgres when it lost its data. `who` names this process in the rebuild lock.
    pub fn rebuild(mut self, store: Store, who: impl Into<String>) -> Self {
        self.rebuild = Some((store, who.into()));
        self
    }

    /// Work bulk-operation jobs (redrive, cancel or retry by filter) as they are created, and
    /// resume those whose runner died. `dlq_queue` names the SQS queue a redrive removes
    /// messages from (reached when first needed); `who` names this runner in the job leases.
    pub fn job_runner(mut self, store: Store, dlq_queue: Option<String>, who: impl Into<String>) -> Self {
        self.jobs = Some((store, dlq_queue, who.into()));
        self
    }

    /// Spawn the chosen services. Needs a Tokio runtime.
    pub fn start(self) -> RunningServices {
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let dead_seen = Arc::new(Notify::new());
        if let Some((store, consumer)) = self.audit {
            let writer = Arc::new(AuditWriter::new(self.engine.clone(), store, consumer));
            let seen = writer.dead_seen.clone();
            tasks.push(tokio::spawn(writer.run(stop.clone())));
            // The writer learns of deaths first; the forwarder sends them at once.
            let relay = dead_seen.clone();
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = seen.notified() => relay.notify_one(),
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
        match self.dlq {
            Some(DlqSource::Connected(dlq)) => {
                tasks.push(tokio::spawn(run_forwarder(self.engine.clone(), dlq, dead_seen, DLQ_INTERVAL, stop.clone())))
            }
            Some(DlqSource::Named(name)) => {
                tasks.push(tokio::spawn(connect_and_forward(self.engine.clone(), name, dead_seen, DLQ_INTERVAL, stop.clone())))
            }
            None => {}
        }
        if let Some((store, dlq_queue, who)) = self.jobs {
            let chronos = crate::client::Chronos::new(self.engine.clone(), store, 0, Duration::ZERO);
            let dlq = crate::jobs::DlqHandle::new(None, dlq_queue);
            tasks.push(tokio::spawn(crate::jobs::run_jobs(chronos, dlq, who, stop.clone())));
        }
        if self.reaper.is_some() || self.rebuild.is_some() {
            let (queues, every) = self.reaper.unwrap_or((Some(Vec::new()), Duration::from_secs(1)));
            tasks.push(tokio::spawn(run_maintenance(self.engine.clone(), queues, every, self.rebuild, stop.clone())));
        }
        RunningServices { stop: stop_tx, tasks }
    }
}

/// Services started by [`Services::start`].
pub struct RunningServices {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServices {
    /// Stop every service and wait for it; the audit writer flushes what its stream holds first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The reaper and the Redis-loss check, one after the other on one timer.
async fn run_maintenance(
    engine: Engine,
    fixed_queues: Option<Vec<String>>,
    every: Duration,
    rebuild: Option<(Store, String)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let queues = match &fixed_queues {
            Some(q) => q.clone(),
            None => match engine.queues().await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the queues to reap; will retry");
                    continue;
                }
            },
        };
        if let Some((store, who)) = &rebuild {
            match ensure_redis_state(&engine, store, who).await {
                Ok(Some(n)) => {
                    metrics::counter!(crate::metrics::REBUILD_RESTORES).increment(n as u64);
                    tracing::info!(restored = n, "Redis state checked and rebuilt from Postgres");
                    for q in &queues {
                        let _ = engine.register_queue(q).await;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not check Redis state; will retry"),
            }
        }
        for q in &queues {
            match engine.reap(q, REAP_LIMIT).await {
                Ok((n, _)) if n > 0 => {
                    metrics::counter!(crate::metrics::LEASE_EXPIRIES, "queue" => q.clone()).increment(n as u64);
                    tracing::warn!(queue = %q, reaped = n, "expired leases requeued")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(queue = %q, error = %e, "reap failed"),
            }
        }
    }
}
