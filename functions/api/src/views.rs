//! Request and response bodies of the API, with their OpenAPI schemas.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use chronos_core::cron::Tz;
use chronos_core::flows::{ChildFailure, FlowTask, MAX_FLOW_TASKS};
use chronos_core::model::{Backoff, NewTask, Overlap, Priority};
use chronos_core::schedule::{Misfire, SchedulePatch, ScheduleRecord, ScheduleSpec, TaskTemplate};
use chronos_core::store::{AttemptRecord, TaskRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// The fields of `POST /v1/tasks` that say what runs, with their meanings, defaults and limits,
/// declared once: [`CreateTask`] adds when it runs and the idempotency key, [`TaskTemplateBody`]
/// (what each occurrence of a schedule runs) is exactly these.
macro_rules! what_runs {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            /// The handler kind, e.g. `http`, `email`. 1–128 of A–Z a–z 0–9 _ - . : /
            #[schema(example = "http", pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
            pub name: String,
            /// Default `default`. 1–64 of A–Z a–z 0–9 _ - .
            #[serde(default)]
            #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
            pub queue: Option<String>,
            /// Any JSON; default `{}`. Size-limited (default 256 KiB). For the built-in kinds it
            /// is checked at submit against `SleepPayload`, `FailPayload`, `HttpPayload` or
            /// `EmailPayload` (see the components); other names take any JSON.
            #[serde(default)]
            pub payload: Option<serde_json::Value>,
            /// 0–100 (higher first) or `critical` (100), `high` (75), `normal` (50), `low` (25).
            #[serde(default)]
            #[schema(value_type = Option<PrioritySchema>)]
            pub priority: Option<Priority>,
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
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// What runs, as a task with the defaults of one submitted without options.
            fn take_what_runs(&mut self) -> NewTask {
                let mut t = NewTask::new(std::mem::take(&mut self.name), self.payload.take().unwrap_or_else(|| serde_json::json!({})));
                if let Some(q) = self.queue.take() {
                    t = t.queue(q);
                }
                if let Some(p) = self.priority {
                    t = t.priority(p);
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
                t
            }
        }
    };
}

