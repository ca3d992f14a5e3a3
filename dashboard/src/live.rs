//! Live updates: one outbox reader per dashboard process ([`chronos_core::events`]), fanned
//! out to every browser over server-sent events (`GET /events`).
//!
//! - **Fan-out.** Frames go through one bounded `tokio::sync::broadcast`. A browser that falls
//!   more than [`CHANNEL`] frames behind is dropped (its stream ends), never buffered; its
//!   `EventSource` reconnects by itself.
//! - **Reconnection.** Every broadcast frame has an id `<boot>-<seq>`. A browser reconnecting
//!   with `Last-Event-ID` from this process gets the frames it missed from a ring of the last
//!   [`RING`]; from another process (the dashboard restarted) or past the ring, a `resync`
//!   frame tells the page to fetch its live parts again. Every connection starts with a fresh
//!   counts snapshot.
//! - **Counters** are refreshed on the server, only while someone watches: Redis's live counts
//!   at most every [`FAST`] after transitions, the whole summary (with Postgres's finished
//!   counts, which trail the audit writer) every [`FULL`] and once more shortly after activity.
//!   New tasks (enqueue writes no outbox entry) are noticed the same way, from Postgres.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chronos_core::Chronos;
use chronos_core::access::Permission;
use chronos_core::client::QueueSummary;
use chronos_core::events::{Batch, EventReader, TaskEvent};
use chronos_core::history;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::DashState;
use crate::session::Session;

/// Frames a browser may fall behind before it is dropped.
pub const CHANNEL: usize = 256;
/// Frames kept for browsers that reconnect.
pub const RING: usize = 1024;
/// Live counts are pushed at most this often.
pub const FAST: Duration = Duration::from_millis(250);
/// The whole queue summary is pushed this often while someone watches.
pub const FULL: Duration = Duration::from_secs(2);
/// After activity, one more full refresh this much later (Postgres trails Redis).
const TRAILING: Duration = Duration::from_millis(800);
/// How far back a freshly rendered page replays the stream ([`Live::cursor`]).
const REPLAY_ON_LOAD: Duration = Duration::from_secs(5);
/// A batch of more task events than this becomes a `resync` (pages fetch their rows again).
const MAX_EVENTS_PER_FRAME: usize = 2000;

/// One message to every browser.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    pub event: &'static str,
    pub data: String,
    /// What a role that may not read queues gets instead (`None`: the same).
    pub redacted: Option<String>,
    /// Only sessions whose role allows this get the frame.
    pub needs: Option<Permission>,
    pub at: Instant,
}

pub struct Live {
    tx: broadcast::Sender<Arc<Frame>>,
    ring: Mutex<VecDeque<Arc<Frame>>>,
    seq: AtomicU64,
    /// This process's id in event ids: a `Last-Event-ID` from another process means a restart.
    pub boot: String,
    activity: Notify,
    /// Turns true at shutdown: open streams end, so a graceful shutdown does not wait on them.
    stop: watch::Receiver<bool>,
}

