//! Reading tasks and acting on them: the use cases the API, the CLI and the dashboard share.
//!
//! A task's durable record is its Postgres row; Redis knows a transition first. Every read that
//! shows a task to a person puts the Redis task hash's live fields on top of the row
//! ([`apply_live`]), and every action answers with the task as it is after the action.

use std::collections::HashMap;

use chrono::Utc;

use super::Chronos;
use crate::access::Caller;
use crate::error::{Error, Result};
use crate::model::{NewTask, Schedule, Status, TaskId, stored_precision};
use crate::queue::{CancelOutcome, RetryNowOutcome};
use crate::store::{AttemptRecord, ManualAction, TaskFilter, TaskRecord};

/// One page of a task listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    /// Pass as [`TaskFilter::before_id`] for the next page; `None` on the last one.
    pub next_cursor: Option<TaskId>,
}

/// The result of submitting a task through [`Chronos::submit`].
#[derive(Debug, Clone)]
pub struct SubmittedTask {
    /// False when an idempotency key named an earlier task (which `task` is).
    pub created: bool,
    pub task: TaskRecord,
}

impl TaskRecord {
    /// The record of a task just accepted, without another round trip: what Postgres stored
    /// (times at its precision, from the task's `submitted_at`).
    pub fn just_created(id: TaskId, t: &NewTask, created_by: Option<&str>) -> TaskRecord {
        let now = t.submitted_at.unwrap_or_else(|| stored_precision(Utc::now()));
        let run_at = t.first_run_at(now);
        let status = if matches!(t.schedule, Schedule::Now) || run_at <= now { "queued" } else { "scheduled" };
        TaskRecord {
            id,
            queue: t.queue.clone(),
            name: t.name.clone(),
            payload: t.payload.clone(),
            priority: t.priority.get() as i16,
            status: status.into(),
            run_at,
            attempts: 0,
            max_attempts: t.max_attempts as i32,
            backoff: serde_json::to_value(t.backoff).unwrap_or_default(),
            timeout_ms: t.timeout.as_millis() as i64,
            idempotency_key: t.idempotency_key.clone(),
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            created_by: created_by.map(str::to_owned),
            schedule_id: t.origin.map(|o| o.schedule_id),
            fire_at: t.origin.map(|o| o.fire_at),
            group: t.group.clone(),
            result: None,
            expires_at: t.expires_at,
            progress: None,
            trace_context: t.trace_context.clone(),
            pending_deps: 0,
            on_child_failure: None,
            cancel_requested: false,
        }
    }
}

/// Put Redis's live state (the task hash's fields) on top of Postgres's record. A task no
/// longer in Redis keeps its Postgres view.
fn apply_live(v: &mut TaskRecord, f: &HashMap<String, String>) {
    let Some(st) = f.get("st") else { return };
    v.status = st.clone();
    if let Some(a) = f.get("a").and_then(|a| a.parse().ok()) {
        v.attempts = v.attempts.max(a);
    }
    if let Some(ma) = f.get("ma").and_then(|a| a.parse().ok()) {
        v.max_attempts = ma;
    }
    if let Some(le) = f.get("le") {
        v.last_error = Some(le.clone());
    }
    v.cancel_requested = f.get("cx").map(String::as_str) == Some("1");
    if let Some(pg) = f.get("pg").and_then(|p| serde_json::from_str(p).ok()) {
        v.progress = Some(pg);
    }
    if !st.parse::<Status>().is_ok_and(Status::is_terminal) {
        v.finished_at = None;
    }
}

fn refused_retry(status: &str) -> Error {
    Error::Conflict(format!("the task is {status}; only scheduled, retrying or dead tasks can be retried now"))
}

fn no_task(id: TaskId) -> Error {
    Error::NotFound(format!("no task {id}"))
}

impl Chronos {
    /// Submit one task; an idempotency hit answers with the earlier task as it is now.
    pub async fn submit(&self, mut task: NewTask, caller: &Caller) -> Result<SubmittedTask> {
        task.submitted_at.get_or_insert_with(|| stored_precision(Utc::now()));
        let s = self.enqueue(task.clone()).await?;
        if s.created {
            return Ok(SubmittedTask { created: true, task: TaskRecord::just_created(s.id, &task, Some(&caller.key_id)) });
        }
        let rec = self.store.get_task(s.id).await?.ok_or_else(|| no_task(s.id))?;
        self.enqueue_if_never_enqueued(&rec).await?;
        Ok(SubmittedTask { created: false, task: self.live_one(rec).await })
    }

    /// A repeated idempotency key may name a task whose first submission died between its
    /// Postgres commit and its Redis enqueue (the API process killed mid-request): the producer
    /// retrying is told the task exists, so it must also run. A task that never started and
    /// that Redis does not hold is handed to [`crate::reconcile::restore_if_never_enqueued`].
    async fn enqueue_if_never_enqueued(&self, rec: &TaskRecord) -> Result<()> {
        if rec.attempts == 0
            && matches!(rec.status.as_str(), "queued" | "scheduled")
            && !self.engine.task_fields(&rec.queue, rec.id).await?.contains_key("st")
        {
            crate::reconcile::restore_if_never_enqueued(&self.engine, &self.store, &rec.queue, rec.id).await?;
        }
        Ok(())
    }

