//! Live transitions, for anything that shows Chronos as it runs (the dashboard's server-sent
//! events; the API could serve the same).
//!
//! Every transition script already appends an entry to its queue's outbox stream, in the same
//! script as the state change (the audit writer's transactional outbox). [`EventReader`]
//! follows those streams with plain `XREAD BLOCK` on one dedicated connection — no consumer
//! group, nothing acknowledged, nothing deleted — so watching adds no work to the scripts or
//! to the audit writer, however many people watch.
//!
//! What it does not promise: the audit writer deletes entries once they are in Postgres, so an
//! entry appended and deleted while this reader is between two reads is never seen. The reader
//! notices (the stream's `entries-added` counter grew by more than it read) and says which
//! queues missed events ([`Batch::missed`]). Enqueue appends nothing (a new task is a Postgres
//! row first). Events are a prompt to look again, never the record: whoever shows state reads
//! it from Redis and Postgres.
//!
//! On a Redis Cluster the streams of one `XREAD` must share a slot; there, run one reader per
//! queue (each queue's keys share its hash tag).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::Value;
use redis::streams::StreamReadReply;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Status, TaskId};
use crate::queue::{BlockingConnection, Engine};

/// How long one `XREAD` blocks; also bounds how late a new queue is noticed.
const BLOCK: Duration = Duration::from_secs(2);
/// Queues are listed again at most this often (a queue's first task registers it).
const RELIST: Duration = Duration::from_secs(2);
/// Entries taken per stream per read.
const COUNT: usize = 1000;
/// After Redis refused or went away, wait this long before reconnecting.
const RECONNECT: Duration = Duration::from_millis(500);

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A worker claimed it: an attempt started.
    Claimed,
    Completed,
    /// A worker shutting down handed it back unstarted-over: waiting again.
    Released,
    /// The attempt failed; another one is due later.
    Retrying,
    /// The last attempt failed, or the error was permanent (or the lease was lost for good).
    Dead,
    Cancelled,
    /// A cancel reached a running attempt; its handler is told at the next heartbeat.
    CancelRequested,
    /// Queued at once by hand (retry now, redrive).
    RetriedNow,
    /// The worker's lease expired; the task is waiting again.
    Lost,
    /// A schedule's occurrence dropped by its overlap policy.
    Skipped,
    /// The running handler reported progress (carried by a heartbeat).
    Progress,
}

impl EventKind {
    /// The task's status right after this transition; `None` when it does not change.
    pub fn status(self) -> Option<Status> {
        Some(match self {
            EventKind::Claimed => Status::Running,
            EventKind::Completed => Status::Completed,
            EventKind::Released | EventKind::RetriedNow | EventKind::Lost => Status::Queued,
            EventKind::Retrying => Status::Retrying,
            EventKind::Dead => Status::Dead,
            EventKind::Cancelled | EventKind::Skipped => Status::Cancelled,
            EventKind::CancelRequested | EventKind::Progress => return None,
        })
    }

    /// True for an attempt that ended badly (for failure rates).
    pub fn is_failure(self) -> bool {
        matches!(self, EventKind::Retrying | EventKind::Dead | EventKind::Lost)
    }
}

/// One task's transition, decoded from an outbox entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEvent {
    pub queue: String,
    pub id: TaskId,
    pub kind: EventKind,
    /// The attempt the transition belongs to (0 when the entry does not say).
    pub attempt: u32,
    /// Redis's clock when the script ran.
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The error of a failed attempt, first line only (the whole text is in Postgres).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decode one outbox entry of `queue` (fields as `core/src/scripts/*.lua` write them: `k` kind,
/// `t` time, `i` id, `a` attempt, `x` a comma-separated `id:attempt` list, `w` worker, `e`
/// error, `o` outcome). Batch entries (claim, ack, release) give one event per task; an entry
/// this version does not know gives none.
pub fn decode(queue: &str, fields: &HashMap<String, Value>) -> Vec<TaskEvent> {
    let s = |k: &str| fields.get(k).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
    let at = s("t").and_then(|t| t.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis).unwrap_or_else(Utc::now);
    let worker = s("w").filter(|w| !w.is_empty());
    let error = s("e").map(|e| e.lines().next().unwrap_or_default().to_owned());
    let event = |id: Uuid, kind: EventKind, attempt: u32, error: Option<String>| TaskEvent {
        queue: queue.to_owned(),
        id,
        kind,
        attempt,
        at,
        worker: worker.clone(),
        error,
    };
    let kind = s("k").unwrap_or_default();
    let batch = match kind.as_str() {
        "c" => Some(EventKind::Claimed),
        "d" => Some(EventKind::Completed),
        "B" => Some(EventKind::Released),
        _ => None,
    };
    if let Some(k) = batch {
        return s("x")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (id, a) = p.split_once(':')?;
                Some(event(Uuid::parse_str(id).ok()?, k, a.parse().ok()?, None))
            })
            .collect();
    }
    let single = match kind.as_str() {
        "r" => EventKind::Retrying,
        "x" => EventKind::Dead,
        "C" | "X" => EventKind::Cancelled,
        "Q" => EventKind::CancelRequested,
        "R" => EventKind::RetriedNow,
        "L" => EventKind::Lost,
        "S" => EventKind::Skipped,
        "P" => EventKind::Progress,
        _ => return Vec::new(),
    };
    let Some(id) = s("i").and_then(|i| Uuid::parse_str(&i).ok()) else { return Vec::new() };
    let attempt = s("a").and_then(|a| a.parse().ok()).unwrap_or(0);
    vec![event(id, single, attempt, error)]
}

