//! `/v1/queues`: live counts per queue; pause and resume (a paused queue accepts tasks, but
//! workers do not claim from it).

use axum::Extension;
use axum::extract::State;
use chronos_core::access::Caller;
use chronos_core::model::validate_queue_name;

use crate::AppState;
use crate::error::{ApiResult, AuthErrors, InputErrors};
use crate::json::StrictPath;
use crate::views::{QueueList, QueueView};

async fn view(state: &AppState, name: &str) -> ApiResult<QueueView> {
    let live = state.chronos.engine.counts(name).await?;
    let pg = state.chronos.store.status_counts(name).await?;
    Ok(QueueView {
        name: name.to_owned(),
        waiting: live.waiting,
        scheduled: live.delayed,
        running: live.running,
        retrying: live.retrying,
        completed: pg.completed,
        dead: pg.dead,
        cancelled: pg.cancelled,
        paused: live.paused,
        oldest_waiting_age_s: if live.waiting > 0 { pg.oldest_waiting_age_s } else { None },
    })
}

/// Every queue with its waiting, scheduled, running, retrying, completed, dead and cancelled
/// counts, whether it is paused, and the age of its oldest waiting task.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses(
        (status = 200, body = QueueList),
        AuthErrors,
    ))]
pub async fn list(State(state): State<AppState>) -> ApiResult<axum::Json<QueueList>> {
    let mut names = state.chronos.engine.queues().await?;
    names.extend(state.chronos.store.queue_names().await?);
    names.sort();
    names.dedup();
    let mut queues = Vec::with_capacity(names.len());
    for n in names {
        queues.push(view(&state, &n).await?);
    }
    Ok(axum::Json(QueueList { queues }))
}

async fn set_paused(state: &AppState, caller: &Caller, queue: &str, paused: bool) -> ApiResult<QueueView> {
    validate_queue_name(queue)?;
    let key = state.chronos.engine.keys(queue).paused;
    let mut conn = state.chronos.engine.connection();
    let cmd = if paused { redis::cmd("SET").arg(&key).arg(1).clone() } else { redis::cmd("DEL").arg(&key).clone() };
    let _: () = cmd.query_async(&mut conn).await.map_err(chronos_core::Error::from)?;
    if !paused {
        // Idle workers are blocked waiting for a signal: give them one.
        let _: () = redis::cmd("LPUSH")
            .arg(state.chronos.engine.keys(queue).wake)
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(chronos_core::Error::from)?;
    }
    state.chronos.engine.register_queue(queue).await?;
    state
        .chronos
        .store
        .audit(&caller.key_id, if paused { "pause_queue" } else { "resume_queue" }, None, serde_json::json!({ "queue": queue }))
        .await?;
    view(state, queue).await
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