impl Live {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Live {
            tx: broadcast::channel(CHANNEL).0,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            seq: AtomicU64::new(0),
            boot: hex::encode(rand::random::<[u8; 4]>()),
            activity: Notify::new(),
            stop,
        }
    }

    pub fn publish(&self, event: &'static str, data: String, redacted: Option<String>, needs: Option<Permission>) {
        let mut ring = self.ring.lock().unwrap();
        // Numbered under the ring's lock, so the ring is in order.
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let f = Arc::new(Frame { seq, event, data, redacted, needs, at: Instant::now() });
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(f.clone());
        drop(ring);
        let _ = self.tx.send(f);
    }

    /// Where a page rendered now should start its stream, as an event id (`<boot>-<seq>`): a
    /// few seconds back, not at the end. Postgres trails Redis (a task that finished a moment
    /// ago may still read as queued there once Redis forgot it), so the page replays the
    /// last moments' transitions on top of what it rendered; replaying is harmless, events
    /// arrive in order and the newest status wins.
    pub fn cursor(&self) -> String {
        let ring = self.ring.lock().unwrap();
        let recent = Instant::now() - REPLAY_ON_LOAD;
        let from = ring.iter().rev().take_while(|f| f.at >= recent).last().map(|f| f.seq - 1);
        format!("{}-{}", self.boot, from.unwrap_or_else(|| self.seq.load(Ordering::SeqCst)))
    }

    /// Browsers connected now.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The frames after `seq`, if the ring still holds all of them.
    fn since(&self, seq: u64) -> Option<Vec<Arc<Frame>>> {
        let ring = self.ring.lock().unwrap();
        let oldest = ring.front().map(|f| f.seq).unwrap_or(self.seq.load(Ordering::SeqCst) + 1);
        if seq + 1 < oldest {
            return None;
        }
        Some(ring.iter().filter(|f| f.seq > seq).cloned().collect())
    }

    /// Start the outbox reader, the pump that turns its batches into frames, and the counts
    /// refresher; they stop when `stop` turns true.
    pub fn start(self: &Arc<Self>, chronos: Chronos) {
        let stop = self.stop.clone();
        let (tx, mut rx) = broadcast::channel::<Arc<Batch>>(64);
        tokio::spawn(EventReader::new(chronos.engine.clone()).run(tx, stop.clone()));
        let live = self.clone();
        let mut pump_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! { b = rx.recv() => b, _ = pump_stop.changed() => return };
                match batch {
                    Ok(batch) => {
                        if !batch.events.is_empty() {
                            live.publish_tasks(&batch.events);
                        }
                        if !batch.missed.is_empty() {
                            // Transitions went by unseen: pages showing these queues look again.
                            let queues: Vec<&str> = batch.missed.iter().map(|(q, _)| q.as_str()).collect();
                            live.publish("resync", json!({ "queues": queues }).to_string(), None, None);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => live.publish("resync", "{}".into(), None, None),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                live.activity.notify_one();
            }
        });
        let live = self.clone();
        tokio::spawn(async move { live.refresh_loop(chronos, stop).await });
    }

    fn publish_tasks(&self, events: &[TaskEvent]) {
        if events.len() > MAX_EVENTS_PER_FRAME {
            self.publish("resync", "{}".into(), None, None);
            return;
        }
        let full: Vec<Value> = events.iter().map(|e| event_json(e, true)).collect();
        let redacted: Vec<Value> = events.iter().map(|e| event_json(e, false)).collect();
        self.publish("tasks", Value::Array(full).to_string(), Some(Value::Array(redacted).to_string()), Some(Permission::TasksRead));
    }

    async fn refresh_loop(&self, chronos: Chronos, mut stop: watch::Receiver<bool>) {
        let mut newest = history::newest_created(&chronos.store).await.ok().flatten();
        let mut last_fast: Option<String> = None;
        let mut last_full: Option<String> = None;
        let mut next_full = Instant::now();
        let mut trailing: Option<Instant> = None;
        let mut last_fast_at = Instant::now() - FAST;
        loop {
            let wake = trailing.map_or(next_full, |t| t.min(next_full));
            let active = tokio::select! {
                _ = self.activity.notified() => true,
                _ = tokio::time::sleep_until(wake) => false,
                _ = stop.changed() => return,
            };
            if self.watchers() == 0 {
                // Nobody watches: no queries. The next watcher gets a snapshot on connect.
                last_fast = None;
                last_full = None;
                next_full = Instant::now() + FULL;
                trailing = None;
                continue;
            }
            if active {
                let wait = FAST.saturating_sub(last_fast_at.elapsed());
                tokio::time::sleep(wait).await;
                last_fast_at = Instant::now();
                if let Ok(counts) = chronos.live_counts().await {
                    let data = json!({ "queues": counts.iter().map(|(name, c)| json!({
                        "name": name, "waiting": c.waiting, "scheduled": c.delayed, "running": c.running,
                        "retrying": c.retrying, "paused": c.paused,
                    })).collect::<Vec<_>>() })
                    .to_string();
                    if last_fast.as_ref() != Some(&data) {
                        self.publish("counts", data.clone(), None, Some(Permission::QueuesRead));
                        last_fast = Some(data);
                    }
                }
                trailing = Some(Instant::now() + TRAILING);
                continue;
            }
            // A full refresh: periodic, or the trailing one after activity.
            if trailing.is_some_and(|t| t <= Instant::now()) {
                trailing = None;
            }
            next_full = Instant::now() + FULL;
            if let Ok(qs) = chronos.queues().await {
                let data = counts_json(&qs).to_string();
                if last_full.as_ref() != Some(&data) {
                    self.publish("counts", data.clone(), None, Some(Permission::QueuesRead));
                    last_full = Some(data);
                }
            }
            if let Ok((latest, queues)) = history::created_since(&chronos.store, newest.unwrap_or_default()).await
                && latest.is_some()
            {
                newest = latest;
                self.publish("created", json!({ "queues": queues }).to_string(), None, Some(Permission::TasksRead));
            }
        }
    }
}