what_runs! {
    /// A task to create. Unknown fields are refused.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct CreateTask {
        /// First run at this RFC 3339 instant: from 1970-01-01T00:00:00Z (a past instant runs at
        /// once) to 10 years from now, the range of `delay_ms`. Not together with `delay_ms`.
        #[serde(default)]
        #[schema(example = "2026-11-27T09:00:00Z", format = DateTime)]
        pub run_at: Option<String>,
        /// First run after this many milliseconds, at most 10 years (315,360,000,000). Not together
        /// with `run_at`.
        #[serde(default)]
        #[schema(maximum = 315_360_000_000u64)]
        pub delay_ms: Option<u64>,
        /// A repeated key returns the existing task (200) instead of creating another. 1–256 bytes.
        #[serde(default)]
        #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00]*$")]
        pub idempotency_key: Option<String>,
        /// The group (tenant) it belongs to, e.g. a customer id: the queue's `group_concurrency`
        /// and `group_rate` apply per group, and groups take turns, so one group's backlog cannot
        /// starve another. 1–128 printable ASCII characters, no spaces.
        #[serde(default)]
        #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]{1,128}$", example = "customer-42")]
        pub group: Option<String>,
        /// A deadline (RFC 3339): no attempt starts after it; a task still waiting then ends
        /// `cancelled`, `last_error` saying why. After the first run, within 10 years. Not
        /// together with `ttl_ms`.
        #[serde(default)]
        #[schema(example = "2026-11-27T10:00:00Z", format = DateTime)]
        pub expires_at: Option<String>,
        /// The deadline as milliseconds after submission (1 ms – 10 years). Not together with
        /// `expires_at`.
        #[serde(default)]
        #[schema(minimum = 1, maximum = 315_360_000_000u64)]
        pub ttl_ms: Option<u64>,
        /// `POST /v1/tasks` only: run after these tasks (1–100 ids of tasks you may see) have
        /// finished; until then the task is `pending`. One that already completed counts as
        /// finished. Not in a batch or a flow.
        #[serde(default)]
        #[schema(max_items = 100)]
        pub depends_on: Option<Vec<Uuid>>,
        /// With `depends_on` or `children`: what a task it waits for that ends `dead` or
        /// `cancelled` does to it. `fail` (the default): it ends `cancelled`, `last_error`
        /// naming that task; `ignore`: it runs once the others have finished.
        #[serde(default)]
        #[schema(value_type = Option<String>, pattern = "^(fail|ignore)$", example = "ignore")]
        pub on_child_failure: Option<ChildFailure>,
        /// `POST /v1/flows` only: the tasks this one waits for, each with these same fields (and
        /// children of its own). It runs after all of them completed and reads their results.
        #[serde(default)]
        #[schema(no_recursion)]
        pub children: Option<Vec<CreateTask>>,
    }
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
    pub fn into_task(mut self, prefix: &str, created_by: &str) -> Result<NewTask, ApiError> {
        let f = |name: &str| format!("{prefix}{name}");
        let mut t = self.take_what_runs();
        match (self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => return Err(ApiError::validation(f("run_at"), "give either run_at or delay_ms, not both")),
            (Some(at), None) => t = t.run_at(instant(f("run_at"), &at)?),
            (None, Some(ms)) => t = t.delay(Duration::from_millis(ms)),
            (None, None) => {}
        }
        if let Some(k) = self.idempotency_key {
            t = t.idempotency_key(k);
        }
        match (self.expires_at, self.ttl_ms) {
            (Some(_), Some(_)) => return Err(ApiError::validation(f("expires_at"), "give either expires_at or ttl_ms, not both")),
            (Some(at), None) => t = t.expires_at(chronos_core::model::stored_precision(instant(f("expires_at"), &at)?)),
            (None, Some(ms)) => {
                if ms == 0 || ms > chronos_core::model::MAX_FIRST_RUN_AHEAD.as_millis() as u64 {
                    return Err(ApiError::validation(f("ttl_ms"), "must be 1 ms to 10 years (315360000000 ms)"));
                }
                let now = *t.submitted_at.get_or_insert_with(|| chronos_core::model::stored_precision(Utc::now()));
                t = t.expires_at(now + chrono::Duration::milliseconds(ms as i64));
            }
            (None, None) => {}
        }
        if let Some(g) = self.group {
            if let Err(chronos_core::Error::Invalid { message, .. }) = chronos_core::model::validate_group(&g) {
                return Err(ApiError::validation(f("group"), message));
            }
            t = t.group(g);
        }
        t.created_by = Some(created_by.to_owned());
        Ok(t)
    }

    /// Refuse the fields of flows and dependencies where a request takes none (`what` says
    /// where the sender should go instead).
    pub fn refuse_flow_fields(&self, prefix: &str, what: &str) -> Result<(), ApiError> {
        let given = [
            ("depends_on", self.depends_on.is_some()),
            ("children", self.children.is_some()),
            ("on_child_failure", self.on_child_failure.is_some()),
        ];
        match given.iter().find(|(_, g)| *g) {
            Some((field, _)) => Err(ApiError::validation(format!("{prefix}{field}"), what.to_owned())),
            None => Ok(()),
        }
    }
}

/// A flow in pre-order (the root first, each node after its parent), as the core takes it; the
/// errors name the node's field by its path (`children[1].children[0].name`).
pub fn flow_nodes(root: CreateTask, created_by: &str, max_payload_bytes: usize) -> Result<Vec<FlowTask>, ApiError> {
    let mut out = Vec::new();
    let mut stack = vec![(root, String::new(), None::<usize>)];
    while let Some((mut node, prefix, parent)) = stack.pop() {
        if out.len() >= MAX_FLOW_TASKS {
            return Err(ApiError::validation("children", format!("a flow has at most {MAX_FLOW_TASKS} tasks")));
        }
        if node.depends_on.is_some() {
            return Err(ApiError::validation(
                format!("{prefix}depends_on"),
                "not in a flow: a flow's tasks wait for their children; send depends_on with POST /v1/tasks",
            ));
        }
        let children = node.children.take().unwrap_or_default();
        if node.on_child_failure.is_some() && children.is_empty() {
            return Err(ApiError::validation(format!("{prefix}on_child_failure"), "applies only to a task with children"));
        }
        let on_child_failure = node.on_child_failure.take().unwrap_or_default();
        let task = node.into_task(&prefix, created_by)?;
        task.clone().prepare(max_payload_bytes).map_err(|e| match e {
            chronos_core::Error::Invalid { field, message } => ApiError::validation(format!("{prefix}{field}"), message),
            other => other.into(),
        })?;
        let me = out.len();
        out.push(FlowTask { task, parent, on_child_failure });
        // Reversed onto the stack, so the children come out in the order given.
        for (i, c) in children.into_iter().enumerate().rev() {
            stack.push((c, format!("{prefix}children[{i}]."), Some(me)));
        }
    }
    Ok(out)
}

