//! Queue limits: concurrency and rate per queue, and per group (tenant) inside a queue.
//!
//! - **Concurrency** — at most `concurrency` attempts of the queue running at once, across
//!   every worker (the claim script caps its batch at `concurrency − leased`).
//! - **Rate** — at most `rate.limit` starts in any window of `rate.period_ms`: a sliding window
//!   (a log of the last period's start times in Redis, so its memory is at most `limit` entries).
//!   A burst beyond it waits, it is never dropped: the claim answers when the oldest start
//!   leaves the window, and the worker sleeps until then.
//! - **Groups** — a task may carry a `group` (e.g. a customer id). Grouped tasks wait in their
//!   group's own set; groups take turns (round-robin among the groups that may start a task,
//!   the ungrouped tasks being one more member of the rotation), priorities stay strict within a
//!   group, and `group_concurrency` / `group_rate` apply to each group alone. A group at its
//!   limit leaves the rotation until one of its attempts ends or its next token is due.
//!
//! Decided inside `claim.lua` (no read-decide-write across round trips). Postgres
//! (`queue_limits`) is the record; Redis holds the copy the scripts read (`<prefix>lim`), set by
//! [`crate::queue::Engine::set_limits`] and restored by the Redis-loss rebuild.

use serde::{Deserialize, Deserializer, Serialize};
use sqlx::Row;

use crate::error::{Error, Result};

/// Largest concurrency limit.
pub const MAX_CONCURRENCY: u32 = 1_000_000;
/// Largest rate limit per period (the sliding window keeps one entry per start).
pub const MAX_RATE_LIMIT: u32 = 100_000;
/// Longest rate period: one day.
pub const MAX_RATE_PERIOD_MS: u32 = 86_400_000;

/// At most `limit` starts in any window of `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Starts allowed per period (1–100000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub limit: u32,
    /// The window, in milliseconds (1–86400000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400_000))]
    pub period_ms: u32,
}

/// A queue's limits; `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueLimits {
    /// Attempts of the queue running at once, across all workers.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<u32>,
    /// Starts per period for the whole queue.
    pub rate: Option<Rate>,
    /// Attempts running at once per group.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub group_concurrency: Option<u32>,
    /// Starts per period per group.
    pub group_rate: Option<Rate>,
}

/// A change of limits: an absent field is left as it is, `null` removes that limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Rate>))]
    pub rate: Option<Option<Rate>>,
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000))]
    pub group_concurrency: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Rate>))]
    pub group_rate: Option<Option<Rate>>,
}

/// A field that is present: `Some(None)` for `null`, `Some(Some(v))` for a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl LimitsPatch {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none() && self.group_concurrency.is_none() && self.group_rate.is_none()
    }

    /// `current` with this change applied.
    pub fn apply(&self, mut current: QueueLimits) -> QueueLimits {
        if let Some(c) = self.concurrency {
            current.concurrency = c;
        }
        if let Some(r) = self.rate {
            current.rate = r;
        }
        if let Some(c) = self.group_concurrency {
            current.group_concurrency = c;
        }
        if let Some(r) = self.group_rate {
            current.group_rate = r;
        }
        current
    }
}

impl QueueLimits {
    pub fn is_none(&self) -> bool {
        *self == QueueLimits::default()
    }

