//! Chronos core: everything a producer or a worker needs, with no Lambda or HTTP server deps.
//!
//! # Layout
//! - [`model`] — the task model: ids, priority, backoff, status, validation ([`model::NewTask::prepare`]).
//! - [`keys`] — every Redis key, all of one queue under the hash tag `{<queue>}`.
//! - [`queue`] — the Redis engine: one Lua script per transition (`src/scripts/*.lua`:
//!   enqueue, claim, ack, fail — where the retry decision lives —, heartbeat, cancel,
//!   retry_now, reap, release), each guarded by the lease's fencing token.
//! - [`store`] — Postgres: task rows (written before enqueue returns), attempts, idempotency keys.
//! - [`audit`] — the outbox drain: Redis stream → Postgres in batches, acked after commit.
//! - [`dlq`] — the SQS dead-letter queue and the forwarder that never drops a letter.
//! - [`reconcile`] — rebuilds the queues from Postgres when Redis lost its data (`restore.lua`).
//! - [`cron`] — cron expressions (Vixie semantics, seconds, macros) and their fire instants in
//!   any IANA zone, with Debian cron's DST rules; a pure function of (expression, zone, range).
//! - [`schedule`] — recurring schedules in Postgres and the tick that plans their occurrences
//!   ahead as delayed tasks, with overlap and misfire policies.
//! - [`client`] — [`client::Chronos`], the producer API (Postgres first, then Redis).
//! - [`access`] — API keys (stored hashed) and roles; [`access::Role::allows`] is the one place
//!   that decides what a role may do.
//! - [`backlog`] — a queue's backlog for the scaler: waiting + due scheduled + due retrying,
//!   running, and the oldest waiting task's age.
//! - [`secrets`] — Secrets Manager values named by `*_SECRET_ARN` variables, read at start-up.
//! - [`config`] — environment settings shared by every binary.
//! - [`error`] — the error type; retryability is part of it.

pub mod access;
pub mod audit;
pub mod backlog;
pub mod client;
pub mod config;
pub mod cron;
pub mod dlq;
pub mod error;
pub mod events;
pub mod history;
pub mod keys;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod schedule;
pub mod secrets;
pub mod services;
pub mod store;

pub use client::{Chronos, Submitted};
pub use error::{Error, Result};
pub use model::{Backoff, BackoffKind, ClaimedTask, Jitter, NewTask, Priority, Status, TaskId};
pub use queue::{Engine, FailKind, FailOutcome, LeaseState};
pub use store::Store;