/// `POST /v1/flows`'s answer: the root task and the id of every node, in pre-order (the root,
/// then each child's subtree in the order given).
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowView {
    /// The root task: it runs last, once all its children completed.
    pub task: TaskView,
    /// Every task of the flow, the root first, each node before its children.
    pub task_ids: Vec<Uuid>,
}

/// A task another waits for, and how it ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyView {
    pub id: Uuid,
    pub name: String,
    pub queue: String,
    /// Its status now (Redis's live state for a running one may be ahead).
    pub status: String,
    /// What its handler returned, once it completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// `child` (a flow's tree) or `depends_on`.
    pub kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependenciesView {
    /// The tasks it waits (or waited) for.
    pub dependencies: Vec<DependencyView>,
}

impl From<chronos_core::flows::Dependency> for DependencyView {
    fn from(d: chronos_core::flows::Dependency) -> Self {
        DependencyView { id: d.id, name: d.name, queue: d.queue, status: d.status, result: d.result, kind: d.kind }
    }
}

/// An RFC 3339 instant of a request body, in UTC; the error names `field`.
fn instant(field: String, at: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = DateTime::parse_from_rfc3339(at)
        .map_err(|_| ApiError::validation(field.clone(), format!("{at:?} is not an RFC 3339 time such as 2026-11-27T09:00:00Z")))?
        .with_timezone(&Utc);
    // Echoed back as RFC 3339, which has four-digit years.
    if !(0..=9999).contains(&t.year()) {
        return Err(ApiError::validation(field, "must fall in the years 0000–9999 in UTC"));
    }
    Ok(t)
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
    /// pending, scheduled, queued, running, retrying, completed, dead or cancelled.
    #[schema(pattern = "^(pending|scheduled|queued|running|retrying|completed|dead|cancelled)$")]
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
    /// The schedule that planned this task (null for a task submitted directly, or once its
    /// schedule was deleted).
    pub schedule_id: Option<Uuid>,
    /// The schedule occurrence this task runs (its cron fire instant).
    pub fire_at: Option<DateTime<Utc>>,
    /// The group (tenant) it belongs to, if any.
    pub group: Option<String>,
    /// What the handler returned when it completed (any JSON, at most 64 KiB).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// No attempt starts after this instant.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last progress its handler reported, `{"pct": 0–100, "message": "..."}` (live while
    /// it runs; carried by the worker's heartbeat, so up to a lease third old).
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// The trace the task continues: the trace id of the `traceparent` it was submitted with
    /// (absent when none was sent and the API exports no traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// While `pending`: how many of the tasks it waits for (its children, `depends_on`) have
    /// not finished (`GET /v1/tasks/{id}/dependencies` lists them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<i32>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> Self {
        let waiting_for = (t.status == "pending").then_some(t.pending_deps);
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
            cancel_requested: t.cancel_requested,
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
            schedule_id: t.schedule_id,
            fire_at: t.fire_at,
            group: t.group,
            result: t.result,
            expires_at: t.expires_at,
            progress: t.progress,
            trace_id: t.trace_context.as_deref().and_then(chronos_core::telemetry::trace_id),
            waiting_for,
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

impl From<chronos_core::client::TaskPage> for TaskPage {
    fn from(p: chronos_core::client::TaskPage) -> Self {
        TaskPage { tasks: p.tasks.into_iter().map(TaskView::from).collect(), next_cursor: p.next_cursor.map(|id| id.to_string()) }
    }
}

impl From<chronos_core::client::QueueSummary> for QueueView {
    fn from(q: chronos_core::client::QueueSummary) -> Self {
        QueueView {
            name: q.name,
            waiting: q.waiting,
            scheduled: q.scheduled,
            running: q.running,
            retrying: q.retrying,
            completed: q.completed,
            dead: q.dead,
            cancelled: q.cancelled,
            paused: q.paused,
            oldest_waiting_age_s: q.oldest_waiting_age_s,
            workers: q.workers,
            unserved: q.unserved,
            limits: q.limits,
            postgres_unavailable: q.postgres_unavailable,
        }
    }
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
    /// The handler's own log lines during the attempt, one per line (`time LEVEL target: message
    /// fields`): the last 200 lines / 64 KiB, a first line saying how many earlier ones were
    /// dropped. Absent when it logged nothing.
    pub logs: Option<String>,
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
            logs: a.logs,
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
    /// Live workers serving this queue (named in their `CHRONOS_QUEUES`, or `*`).
    pub workers: u32,
    /// True when the queue has tasks to run (waiting, scheduled or retrying) and no live worker
    /// serves it: they wait until a worker with this queue in its `CHRONOS_QUEUES` starts.
    pub unserved: bool,
    /// Concurrency and rate limits, for the queue and per group; `null` = no limit of that kind.
    pub limits: chronos_core::limits::QueueLimits,
    /// True while Postgres cannot be read: `completed`, `dead` and `cancelled` are then 0 and
    /// `oldest_waiting_age_s` absent; the other counts are live from Redis.
    pub postgres_unavailable: bool,
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
    /// Only dead tasks whose last error's first line is this (the dashboard's groups).
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
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

what_runs! {
    /// What each occurrence of a schedule runs: the fields of `POST /v1/tasks` that say what runs,
    /// with the same meanings, defaults and limits (when it runs is the schedule's business).
    /// Unknown fields are refused.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct TaskTemplateBody {}
}

impl TaskTemplateBody {
    /// The template with the defaults of a task submitted without options, validated as such a
    /// task would be; an error names the field under `task.`.
    pub fn into_template(mut self, max_payload: usize) -> Result<TaskTemplate, ApiError> {
        let t = TaskTemplate::from(self.take_what_runs());
        t.validate(max_payload).map_err(|e| match e {
            chronos_core::Error::Invalid { field, message } => ApiError::validation(format!("task.{field}"), message),
            other => other.into(),
        })?;
        Ok(t)
    }
}

/// `#[serde(deserialize_with)]` for a required struct field: a JSON object only.
fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    crate::json::Object::<T>::deserialize(d).map(|crate::json::Object(v)| v)
}

/// A recurring schedule to create. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique. 1–128 of A–Z a–z 0–9 _ - . : /
    #[schema(example = "nightly-report", pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub name: String,
    /// crontab(5): 5 fields (minute hour day-of-month month day-of-week), 6 with a leading
    /// second, or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). Evaluated in
    /// `timezone`.
    #[schema(example = "0 9 * * 1-5", pattern = "^[^\\x00]*$")]
    pub cron: String,
    /// IANA time zone name, default `UTC`.
    #[serde(default)]
    #[schema(example = "Europe/Berlin", pattern = "^[^\\x00]*$")]
    pub timezone: Option<String>,
    #[serde(deserialize_with = "object")]
    pub task: TaskTemplateBody,
    /// When an occurrence comes due while the previous run has not finished: `allow` (run
    /// anyway, default), `skip` (drop it) or `queue_one` (keep at most one waiting).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(allow|skip|queue_one)$")]
    pub overlap: Option<Overlap>,
    /// Occurrences missed while no tick ran: `run_all`, `run_once` (the latest, default) or `skip`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(run_all|run_once|skip)$")]
    pub misfire: Option<Misfire>,
    /// Create it paused (nothing planned until resumed). Default false.
    #[serde(default)]
    pub paused: Option<bool>,
}

