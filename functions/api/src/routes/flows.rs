//! `/v1/flows`: a tree of tasks created all-or-nothing; a parent runs after all its children.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chronos_core::access::Caller;
use tracing::Instrument;

use super::tasks::{enqueue_span, trace_context};
use crate::AppState;
use crate::error::{ApiResult, AuthErrors, BodyErrors};
use crate::json::StrictJson;
use crate::views::*;

/// Create a flow: the body is its root task, whose `children` are tasks of the same fields, with
/// children of their own (up to 1,000 tasks in all). The leaves are queued at once; a parent is
/// `pending` until all its children completed, then runs and reads their results. A child that
/// ends dead or cancelled cancels its parent (`on_child_failure: "ignore"` on the parent: it
/// runs anyway). Only the root may carry an `idempotency_key`; a repeated one answers 200 with
/// the flow it created.
#[utoipa::path(post, path = "/v1/flows", tag = "tasks", request_body = CreateTask,
    responses(
        (status = 201, description = "Created: the root task and every task's id", body = FlowView),
        (status = 200, description = "The root's idempotency key named an existing flow; nothing was created", body = FlowView),
        AuthErrors, BodyErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    StrictJson(req): StrictJson<CreateTask>,
) -> ApiResult<impl IntoResponse> {
    let mut nodes = flow_nodes(req, &caller.key_id, state.chronos.max_payload_bytes)?;
    let span = enqueue_span(nodes.len());
    let tc = trace_context(&span, &headers);
    for n in &mut nodes {
        n.task.trace_context.clone_from(&tc);
    }
    let f = state.chronos.submit_flow(nodes, &caller).instrument(span).await?;
    if f.created {
        state.metrics.tasks_created.fetch_add(f.task_ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let status = if f.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(FlowView { task: f.root.into(), task_ids: f.task_ids })))
}
