//! `/v1/dlq`: dead tasks with their last error; redrive one back as a fresh attempt, or many
//! as a job ([`super::jobs`]), removing their messages from the SQS dead-letter queue.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use chronos_core::access::Caller;
use chronos_core::jobs::{JobKind, Selection};
use chronos_core::store::TaskFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::jobs::{JobView, accepted};
use super::parse_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};
use crate::views::{RedriveFilter, TaskPage, TaskView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqParams {
    #[param(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    #[param(pattern = "^[^\\x00]*$")]
    pub name: Option<String>,
    /// 1–500, default 50.
    #[serde(default, deserialize_with = "de_opt_num")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

/// Dead tasks, newest first, each with its last error.
#[utoipa::path(get, path = "/v1/dlq", tag = "dlq", params(DlqParams),
    responses(
        (status = 200, body = TaskPage),
        AuthErrors, InputErrors,
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(p): StrictQuery<DlqParams>,
) -> ApiResult<axum::Json<TaskPage>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1–500"));
    }
    let before_id = p
        .cursor
        .map(|c| uuid::Uuid::parse_str(&c).map_err(|_| ApiError::validation("cursor", "is not a cursor returned by this API")))
        .transpose()?;
    let filter = TaskFilter { queue: p.queue, name: p.name, before_id, limit, ..Default::default() };
    Ok(axum::Json(state.chronos.dead_tasks(&caller, filter).await?.into()))
}

/// Put one dead task back as a fresh attempt and remove its SQS message.
#[utoipa::path(post, path = "/v1/dlq/{id}/redrive", tag = "dlq", params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(
        (status = 200, description = "The task, queued again", body = TaskView),
        AuthErrors, IdErrors, StateErrors,
    ))]
pub async fn redrive_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<TaskView>> {
    Ok(axum::Json(state.chronos.redrive(&caller, parse_id(&id)?).await?.into()))
}

/// Redrive every dead task (or those of one queue / name / error) as a job: `202` at once,
/// progress and result at `GET /v1/jobs/{id}`.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "dlq", request_body = RedriveFilter,
    responses(
        (status = 202, description = "Accepted; `Location` is the job", body = JobView),
        AuthErrors, BodyErrors,
    ))]
pub async fn redrive_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(f): StrictJson<RedriveFilter>,
) -> ApiResult<Response> {
    let selection = Selection { queue: f.queue, name: f.name, error: f.error, ..Default::default() };
    Ok(accepted(state.chronos.start_job(&caller, JobKind::Redrive, selection).await?))
}
