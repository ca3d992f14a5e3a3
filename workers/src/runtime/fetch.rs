//! The fetch loop, the only place that decides what the worker does next: claim (batches for
//! every free slot, queues in the order `crate::queues` gives each round: in turn, weighted or
//! strict), block (BLPOP on the queues' wake lists, with a local timer for the next due delayed
//! task, so an idle worker costs nothing and a due task starts within milliseconds), or back off
//! after an error.
//!
//! A worker serving `*` learns of queues without polling: it also BLPOPs `<ns>:queues:wake`,
//! which gets a token when an SADD to `<ns>:queues` added a name (the enqueue pipeline already
//! sends that SADD and now reads its reply, so enqueueing into a known queue costs nothing
//! more). Woken by that token, or when the blocking wait times out, it re-reads the set (one
//! SMEMBERS per idle wake-up, never per task). A token wakes one blocked worker only; one that
//! learned a new queue from it passes a token on, so the word travels through every idle `*`
//! worker (BLPOP serves them in the order they blocked) and stops at the first that learns
//! nothing. A busy worker reads the set at its next idle wait, at most `IDLE_BLOCK` later.
//!
//! A claim carries the acks of the attempts that freed its slots (`ack_claim`: ack, then claim,
//! in one script call), when they ended while the loop waited for a free slot ([`super::Carry`]):
//! every task then costs one round trip, not an ack and a claim. Carried acks of a queue this
//! round did not claim from, or of a failed call, go to the recorder.
//!
//! On a Redis Cluster the wake lists of queues in different slots cannot share one BLPOP: the
//! worker keeps one blocking wait per slot group ([`Engine::wait_groups`]), each on its own
//! connection, and is woken by whichever answers first. The others stay armed (a cancelled
//! BLPOP could take a token and drop it), so each round re-arms only the groups that answered.
//! On one node there is one group: one BLPOP, as before.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chronos_core::queue::{BlockingConnection, Engine, Woken};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::recorder::{AckBatch, Record, ToRecord};
use super::{Shared, start};
use crate::queues::{Order, round_order};

/// Claims ask for at most this many tasks per script call.
const MAX_CLAIM_BATCH: usize = 100;
/// How long an idle BLPOP waits before re-arming (it is woken early by new work).
const IDLE_BLOCK: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one pass over the queues found.
struct Round {
    /// A claim filled every slot it asked for (or no slot was free): there may be more.
    more: bool,
    /// The earliest due time of a delayed or retrying task, on the local clock.
    next_due: Option<Instant>,
    failed: bool,
}

type Blocker = JoinHandle<(BlockingConnection, chronos_core::Result<Woken>)>;

/// The blocking waits of the served queues: one per slot group, each armed or not.
struct Waits {
    /// The queues (and whether `<ns>:queues:wake` too) the groups were made for.
    made_for: (Vec<String>, bool),
    groups: Vec<Vec<String>>,
    blockers: Vec<Option<Blocker>>,
    /// Connections of waits that answered, for the next ones.
    spare: Vec<BlockingConnection>,
}

impl Waits {
    /// Regroup when the served queues changed; the old waits are dropped with their connections.
    fn serve(&mut self, engine: &Engine, queues: &[String], new_queues: bool) {
        if self.made_for.0 == queues && self.made_for.1 == new_queues && !self.groups.is_empty() {
            return;
        }
        self.abort();
        self.groups = engine.wait_groups(queues, new_queues);
        self.blockers = self.groups.iter().map(|_| None).collect();
        self.made_for = (queues.to_vec(), new_queues);
    }

    fn abort(&mut self) {
        for b in self.blockers.iter_mut().filter_map(Option::take) {
            b.abort();
        }
    }

