//! `/v1/tasks`: create (single and batch), read, list and search, attempts, cancel, retry now.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use chronos_core::access::Caller;
use chronos_core::store::TaskFilter;
use chronos_core::telemetry;
use serde::Deserialize;
use tracing::Instrument;
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
    headers: HeaderMap,
    StrictJson(mut req): StrictJson<CreateTask>,
) -> ApiResult<impl IntoResponse> {
    if req.children.is_some() {
        return Err(ApiError::validation("children", "a task with children is a flow: send it to POST /v1/flows"));
    }
    let depends_on = req.depends_on.take();
    let on_failure = req.on_child_failure.take();
    if depends_on.is_none() && on_failure.is_some() {
        return Err(ApiError::validation("on_child_failure", "applies only with depends_on (or to a flow's task with children)"));
    }
    let mut task = req.into_task("", &caller.key_id)?;
    let span = enqueue_span(1);
    task.trace_context = trace_context(&span, &headers);
    let s = match depends_on {
        Some(deps) => state.chronos.submit_after(task, &deps, on_failure.unwrap_or_default(), &caller).instrument(span).await?,
        None => state.chronos.submit(task, &caller).instrument(span).await?,
    };
    if s.created {
        state.metrics.tasks_created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok((if s.created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(TaskView::from(s.task))))
}

/// The span of a submission (a child of the request's span) when traces are on; none otherwise.
pub(crate) fn enqueue_span(tasks: usize) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: telemetry::TARGET, "chronos.enqueue", otel.kind = "producer", chronos.tasks = tasks)
}

/// What the worker continues: the enqueue span when traces are on, else the caller's own valid
/// `traceparent` (kept as sent, so a worker that exports traces still joins the caller's trace).
pub(crate) fn trace_context(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    telemetry::traceparent(span).or_else(|| {
        let tp = headers.get("traceparent")?.to_str().ok()?;
        telemetry::parse_traceparent(tp).and_then(|cx| telemetry::traceparent_of(&cx))
    })
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
    headers: HeaderMap,
    StrictJson(req): StrictJson<CreateBatch>,
) -> ApiResult<impl IntoResponse> {
    if req.tasks.is_empty() || req.tasks.len() > MAX_BATCH {
        return Err(ApiError::validation("tasks", format!("give 1–{MAX_BATCH} tasks (got {})", req.tasks.len())));
    }
    let mut tasks = Vec::with_capacity(req.tasks.len());
    for (i, t) in req.tasks.into_iter().enumerate() {
        t.refuse_flow_fields(
            &format!("tasks[{i}]."),
            "not in a batch: send a task that waits for others to POST /v1/tasks (depends_on) or POST /v1/flows (children)",
        )?;
        let task = t.into_task(&format!("tasks[{i}]."), &caller.key_id)?;
        // Validate here so an error names the item; enqueue validates again (cheap).
        task.clone().prepare(state.chronos.max_payload_bytes).map_err(|e| match e {
            chronos_core::Error::Invalid { field, message } => ApiError::validation(format!("tasks[{i}].{field}"), message),
            other => other.into(),
        })?;
        tasks.push(task);
    }
    let span = enqueue_span(tasks.len());
    let tc = trace_context(&span, &headers);
    for t in &mut tasks {
        t.trace_context.clone_from(&tc);
    }
    let items: Vec<BatchItem> = state
        .chronos
        .submit_batch(tasks, &caller)
        .instrument(span)
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
    /// pending, scheduled, queued, running, retrying, completed, dead or cancelled.
    #[param(pattern = "^(pending|scheduled|queued|running|retrying|completed|dead|cancelled)$")]
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
                format!("{s:?} is not a status; use pending, scheduled, queued, running, retrying, completed, dead or cancelled"),
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

/// The tasks one waits (or waited) for: a flow's children, or those named by `depends_on`, each
/// with its status and, once it completed, its result.
#[utoipa::path(get, path = "/v1/tasks/{id}/dependencies", tag = "tasks", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, body = DependenciesView),
        AuthErrors, IdErrors,
    ))]
pub async fn dependencies(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<DependenciesView>> {
    let deps = state.chronos.dependencies(&caller, parse_id(&id)?).await?;
    Ok(axum::Json(DependenciesView { dependencies: deps.into_iter().map(DependencyView::from).collect() }))
}

/// Cancel: a waiting, scheduled, retrying or dead task is cancelled at once; a running one is
/// flagged and its handler told (`cancel_requested: true`). A `pending` task (waiting for
/// others) is cancelled at once, and with it what is unfinished of its flow's subtree.
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