impl CreateSchedule {
    pub fn into_spec(self, max_payload: usize) -> Result<ScheduleSpec, ApiError> {
        let task = self.task.into_template(max_payload)?;
        let mut spec = ScheduleSpec::new(self.name, self.cron, task);
        if let Some(tz) = self.timezone {
            spec.timezone = tz;
        }
        spec.overlap = self.overlap.unwrap_or_default();
        spec.misfire = self.misfire.unwrap_or_default();
        spec.paused = self.paused.unwrap_or(false);
        Ok(spec)
    }
}

/// Changes to a schedule: any of the fields of the create request except `paused` (use
/// `/pause` and `/resume`); a field left out (or null) stays as it is. `task` replaces the
/// whole template. Changing `cron`, `timezone`, `task` or `overlap` drops the occurrences
/// planned under the old definition that have not started and plans again from now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(example = "*/15 * * * *", pattern = "^[^\\x00]*$")]
    pub cron: Option<String>,
    #[serde(default)]
    #[schema(example = "Europe/Berlin", pattern = "^[^\\x00]*$")]
    pub timezone: Option<String>,
    #[serde(default, deserialize_with = "crate::json::opt_object")]
    pub task: Option<TaskTemplateBody>,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(allow|skip|queue_one)$")]
    pub overlap: Option<Overlap>,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(run_all|run_once|skip)$")]
    pub misfire: Option<Misfire>,
    /// Refused with a pointer to `/pause` and `/resume`, rather than as an unknown field.
    #[serde(default)]
    #[schema(ignore)]
    pub paused: Option<serde_json::Value>,
}

