//! `/v1/queues`: live counts per queue; pause and resume (a paused queue accepts tasks, but
//! workers do not claim from it); limits (concurrency and rate, per queue and per group).

use chronos_core::limits::LimitsPatch;

use axum::Extension;
use axum::extract::State;
use chronos_core::access::Caller;

use crate::AppState;
use crate::error::{ApiResult, AuthErrors, BodyErrors, InputErrors};
use crate::json::{StrictJson, StrictPath};
use crate::views::{QueueList, QueueView};

/// Every queue with its waiting, scheduled, running, retrying, completed, dead and cancelled
/// counts, whether it is paused, the age of its oldest waiting task, how many live workers
/// serve it, and `unserved` when it has tasks to run and no worker serves it.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses(
        (status = 200, body = QueueList),
        AuthErrors,
    ))]
pub async fn list(State(state): State<AppState>) -> ApiResult<axum::Json<QueueList>> {
    let queues = state.chronos.queues().await?.into_iter().map(QueueView::from).collect();
    Ok(axum::Json(QueueList { queues }))
}

async fn set_paused(state: &AppState, caller: &Caller, queue: &str, paused: bool) -> ApiResult<QueueView> {
    Ok(state.chronos.set_queue_paused(caller, queue, paused).await?.into())
}

/// Pause a queue: it still accepts tasks; workers stop claiming from it.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", tag = "queues", params(("queue" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "Queue name: 1–64 of A–Z a–z 0–9 _ - .")),
    responses(
        (status = 200, body = QueueView),
        AuthErrors, InputErrors,
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(queue): StrictPath<String>,
) -> ApiResult<axum::Json<QueueView>> {
    set_paused(&state, &caller, &queue, true).await.map(axum::Json)
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", tag = "queues", params(("queue" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "Queue name: 1–64 of A–Z a–z 0–9 _ - .")),
    responses(
        (status = 200, body = QueueView),
        AuthErrors, InputErrors,
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(queue): StrictPath<String>,
) -> ApiResult<axum::Json<QueueView>> {
    set_paused(&state, &caller, &queue, false).await.map(axum::Json)
}

/// Change a queue's limits. An absent field stays as it is; `null` removes that limit. Applies
/// to the next claim of every worker.
///
/// - `concurrency`: attempts of the queue running at once, across all workers (1–1000000).
/// - `rate`: `{"limit": N, "period_ms": P}` — at most N starts in any window of P ms (a
///   sliding window; a burst waits, it is not dropped). N 1–100000, P 1–86400000.
/// - `group_concurrency`, `group_rate`: the same, for each group (a task's `group`) alone.
///   Groups take turns, so one group's backlog cannot starve another's.
#[utoipa::path(patch, path = "/v1/queues/{queue}", tag = "queues", request_body = LimitsPatch,
    params(("queue" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "Queue name: 1–64 of A–Z a–z 0–9 _ - .")),
    responses(
        (status = 200, body = QueueView),
        AuthErrors, BodyErrors,
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(queue): StrictPath<String>,
    StrictJson(patch): StrictJson<LimitsPatch>,
) -> ApiResult<axum::Json<QueueView>> {
    Ok(axum::Json(state.chronos.set_queue_limits(&caller, &queue, &patch).await?.into()))
}
