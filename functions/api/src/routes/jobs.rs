//! `/v1/jobs`: bulk operations (redrive the dead-letter queue, cancel or retry every task a
//! filter selects) run in the background. Creating one answers `202` at once with the job and
//! a `Location`; `GET /v1/jobs/{id}` shows its progress and, when it ends, its result.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use chronos_core::access::{Caller, Permission};
use chronos_core::jobs::{Job, JobKind, Selection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::parse_uuid;
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};

/// Which tasks a job works on; every field given narrows it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[schema(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    #[schema(pattern = "^[^\\x00]*$")]
    pub name: Option<String>,
    /// `queued`, `scheduled`, `running`, `retrying`, `completed`, `dead` or `cancelled` (a
    /// redrive takes dead tasks only).
    #[schema(pattern = "^(queued|scheduled|running|retrying|completed|dead|cancelled)$")]
    pub status: Option<String>,
    /// Full-text search, as `GET /v1/tasks?q=`.
    #[schema(pattern = "^[^\\x00]*$")]
    pub q: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// The first line of the last error (the dashboard's dead-letter groups).
    #[schema(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
}

impl From<JobFilter> for Selection {
    fn from(f: JobFilter) -> Self {
        Selection {
            queue: f.queue,
            name: f.name,
            status: f.status,
            q: f.q,
            created_after: f.created_after,
            created_before: f.created_before,
            error: f.error,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// `redrive` (dead tasks back as fresh attempts, their SQS messages removed), `cancel` or
    /// `retry` (scheduled, retrying and dead tasks queued at once).
    #[schema(pattern = "^(redrive|cancel|retry)$")]
    pub kind: String,
    /// Which tasks; `cancel` and `retry` need at least one field.
    #[serde(default)]
    pub filter: JobFilter,
}

/// A bulk operation and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    /// `redrive`, `cancel` or `retry`.
    pub kind: String,
    /// The filter it was created with (a redrive's includes `status: dead`).
    #[schema(value_type = Object)]
    pub filter: serde_json::Value,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub state: String,
    /// `tasks` (working through the tasks), `letters` (removing SQS messages), `done`.
    pub phase: String,
    /// Tasks the filter matched when the job was created; tasks created later are not touched.
    pub total: i64,
    pub processed: i64,
    /// Tasks redriven, cancelled or queued again.
    pub succeeded: i64,
    /// Tasks the action did not apply to (e.g. no longer dead, already finished).
    pub skipped: i64,
    /// `processed / total`, 0–1.
    pub progress: f64,
    /// Redrive: SQS messages of redriven tasks removed.
    pub sqs_messages_removed: i64,
    /// Redrive: redriven tasks whose SQS message is still to be removed.
    pub sqs_letters_pending: i64,
    /// Redrive: redriven tasks whose SQS message no sweep found (never sent, or already consumed).
    pub sqs_letters_not_found: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The last failed step's error (the step is retried; the job fails after 20 in a row).
    pub last_error: Option<String>,
    pub cancel_requested: bool,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        let progress = if j.total == 0 { if j.is_finished() { 1.0 } else { 0.0 } } else { (j.processed as f64 / j.total as f64).min(1.0) };
        JobView {
            id: j.id,
            kind: j.kind.as_str().into(),
            filter: serde_json::to_value(&j.selection).unwrap_or_default(),
            state: j.state,
            phase: j.phase,
            total: j.total,
            processed: j.processed,
            succeeded: j.succeeded,
            skipped: j.skipped,
            progress,
            sqs_messages_removed: j.sqs_messages_removed,
            sqs_letters_pending: j.sqs_letters_pending,
            sqs_letters_not_found: j.sqs_letters_not_found,
            created_by: j.created_by,
            created_at: j.created_at,
            started_at: j.started_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
            last_error: j.last_error,
            cancel_requested: j.cancel_requested,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobParams {
    /// 1–200, default 20.
    #[serde(default, deserialize_with = "de_opt_num")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

/// `202 Accepted` with the job and where to follow it.
pub(crate) fn accepted(job: Job) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(JobView::from(job))).into_response()
}

/// Start a bulk operation; follow it at `GET /v1/jobs/{id}`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJob,
    responses(
        (status = 202, description = "Accepted; `Location` is the job", body = JobView),
        AuthErrors, BodyErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateJob>,
) -> ApiResult<Response> {
    let kind = JobKind::parse(&body.kind)?;
    if kind == JobKind::Redrive && !caller.role.allows(Permission::DlqManage) {
        return Err(ApiError::forbidden(format!("the {} role may not redrive the dead-letter queue", caller.role)));
    }
    Ok(accepted(state.chronos.start_job(&caller, kind, body.filter.into()).await.map_err(in_filter)?))
}

/// A selection error names its field inside `filter`.
fn in_filter(e: chronos_core::Error) -> ApiError {
    match e {
        chronos_core::Error::Invalid { field, message } if field != "kind" && field != "filter" => {
            ApiError::validation(format!("filter.{field}"), message)
        }
        e => e.into(),
    }
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobParams),
    responses(
        (status = 200, body = JobList),
        AuthErrors, InputErrors,
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(p): StrictQuery<JobParams>,
) -> ApiResult<axum::Json<JobList>> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1–200"));
    }
    let before = p
        .cursor
        .map(|c| Uuid::parse_str(&c).map_err(|_| ApiError::validation("cursor", "is not a cursor returned by this API")))
        .transpose()?;
    let mut jobs = state.chronos.jobs(&caller, before, limit + 1).await?;
    let more = jobs.len() as i64 > limit;
    jobs.truncate(limit as usize);
    let next_cursor = if more { jobs.last().map(|j| j.id) } else { None };
    Ok(axum::Json(JobList { jobs: jobs.into_iter().map(Into::into).collect(), next_cursor }))
}

/// One job: its progress, and its result once it ended.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "Job id (UUID)")),
    responses(
        (status = 200, body = JobView),
        AuthErrors, IdErrors,
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(state.chronos.job(&caller, parse_uuid(&id, "job")?).await?.into()))
}

/// Stop a job: a queued one at once, a running one after its current step (what it did stays done).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "Job id (UUID)")),
    responses(
        (status = 200, body = JobView),
        AuthErrors, IdErrors, StateErrors,
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(state.chronos.cancel_job(&caller, parse_uuid(&id, "job")?).await?.into()))
}
