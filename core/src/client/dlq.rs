//! The dead-letter use cases: list dead tasks, redrive one as a fresh attempt, and remove
//! their messages from the SQS dead-letter queue (a bulk redrive is a job: [`crate::jobs`]).

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};

use super::{Chronos, TaskPage};
use crate::access::Caller;
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::model::TaskId;
use crate::store::{TaskFilter, TaskRecord};

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

    /// Remove the SQS messages of these tasks (one sweep of at most 10 s); returns how many.
    async fn remove_letters(&self, ids: &HashSet<String>) -> usize {
        let Some(dlq) = &self.dlq else { return 0 };
        match sweep_letters(dlq, ids, Duration::from_secs(10)).await {
            Ok(s) => s.removed.len(),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove dead-letter messages");
                0
            }
        }
    }
}

/// What one sweep of the SQS dead-letter queue did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Task ids whose message was deleted.
    pub removed: Vec<String>,
    /// Every message of the queue was looked at (none visible was left).
    pub exhausted: bool,
}

/// Delete the SQS messages of the tasks `ids`. SQS deletes only a message it has handed out, so
/// this receives the queue's messages: those of `ids` are deleted, every other one stays hidden
/// until the sweep ends (so that each receive brings messages not seen yet, instead of the same
/// ten again) and is then made visible again at once. Stops when every id was found, when no
/// visible message is left, or after `budget`.
pub async fn sweep_letters(dlq: &Dlq, ids: &HashSet<String>, budget: Duration) -> Result<Sweep> {
    let (client, url) = (dlq.client(), dlq.queue_url());
    let started = std::time::Instant::now();
    // Hidden for the whole sweep and some margin; released early below in any case.
    let hide = (budget.as_secs() + 30).min(43_200) as i32;
    let mut sweep = Sweep::default();
    let mut held: Vec<String> = Vec::new();
    let mut result = Ok(());
    while sweep.removed.len() < ids.len() && started.elapsed() < budget {
        let mut received = receive(client, url, hide, 0).await;
        if matches!(&received, Ok(m) if m.is_empty()) {
            // Short polling samples a subset of SQS's servers: ask all of them before
            // concluding that nothing visible is left.
            received = receive(client, url, hide, 1).await;
        }
        let msgs = match received {
            Ok(m) => m,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if msgs.is_empty() {
            sweep.exhausted = true;
            break;
        }
        let mut delete = Vec::new();
        let mut task_of = Vec::new();
        for m in &msgs {
            let (Some(body), Some(handle)) = (m.body(), m.receipt_handle()) else { continue };
            let id = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["id"].as_str().map(str::to_owned));
            match id {
                Some(id) if ids.contains(&id) => {
                    delete
                        .extend(DeleteMessageBatchRequestEntry::builder().id(delete.len().to_string()).receipt_handle(handle).build().ok());
                    task_of.push(id);
                }
                _ => held.push(handle.to_owned()),
            }
        }
        if !delete.is_empty() {
            match client.delete_message_batch().queue_url(url).set_entries(Some(delete)).send().await {
                Ok(out) => {
                    for s in out.successful() {
                        if let Some(id) = s.id().parse::<usize>().ok().and_then(|i| task_of.get(i)) {
                            sweep.removed.push(id.clone());
                        }
                    }
                }
                Err(e) => {
                    result = Err(Error::Sqs(format!("{e:?}").chars().take(500).collect()));
                    break;
                }
            }
        }
    }
    // Whatever happened, the messages kept hidden become visible again now.
    for chunk in held.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder().id(i.to_string()).receipt_handle(h).visibility_timeout(0).build().ok()
            })
            .collect();
        let _ = client.change_message_visibility_batch().queue_url(url).set_entries(Some(entries)).send().await;
    }
    result.map(|_| sweep)
}

async fn receive(client: &aws_sdk_sqs::Client, url: &str, hide: i32, wait: i32) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(hide)
        .wait_time_seconds(wait)
        .send()
        .await
        .map_err(|e| Error::Sqs(format!("{e:?}").chars().take(500).collect()))?;
    Ok(out.messages.unwrap_or_default())
}
