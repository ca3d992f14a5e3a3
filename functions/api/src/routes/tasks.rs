//! `/v1/tasks`: create (single and batch), read, list and search, attempts, cancel, retry now.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use chronos_core::access::Caller;
use std::collections::HashMap;

use chronos_core::Status;
use chronos_core::model::{NewTask, Schedule, TaskId};
use chronos_core::queue::{CancelOutcome, RetryNowOutcome};
use chronos_core::store::{TaskFilter, TaskRecord};
use serde::Deserialize;
use utoipa::IntoParams;

use super::parse_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};
use crate::views::*;

pub const MAX_BATCH: usize = 1000;

/// The view of a task just created, without another round trip.
fn created_view(id: TaskId, t: &NewTask) -> TaskView {
    let now = Utc::now();
    let (status, run_at) = match t.schedule {
        Schedule::Now => ("queued", now),
        Schedule::At(at) if at <= now => ("queued", at),
        Schedule::At(at) => ("scheduled", at),
        Schedule::After(d) => ("scheduled", now + chrono::Duration::from_std(d).unwrap_or_default()),
    };
    TaskView {
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
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        finished_at: None,
        schedule_id: t.origin.map(|o| o.schedule_id),
        fire_at: t.origin.map(|o| o.fire_at),
    }
}

/// Put Redis's live state (the task hash's fields) on top of Postgres's record: Redis knows a
/// transition first. A task no longer in Redis keeps its Postgres view.
fn apply_live(v: &mut TaskView, f: &HashMap<String, String>) {
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
    if !st.parse::<Status>().is_ok_and(Status::is_terminal) {
        v.finished_at = None;
    }
}

/// One task's view with its live state.
pub(crate) async fn live_view(state: &AppState, rec: TaskRecord) -> TaskView {
    let (queue, id) = (rec.queue.clone(), rec.id);
    let mut v = TaskView::from(rec);
    if let Ok(f) = state.chronos.engine.task_fields(&queue, id).await {
        apply_live(&mut v, &f);
    }
    v
}

/// Many tasks' views with their live state, read from Redis in one round trip.
pub(crate) async fn live_views(state: &AppState, recs: Vec<TaskRecord>) -> Vec<TaskView> {
    let keys: Vec<(String, TaskId)> = recs.iter().map(|r| (r.queue.clone(), r.id)).collect();
    let refs: Vec<(&str, TaskId)> = keys.iter().map(|(q, id)| (q.as_str(), *id)).collect();
    let live = state.chronos.engine.task_fields_many(&refs).await.unwrap_or_default();
    recs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = TaskView::from(r);
            if let Some(f) = live.get(i) {
                apply_live(&mut v, f);
            }
            v
        })
        .collect()
}

/// The task if it exists and the caller may see it (producers see only their own).
pub(crate) async fn visible_task(state: &AppState, caller: &Caller, id: &str) -> ApiResult<TaskRecord> {
    let id = parse_id(id)?;
    let rec = state.chronos.store.get_task(id).await?;
    match rec {
        Some(r) if !caller.role.sees_only_own_tasks() || r.created_by.as_deref() == Some(caller.key_id.as_str()) => Ok(r),
        _ => Err(ApiError::not_found(format!("no task {id}"))),
    }
}

/// Create a task.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = CreateTask,
    responses(
        (status = 201, description = "Created", body = TaskView),
        (status = 200, description = "The idempotency key named an existing task; no second task was created", body = TaskView),
        AuthErrors, BodyErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<CreateTask>,
) -> ApiResult<impl IntoResponse> {
    let task = req.into_task("", &caller.key_id)?;
    let submitted = state.chronos.enqueue(task.clone()).await?;
    if submitted.created {
        state.metrics.tasks_created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok((StatusCode::CREATED, axum::Json(created_view(submitted.id, &task))));
    }
    let rec = state.chronos.store.get_task(submitted.id).await?.ok_or_else(ApiError::internal)?;
    Ok((StatusCode::OK, axum::Json(live_view(&state, rec).await)))
}

