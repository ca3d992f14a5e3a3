//! Which queues are served: every worker writes what it serves into one hash (`<ns>:workers`,
//! worker id → JSON) at start-up and on each heartbeat period, and removes its entry when it
//! stops. An entry whose worker stopped writing (SIGKILL, a lost host) counts as gone once its
//! own time-to-live passes, measured on Redis's clock, and the next reader deletes it. The API
//! and the dashboard read the hash to flag a queue with work and no worker to run it.
//!
//! Also the discovery of new queues for workers serving every queue (`*`): adding a queue to
//! `<ns>:queues` pushes a token to `<ns>:queues:wake`, which those workers BLPOP.

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::Result;
use crate::keys::{queues_wake, workers_hash};

/// What one worker serves, as it announced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPresence {
    #[serde(skip)]
    pub worker_id: String,
    /// The queues it serves by name; `["*"]` for every queue.
    pub queues: Vec<String>,
    /// The setting as given (`critical=6,default=3`, `*`), for operators.
    pub spec: String,
    /// Redis time (ms) of the last announcement.
    #[serde(default)]
    pub seen_at_ms: i64,
    /// How long after `seen_at_ms` the entry stays live without a new announcement.
    pub ttl_ms: i64,
}

impl WorkerPresence {
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q == "*" || q == queue)
    }
}

/// At most this many new-queue tokens wait in `<ns>:queues:wake`: one suffices to start the
/// chain through the idle `*` workers (see [`Engine::announce_new_queues`]).
const NEW_QUEUE_TOKENS: isize = 8;

async fn redis_now_ms(conn: &mut super::Connection) -> Result<i64> {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(s * 1000 + us / 1000)
}

impl Engine {
    /// Write (or refresh) `p` as live from now on Redis's clock.
    pub async fn announce_worker(&self, p: &WorkerPresence) -> Result<()> {
        let mut conn = self.connection();
        let mut p = p.clone();
        p.seen_at_ms = redis_now_ms(&mut conn).await?;
        let json = serde_json::to_string(&p).expect("presence serializes");
        let _: () = redis::cmd("HSET").arg(workers_hash(self.namespace())).arg(&p.worker_id).arg(json).query_async(&mut conn).await?;
        Ok(())
    }

    /// Remove a stopping worker's entry, so its queues show as unserved at once.
    pub async fn forget_worker(&self, worker_id: &str) -> Result<()> {
        let mut conn = self.connection();
        let _: () = redis::cmd("HDEL").arg(workers_hash(self.namespace())).arg(worker_id).query_async(&mut conn).await?;
        Ok(())
    }

    /// The workers whose announcement has not expired, by id. Expired and unreadable entries
    /// are deleted on the way.
    pub async fn live_workers(&self) -> Result<Vec<WorkerPresence>> {
        let mut conn = self.connection();
        let key = workers_hash(self.namespace());
        let ((s, us), entries): ((i64, i64), Vec<(String, String)>) =
            redis::pipe().cmd("TIME").cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        let now = s * 1000 + us / 1000;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (id, json) in entries {
            match serde_json::from_str::<WorkerPresence>(&json) {
                Ok(mut p) if now - p.seen_at_ms <= p.ttl_ms => {
                    p.worker_id = id;
                    live.push(p);
                }
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let _: () = redis::cmd("HDEL").arg(&key).arg(&stale).query_async(&mut conn).await?;
        }
        live.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(live)
    }

    /// Tell idle `*` workers that `<ns>:queues` gained members. Called only when an SADD added
    /// something, so enqueueing into a known queue pays nothing for it.
    pub async fn announce_new_queues(&self) -> Result<()> {
        let mut conn = self.connection();
        let key = queues_wake(self.namespace());
        let _: () = redis::pipe().lpush(&key, 1).ignore().ltrim(&key, 0, NEW_QUEUE_TOKENS - 1).ignore().query_async(&mut conn).await?;
        Ok(())
    }
}
