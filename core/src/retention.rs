//! Retention: Postgres keeps finished tasks for a while, not forever. Completed and cancelled
//! tasks (with their attempts and idempotency keys) go `CHRONOS_RETENTION_DAYS` (default 30)
//! after they finished, dead ones after `CHRONOS_DEAD_RETENTION_DAYS` (default 90); the tick
//! deletes them in batches ([`purge`]), so a table's size follows the traffic of the retention
//! window, not of the deployment's life. Finished bulk jobs (`jobs`) go after
//! `CHRONOS_RETENTION_DAYS` too. Manual actions in `audit_log` are kept.
//!
//! Finding them needs no index beyond the primary key, so the audit writer's row updates stay
//! heap-only: task ids are UUIDv7 whose timestamp is the creation (for a schedule's occurrence,
//! the fire instant), never after the task finished, so every task that finished before the
//! cutoff has an id below the smallest UUIDv7 of the cutoff's millisecond. Each batch walks that
//! id range in order and deletes up to [`BATCH`] rows in one transaction.
//!
//! A dead task also lives in Redis (for retry and redrive): `purge_dead.lua` takes it out of
//! Redis first, atomically and only while it is still dead with its SQS message sent; what the
//! script leaves alone stays in Postgres too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::config::{ConfigError, parse_var};
use crate::error::Result;
use crate::queue::Engine;
use crate::store::Store;

pub const DEFAULT_RETENTION_DAYS: u64 = 30;
pub const DEFAULT_DEAD_RETENTION_DAYS: u64 = 90;
/// Rows deleted per transaction.
pub const BATCH: i64 = 1000;
/// Batches of each kind per call: a tick every minute deletes up to 20,000 rows.
pub const MAX_BATCHES: usize = 10;

/// How long finished tasks stay in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed and cancelled tasks.
    pub finished: Duration,
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { finished: days(DEFAULT_RETENTION_DAYS), dead: days(DEFAULT_DEAD_RETENTION_DAYS) }
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

impl Retention {
    /// `CHRONOS_RETENTION_DAYS` and `CHRONOS_DEAD_RETENTION_DAYS` (whole days, 1–36500).
    pub fn from_env() -> std::result::Result<Self, ConfigError> {
        let parse = |v: &str| v.parse::<u64>().ok().filter(|n| (1..=36_500).contains(n)).map(days);
        Ok(Retention {
            finished: parse_var("CHRONOS_RETENTION_DAYS", days(DEFAULT_RETENTION_DAYS), "a number of days (1–36500)", parse)?,
            dead: parse_var("CHRONOS_DEAD_RETENTION_DAYS", days(DEFAULT_DEAD_RETENTION_DAYS), "a number of days (1–36500)", parse)?,
        })
    }
}

/// What one [`purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Completed and cancelled tasks.
    pub finished: u64,
    pub dead: u64,
    /// Finished bulk jobs (completed, failed or cancelled).
    pub jobs: u64,
}

/// The smallest UUIDv7 of `at`'s millisecond: every id created before `at` is below it.
fn id_floor(at: DateTime<Utc>) -> Uuid {
    let ms = at.timestamp_millis().max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(b)
}

/// Delete what is past `retention` as of `now`, at most [`MAX_BATCHES`] batches of each kind.
pub async fn purge(engine: &Engine, store: &Store, retention: Retention, now: DateTime<Utc>) -> Result<Purged> {
    let mut purged = Purged::default();
    let cutoff = now - chrono::Duration::from_std(retention.finished).unwrap_or(chrono::TimeDelta::MAX);
    for _ in 0..MAX_BATCHES {
        let rows = sqlx::query(
            "SELECT id FROM tasks WHERE id < $1 AND status IN ('completed', 'cancelled')
               AND coalesce(finished_at, updated_at) < $2 ORDER BY id LIMIT $3",
        )
        .bind(id_floor(cutoff))
        .bind(cutoff)
        .bind(BATCH)
        .fetch_all(store.pool())
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get("id")).collect();
        purged.finished += delete_rows(store, &ids, &["completed", "cancelled"]).await?;
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    let cutoff = now - chrono::Duration::from_std(retention.dead).unwrap_or(chrono::TimeDelta::MAX);
    let mut after = Uuid::nil();
    for _ in 0..MAX_BATCHES {
        let rows = sqlx::query(
            "SELECT id, queue FROM tasks WHERE id > $1 AND id < $2 AND status = 'dead'
               AND coalesce(finished_at, updated_at) < $3 ORDER BY id LIMIT $4",
        )
        .bind(after)
        .bind(id_floor(cutoff))
        .bind(cutoff)
        .bind(BATCH)
        .fetch_all(store.pool())
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get("id");
        let mut by_queue: std::collections::BTreeMap<String, Vec<Uuid>> = Default::default();
        for r in &rows {
            by_queue.entry(r.get("queue")).or_default().push(r.get("id"));
        }
        let mut gone = Vec::new();
        for (queue, ids) in by_queue {
            gone.extend(engine.purge_dead(&queue, &ids).await?);
        }
        purged.dead += delete_rows(store, &gone, &["dead"]).await?;
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    let cutoff = now - chrono::Duration::from_std(retention.finished).unwrap_or(chrono::TimeDelta::MAX);
    for _ in 0..MAX_BATCHES {
        let n = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN ('completed', 'failed', 'cancelled')
               AND coalesce(finished_at, created_at) < $1 ORDER BY created_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(BATCH)
        .execute(store.pool())
        .await?
        .rows_affected();
        purged.jobs += n;
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(purged)
}

/// Delete tasks `ids` (only while their status is one of `statuses`), their attempts and
/// idempotency keys, in one transaction.
async fn delete_rows(store: &Store, ids: &[Uuid], statuses: &[&str]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = store.pool().begin().await?;
    let deleted: Vec<Uuid> = sqlx::query_scalar("DELETE FROM tasks WHERE id = ANY($1) AND status = ANY($2) RETURNING id")
        .bind(ids)
        .bind(statuses)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM task_attempts WHERE task_id = ANY($1)").bind(&deleted).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE task_id = ANY($1)").bind(&deleted).execute(&mut *tx).await?;
    // What a deleted task waited for (its edges; those of what waited for it close when it ends).
    sqlx::query("DELETE FROM task_deps WHERE task_id = ANY($1)").bind(&deleted).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(deleted.len() as u64)
}