/// Create up to 1,000 tasks in one call: all-or-nothing validation, one Postgres transaction
/// and one Redis round trip.
#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", request_body = CreateBatch,
    responses(
        (status = 201, description = "Created (items whose idempotency key named an existing task say `created: false`)", body = BatchResponse),
        AuthErrors, BodyErrors,
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<CreateBatch>,
) -> ApiResult<impl IntoResponse> {
    if req.tasks.is_empty() || req.tasks.len() > MAX_BATCH {
        return Err(ApiError::validation("tasks", format!("give 1–{MAX_BATCH} tasks (got {})", req.tasks.len())));
    }
    let mut tasks = Vec::with_capacity(req.tasks.len());
    for (i, t) in req.tasks.into_iter().enumerate() {
        let task = t.into_task(&format!("tasks[{i}]."), &caller.key_id)?;
        // Validate here so an error names the item; enqueue validates again (cheap).
        task.clone().prepare(state.chronos.max_payload_bytes).map_err(|e| match e {
            chronos_core::Error::Invalid { field, message } => ApiError::validation(format!("tasks[{i}].{field}"), message),
            other => other.into(),
        })?;
        tasks.push(task);
    }
    let submitted = state.chronos.enqueue_batch(tasks.clone()).await?;
    let mut items = Vec::with_capacity(submitted.len());
    for (s, t) in submitted.iter().zip(&tasks) {
        let task = if s.created {
            created_view(s.id, t)
        } else {
            match state.chronos.store.get_task(s.id).await? {
                Some(rec) => live_view(&state, rec).await,
                None => created_view(s.id, t), // an earlier item of this same batch
            }
        };
        items.push(BatchItem { created: s.created, task });
    }
    let n = items.iter().filter(|i| i.created).count() as u64;
    state.metrics.tasks_created.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok((StatusCode::CREATED, axum::Json(BatchResponse { tasks: items })))
}

/// A task with its status, attempts, last error and timestamps.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, body = TaskView),
        AuthErrors, IdErrors,
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<TaskView>> {
    let rec = visible_task(&state, &caller, &id).await?;
    Ok(axum::Json(live_view(&state, rec).await))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// scheduled, queued, running, retrying, completed, dead or cancelled.
    #[param(pattern = "^(scheduled|queued|running|retrying|completed|dead|cancelled)$")]
    pub status: Option<String>,
    #[param(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    #[param(pattern = "^[^\\x00]*$")]
    pub name: Option<String>,
    /// RFC 3339; tasks created at or after.
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// RFC 3339; tasks created before.
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// Full-text search over name, payload text and error messages (web-search syntax); at most
    /// 500 characters.
    #[param(max_length = 500, pattern = "^[^\\x00]*$")]
    pub q: Option<String>,
    /// 1–500, default 50.
    #[serde(default, deserialize_with = "de_opt_num")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

fn parse_time(field: &'static str, v: Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::validation(field, format!("{s:?} is not an RFC 3339 time")))
    })
    .transpose()
}

pub(crate) fn build_filter(p: ListParams, caller: &Caller) -> ApiResult<TaskFilter> {
    if let Some(s) = &p.status {
        s.parse::<chronos_core::Status>().map_err(|_| {
            ApiError::validation(
                "status",
                format!("{s:?} is not a status; use scheduled, queued, running, retrying, completed, dead or cancelled"),
            )
        })?;
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1–500"));
    }
    let before_id = p
        .cursor
        .map(|c| uuid::Uuid::parse_str(&c).map_err(|_| ApiError::validation("cursor", "is not a cursor returned by this API")))
        .transpose()?;
    let q = p.q.filter(|q| !q.trim().is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 500) {
        return Err(ApiError::validation("q", "must be at most 500 characters"));
    }
    Ok(TaskFilter {
        status: p.status,
        queue: p.queue,
        name: p.name,
        created_after: parse_time("created_after", p.created_after)?,
        created_before: parse_time("created_before", p.created_before)?,
        q,
        created_by: caller.role.sees_only_own_tasks().then(|| caller.key_id.clone()),
        before_id,
        limit: limit + 1,
    })
}

