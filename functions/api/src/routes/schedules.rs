//! `/v1/schedules`: recurring schedules (cron expression + time zone + task template) over
//! [`chronos_core::schedule::Scheduler`]: create, list, read (with the next fires and the last
//! runs), change, delete, pause, resume, run once now, and a preview of any expression's fire
//! instants. Creating, changing or resuming plans the occurrences at once; every change is
//! audited with the acting key.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use chronos_core::access::Caller;
use chronos_core::cron::{CronExpr, Tz, parse_timezone};
use chronos_core::schedule::{ChangeError, ScheduleRecord, validate_schedule_name};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::parse_schedule_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};
use crate::views::*;

/// Runs shown by `GET /v1/schedules/{id}`.
const RECENT_RUNS: i64 = 10;
const MAX_PREVIEW: usize = 100;

/// Check the parts that say when a schedule fires, in the order a reader fixes them, so the
/// error names `name`, `cron` or `timezone` before anything in `task`.
pub fn check_when(name: Option<&str>, cron: Option<&str>, timezone: Option<&str>) -> ApiResult<()> {
    if let Some(n) = name {
        validate_schedule_name(n)?;
    }
    if let Some(c) = cron {
        CronExpr::parse(c).map_err(chronos_core::Error::from)?;
    }
    if let Some(tz) = timezone {
        parse_timezone(tz).map_err(chronos_core::Error::from)?;
    }
    Ok(())
}

/// A schedule change refused by the core, as the client should see it.
fn change_error(e: ChangeError, id: Option<Uuid>, name: Option<&str>) -> ApiError {
    match e {
        ChangeError::NotFound => ApiError::not_found(match id {
            Some(id) => format!("no schedule {id}"),
            None => "the schedule was deleted meanwhile".to_owned(),
        }),
        ChangeError::NameTaken(_) => ApiError::conflict(match name {
            Some(n) => format!("a schedule named {n:?} already exists; pick another name or change that schedule"),
            None => "another schedule has this name".to_owned(),
        }),
        ChangeError::Other(e) => e.into(),
    }
}

async fn find(state: &AppState, id: &str) -> ApiResult<ScheduleRecord> {
    let id = parse_schedule_id(id)?;
    state.scheduler.get(id).await?.ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))
}

/// The schedule's latest runs with their live state from Redis.
async fn recent_runs(state: &AppState, s: &ScheduleRecord) -> ApiResult<Vec<ScheduleRunView>> {
    let tz = parse_timezone(&s.timezone).unwrap_or(Tz::UTC);
    let recs = state.scheduler.runs(s.id, RECENT_RUNS).await?;
    let fires: Vec<Option<DateTime<Utc>>> = recs.iter().map(|r| r.fire_at).collect();
    let views = state.chronos.with_live(recs).await;
    Ok(views
        .into_iter()
        .zip(fires)
        .map(|(v, fire_at)| ScheduleRunView {
            task_id: v.id,
            fire_at: fire_at.map(|t| zoned(t, tz)),
            status: v.status,
            attempts: v.attempts,
            last_error: v.last_error,
            finished_at: v.finished_at,
        })
        .collect())
}

/// Create a schedule. Its occurrences within the planning horizon are planned as tasks at once
/// (unless it is created paused).
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        AuthErrors, BodyErrors, StateErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<CreateSchedule>,
) -> ApiResult<impl IntoResponse> {
    check_when(Some(&req.name), Some(&req.cron), req.timezone.as_deref())?;
    let spec = req.into_spec(state.chronos.max_payload_bytes)?;
    let rec = state.scheduler.create_by(&caller, &spec).await.map_err(|e| change_error(e, None, Some(&spec.name)))?;
    Ok((StatusCode::CREATED, axum::Json(ScheduleView::new(rec, Utc::now()))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1–500, default 100.
    #[serde(default, deserialize_with = "de_opt_num")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page: schedules whose name sorts after this one.
    #[param(pattern = "^[^\\x00]*$")]
    pub after: Option<String>,
}

/// Every schedule, ordered by name, with cursor pagination.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ListParams),
    responses(
        (status = 200, body = SchedulePage),
        AuthErrors, InputErrors,
    ))]
pub async fn list(State(state): State<AppState>, StrictQuery(p): StrictQuery<ListParams>) -> ApiResult<axum::Json<SchedulePage>> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1–500"));
    }
    let mut rows = state.scheduler.list(p.after.as_deref(), limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|s| s.name.clone()) } else { None };
    let now = Utc::now();
    Ok(axum::Json(SchedulePage { schedules: rows.into_iter().map(|s| ScheduleView::new(s, now)).collect(), next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// The cron expression, as in `POST /v1/schedules`.
    #[param(example = "0 3 * * *", pattern = "^[^\\x00]*$")]
    pub cron: String,
    /// IANA time zone name, default `UTC`.
    #[param(example = "Europe/Berlin", pattern = "^[^\\x00]*$")]
    pub timezone: Option<String>,
    /// How many fire instants, 1–100, default 5.
    #[serde(default, deserialize_with = "de_opt_num")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub count: Option<i64>,
    /// RFC 3339; list instants strictly after this one (default now).
    #[param(format = DateTime)]
    pub after: Option<String>,
}

/// The next fire instants of a cron expression in a time zone, computed without creating
/// anything: check an expression (and its DST behaviour) before creating a schedule.
#[utoipa::path(get, path = "/v1/schedules/preview", tag = "schedules", params(PreviewParams),
    responses(
        (status = 200, body = SchedulePreview),
        AuthErrors, InputErrors,
    ))]
