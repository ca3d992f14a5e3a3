//! `/v1/queues`: live counts per queue; pause and resume (a paused queue accepts tasks, but
//! workers do not claim from it).

use axum::Extension;
use axum::extract::State;
use chronos_core::access::Caller;

use crate::AppState;
use crate::error::{ApiResult, AuthErrors, InputErrors};
use crate::json::StrictPath;
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