/// What one read found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<TaskEvent>,
    /// Queues whose stream had entries deleted (drained by the audit writer) before this
    /// reader saw them, with how many: whoever shows those queues should look again.
    pub missed: Vec<(String, u64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.missed.is_empty()
    }
}

struct Cursor {
    queue: String,
    /// The id of the last entry seen.
    last: String,
    /// The stream's `entries-added` counter at `last`, and entries read since then.
    added: u64,
    read: u64,
}

/// Follows every queue's outbox stream and publishes what it decodes.
pub struct EventReader {
    engine: Engine,
    cursors: HashMap<String, Cursor>,
    listed: Option<Instant>,
}

impl EventReader {
    pub fn new(engine: Engine) -> Self {
        EventReader { engine, cursors: HashMap::new(), listed: None }
    }

    /// Read until `stop` turns true, sending each read's findings as one batch (never an
    /// empty one). A full channel drops its oldest batches for the receivers that lag, which
    /// is the receivers' business: the reader never waits for them. Redis errors are logged
    /// and the connection is made again.
    pub async fn run(mut self, tx: broadcast::Sender<std::sync::Arc<Batch>>, mut stop: watch::Receiver<bool>) {
        let mut conn: Option<BlockingConnection> = None;
        while !*stop.borrow() {
            if conn.is_none() {
                match self.engine.blocking_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "event reader: cannot connect to Redis; retrying");
                        tokio::select! { _ = tokio::time::sleep(RECONNECT) => {}, _ = stop.changed() => {} }
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            let read = tokio::select! {
                r = self.read_once(c) => r,
                _ = stop.changed() => return,
            };
            match read {
                Ok(batch) if !batch.is_empty() => {
                    let _ = tx.send(std::sync::Arc::new(batch));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event reader: Redis read failed; reconnecting");
                    conn = None;
                    tokio::select! { _ = tokio::time::sleep(RECONNECT) => {}, _ = stop.changed() => {} }
                }
            }
        }
    }

    /// One blocking read over every known queue's outbox: the events found, in stream order
    /// per queue, and the queues where entries went by unseen. On a cluster one XREAD per slot
    /// group, each blocking for its share of the wait until one finds something.
    pub async fn read_once(&mut self, conn: &mut BlockingConnection) -> Result<Batch> {
        if self.listed.is_none_or(|t| t.elapsed() >= RELIST) {
            self.relist(conn).await?;
        }
        if self.cursors.is_empty() {
            tokio::time::sleep(BLOCK).await;
            return Ok(Batch::default());
        }
        let keys: Vec<String> = self.cursors.keys().cloned().collect();
        let groups = self.engine.slot_groups(keys.clone(), |k| k);
        let block = (BLOCK.as_millis() as u64 / groups.len() as u64).max(1);
        let mut streams = Vec::new();
        for group in &groups {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(COUNT);
            if streams.is_empty() {
                cmd.arg("BLOCK").arg(block);
            }
            cmd.arg("STREAMS").arg(group);
            for k in group {
                cmd.arg(&self.cursors[k].last);
            }
            let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
            streams.extend(reply.map(|r| r.keys).unwrap_or_default());
        }
        let mut out = Batch::default();
        let mut read = HashMap::new();
        for stream in streams {
            let Some(c) = self.cursors.get_mut(&stream.key) else { continue };
            for entry in &stream.ids {
                out.events.extend(decode(&c.queue, &entry.map));
                c.last.clone_from(&entry.id);
            }
            read.insert(stream.key.clone(), stream.ids.len() as u64);
        }
        out.missed = self.count_missed(conn, &keys, &read).await?;
        Ok(out)
    }

