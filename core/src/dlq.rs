//! The SQS dead-letter queue. A task that dies is recorded in its queue's `dlq` set by the same
//! script that kills it; the forwarder sends those to SQS and removes them only after SQS
//! accepted them, so an unreachable SQS delays the message but never loses it.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::error::{Error, Result};
use crate::queue::Engine;

/// The message body sent to SQS for a dead task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub queue: String,
    pub name: String,
    /// The payload, or `null` with `payload_truncated` when it would not fit an SQS message
    /// (the task in Postgres still has it).
    pub payload: serde_json::Value,
    #[serde(default)]
    pub payload_truncated: bool,
    pub attempts: u32,
    pub last_error: String,
    pub died_at_ms: i64,
}

/// SQS messages are limited to 256 KiB; keep a margin for the envelope.
const MAX_BODY: usize = 200 * 1024;

#[derive(Clone)]
pub struct Dlq {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

/// Build an AWS SDK config that speaks through one TLS stack (rustls + ring). Honours
/// `AWS_ENDPOINT_URL` (an emulator), `AWS_REGION` and the usual credential variables.
pub async fn aws_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

fn sqs_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Sqs(format!("{e:?}").chars().take(500).collect())
}

impl Dlq {
    /// Connect, creating the queue if absent.
    pub async fn connect(queue_name: &str) -> Result<Self> {
        let conf = aws_config().await;
        Self::with_client(aws_sdk_sqs::Client::new(&conf), queue_name).await
    }

    /// Look the queue up, and create it only when it does not exist: a deployment creates the
    /// queue itself (with its retention and alarm) and grants `sqs:GetQueueUrl`, not
    /// `sqs:CreateQueue`.
    pub async fn with_client(client: aws_sdk_sqs::Client, queue_name: &str) -> Result<Self> {
        let url = match client.get_queue_url().queue_name(queue_name).send().await {
            Ok(out) => out.queue_url().map(str::to_owned),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
                client.create_queue().queue_name(queue_name).send().await.map_err(sqs_err)?.queue_url().map(str::to_owned)
            }
            Err(e) => return Err(sqs_err(e)),
        };
        let queue_url = url.ok_or_else(|| Error::Sqs("SQS returned no queue URL".into()))?;
        Ok(Dlq { client, queue_url })
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Send up to 10 letters in one call; returns the ids SQS accepted.
    pub async fn send(&self, letters: &[DeadLetter]) -> Result<Vec<String>> {
        if letters.is_empty() {
            return Ok(Vec::new());
        }
        let mut req = self.client.send_message_batch().queue_url(&self.queue_url);
        for (i, l) in letters.iter().enumerate() {
            let mut body = serde_json::to_string(l).map_err(|e| Error::Sqs(e.to_string()))?;
            if body.len() > MAX_BODY {
                let mut small = l.clone();
                small.payload = serde_json::Value::Null;
                small.payload_truncated = true;
                small.last_error = small.last_error.chars().take(4096).collect();
                body = serde_json::to_string(&small).map_err(|e| Error::Sqs(e.to_string()))?;
            }
            req = req.entries(SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build().map_err(sqs_err)?);
        }
        let out = req.send().await.map_err(sqs_err)?;
        if !out.failed().is_empty() {
            metrics::counter!(crate::metrics::DLQ_FORWARD_FAILURES).increment(out.failed().len() as u64);
        }
        for f in out.failed() {
            tracing::warn!(entry = f.id(), code = f.code(), message = f.message(), "SQS refused a dead letter; will retry");
        }
        Ok(out
            .successful()
            .iter()
            .filter_map(|s| s.id().parse::<usize>().ok())
            .filter_map(|i| letters.get(i))
            .map(|l| l.id.clone())
            .collect())
    }
}

/// Send every pending dead letter of every queue; returns how many SQS accepted.
pub async fn forward_pending(engine: &Engine, dlq: &Dlq) -> Result<usize> {
    let mut sent = 0;
    for queue in engine.queues().await? {
        let k = engine.keys(&queue);
        let mut conn = engine.connection();
        loop {
            let ids: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(&k.dlq).arg(0).arg(9).arg("WITHSCORES").query_async(&mut conn).await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &ids {
                pipe.cmd("HMGET").arg(k.task(id)).arg(&["n", "a", "le", "fa"]);
                pipe.cmd("GET").arg(k.payload(id));
            }
            let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let mut rows = Vec::with_capacity(ids.len());
            for pair in replies.chunks(2) {
                let mut f: Vec<Option<String>> = redis::from_redis_value(pair[0].clone()).unwrap_or_default();
                let p: Option<String> = redis::from_redis_value(pair[1].clone()).unwrap_or_default();
                f.insert(1, p);
                rows.push(f);
            }
            let mut letters = Vec::with_capacity(ids.len());
            let mut gone = Vec::new();
            for ((id, died), row) in ids.iter().zip(rows) {
                let [n, p, a, le, fa]: [Option<String>; 5] = row.try_into().unwrap_or_default();
                let Some(name) = n else {
                    gone.push(id.clone()); // cancelled or redriven meanwhile
                    continue;
                };
                letters.push(DeadLetter {
                    id: id.clone(),
                    queue: queue.clone(),
                    name,
                    payload: p.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(serde_json::Value::Null),
                    payload_truncated: false,
                    attempts: a.and_then(|a| a.parse().ok()).unwrap_or(0),
                    last_error: le.unwrap_or_default(),
                    died_at_ms: fa.and_then(|f| f.parse().ok()).unwrap_or(*died as i64),
                });
            }
            let accepted = dlq.send(&letters).await?;
            let done: Vec<&String> = accepted.iter().chain(gone.iter()).collect();
            if done.is_empty() {
                break;
            }
            let _: () = redis::cmd("ZREM").arg(&k.dlq).arg(&done).query_async(&mut conn).await?;
            sent += accepted.len();
            if accepted.len() < letters.len() {
                break; // some were refused: retry them on the next round, not in a hot loop
            }
        }
    }
    Ok(sent)
}

/// Forward dead letters whenever `wake` fires, and every `interval` (retries after an SQS outage).
pub async fn run_forwarder(engine: Engine, dlq: Dlq, wake: Arc<Notify>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = interval;
    while !*stop.borrow() {
        match forward_pending(&engine, &dlq).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(sent = n, "dead letters sent to SQS");
                }
                backoff = interval;
            }
            Err(e) => {
                metrics::counter!(crate::metrics::DLQ_FORWARD_FAILURES).increment(1);
                tracing::warn!(error = %e, "dead letters not sent; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
    }
}

/// How long the forwarder waits at most between attempts to reach an unreachable SQS.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Reach the SQS queue `queue_name` (retrying with backoff, in the background), then forward as
/// [`run_forwarder`]. A process that runs tasks never waits for SQS: dead letters wait in
/// Redis's `dlq` sets until the queue answers. Returns at once when `stop` turns true.
pub async fn connect_and_forward(
    engine: Engine,
    queue_name: String,
    wake: Arc<Notify>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut failures = 0u32;
    let dlq = loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            r = Dlq::connect(&queue_name) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(d) => break d,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(queue = %queue_name, error = %e, "SQS dead-letter queue unreachable; tasks run meanwhile and dead letters wait in Redis; retrying in the background");
                } else {
                    tracing::debug!(queue = %queue_name, error = %e, "SQS dead-letter queue still unreachable");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
    };
    if failures > 0 {
        tracing::info!(queue = %queue_name, "SQS dead-letter queue reachable; forwarding dead letters");
    }
    run_forwarder(engine, dlq, wake, interval, stop).await
}