pub async fn preview(StrictQuery(p): StrictQuery<PreviewParams>) -> ApiResult<axum::Json<SchedulePreview>> {
    let expr = CronExpr::parse(&p.cron).map_err(chronos_core::Error::from)?;
    let tz = parse_timezone(p.timezone.as_deref().unwrap_or("UTC")).map_err(chronos_core::Error::from)?;
    let count = p.count.unwrap_or(5);
    if !(1..=MAX_PREVIEW as i64).contains(&count) {
        return Err(ApiError::validation("count", format!("must be 1–{MAX_PREVIEW}")));
    }
    let after = match p.after {
        None => Utc::now(),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::validation("after", format!("{s:?} is not an RFC 3339 time such as 2026-03-28T00:00:00Z")))?,
    };
    let next_fires = expr.next_n(tz, after, count as usize).into_iter().map(|t| zoned(t, tz)).collect();
    Ok(axum::Json(SchedulePreview {
        cron: expr.source().to_owned(),
        timezone: tz.name().to_owned(),
        next_fires,
        fixed_time: expr.is_fixed_time(),
        has_seconds: expr.has_seconds(),
    }))
}

/// A schedule with its next five fire instants and its last 10 runs (live state).
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 200, body = ScheduleView),
        AuthErrors, IdErrors,
    ))]
pub async fn get_one(State(state): State<AppState>, StrictPath(id): StrictPath<String>) -> ApiResult<axum::Json<ScheduleView>> {
    let rec = find(&state, &id).await?;
    let runs = recent_runs(&state, &rec).await?;
    let mut view = ScheduleView::new(rec, Utc::now());
    view.runs = Some(runs);
    Ok(axum::Json(view))
}

/// Change a schedule. A new `cron`, `timezone`, `task` or `overlap` drops the occurrences
/// planned under the old definition that have not started, and plans again from now.
#[utoipa::path(patch, path = "/v1/schedules/{id}", tag = "schedules", request_body = UpdateSchedule,
    params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 200, description = "The schedule as changed", body = ScheduleView),
        AuthErrors, BodyErrors, IdErrors, StateErrors,
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
    StrictJson(req): StrictJson<UpdateSchedule>,
) -> ApiResult<axum::Json<ScheduleView>> {
    let id = parse_schedule_id(&id)?;
    check_when(req.name.as_deref(), req.cron.as_deref(), req.timezone.as_deref())?;
    let patch = req.into_patch(state.chronos.max_payload_bytes)?;
    let rec = state.scheduler.update_by(&caller, id, &patch).await.map_err(|e| change_error(e, Some(id), patch.name.as_deref()))?;
    Ok(axum::Json(ScheduleView::new(rec, Utc::now())))
}

/// Delete a schedule and its planned occurrences that have not started. Past runs stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        AuthErrors, IdErrors,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<StatusCode> {
    let rec = find(&state, &id).await?;
    if state.scheduler.delete_by(&caller, rec.id).await?.is_none() {
        return Err(ApiError::not_found(format!("no schedule {}", rec.id)));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(state: &AppState, caller: &Caller, id: &str, paused: bool) -> ApiResult<ScheduleView> {
    let id = parse_schedule_id(id)?;
    let rec = state.scheduler.set_paused_by(caller, id, paused).await.map_err(|e| change_error(e, Some(id), None))?;
    Ok(ScheduleView::new(rec, Utc::now()))
}

/// Pause: the occurrences planned that have not started are dropped and nothing more is
/// planned until resumed. Pausing a paused schedule changes nothing.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 200, body = ScheduleView),
        AuthErrors, IdErrors,
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    set_paused(&state, &caller, &id, true).await.map(axum::Json)
}

/// Resume: plan again from now (occurrences that fell in the pause are not misfires and do not
/// run). Resuming a running schedule changes nothing.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 200, body = ScheduleView),
        AuthErrors, IdErrors,
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    set_paused(&state, &caller, &id, false).await.map(axum::Json)
}

/// Run the schedule's task once, now, outside its cron times (a paused schedule too; its
/// overlap policy does not apply).
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", tag = "schedules", params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses(
        (status = 202, description = "The task is queued", body = TriggeredRun),
        AuthErrors, IdErrors,
    ))]
pub async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_schedule_id(&id)?;
    let task_id = state.scheduler.trigger_by(&caller, id).await?.ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))?;
    let task = state.chronos.task(&caller, task_id).await?.into();
    Ok((StatusCode::ACCEPTED, axum::Json(TriggeredRun { schedule_id: id, task_id, task })))
}
