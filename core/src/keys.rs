//! Every Redis key Chronos uses is built here. All keys of one queue share the hash tag
//! `{<queue>}`, so each script touches a single Redis Cluster slot.

/// The keys of one queue, `<ns>:{<queue>}:<name>`.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// `<ns>:{<queue>}:` — scripts derive task (`t:<id>`) and idempotency (`idem:<key>`) keys from it.
    pub prefix: String,
    pub ready: String,
    pub delayed: String,
    /// Tasks waiting for their next attempt (score = due time).
    pub retry: String,
    pub active: String,
    pub dead: String,
    /// Dead tasks whose SQS message is not sent yet.
    pub dlq: String,
    /// Audit outbox stream, drained into Postgres.
    pub outbox: String,
    /// List idle workers block on.
    pub wake: String,
    pub seq: String,
    pub token: String,
    pub paused: String,
    /// The queue's limits (hash: c, rl, rp, gc, gl, gp; see `crate::limits`).
    pub limits: String,
    /// Sliding-window log of the queue's recent starts (its rate limit).
    pub rate: String,
    /// How many grouped tasks wait (in their groups' sets, not in `ready`).
    pub grouped: String,
    /// Set of the groups that have tasks waiting.
    pub waiting_groups: String,
    /// Present while Redis holds this queue's state: set when the queue joins [`queues_set`]
    /// and by a rebuild. On a Redis Cluster one shard can lose its data alone (a master that
    /// restarts empty before its replica took over); its queues lose this key with it, and the
    /// Redis-loss check rebuilds them (`crate::reconcile`).
    pub intact: String,
}

impl QueueKeys {
    pub fn new(namespace: &str, queue: &str) -> Self {
        let prefix = format!("{namespace}:{{{queue}}}:");
        let k = |name: &str| format!("{prefix}{name}");
        QueueKeys {
            ready: k("ready"),
            delayed: k("delayed"),
            retry: k("retry"),
            active: k("active"),
            dead: k("dead"),
            dlq: k("dlq"),
            outbox: k("outbox"),
            wake: k("wake"),
            seq: k("seq"),
            token: k("token"),
            paused: k("paused"),
            limits: k("lim"),
            rate: k("rl"),
            grouped: k("gn"),
            waiting_groups: k("gw"),
            intact: k("intact"),
            prefix,
        }
    }

    pub fn task(&self, id: &str) -> String {
        format!("{}t:{id}", self.prefix)
    }

    /// The payload of task `id` (a string of its own, so the task hash stays compact).
    pub fn payload(&self, id: &str) -> String {
        format!("{}p:{id}", self.prefix)
    }

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// Tombstone of a schedule's occurrence that finished (so it is never enqueued again).
    pub fn done(&self, id: &str) -> String {
        format!("{}done:{id}", self.prefix)
    }

    /// The overlap guard of a schedule: the id of its run in progress.
    pub fn guard(&self, schedule: &str) -> String {
        format!("{}sg:{schedule}", self.prefix)
    }

    /// The one occurrence of a schedule parked behind its run in progress (overlap queue_one).
    pub fn parked(&self, schedule: &str) -> String {
        format!("{}sq:{schedule}", self.prefix)
    }

    /// The waiting tasks of group `g` (scored as `ready`).
    pub fn group_ready(&self, g: &str) -> String {
        format!("{}gr:{g}", self.prefix)
    }

    /// The running attempts of group `g` (its concurrency).
    pub fn group_active(&self, g: &str) -> String {
        format!("{}ga:{g}", self.prefix)
    }
}

/// Set of queue names that have ever received a task (for workers, the audit writer and listings).
pub fn queues_set(namespace: &str) -> String {
    format!("{namespace}:queues")
}

/// Set once Redis holds the namespace's state (written by a rebuild). Its hash tag is the name of
/// [`queues_set`] (and it starts with the namespace, as every key does, so `<ns>:*` finds it), so both live in one slot: the node that loses the set of queues loses this key
/// with it, and the next check rebuilds every queue Postgres knows.
pub fn epoch_key(namespace: &str) -> String {
    format!("{namespace}:{{{namespace}:queues}}:epoch")
}

/// The rebuild's lock (`SET NX PX`), beside [`epoch_key`].
pub fn rebuild_lock(namespace: &str) -> String {
    format!("{namespace}:{{{namespace}:queues}}:rebuilding")
}

/// List `*` workers (those serving every queue) BLPOP beside their queues' wake lists: a token
/// here means a queue was added to [`queues_set`], so they re-read it.
pub fn queues_wake(namespace: &str) -> String {
    format!("{namespace}:queues:wake")
}

/// Hash of live workers: worker id → JSON of the queues it serves and when it last said so
/// (`chronos_core::queue::WorkerPresence`).
pub fn workers_hash(namespace: &str) -> String {
    format!("{namespace}:workers")
}

/// The scaler's memory between runs for one ECS service (a hash: when the current worker count
/// was last needed, and the count it last set), `<ns>:scaler:<cluster>/<service>`.
pub fn scaler_state(namespace: &str, cluster: &str, service: &str) -> String {
    format!("{namespace}:scaler:{cluster}/{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_key_carries_the_queue_hash_tag() {
        let k = QueueKeys::new("chronos", "emails");
        for key in [&k.ready, &k.delayed, &k.retry, &k.active, &k.dead, &k.dlq, &k.outbox, &k.wake, &k.seq, &k.token, &k.paused, &k.intact]
        {
            assert!(key.starts_with("chronos:{emails}:"), "{key}");
        }
        assert_eq!(k.task("abc"), "chronos:{emails}:t:abc");
        assert_eq!(k.idempotency("x"), "chronos:{emails}:idem:x");
    }

    #[test]
    fn the_epoch_key_and_the_rebuild_lock_share_the_slot_of_the_set_of_queues_under_the_namespace() {
        // A key without braces hashes whole; these carry that whole name as their hash tag.
        for key in [epoch_key("chronos"), rebuild_lock("chronos")] {
            assert!(key.starts_with("chronos:{chronos:queues}:"), "{key}");
        }
        assert_eq!(queues_set("chronos"), "chronos:queues");
    }
}
