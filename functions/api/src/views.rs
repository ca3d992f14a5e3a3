//! Request and response bodies of the API, with their OpenAPI schemas.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use chronos_core::model::{Backoff, NewTask, Priority};
use chronos_core::store::{AttemptRecord, TaskRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// A task to create. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// The handler kind, e.g. `http`, `email`. 1–128 of A–Z a–z 0–9 _ - . : /
    #[schema(example = "http", pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub name: String,
    /// Default `default`. 1–64 of A–Z a–z 0–9 _ - .
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    /// Any JSON; default `{}`. Size-limited (default 256 KiB).
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// 0–100 (higher first) or `critical` (100), `high` (75), `normal` (50), `low` (25).
    #[serde(default)]
    #[schema(value_type = Option<PrioritySchema>)]
    pub priority: Option<Priority>,
    /// First run at this RFC 3339 instant (years 0000–9999 in UTC). Not together with `delay_ms`.
    #[serde(default)]
    #[schema(example = "2026-11-27T09:00:00Z", format = DateTime)]
    pub run_at: Option<String>,
    /// First run after this many milliseconds. Not together with `run_at`.
    #[serde(default)]
    #[schema(maximum = 315_360_000_000u64)]
    pub delay_ms: Option<u64>,
    /// 1–1000, default 5.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "crate::json::opt_object")]
    #[schema(value_type = Option<BackoffSchema>)]
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout, 1–86400000 ms, default 30000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// A repeated key returns the existing task (200) instead of creating another. 1–256 bytes.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00]*$")]
    pub idempotency_key: Option<String>,
}

/// Priority: a number 0–100 (higher first) or one of `critical`, `high`, `normal`, `low`.
pub struct PrioritySchema;

impl utoipa::PartialSchema for PrioritySchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(100)))
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["critical", "high", "normal", "low"])))
            .description(Some("0–100 (higher first) or critical (100), high (75), normal (50), low (25)"))
            .into()
    }
}

impl ToSchema for PrioritySchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }
}

/// Retry delay policy: `min(cap_ms, base_ms * 2^(attempt-1))` (exponential) or `base_ms`
/// (fixed), spread by `jitter`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Backoff)]
pub struct BackoffSchema {
    /// Default `exponential`.
    #[schema(required = false, pattern = "^(exponential|fixed)$")]
    kind: String,
    /// Default 1000.
    #[schema(required = false, minimum = 1)]
    base_ms: u64,
    /// At least `base_ms`, at most 7 days; default 3600000.
    #[schema(required = false, minimum = 1, maximum = 604_800_000)]
    cap_ms: u64,
    /// Default `full`.
    #[schema(required = false, pattern = "^(none|full|equal)$")]
    jitter: String,
}

impl CreateTask {
    /// Turn the request into a task, naming the field at fault (`prefix` for batch items).
    pub fn into_task(self, prefix: &str, created_by: &str) -> Result<NewTask, ApiError> {
        let f = |name: &str| format!("{prefix}{name}");
        let mut t = NewTask::new(self.name, self.payload.unwrap_or_else(|| serde_json::json!({})));
        if let Some(q) = self.queue {
            t = t.queue(q);
        }
        if let Some(p) = self.priority {
            t = t.priority(p);
        }
        match (self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => return Err(ApiError::validation(f("run_at"), "give either run_at or delay_ms, not both")),
            (Some(at), None) => {
                let at = DateTime::parse_from_rfc3339(&at).map_err(|_| {
                    ApiError::validation(f("run_at"), format!("{at:?} is not an RFC 3339 time such as 2026-11-27T09:00:00Z"))
                })?;
                let at = at.with_timezone(&Utc);
                // Echoed back as RFC 3339, which has four-digit years.
                if !(0..=9999).contains(&at.year()) {
                    return Err(ApiError::validation(f("run_at"), "must fall in the years 0000–9999 in UTC"));
                }
                t = t.run_at(at);
            }
            (None, Some(ms)) => t = t.delay(Duration::from_millis(ms)),
            (None, None) => {}
        }
        if let Some(n) = self.max_attempts {
            t = t.max_attempts(n);
        }
        if let Some(b) = self.backoff {
            t = t.backoff(b);
        }
        if let Some(ms) = self.timeout_ms {
            t = t.timeout(Duration::from_millis(ms));
        }
        if let Some(k) = self.idempotency_key {
            t = t.idempotency_key(k);
        }
        t.created_by = Some(created_by.to_owned());
        Ok(t)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// 1–1000 tasks, validated all together: one invalid task rejects the batch.
    #[serde(deserialize_with = "crate::json::objects")]
    #[schema(min_items = 1, max_items = 1000)]
    pub tasks: Vec<CreateTask>,
}

/// A task and its current state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub queue: String,
    pub name: String,
    /// Any JSON.
    pub payload: serde_json::Value,
    pub priority: i16,
    /// scheduled, queued, running, retrying, completed, dead or cancelled.
    #[schema(pattern = "^(scheduled|queued|running|retrying|completed|dead|cancelled)$")]
    pub status: String,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    #[schema(value_type = BackoffSchema)]
    pub backoff: serde_json::Value,
    pub timeout_ms: i64,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
    /// A cancel was requested while the task runs; its handler has been told.
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> Self {
        TaskView {
            id: t.id,
            queue: t.queue,
            name: t.name,
            payload: t.payload,
            priority: t.priority,
            status: t.status,
            run_at: t.run_at,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            backoff: t.backoff,
            timeout_ms: t.timeout_ms,
            idempotency_key: t.idempotency_key,
            last_error: t.last_error,
            cancel_requested: false,
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// False when the idempotency key named an existing task (which is returned).
    pub created: bool,
    pub task: TaskView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub tasks: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// completed, failed, lost (worker died or lease expired), released (worker shut down), cancelled.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// The handler's error chain or stack trace.
    pub stack_trace: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            worker: a.worker,
            started_at: a.started_at,
            finished_at: a.finished_at,
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            error: a.error,
            stack_trace: a.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub waiting: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub completed: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub paused: bool,
    /// Seconds the oldest due task has waited to start; absent when none waits.
    pub oldest_waiting_age_s: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RedriveFilter {
    /// Only dead tasks of this queue.
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    /// Only dead tasks with this name.
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveResult {
    /// How many dead tasks were put back as fresh attempts.
    pub redriven: usize,
    pub ids: Vec<Uuid>,
    /// Their messages removed from the SQS dead-letter queue.
    pub sqs_messages_removed: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, e.g. `billing-service`. 1–100 bytes, not only whitespace.
    #[schema(min_length = 1, max_length = 100, pattern = "^[^\\x00]*$")]
    pub name: String,
    #[schema(pattern = "^(admin|operator|producer|viewer)$")]
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    #[schema(pattern = "^(admin|operator|producer|viewer)$")]
    pub role: String,
    /// The secret's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<chronos_core::access::ApiKey> for KeyView {
    fn from(k: chronos_core::access::ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role.to_string(),
            prefix: k.prefix,
            created_at: k.created_at,
            created_by: k.created_by,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret. Shown only now; only its hash is stored.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    pub redis: String,
    pub postgres: String,
}