pub(crate) fn page(mut tasks: Vec<TaskRecord>, limit: i64) -> (Vec<TaskRecord>, Option<String>) {
    let more = tasks.len() as i64 > limit - 1;
    tasks.truncate((limit - 1) as usize);
    let next = if more { tasks.last().map(|t| t.id.to_string()) } else { None };
    (tasks, next)
}

/// List and search tasks, newest first, with cursor pagination.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListParams),
    responses(
        (status = 200, body = TaskPage),
        AuthErrors, InputErrors,
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(p): StrictQuery<ListParams>,
) -> ApiResult<axum::Json<TaskPage>> {
    let filter = build_filter(p, &caller)?;
    let rows = state.chronos.store.list_tasks(&filter).await?;
    let (rows, next_cursor) = page(rows, filter.limit);
    Ok(axum::Json(TaskPage { tasks: rows.into_iter().map(TaskView::from).collect(), next_cursor }))
}

/// Every attempt of a task: worker, timings, outcome, error and stack trace.
#[utoipa::path(get, path = "/v1/tasks/{id}/attempts", tag = "tasks", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, body = AttemptList),
        AuthErrors, IdErrors,
    ))]
pub async fn attempts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<AttemptList>> {
    let rec = visible_task(&state, &caller, &id).await?;
    let attempts = state.chronos.store.attempts(rec.id).await?;
    Ok(axum::Json(AttemptList { attempts: attempts.into_iter().map(AttemptView::from).collect() }))
}

/// Cancel: a waiting, scheduled, retrying or dead task is cancelled at once; a running one is
/// flagged and its handler told (`cancel_requested: true`).
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, description = "The task's new state", body = TaskView),
        AuthErrors, IdErrors, StateErrors,
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<TaskView>> {
    let rec = visible_task(&state, &caller, &id).await?;
    let out = state.chronos.engine.cancel(&rec.queue, rec.id, &caller.key_id).await?;
    let status = rec.status.clone();
    let mut view = live_view(&state, rec).await;
    match out {
        CancelOutcome::Cancelled { .. } => {
            view.status = "cancelled".into();
            view.finished_at = Some(Utc::now());
        }
        CancelOutcome::Cancelling => view.cancel_requested = true,
        CancelOutcome::AlreadyCancelling => return Err(ApiError::conflict("the task is running and already being cancelled")),
        CancelOutcome::NotFound => {
            return Err(ApiError::conflict(format!(
                "the task is {status}; only waiting, scheduled, retrying, running or dead tasks can be cancelled"
            )));
        }
    }
    Ok(axum::Json(view))
}

/// Retry now: a scheduled, retrying or dead task is queued at once (a dead one with a fresh
/// attempt budget).
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", tag = "tasks", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, description = "The task's new state", body = TaskView),
        AuthErrors, IdErrors, StateErrors,
    ))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<TaskView>> {
    let rec = visible_task(&state, &caller, &id).await?;
    retry_record(&state, &caller, rec).await.map(axum::Json)
}

pub(crate) async fn retry_record(state: &AppState, caller: &Caller, rec: TaskRecord) -> ApiResult<TaskView> {
    let out = state.chronos.engine.retry_now(&rec.queue, rec.id, &caller.key_id).await?;
    let status = rec.status.clone();
    let mut view = live_view(state, rec).await;
    match out {
        RetryNowOutcome::Queued { .. } => {
            view.status = "queued".into();
            view.finished_at = None;
            view.run_at = Utc::now();
        }
        RetryNowOutcome::Refused { status } => {
            return Err(ApiError::conflict(format!("the task is {status}; only scheduled, retrying or dead tasks can be retried now")));
        }
        RetryNowOutcome::NotFound => {
            return Err(ApiError::conflict(format!("the task is {status}; only scheduled, retrying or dead tasks can be retried now")));
        }
    }
    Ok(view)
}
