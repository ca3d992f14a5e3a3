//! The fetch loop, the only place that decides what the worker does next: claim (batches for
//! every free slot, queues taken in turn), block (BLPOP on the queues' wake lists, with a local
//! timer for the next due delayed task, so an idle worker costs nothing and a due task starts
//! within milliseconds), or back off after an error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chronos_core::queue::Engine;
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Shared, start};

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

type Blocker = JoinHandle<(MultiplexedConnection, chronos_core::Result<bool>)>;

pub(super) async fn fetch_loop(shared: Arc<Shared>, slots: Arc<Semaphore>, shutdown: impl Future<Output = ()>) -> chronos_core::Result<()> {
    tokio::pin!(shutdown);
    let engine = shared.engine.clone();
    let mut blocker: Option<Blocker> = None;
    let mut spare_conn = Some(engine.blocking_connection().await?);
    let mut error_backoff = MIN_BACKOFF;
    let mut rotate = 0usize;
    loop {
        let round = claim_round(&shared, &slots, rotate).await;
        rotate = rotate.wrapping_add(1);
        if round.failed {
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
        if blocker.is_none() && free > 0 {
            let conn = match spare_conn.take() {
                Some(c) => c,
                None => match engine.blocking_connection().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open blocking connection");
                        tokio::time::sleep(error_backoff).await;
                        continue;
                    }
                },
            };
            blocker = Some(block_for_work(engine.clone(), shared.cfg.queues.clone(), conn));
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
        let woken = async {
            match blocker.as_mut() {
                Some(b) => Some(b.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = woken => {
                blocker = None;
                match r {
                    Some(Ok((conn, Ok(_)))) => spare_conn = Some(conn),
                    Some(Ok((_, Err(e)))) => {
                        tracing::warn!(error = %e, "blocking wait failed; reconnecting");
                        tokio::time::sleep(error_backoff).await;
                    }
                    _ => {}
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
    if let Some(b) = blocker {
        b.abort();
    }
    Ok(())
}

/// Claim for the free slots from each queue in turn, starting at `rotate`, and start what came.
async fn claim_round(shared: &Arc<Shared>, slots: &Arc<Semaphore>, rotate: usize) -> Round {
    let queues = &shared.cfg.queues;
    let mut round = Round { more: false, next_due: None, failed: false };
    for i in 0..queues.len() {
        let queue = &queues[(i + rotate) % queues.len()];
        let free = slots.available_permits();
        if free == 0 {
            round.more = true;
            break;
        }
        let want = free.min(MAX_CLAIM_BATCH);
        shared.stats.claim_calls.fetch_add(1, Ordering::Relaxed);
        match shared.engine.claim(queue, &shared.cfg.worker_id, want, shared.cfg.lease).await {
            Ok(batch) => {
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
                tracing::warn!(queue, error = %e, "claim failed; backing off");
                round.failed = true;
            }
        }
    }
    round
}

/// Wait on a connection of its own until new work may be available in any of `queues`.
fn block_for_work(engine: Engine, queues: Vec<String>, mut conn: MultiplexedConnection) -> Blocker {
    tokio::spawn(async move {
        let r = engine.wait_for_work(&mut conn, &queues, IDLE_BLOCK).await;
        (conn, r)
    })
}
