//! Metrics: their names, the process's one Prometheus recorder, and cached handles per
//! `(queue, name)`.
//!
//! Recorded through the `metrics` facade and rendered by `metrics-exporter-prometheus` (without
//! its HTTP listener: the API, the dashboard and a worker's `CHRONOS_METRICS_ADDR` serve
//! [`render`] from their own axum routers). A facade with one process-wide recorder lets the
//! engine, the worker runtime, the API and the services record without a registry passed
//! through every constructor, and one process running several roles (`chronos dev`) exports
//! them all on any of its `/metrics`. Until [`install`] runs every handle is a no-op: a process
//! that exports nothing pays nothing. Names follow Prometheus conventions with the `chronos_`
//! prefix and `queue` / `name` labels.
//!
//! The hot path never builds a label set: [`task`] returns the handles of one `(queue, name)`
//! pair, made once and kept for the life of the process (a read lock and two map look-ups by
//! `&str`, no allocation).
//!
//! [`emf`] turns the same exposition into CloudWatch embedded-metric-format lines
//! (`CHRONOS_METRICS=emf`).

pub mod emf;

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const TASKS_ENQUEUED: &str = "chronos_tasks_enqueued_total";
pub const TASKS_STARTED: &str = "chronos_tasks_started_total";
pub const TASKS_COMPLETED: &str = "chronos_tasks_completed_total";
pub const TASKS_FAILED: &str = "chronos_tasks_failed_total";
pub const TASKS_RETRIED: &str = "chronos_tasks_retried_total";
pub const TASKS_DEAD: &str = "chronos_tasks_dead_total";
pub const TASKS_CANCELLED: &str = "chronos_tasks_cancelled_total";
pub const TASK_WAIT: &str = "chronos_task_wait_seconds";
pub const TASK_RUN: &str = "chronos_task_run_seconds";
pub const QUEUE_DEPTH: &str = "chronos_queue_depth";
pub const QUEUE_OLDEST_WAITING: &str = "chronos_queue_oldest_waiting_seconds";
pub const QUEUE_RUNNING: &str = "chronos_queue_running";
pub const QUEUE_DEAD: &str = "chronos_queue_dead";
pub const OUTBOX_LENGTH: &str = "chronos_outbox_length";
pub const LEASE_EXPIRIES: &str = "chronos_lease_expiries_total";
pub const REBUILD_RESTORES: &str = "chronos_rebuild_restores_total";
pub const DLQ_FORWARD_FAILURES: &str = "chronos_dlq_forward_failures_total";

/// Histogram buckets (seconds) of the wait and run times: 1 ms to an hour.
const SECONDS_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process's recorder (once; later calls return the same handle). Call it before
/// any work starts: handles taken before are no-ops for good.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (a test harness) keeps its place; ours then renders
        // nothing, which the caller sees at the first scrape.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// Whether [`install`] ran in this process.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// Everything recorded in this process, in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    HANDLE.get().map(|h| h.render()).unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TASKS_ENQUEUED, "Tasks accepted into a queue by this process.");
    describe_counter!(TASKS_STARTED, "Attempts started by this process's workers.");
    describe_counter!(TASKS_COMPLETED, "Attempts that completed.");
    describe_counter!(TASKS_FAILED, "Attempts that failed (retried, dead or cancelled).");
    describe_counter!(TASKS_RETRIED, "Failed attempts with another attempt scheduled.");
    describe_counter!(TASKS_DEAD, "Tasks whose last attempt failed (dead-lettered).");
    describe_counter!(TASKS_CANCELLED, "Attempts that ended because their task was cancelled.");
    describe_histogram!(TASK_WAIT, metrics::Unit::Seconds, "From when a task was due to when a worker claimed it.");
    describe_histogram!(TASK_RUN, metrics::Unit::Seconds, "How long an attempt's handler ran.");
    describe_gauge!(QUEUE_DEPTH, "Tasks that could start now: waiting, plus scheduled and retrying ones already due.");
    describe_gauge!(QUEUE_OLDEST_WAITING, "How long the longest-waiting due task has waited.");
    describe_gauge!(QUEUE_RUNNING, "Attempts running (leased).");
    describe_gauge!(QUEUE_DEAD, "Dead tasks kept in Redis.");
    describe_gauge!(OUTBOX_LENGTH, "Transitions in the audit outbox not yet written to Postgres.");
    describe_counter!(LEASE_EXPIRIES, "Expired leases the reaper took back (the worker died or stalled).");
    describe_counter!(REBUILD_RESTORES, "Tasks restored into Redis from Postgres after Redis lost its data.");
    describe_counter!(DLQ_FORWARD_FAILURES, "Dead letters SQS refused or could not be reached for (retried).");
    describe_counter!("chronos_http_requests_total", "API requests by status class.");
    describe_counter!("chronos_tasks_created_total", "Tasks accepted by this API process.");
    describe_counter!(
        "chronos_task_writes_total",
        "Postgres transactions (each with one Redis round trip) that accepted tasks; concurrent submissions share one."
    );
    describe_gauge!("chronos_queue_waiting", "Tasks ready to run.");
    describe_gauge!("chronos_queue_scheduled", "Tasks scheduled for later.");
    describe_gauge!("chronos_queue_retrying", "Tasks waiting for a retry.");
    describe_gauge!("chronos_dlq_pending", "Dead letters not yet sent to SQS.");
}

