//! Chronos core: everything a producer or a worker needs, with no Lambda or HTTP server deps.
//!
//! # Layout
//! - [`model`] — the task model: ids, priority, backoff, status, validation ([`model::NewTask::prepare`]).
//! - [`keys`] — every Redis key, all of one queue under the hash tag `{<queue>}`.
//! - [`metrics`] — metric names, the process's Prometheus recorder, cached handles per
//!   `(queue, name)`.
//! - [`queue`] — the Redis engine. `queue/script.rs` is the script boundary (each script's KEYS
//!   in one documented order, every reply read and every answer code mapped in one place);
//!   `queue/scripts/` holds `lib.lua` (clock, ready score, key names, backoff, overlap guard —
//!   prepended to every script) and one file per transition: `enqueue`, `claim` (promotes due
//!   tasks, leases the highest priority), `ack`, `fail` (the retry decision), `heartbeat`,
//!   `cancel`, `retry_now`, `reap`, `release`, `drop`, `restore` (the rebuild), `limits`. Every change of
//!   a running task is guarded by the lease's fencing token.
//!   `queue/conn.rs` is one Redis node or a Redis Cluster behind one connection type (several
//!   seeds in `REDIS_URL`, or `CHRONOS_REDIS_CLUSTER=1`); commands over several queues go per slot.
//! - [`limits`] — queue limits (concurrency, rate, per group), decided in `claim.lua`; groups
//!   take turns. Recorded in Postgres, copied into Redis (`limits.lua`), restored by the rebuild.
//! - [`store`] — Postgres: task rows (written before enqueue returns), attempts, idempotency keys.
//! - [`audit`] — the audit writer, the outbox drain: Redis stream → Postgres in batches, acked
//!   after commit. It runs wherever [`services`] is started with it: in every `chronos worker`
//!   and `chronos dev` by default, or alone in `chronos services`.
//! - [`services`] — a process's background services composed in one place (audit writer, DLQ
//!   forwarder, reaper, Redis-loss rebuild); each binary picks the ones it runs.
//! - [`dlq`] — the SQS dead-letter queue and the forwarder that never drops a letter.
//! - [`reconcile`] — rebuilds the queues from Postgres when Redis lost its data (`restore.lua`).
//! - [`retention`] — deletes finished tasks past `CHRONOS_RETENTION_DAYS` /
//!   `CHRONOS_DEAD_RETENTION_DAYS` in batches (the tick runs it; `purge_dead.lua`).
//! - [`cron`] — cron expressions (Vixie semantics, seconds, macros) and their fire instants in
//!   any IANA zone, with Debian cron's DST rules; a pure function of (expression, zone, range).
//! - [`schedule`] — recurring schedules (model, validation, table, the pure `planner`, and the
//!   `Scheduler` whose tick plans occurrences ahead as delayed tasks, with overlap and misfire).
//! - [`client`] — [`client::Chronos`]: submitting (Postgres first, then Redis) and every use case
//!   the API, the CLI and the dashboard share (read, list, cancel, retry, redrive, queues, keys).
//! - [`jobs`] — bulk operations (redrive the DLQ, cancel or retry by filter) as resumable jobs:
//!   recorded in Postgres, worked in leased steps by [`jobs::run_jobs`] (in [`services`]) and by
//!   the tick.
//! - [`access`] — API keys (stored hashed) and roles; [`access::Role::allows`] is the one place
//!   that decides what a role may do.
//! - [`builtin`] — the built-in handlers' payload types, checked when a task is submitted.
//! - [`backlog`] — a queue's backlog for the scaler: waiting + due scheduled + due retrying,
//!   running, and the oldest waiting task's age.
//! - [`secrets`] — Secrets Manager values named by `*_SECRET_ARN` variables, read at start-up.
//! - [`flows`] — tasks that wait for others: a flow's tree (`submit_flow`) and `depends_on`
//!   (`submit_after`); a waiting task is `pending` in Postgres only, the audit writer counts its
//!   dependencies down as they finish and puts it into Redis when the last one has.
//! - [`events`] — live task transitions for the dashboard: the outbox streams followed with XREAD.
//! - [`history`] — Postgres read models the dashboard charts (throughput, dead tasks by error).
//! - [`telemetry`] — the W3C trace context a task carries from producer to worker, and the
//!   OpenTelemetry span helpers (off, and free, unless the binary installs an exporter).
//! - [`config`] — environment settings shared by every binary.
//! - [`error`] — the error type; retryability is part of it.

pub mod access;
pub mod audit;
pub mod backlog;
pub mod builtin;
pub mod client;
pub mod config;
pub mod cron;
pub mod dlq;
pub mod error;
pub mod events;
pub mod flows;
pub mod history;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod retention;
pub mod schedule;
pub mod secrets;
pub mod services;
pub mod store;
pub mod telemetry;

pub use client::{Chronos, Submitted};
pub use error::{Error, Result};
pub use model::{Backoff, BackoffKind, ClaimedTask, Jitter, NewTask, Priority, Status, TaskId};
pub use queue::{Engine, FailKind, FailOutcome, LeaseState};
pub use store::Store;