    /// Compare what each stream says was added with what was read. Once this reader is at
    /// the stream's last generated entry (or nothing is left between it and there), every
    /// entry added and not read was deleted unseen.
    async fn count_missed(
        &mut self,
        conn: &mut BlockingConnection,
        keys: &[String],
        read: &HashMap<String, u64>,
    ) -> Result<Vec<(String, u64)>> {
        let cmds = keys.iter().map(|k| (k.clone(), redis::cmd("XINFO").arg("STREAM").arg(k).to_owned())).collect();
        let Ok(infos) = self.engine.pipeline_per_slot(cmds).await else { return Ok(Vec::new()) };
        let mut missed = Vec::new();
        for (k, info) in keys.iter().zip(infos) {
            let (Some(added), Some(last)) = (field_u64(&info, "entries-added"), field_str(&info, "last-generated-id")) else { continue };
            let Some(c) = self.cursors.get_mut(k) else { continue };
            let n = read.get(k).copied().unwrap_or(0);
            c.read += n;
            let caught_up = c.last == last || {
                n == 0 && {
                    let rest: redis::streams::StreamRangeReply =
                        redis::cmd("XRANGE").arg(k).arg(format!("({}", c.last)).arg(&last).arg("COUNT").arg(1).query_async(conn).await?;
                    rest.ids.is_empty()
                }
            };
            if !caught_up {
                continue;
            }
            let gone = added.saturating_sub(c.added).saturating_sub(c.read);
            if gone > 0 {
                missed.push((c.queue.clone(), gone));
            }
            c.last = last;
            c.added = added;
            c.read = 0;
        }
        Ok(missed)
    }

    /// Learn queues registered since the last look; a new queue's stream is followed from its
    /// last generated entry (or from the start when it has none yet: every entry is new).
    async fn relist(&mut self, conn: &mut BlockingConnection) -> Result<()> {
        self.listed = Some(Instant::now());
        for q in self.engine.queues().await? {
            let key = self.engine.keys(&q).outbox;
            if self.cursors.contains_key(&key) {
                continue;
            }
            let info: Option<Value> = redis::cmd("XINFO").arg("STREAM").arg(&key).query_async(conn).await.ok();
            let last = info.as_ref().and_then(|i| field_str(i, "last-generated-id")).unwrap_or_else(|| "0-0".into());
            let added = info.as_ref().and_then(|i| field_u64(i, "entries-added")).unwrap_or(0);
            self.cursors.insert(key, Cursor { queue: q, last, added, read: 0 });
        }
        Ok(())
    }
}
fn field(info: &Value, name: &str) -> Option<Value> {
    match info {
        Value::Array(kv) => {
            kv.chunks(2).find(|p| redis::from_redis_value::<String>(p[0].clone()).ok().as_deref() == Some(name)).map(|p| p[1].clone())
        }
        Value::Map(kv) => {
            kv.iter().find(|(k, _)| redis::from_redis_value::<String>(k.clone()).ok().as_deref() == Some(name)).map(|(_, v)| v.clone())
        }
        _ => None,
    }
}

fn field_u64(info: &Value, name: &str) -> Option<u64> {
    field(info, name).and_then(|v| redis::from_redis_value(v).ok())
}

fn field_str(info: &Value, name: &str) -> Option<String> {
    field(info, name).and_then(|v| redis::from_redis_value(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> HashMap<String, Value> {
        fields.iter().map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn batch_entries_give_one_event_per_task_with_its_attempt() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let x = format!("{a}:1,{b}:3");
        let ev = decode("mail", &entry(&[("k", "c"), ("t", "1767225600000"), ("w", "w1"), ("x", &x)]));
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].id, ev[0].attempt, ev[0].kind), (a, 1, EventKind::Claimed));
        assert_eq!((ev[1].id, ev[1].attempt), (b, 3));
        assert_eq!(ev[1].worker.as_deref(), Some("w1"));
        assert_eq!(ev[0].at.timestamp_millis(), 1_767_225_600_000);
        assert_eq!(ev[0].kind.status(), Some(Status::Running));
    }

    #[test]
    fn a_failure_carries_the_first_line_of_its_error_and_the_resulting_status() {
        let id = Uuid::now_v7();
        let ev = decode("q", &entry(&[("k", "x"), ("i", &id.to_string()), ("a", "5"), ("e", "boom: disk full\n  at main.rs:3")]));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Dead);
        assert_eq!(ev[0].error.as_deref(), Some("boom: disk full"));
        assert_eq!(ev[0].kind.status(), Some(Status::Dead));
        assert!(ev[0].kind.is_failure());
        let ev = decode("q", &entry(&[("k", "Q"), ("i", &id.to_string())]));
        assert_eq!(ev[0].kind, EventKind::CancelRequested);
        assert_eq!(ev[0].kind.status(), None);
    }

    #[test]
    fn unknown_kinds_and_malformed_ids_give_nothing() {
        assert!(decode("q", &entry(&[("k", "?"), ("i", &Uuid::now_v7().to_string())])).is_empty());
        assert!(decode("q", &entry(&[("k", "r"), ("i", "not-a-uuid")])).is_empty());
        assert!(decode("q", &entry(&[("k", "d"), ("x", "garbage,also:garbage")])).is_empty());
    }
}
