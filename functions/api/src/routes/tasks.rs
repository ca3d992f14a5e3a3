//! `/v1/tasks`: create (single and batch), read, list and search, attempts, cancel, retry now.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use chronos_core::access::Caller;
use chronos_core::store::TaskFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::parse_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};
use crate::views::*;

pub const MAX_BATCH: usize = 1000;

/// The task if it exists and the caller may see it (producers see only their own), with its
/// live state.
pub(crate) async fn visible_task(state: &AppState, caller: &Caller, id: &str) -> ApiResult<TaskView> {
    Ok(state.chronos.task(caller, parse_id(id)?).await?.into())
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
    let s = state.chronos.submit(task, &caller).await?;
    if s.created {
        state.metrics.tasks_created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok((if s.created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(TaskView::from(s.task))))
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
    let items: Vec<BatchItem> = state
        .chronos
        .submit_batch(tasks, &caller)
        .await?
        .into_iter()
        .map(|s| BatchItem { created: s.created, task: s.task.into() })
        .collect();
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
    Ok(axum::Json(visible_task(&state, &caller, &id).await?))
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

/// The listing filter of `GET /v1/tasks` (the CLI's `chronos tasks` takes the same).
pub fn build_filter(p: ListParams) -> ApiResult<TaskFilter> {
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
        created_by: None,
        before_id,
        error_group: None,
        limit,
    })
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
    Ok(axum::Json(state.chronos.task_page(&caller, build_filter(p)?).await?.into()))
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
    let attempts = state.chronos.attempts(&caller, parse_id(&id)?).await?;
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
    Ok(axum::Json(state.chronos.cancel(&caller, parse_id(&id)?).await?.into()))
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
    Ok(axum::Json(state.chronos.retry_now(&caller, parse_id(&id)?).await?.into()))
}