    /// Every value in range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, c) in [("concurrency", self.concurrency), ("group_concurrency", self.group_concurrency)] {
            if let Some(c) = c
                && !(1..=MAX_CONCURRENCY).contains(&c)
            {
                return Err(Error::invalid(field, format!("must be 1–{MAX_CONCURRENCY} (or null for no limit); got {c}")));
            }
        }
        for (limit_field, period_field, r) in
            [("rate.limit", "rate.period_ms", self.rate), ("group_rate.limit", "group_rate.period_ms", self.group_rate)]
        {
            if let Some(r) = r {
                if !(1..=MAX_RATE_LIMIT).contains(&r.limit) {
                    return Err(Error::invalid(limit_field, format!("must be 1–{MAX_RATE_LIMIT} starts per period; got {}", r.limit)));
                }
                if !(1..=MAX_RATE_PERIOD_MS).contains(&r.period_ms) {
                    return Err(Error::invalid(period_field, format!("must be 1–{MAX_RATE_PERIOD_MS} ms (one day); got {}", r.period_ms)));
                }
            }
        }
        Ok(())
    }

    /// The six values `limits.lua` takes (c, rl, rp, gc, gl, gp), "" for none.
    pub fn encode(&self) -> [String; 6] {
        let n = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            n(self.concurrency),
            n(self.rate.map(|r| r.limit)),
            n(self.rate.map(|r| r.period_ms)),
            n(self.group_concurrency),
            n(self.group_rate.map(|r| r.limit)),
            n(self.group_rate.map(|r| r.period_ms)),
        ]
    }

    fn from_row(r: &sqlx::postgres::PgRow) -> QueueLimits {
        let u = |c: &str| r.get::<Option<i32>, _>(c).map(|v| v.max(0) as u32);
        let rate = |l: Option<u32>, p: Option<u32>| Some(Rate { limit: l?, period_ms: p? });
        QueueLimits {
            concurrency: u("concurrency"),
            rate: rate(u("rate_limit"), u("rate_period_ms")),
            group_concurrency: u("group_concurrency"),
            group_rate: rate(u("group_rate_limit"), u("group_rate_period_ms")),
        }
    }
}

/// The limits of `queue` as recorded (none when never set).
pub async fn load(db: impl sqlx::PgExecutor<'_>, queue: &str) -> Result<QueueLimits> {
    let row = sqlx::query("SELECT * FROM queue_limits WHERE queue = $1").bind(queue).fetch_optional(db).await?;
    Ok(row.as_ref().map(QueueLimits::from_row).unwrap_or_default())
}

/// Every queue that has limits recorded.
pub async fn load_all(pool: &sqlx::PgPool) -> Result<Vec<(String, QueueLimits)>> {
    let rows = sqlx::query("SELECT * FROM queue_limits ORDER BY queue").fetch_all(pool).await?;
    Ok(rows.iter().map(|r| (r.get("queue"), QueueLimits::from_row(r))).collect())
}

/// Record `limits` for `queue` (a queue with none left has its row deleted).
pub async fn save(db: impl sqlx::PgExecutor<'_>, queue: &str, limits: &QueueLimits, by: &str) -> Result<()> {
    if limits.is_none() {
        sqlx::query("DELETE FROM queue_limits WHERE queue = $1").bind(queue).execute(db).await?;
        return Ok(());
    }
    let i = |v: Option<u32>| v.map(|v| v as i32);
    sqlx::query(
        "INSERT INTO queue_limits (queue, concurrency, rate_limit, rate_period_ms, group_concurrency, group_rate_limit,
                                   group_rate_period_ms, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8)
         ON CONFLICT (queue) DO UPDATE SET concurrency = $2, rate_limit = $3, rate_period_ms = $4, group_concurrency = $5,
             group_rate_limit = $6, group_rate_period_ms = $7, updated_at = now(), updated_by = $8",
    )
    .bind(queue)
    .bind(i(limits.concurrency))
    .bind(i(limits.rate.map(|r| r.limit)))
    .bind(i(limits.rate.map(|r| r.period_ms)))
    .bind(i(limits.group_concurrency))
    .bind(i(limits.group_rate.map(|r| r.limit)))
    .bind(i(limits.group_rate.map(|r| r.period_ms)))
    .bind(by)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_leaves_absent_fields_and_removes_null_ones() {
        let cur = QueueLimits { concurrency: Some(3), rate: Some(Rate { limit: 10, period_ms: 1000 }), ..Default::default() };
        let p: LimitsPatch = serde_json::from_str(r#"{"rate": null, "group_concurrency": 2}"#).unwrap();
        assert_eq!(p.apply(cur), QueueLimits { concurrency: Some(3), rate: None, group_concurrency: Some(2), group_rate: None });
        let empty: LimitsPatch = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let bad = QueueLimits { group_rate: Some(Rate { limit: 5, period_ms: 0 }), ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("group_rate.period_ms"), "{}", bad.validate().unwrap_err());
        let bad = QueueLimits { concurrency: Some(0), ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("concurrency"));
        assert!(QueueLimits { concurrency: Some(1), ..Default::default() }.validate().is_ok());
    }
}