fn event_json(e: &TaskEvent, with_error: bool) -> Value {
    let mut v = json!({
        "id": e.id, "q": e.queue, "k": e.kind, "s": e.kind.status().map(|s| s.as_str()), "a": e.attempt,
    });
    if with_error && let Some(err) = &e.error {
        v["e"] = Value::String(err.chars().take(200).collect());
    }
    v
}

/// The summary of every queue as the overview's cells name them, with totals.
pub fn counts_json(qs: &[QueueSummary]) -> Value {
    let total = |f: fn(&QueueSummary) -> i64| qs.iter().map(f).sum::<i64>();
    json!({
        "queues": qs.iter().map(|q| json!({
            "name": q.name, "waiting": q.waiting, "scheduled": q.scheduled, "running": q.running,
            "retrying": q.retrying, "completed": q.completed, "dead": q.dead, "cancelled": q.cancelled,
            "paused": q.paused,
            "oldest": q.oldest_waiting_age_s.map(|s| crate::ui::duration_ms((s * 1000.0) as i64)).unwrap_or_else(|| "—".into()),
        })).collect::<Vec<_>>(),
        "totals": {
            "waiting": total(|q| q.waiting as i64), "scheduled": total(|q| q.scheduled as i64),
            "running": total(|q| q.running as i64), "retrying": total(|q| q.retrying as i64),
            "completed": total(|q| q.completed), "dead": total(|q| q.dead), "cancelled": total(|q| q.cancelled),
        },
        "full": true,
    })
}

fn sse(f: &Frame, s: &Session, boot: &str) -> Option<Event> {
    if f.needs.is_some_and(|p| !s.may(p)) {
        return None;
    }
    let data = match &f.redacted {
        Some(r) if !s.may(Permission::QueuesRead) => r,
        _ => &f.data,
    };
    Some(Event::default().id(format!("{boot}-{}", f.seq)).event(f.event).data(data))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Since {
    /// Where the page's data was read (its `data-since`): the stream replays from there.
    since: Option<String>,
}

/// `GET /events`: the live stream for a signed-in browser. It resumes from `Last-Event-ID`
/// (a reconnect) or else from `?since=` (the page's first connection).
pub async fn events(State(state): State<DashState>, s: Session, headers: HeaderMap, Query(q): Query<Since>) -> Response {
    // Subscribe first: a frame published while the snapshot is read is not lost.
    let rx = state.live.subscribe();
    let live = state.live.clone();
    let mut first: Vec<Event> =
        vec![Event::default().event("hello").data(json!({ "boot": live.boot }).to_string()).retry(Duration::from_secs(1))];
    let mut sent = live.seq.load(Ordering::SeqCst);
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).or(q.since.as_deref()).and_then(|v| v.split_once('-'));
    if let Some((boot, seq)) = last {
        match (boot == live.boot).then(|| seq.parse::<u64>().ok()).flatten().and_then(|n| live.since(n).map(|f| (n, f))) {
            Some((n, frames)) => {
                sent = n;
                for f in frames {
                    sent = sent.max(f.seq);
                    first.extend(sse(&f, &s, &live.boot));
                }
            }
            None => first.push(Event::default().event("resync").data("{}")),
        }
    }
    if s.may(Permission::QueuesRead)
        && let Ok(qs) = state.chronos.queues().await
    {
        first.push(Event::default().event("counts").data(counts_json(&qs).to_string()));
    }
    let boot = live.boot.clone();
    let stop = live.stop.clone();
    let rest = stream::unfold((rx, sent, stop), move |(mut rx, mut sent, mut stop)| {
        let s = s.clone();
        let boot = boot.clone();
        async move {
            loop {
                if *stop.borrow() {
                    return None;
                }
                let next = tokio::select! { f = rx.recv() => f, _ = stop.changed() => return None };
                match next {
                    Ok(f) if f.seq <= sent => continue,
                    Ok(f) => {
                        sent = f.seq;
                        if let Some(e) = sse(&f, &s, &boot) {
                            return Some((e, (rx, sent, stop)));
                        }
                    }
                    // Too slow: dropped. Its EventSource reconnects and catches up from the ring.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let all: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(stream::iter(first).chain(rest).map(Ok));
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

impl Live {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
    }
}
