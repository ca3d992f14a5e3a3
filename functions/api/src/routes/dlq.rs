//! `/v1/dlq`: dead tasks with their last error; redrive one or many back as fresh attempts,
//! removing their messages from the SQS dead-letter queue.

use std::collections::HashSet;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};
use axum::Extension;
use axum::extract::State;
use chronos_core::access::Caller;
use chronos_core::store::TaskFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::tasks::{live_view, live_views, page, retry_record, visible_task};
use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors, InputErrors, StateErrors};
use crate::json::{StrictJson, StrictPath, StrictQuery, de_opt_num};
use crate::views::{RedriveFilter, RedriveResult, TaskPage, TaskView};

/// Redrive-all stops after this many tasks per call; call again for the rest.
const MAX_REDRIVE: usize = 10_000;

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
pub async fn list(State(state): State<AppState>, StrictQuery(p): StrictQuery<DlqParams>) -> ApiResult<axum::Json<TaskPage>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1–500"));
    }
    let before_id = p
        .cursor
        .map(|c| uuid::Uuid::parse_str(&c).map_err(|_| ApiError::validation("cursor", "is not a cursor returned by this API")))
        .transpose()?;
    let filter =
        TaskFilter { status: Some("dead".into()), queue: p.queue, name: p.name, before_id, limit: limit + 1, ..Default::default() };
    let rows = state.chronos.store.list_tasks(&filter).await?;
    let (rows, next_cursor) = page(rows, filter.limit);
    let mut tasks = live_views(&state, rows).await;
    // The audit record may lag a redrive by a moment: show only tasks still dead.
    tasks.retain(|t| t.status == "dead");
    Ok(axum::Json(TaskPage { tasks, next_cursor }))
}

/// Remove the SQS messages of these tasks. SQS can only delete a message it has handed out, so
/// this receives the queue's messages, deletes the matching ones and makes the rest visible
/// again at once. Returns how many were removed.
async fn remove_letters(state: &AppState, ids: &HashSet<String>) -> usize {
    let Some(dlq) = &state.dlq else { return 0 };
    let (client, url) = (dlq.client(), dlq.queue_url());
    let mut removed = 0;
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let Ok(out) =
            client.receive_message().queue_url(url).max_number_of_messages(10).visibility_timeout(30).wait_time_seconds(0).send().await
        else {
            break;
        };
        let msgs = out.messages();
        if msgs.is_empty() {
            break;
        }
        let mut fresh = false;
        // One batch call each for deleting and releasing, not a round trip per message: a redrive
        // of a few hundred letters otherwise spends most of an HTTP timeout on SQS calls alone.
        let (mut delete, mut release) = (Vec::new(), Vec::new());
        for (i, m) in msgs.iter().enumerate() {
            let (Some(body), Some(handle)) = (m.body(), m.receipt_handle()) else { continue };
            fresh |= seen.insert(m.message_id().unwrap_or_default().to_owned());
            let id = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["id"].as_str().map(str::to_owned));
            if id.is_some_and(|id| ids.contains(&id)) {
                delete.extend(DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build().ok());
            } else {
                release.extend(
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                        .ok(),
                );
            }
        }
        if !delete.is_empty()
            && let Ok(out) = client.delete_message_batch().queue_url(url).set_entries(Some(delete)).send().await
        {
            removed += out.successful().len();
        }
        if !release.is_empty() {
            let _ = client.change_message_visibility_batch().queue_url(url).set_entries(Some(release)).send().await;
        }
        if !fresh {
            break; // only messages we already looked at come back
        }
    }
    removed
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
    let rec = visible_task(&state, &caller, &id).await?;
    let live = live_view(&state, rec.clone()).await;
    if live.status != "dead" {
        return Err(ApiError::conflict(format!("the task is {}; only dead tasks can be redriven", live.status)));
    }
    let view = retry_record(&state, &caller, rec).await?;
    remove_letters(&state, &HashSet::from([view.id.to_string()])).await;
    Ok(axum::Json(view))
}

/// Put every dead task (or those of one queue / name) back as fresh attempts.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "dlq", request_body = RedriveFilter,
    responses(
        (status = 200, body = RedriveResult),
        AuthErrors, BodyErrors,
    ))]
pub async fn redrive_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(f): StrictJson<RedriveFilter>,
) -> ApiResult<axum::Json<RedriveResult>> {
    let mut ids = Vec::new();
    let mut before_id = None;
    while ids.len() < MAX_REDRIVE {
        let filter = TaskFilter {
            status: Some("dead".into()),
            queue: f.queue.clone(),
            name: f.name.clone(),
            before_id,
            limit: 500,
            ..Default::default()
        };
        let rows = state.chronos.store.list_tasks(&filter).await?;
        let Some(last) = rows.last() else { break };
        before_id = Some(last.id);
        let n = rows.len();
        for r in rows {
            if let Ok(chronos_core::queue::RetryNowOutcome::Queued { .. }) =
                state.chronos.engine.retry_now(&r.queue, r.id, &caller.key_id).await
            {
                ids.push(r.id);
            }
        }
        if n < 500 {
            break;
        }
    }
    let set: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let removed = if set.is_empty() { 0 } else { remove_letters(&state, &set).await };
    Ok(axum::Json(RedriveResult { redriven: ids.len(), ids, sqs_messages_removed: removed }))
}
