//! The dead-letter use cases: list dead tasks, redrive one or many as fresh attempts, and
//! remove their messages from the SQS dead-letter queue.

use std::collections::HashSet;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};
use serde::Serialize;

use super::{Chronos, TaskPage};
use crate::access::Caller;
use crate::error::{Error, Result};
use crate::model::TaskId;
use crate::queue::RetryNowOutcome;
use crate::store::{TaskFilter, TaskRecord};

/// Redrive-all stops after this many tasks per call; call again for the rest.
pub const MAX_REDRIVE: usize = 10_000;

/// What a bulk redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    pub ids: Vec<TaskId>,
    /// Their messages removed from the SQS dead-letter queue.
    pub sqs_messages_removed: usize,
}

impl Chronos {
    /// A page of dead tasks, newest first, with live state (`filter.limit` is the page size);
    /// a task redriven a moment ago (its audit record not yet updated) is left out.
    pub async fn dead_tasks(&self, caller: &Caller, mut filter: TaskFilter) -> Result<TaskPage> {
        filter.status = Some("dead".into());
        let mut page = self.task_page(caller, filter).await?;
        page.tasks = self.with_live(page.tasks).await;
        page.tasks.retain(|t| t.status == "dead");
        Ok(page)
    }

    /// Put one dead task back as a fresh attempt and remove its SQS message.
    pub async fn redrive(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord> {
        let live = self.task(caller, id).await?;
        if live.status != "dead" {
            return Err(Error::Conflict(format!("the task is {}; only dead tasks can be redriven", live.status)));
        }
        let rec = self.task_record(caller, id).await?;
        let task = self.retry_record(caller, rec).await?;
        self.remove_letters(&HashSet::from([task.id.to_string()])).await;
        Ok(task)
    }

    /// Redrive these tasks (those not dead, or not visible to `caller`, are skipped) with one
    /// sweep of the SQS queue for all their letters.
    pub async fn redrive_many(&self, caller: &Caller, ids: &[TaskId]) -> Result<RedriveReport> {
        let mut done = Vec::with_capacity(ids.len());
        for &id in ids {
            // Only a dead task: retry-now would also queue a scheduled or retrying one.
            let Ok(live) = self.task(caller, id).await else { continue };
            if live.status != "dead" {
                continue;
            }
            if let Ok(RetryNowOutcome::Queued { .. }) = self.engine.retry_now(&live.queue, live.id, &caller.key_id).await {
                done.push(id);
            }
        }
        let set: HashSet<String> = done.iter().map(|i| i.to_string()).collect();
        let sqs_messages_removed = if set.is_empty() { 0 } else { self.remove_letters(&set).await };
        Ok(RedriveReport { ids: done, sqs_messages_removed })
    }

    /// Put every dead task (or those of one queue / name) back as fresh attempts, at most
    /// [`MAX_REDRIVE`] per call.
    pub async fn redrive_all(&self, caller: &Caller, queue: Option<String>, name: Option<String>) -> Result<RedriveReport> {
        let mut ids = Vec::new();
        let mut before_id = None;
        while ids.len() < MAX_REDRIVE {
            let filter = TaskFilter {
                status: Some("dead".into()),
                queue: queue.clone(),
                name: name.clone(),
                before_id,
                limit: 500,
                ..Default::default()
            };
            let rows = self.tasks(caller, filter).await?;
            let Some(last) = rows.last() else { break };
            before_id = Some(last.id);
            let n = rows.len();
            for r in rows {
                if let Ok(RetryNowOutcome::Queued { .. }) = self.engine.retry_now(&r.queue, r.id, &caller.key_id).await {
                    ids.push(r.id);
                }
            }
            if n < 500 {
                break;
            }
        }
        let set: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
        let sqs_messages_removed = if set.is_empty() { 0 } else { self.remove_letters(&set).await };
        Ok(RedriveReport { ids, sqs_messages_removed })
    }

    /// Remove the SQS messages of these tasks. SQS can only delete a message it has handed out,
    /// so this receives the queue's messages, deletes the matching ones and makes the rest
    /// visible again at once. Returns how many were removed.
    async fn remove_letters(&self, ids: &HashSet<String>) -> usize {
        let Some(dlq) = &self.dlq else { return 0 };
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
            // One batch call each for deleting and releasing, not a round trip per message: a
            // redrive of a few hundred letters otherwise spends most of an HTTP timeout on SQS.
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
}