    /// The first wait to answer: its group's index and what it said.
    async fn next(&mut self) -> (usize, Result<(BlockingConnection, chronos_core::Result<Woken>), tokio::task::JoinError>) {
        let r = std::future::poll_fn(|cx| {
            for (i, b) in self.blockers.iter_mut().enumerate() {
                if let Some(h) = b
                    && let std::task::Poll::Ready(r) = std::pin::Pin::new(h).poll(cx)
                {
                    return std::task::Poll::Ready((i, r));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        self.blockers[r.0] = None;
        r
    }

    fn any_armed(&self) -> bool {
        self.blockers.iter().any(Option::is_some)
    }
}

/// The queues claimed from now: fixed for named queues, the set `<ns>:queues` as last read for `*`.
struct Served {
    all: bool,
    queues: Vec<String>,
    weights: Vec<u32>,
    order: Order,
}

impl Served {
    /// Re-read `<ns>:queues` (for `*`); true when it named a queue not known before.
    async fn refresh(&mut self, engine: &Engine) -> bool {
        match engine.queues().await {
            Ok(now) => {
                let learned = now.iter().any(|q| !self.queues.contains(q));
                if learned {
                    tracing::info!(queues = ?now, "serving every queue: the set of queues changed");
                }
                self.queues = now;
                learned
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the set of queues; keeping the last one read");
                false
            }
        }
    }
}

pub(super) async fn fetch_loop(shared: Arc<Shared>, slots: Arc<Semaphore>, shutdown: impl Future<Output = ()>) -> chronos_core::Result<()> {
    tokio::pin!(shutdown);
    let engine = shared.engine.clone();
    let mut waits =
        Waits { made_for: (Vec::new(), false), groups: Vec::new(), blockers: Vec::new(), spare: vec![engine.blocking_connection().await?] };
    let mut error_backoff = MIN_BACKOFF;
    let mut rotate = 0usize;
    let spec = &shared.cfg.queues;
    let mut served = Served { all: spec.is_all(), queues: spec.names(), weights: spec.weights(), order: spec.order() };
    if served.all {
        served.refresh(&engine).await;
    }
    loop {
        let mut carried = shared.take_carried();
        let round = claim_round(&shared, &slots, &served, rotate, &mut carried).await;
        shared.send_uncarried(carried);
        rotate = rotate.wrapping_add(1);
        if round.failed {
            shared.stop_carrying();
            tokio::select! {
                _ = tokio::time::sleep(error_backoff) => {}
                _ = &mut shutdown => break,
            }
            error_backoff = (error_backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        error_backoff = MIN_BACKOFF;
        // One reading decides both what to wait for: read twice, a slot freed between the
        // readings left the loop waiting for neither new work (no blocking wait started) nor
        // a free slot (not full) — a worker that never claimed again.
        let free = slots.available_permits();
        if round.more && free > 0 {
            continue;
        }
        // Waiting for a free slot only, the next claim carries the acks of the attempts that
        // free them; waiting for anything else, they go to the recorder now.
        if free == 0 {
            shared.carry_from_now();
        } else {
            shared.stop_carrying();
        }
        if free > 0 {
            waits.serve(&engine, &served.queues, served.all);
            let mut failed = false;
            for i in 0..waits.groups.len() {
                if waits.blockers[i].is_some() {
                    continue;
                }
                let conn = match waits.spare.pop() {
                    Some(c) => c,
                    None => match engine.blocking_connection().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open blocking connection");
                            failed = true;
                            break;
                        }
                    },
                };
                waits.blockers[i] = Some(block_for_work(engine.clone(), waits.groups[i].clone(), conn));
            }
            if failed {
                tokio::time::sleep(error_backoff).await;
                continue;
            }
        }
        // A slot freed after `free` was read stores a permit in `slot_freed` (notify_one),
        // so the wait below still wakes.
        let full = free == 0;
        let due_sleep = async {
            match round.next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let armed = waits.any_armed();
        tokio::select! {
            (_, r) = waits.next(), if armed => {
                match r {
                    Ok((conn, Ok(why))) => {
                        waits.spare.push(conn);
                        if served.all && why != Woken::Work && served.refresh(&engine).await && why == Woken::NewQueue {
                            // Pass the word on to the next idle `*` worker (see the module doc).
                            if let Err(e) = engine.announce_new_queues().await {
                                tracing::debug!(error = %e, "could not pass the new-queue token on");
                            }
                        }
                    }
                    Ok((_, Err(e))) => {
                        tracing::warn!(error = %e, "blocking wait failed; reconnecting");
                        tokio::time::sleep(error_backoff).await;
                    }
                    Err(_) => {}
                }
            }
            _ = due_sleep => {}
            _ = shared.slot_freed.notified(), if full => {
                // Let other attempts that finish at the same moment free their slots too, so
                // the next claim fetches a batch rather than one task per round trip.
                tokio::task::yield_now().await;
            }
            _ = &mut shutdown => break,
        }
    }
    shared.stop_carrying();
    waits.abort();
    Ok(())
}

/// Claim for the free slots from each served queue in this round's order, and start what came;
/// a queue's claim carries the acks of its `carried` completions (taken out of it).
async fn claim_round(shared: &Arc<Shared>, slots: &Arc<Semaphore>, served: &Served, rotate: usize, carried: &mut Vec<Record>) -> Round {
    let queues = &served.queues;
    let mut round = Round { more: false, next_due: None, failed: false };
    for i in round_order(served.order, queues.len(), &served.weights, rotate, rand::random::<f64>) {
        let queue = &queues[i];
        let free = slots.available_permits();
        if free == 0 {
            round.more = true;
            break;
        }
        let want = free.min(MAX_CLAIM_BATCH);
        shared.stats.claim_calls.fetch_add(1, Ordering::Relaxed);
        let mut acks = AckBatch::default();
        let mut i = 0;
        while i < carried.len() {
            if carried[i].queue == *queue {
                acks.push(&shared.stats, carried.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let carrying = !acks.leases.is_empty();
        if carrying {
            shared.stats.ack_calls.fetch_add(1, Ordering::Relaxed);
        }
        // With nothing carried this is the plain claim (see `Engine::ack_and_claim`).
        match shared.engine.ack_and_claim(queue, &shared.cfg.worker_id, &acks.leases, want, shared.cfg.lease).await {
            Ok((answers, batch)) => {
                shared.stats.acks_carried.fetch_add(answers.len() as u64, Ordering::Relaxed);
                acks.written(queue, &answers);
                shared.stats.claimed.fetch_add(batch.tasks.len() as u64, Ordering::Relaxed);
                if let Some(due) = batch.next_due_ms {
                    let at = Instant::now() + Duration::from_millis((due - batch.now_ms).max(0) as u64);
                    round.next_due = Some(round.next_due.map_or(at, |n| n.min(at)));
                }
                round.more |= batch.tasks.len() == want;
                for task in batch.tasks {
                    let permit = slots.clone().try_acquire_owned().expect("claimed no more than the free slots");
                    start(shared, task, permit);
                }
            }
            Err(e) => {
                if carrying {
                    // Whether or not the call ran, the recorder writes them (an ack that did
                    // run is refused the second time: nothing is counted twice).
                    let _ = shared.records.send(ToRecord::Acks(queue.clone(), acks));
                }
                tracing::warn!(queue, error = %e, "claim failed; backing off");
                round.failed = true;
            }
        }
    }
    round
}

/// Wait on a connection of its own until one of `wake_keys` (one slot group of the served
/// queues' wake lists, and serving `*`, maybe `<ns>:queues:wake`) has a token.
fn block_for_work(engine: Engine, wake_keys: Vec<String>, mut conn: BlockingConnection) -> Blocker {
    tokio::spawn(async move {
        let r = engine.wait_for_work(&mut conn, &wake_keys, IDLE_BLOCK).await;
        (conn, r)
    })
}