impl UpdateSchedule {
    pub fn into_patch(self, max_payload: usize) -> Result<SchedulePatch, ApiError> {
        if self.paused.is_some() {
            return Err(ApiError::validation(
                "paused",
                "cannot be changed here; use POST /v1/schedules/{id}/pause or /v1/schedules/{id}/resume",
            ));
        }
        let patch = SchedulePatch {
            name: self.name,
            cron: self.cron,
            timezone: self.timezone,
            task: self.task.map(|t| t.into_template(max_payload)).transpose()?,
            overlap: self.overlap,
            misfire: self.misfire,
        };
        if patch.is_empty() {
            return Err(ApiError::validation(
                "body",
                "nothing to change; give at least one of name, cron, timezone, task, overlap, misfire",
            ));
        }
        Ok(patch)
    }
}

/// The task each occurrence runs, with every default filled in.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskTemplateView {
    pub name: String,
    pub queue: String,
    /// Any JSON.
    pub payload: serde_json::Value,
    #[schema(minimum = 0, maximum = 100)]
    pub priority: u8,
    pub max_attempts: u32,
    #[schema(value_type = BackoffSchema)]
    pub backoff: Backoff,
    pub timeout_ms: u64,
}

impl From<TaskTemplate> for TaskTemplateView {
    fn from(t: TaskTemplate) -> Self {
        TaskTemplateView {
            name: t.name,
            queue: t.queue,
            payload: t.payload,
            priority: t.priority.get(),
            max_attempts: t.max_attempts,
            backoff: t.backoff,
            timeout_ms: t.timeout_ms,
        }
    }
}

/// One run of a schedule: an occurrence whose instant has come (or a manual trigger), with its
/// live state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleRunView {
    pub task_id: Uuid,
    /// The occurrence's instant, with the schedule zone's offset.
    #[schema(format = DateTime)]
    pub fire_at: Option<String>,
    /// pending, scheduled, queued, running, retrying, completed, dead or cancelled.
    #[schema(pattern = "^(pending|scheduled|queued|running|retrying|completed|dead|cancelled)$")]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A schedule. Fire instants (`next_fires`, `last_fire_at`, `runs[].fire_at`) carry the
/// schedule zone's UTC offset (`2026-03-29T03:00:00+02:00`); bookkeeping times are UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplateView,
    pub paused: bool,
    #[schema(pattern = "^(allow|skip|queue_one)$")]
    pub overlap: String,
    #[schema(pattern = "^(run_all|run_once|skip)$")]
    pub misfire: String,
    /// The key id that created it.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every occurrence up to this instant has been planned as a task (or skipped by the
    /// misfire policy).
    pub planned_until: DateTime<Utc>,
    /// The latest occurrence whose instant has come.
    #[schema(format = DateTime)]
    pub last_fire_at: Option<String>,
    /// The next five fire instants from now; empty while paused.
    pub next_fires: Vec<String>,
    /// The last 10 runs, newest first (`GET /v1/schedules/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<ScheduleRunView>>,
}

/// An instant as RFC 3339 with the zone's offset at that instant.
pub fn zoned(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).to_rfc3339()
}

/// How many upcoming fires a schedule view lists.
pub const NEXT_FIRES: usize = 5;

impl ScheduleView {
    pub fn new(s: ScheduleRecord, now: DateTime<Utc>) -> Self {
        // Stored zones were validated on the way in; UTC only if the zone database lost one.
        let tz = chronos_core::cron::parse_timezone(&s.timezone).unwrap_or(Tz::UTC);
        let next_fires = if s.paused { Vec::new() } else { s.next_fires(now, NEXT_FIRES).into_iter().map(|t| zoned(t, tz)).collect() };
        ScheduleView {
            id: s.id,
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            task: s.task.into(),
            paused: s.paused,
            overlap: s.overlap.as_str().into(),
            misfire: s.misfire.as_str().into(),
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
            planned_until: s.planned_until,
            last_fire_at: s.last_fire_at.map(|t| zoned(t, tz)),
            next_fires,
            runs: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulePage {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `after` for the next page (the last name of this one); absent on the last page.
    pub next_cursor: Option<String>,
}

/// What `POST /v1/schedules/{id}/trigger` started.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggeredRun {
    pub schedule_id: Uuid,
    pub task_id: Uuid,
    pub task: TaskView,
}

/// The fire instants of a cron expression in a zone, computed without creating anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulePreview {
    pub cron: String,
    pub timezone: String,
    /// RFC 3339 with the zone's offset at each instant, ascending.
    pub next_fires: Vec<String>,
    /// Debian cron's DST rule applies (a 5-field expression whose minute and hour do not start
    /// with `*`): a wall time skipped by a spring-forward runs once at the end of the gap, a
    /// repeated one runs once.
    pub fixed_time: bool,
    /// The expression has a leading seconds field.
    pub has_seconds: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    pub redis: String,
    pub postgres: String,
}