    /// Submit a batch (all-or-nothing validation, one write); one answer per task in order.
    pub async fn submit_batch(&self, mut tasks: Vec<NewTask>, caller: &Caller) -> Result<Vec<SubmittedTask>> {
        let now = stored_precision(Utc::now());
        for t in &mut tasks {
            t.submitted_at.get_or_insert(now);
        }
        let submitted = self.enqueue_batch(tasks.clone()).await?;
        let mut out = Vec::with_capacity(submitted.len());
        for (s, t) in submitted.iter().zip(&tasks) {
            let task = if s.created {
                TaskRecord::just_created(s.id, t, Some(&caller.key_id))
            } else {
                match self.store.get_task(s.id).await? {
                    Some(rec) => {
                        self.enqueue_if_never_enqueued(&rec).await?;
                        self.live_one(rec).await
                    }
                    // An earlier item of this same batch.
                    None => TaskRecord::just_created(s.id, t, Some(&caller.key_id)),
                }
            };
            out.push(SubmittedTask { created: s.created, task });
        }
        Ok(out)
    }

    /// The task's Postgres record if it exists and `caller` may see it (producers see only
    /// their own); live state not applied.
    pub async fn task_record(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord> {
        match self.store.get_task(id).await? {
            Some(r) if !caller.role.sees_only_own_tasks() || r.created_by.as_deref() == Some(caller.key_id.as_str()) => Ok(r),
            _ => Err(no_task(id)),
        }
    }

    /// The task as it is now (Postgres record, Redis live state on top), if `caller` may see it.
    /// While Postgres cannot be read, a task Redis still holds is answered from Redis alone
    /// ([`Chronos::task_from_redis`]).
    pub async fn task(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord> {
        if self.store.recently_unreachable()
            && let Some(rec) = self.task_from_redis(caller, id).await?
        {
            return Ok(rec);
        }
        let rec = match self.task_record(caller, id).await {
            Err(Error::Postgres(e)) => {
                self.store.note_unreachable();
                return self.task_from_redis(caller, id).await?.ok_or(Error::Postgres(e));
            }
            other => other?,
        };
        Ok(self.live_one(rec).await)
    }

    /// The task from its Redis hash and payload, for while Postgres is down: a task that is
    /// waiting, scheduled, running or retrying, or finished within the tombstone window. Redis
    /// does not record who submitted a task, so a producer key (which sees only its own) gets
    /// `None`; so does a task Redis no longer holds. `created_by`, `fire_at` and `finished_at`
    /// are not known there and left empty.
    pub async fn task_from_redis(&self, caller: &Caller, id: TaskId) -> Result<Option<TaskRecord>> {
        if caller.role.sees_only_own_tasks() {
            return Ok(None);
        }
        let queues = self.engine.queues().await?;
        let keys: Vec<(&str, TaskId)> = queues.iter().map(|q| (q.as_str(), id)).collect();
        let found = self.engine.task_fields_many(&keys).await?;
        let Some((queue, f)) = queues.iter().zip(found).find(|(_, f)| f.contains_key("st") && f.contains_key("n")) else {
            return Ok(None);
        };
        let mut conn = self.engine.connection();
        let payload: Option<String> =
            redis::cmd("GET").arg(self.engine.keys(queue).payload(&id.to_string())).query_async(&mut conn).await?;
        let ms = |k: &str| {
            f.get(k).and_then(|v| v.parse::<i64>().ok()).and_then(chrono::DateTime::from_timestamp_millis).unwrap_or_else(Utc::now)
        };
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let mut rec = TaskRecord {
            id,
            queue: queue.clone(),
            name: f["n"].clone(),
            payload: payload.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(serde_json::Value::Null),
            priority: num("pr") as i16,
            status: String::new(),
            run_at: ms("ra"),
            attempts: 0,
            max_attempts: num("ma") as i32,
            backoff: f
                .get("bk")
                .and_then(|b| crate::model::Backoff::decode(b))
                .and_then(|b| serde_json::to_value(b).ok())
                .unwrap_or_default(),
            timeout_ms: num("to"),
            idempotency_key: f.get("ik").filter(|k| !k.is_empty()).cloned(),
            last_error: None,
            created_at: ms("ca"),
            updated_at: Utc::now(),
            finished_at: None,
            created_by: None,
            schedule_id: f.get("sg").and_then(|s| s.parse().ok()),
            fire_at: None,
            group: f.get("g").cloned(),
            result: None,
            expires_at: f.get("ex").and_then(|v| v.parse::<i64>().ok()).and_then(chrono::DateTime::from_timestamp_millis),
            progress: None,
            trace_context: f.get("tc").cloned(),
            pending_deps: 0,
            on_child_failure: None,
            cancel_requested: false,
        };
        apply_live(&mut rec, &f);
        Ok(Some(rec))
    }

    /// Tasks matching `filter`, newest first, from Postgres (the audit record). A producer's
    /// listing is narrowed to its own tasks whatever the filter says.
    pub async fn tasks(&self, caller: &Caller, mut filter: TaskFilter) -> Result<Vec<TaskRecord>> {
        if caller.role.sees_only_own_tasks() {
            filter.created_by = Some(caller.key_id.clone());
        }
        self.store.list_tasks(&filter).await
    }

    /// One page of [`Chronos::tasks`]: `filter.limit` is the page size.
    pub async fn task_page(&self, caller: &Caller, mut filter: TaskFilter) -> Result<TaskPage> {
        let size = filter.limit.max(1);
        filter.limit = size + 1;
        let mut tasks = self.tasks(caller, filter).await?;
        let more = tasks.len() as i64 > size;
        tasks.truncate(size as usize);
        let next_cursor = if more { tasks.last().map(|t| t.id) } else { None };
        Ok(TaskPage { tasks, next_cursor })
    }

    /// Put the live state on a page of records, read from Redis in one round trip. Redis being
    /// unreachable leaves the Postgres view.
    pub async fn with_live(&self, mut recs: Vec<TaskRecord>) -> Vec<TaskRecord> {
        let keys: Vec<(&str, TaskId)> = recs.iter().map(|r| (r.queue.as_str(), r.id)).collect();
        let live = self.engine.task_fields_many(&keys).await.unwrap_or_default();
        for (r, f) in recs.iter_mut().zip(&live) {
            apply_live(r, f);
        }
        recs
    }

    pub(crate) async fn live_one(&self, mut rec: TaskRecord) -> TaskRecord {
        if let Ok(f) = self.engine.task_fields(&rec.queue, rec.id).await {
            apply_live(&mut rec, &f);
        }
        rec
    }

    /// Every attempt of a task `caller` may see.
    pub async fn attempts(&self, caller: &Caller, id: TaskId) -> Result<Vec<AttemptRecord>> {
        let rec = self.task_record(caller, id).await?;
        self.store.attempts(rec.id).await
    }

    /// The manual actions taken on a task `caller` may see, oldest first.
    pub async fn manual_actions(&self, caller: &Caller, id: TaskId) -> Result<Vec<ManualAction>> {
        let rec = self.task_record(caller, id).await?;
        self.store.manual_actions(rec.id).await
    }

    /// Cancel: a waiting, scheduled, retrying or dead task is cancelled at once; a running one
    /// is flagged and its handler told through the next heartbeat. Refusals are
    /// [`Error::Conflict`] saying why. A task that waits for others (`pending`, in Postgres
    /// only) is cancelled there; cancelling a flow's parent cancels its unfinished subtree too.
    pub async fn cancel(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord> {
        let rec = self.task_record(caller, id).await?;
        if rec.status == "pending" && self.cancel_pending(rec.id, &caller.key_id).await? {
            self.cancel_subtree(rec.id, &caller.key_id).await?;
            let mut task = self.store.get_task(rec.id).await?.unwrap_or(rec);
            task.status = "cancelled".into();
            return Ok(task);
        }
        // Pending a moment ago and released since: Redis holds it now.
        let rec = if rec.status == "pending" { self.store.get_task(rec.id).await?.unwrap_or(rec) } else { rec };
        let out = self.engine.cancel(&rec.queue, rec.id, &caller.key_id).await?;
        let status = rec.status.clone();
        let mut task = self.live_one(rec).await;
        match out {
            CancelOutcome::Cancelled { .. } => {
                task.status = "cancelled".into();
                task.finished_at = Some(Utc::now());
            }
            CancelOutcome::Cancelling => task.cancel_requested = true,
            CancelOutcome::AlreadyCancelling => return Err(Error::Conflict("the task is running and already being cancelled".into())),
            CancelOutcome::NotFound => {
                return Err(Error::Conflict(format!(
                    "the task is {status}; only waiting, scheduled, retrying, running or dead tasks can be cancelled"
                )));
            }
        }
        Ok(task)
    }

    /// Retry now: a scheduled, retrying or dead task is queued at once (a dead one with a
    /// fresh attempt budget).
    pub async fn retry_now(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord> {
        let rec = self.task_record(caller, id).await?;
        self.retry_record(caller, rec).await
    }

    pub(super) async fn retry_record(&self, caller: &Caller, rec: TaskRecord) -> Result<TaskRecord> {
        let out = self.engine.retry_now(&rec.queue, rec.id, &caller.key_id).await?;
        let status = rec.status.clone();
        let mut task = self.live_one(rec).await;
        match out {
            RetryNowOutcome::Queued { .. } => {
                task.status = "queued".into();
                task.finished_at = None;
                task.run_at = Utc::now();
                Ok(task)
            }
            RetryNowOutcome::Refused { status } => Err(refused_retry(&status)),
            RetryNowOutcome::NotFound => Err(refused_retry(&status)),
        }
    }
}