/// The handles of one `(queue, name)` pair.
#[derive(Debug)]
pub struct TaskMetrics {
    pub enqueued: Counter,
    pub started: Counter,
    pub completed: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead: Counter,
    pub cancelled: Counter,
    wait: Histogram,
    run: Histogram,
}

impl TaskMetrics {
    fn new(queue: &str, name: &str) -> Self {
        let l = [("queue", queue.to_owned()), ("name", name.to_owned())];
        TaskMetrics {
            enqueued: counter!(TASKS_ENQUEUED, &l),
            started: counter!(TASKS_STARTED, &l),
            completed: counter!(TASKS_COMPLETED, &l),
            failed: counter!(TASKS_FAILED, &l),
            retried: counter!(TASKS_RETRIED, &l),
            dead: counter!(TASKS_DEAD, &l),
            cancelled: counter!(TASKS_CANCELLED, &l),
            wait: histogram!(TASK_WAIT, &l),
            run: histogram!(TASK_RUN, &l),
        }
    }

    pub fn waited(&self, d: Duration) {
        self.wait.record(d.as_secs_f64());
    }

    pub fn ran(&self, d: Duration) {
        self.run.record(d.as_secs_f64());
    }
}

type ByQueue = HashMap<String, HashMap<String, &'static TaskMetrics>>;
static TASKS: OnceLock<RwLock<ByQueue>> = OnceLock::new();

/// The handles of `(queue, name)`, made on first use and kept for the process's life (a
/// deployment has a bounded set of queues and task kinds).
pub fn task(queue: &str, name: &str) -> &'static TaskMetrics {
    let map = TASKS.get_or_init(RwLock::default);
    if let Some(m) = map.read().unwrap_or_else(|e| e.into_inner()).get(queue).and_then(|n| n.get(name)) {
        return m;
    }
    let mut w = map.write().unwrap_or_else(|e| e.into_inner());
    w.entry(queue.to_owned()).or_default().entry(name.to_owned()).or_insert_with(|| Box::leak(Box::new(TaskMetrics::new(queue, name))))
}

/// Set the queue gauges from one reading of a queue's backlog (done when scraped: the numbers
/// are Redis's, whichever process asks).
pub fn set_queue_gauges(b: &crate::backlog::Backlog) {
    let q = [("queue", b.queue.clone())];
    gauge!(QUEUE_DEPTH, &q).set(b.waiting() as f64);
    gauge!(QUEUE_OLDEST_WAITING, &q).set(b.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0);
    gauge!(QUEUE_RUNNING, &q).set(b.running as f64);
    gauge!(QUEUE_DEAD, &q).set(b.dead as f64);
    gauge!(OUTBOX_LENGTH, &q).set(b.outbox as f64);
}

/// Read the backlog of `queues` and set their gauges; a queue Redis cannot answer for keeps
/// its last values.
pub async fn refresh_queue_gauges(engine: &crate::queue::Engine, queues: &[String]) {
    for q in queues {
        match crate::backlog::read(engine, q).await {
            Ok(b) => set_queue_gauges(&b),
            Err(e) => tracing::debug!(queue = %q, error = %e, "queue gauges not refreshed"),
        }
    }
}

/// [`render`] after refreshing the gauges of every queue Redis knows.
pub async fn render_with_queues(engine: &crate::queue::Engine) -> String {
    if let Ok(queues) = engine.queues().await {
        refresh_queue_gauges(engine, &queues).await;
    }
    render()
}
