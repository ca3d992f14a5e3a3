//! Leases of running attempts: one heartbeat call per queue every lease third extends them all
//! and carries cancellations back, and the same beat refreshes this worker's entry among the
//! live workers; on shutdown, unfinished leases are handed straight back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chronos_core::TaskId;
use chronos_core::queue::LeaseState;
use tokio::sync::watch;

use super::{Inflight, Shared};

pub(super) async fn run_heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = shared.cfg.lease / 3;
    let me = super::presence(&shared.cfg);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        // The same beat keeps this worker listed as serving its queues (one HSET per beat).
        if shared.claiming.load(Ordering::Acquire)
            && let Err(e) = shared.engine.announce_worker(&me).await
        {
            tracing::warn!(error = %e, "could not refresh this worker's entry in the live workers");
        }
        for (queue, leases) in by_queue(&shared) {
            match shared.engine.heartbeat_with(&queue, shared.cfg.lease, &leases).await {
                Ok(states) => {
                    let inflight = shared.inflight.lock().unwrap();
                    for ((id, _, _), st) in leases.iter().zip(states) {
                        let Some(f) = inflight.get(id) else { continue };
                        match st {
                            LeaseState::Extended => {}
                            LeaseState::CancelRequested => {
                                f.state.cancel_requested.store(true, Ordering::Release);
                                f.cancel.cancel();
                            }
                            LeaseState::Lost => {
                                tracing::warn!(task = %id, "lease lost; stopping the attempt");
                                f.cancel.cancel();
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(queue, error = %e, "heartbeat failed"),
            }
        }
    }
}

/// Each queue's leases, with the progress each attempt reported since the last beat.
fn by_queue(shared: &Shared) -> HashMap<String, Vec<(TaskId, u64, Option<String>)>> {
    let mut out: HashMap<String, Vec<(TaskId, u64, Option<String>)>> = HashMap::new();
    for (id, f) in shared.inflight.lock().unwrap().iter() {
        out.entry(f.queue.clone()).or_default().push((*id, f.token, f.state.take_progress()));
    }
    out
}

/// Release every unfinished lease straight back to its queue and stop its handler.
pub(super) async fn hand_back(shared: &Arc<Shared>) {
    let taken: Vec<(TaskId, Inflight)> = shared.inflight.lock().unwrap().drain().collect();
    let mut by_queue: HashMap<String, Vec<(TaskId, u64, Option<String>)>> = HashMap::new();
    for (id, f) in &taken {
        // What the interrupted handler logged so far goes with its released attempt.
        by_queue.entry(f.queue.clone()).or_default().push((*id, f.token, f.state.logs.take()));
    }
    for (queue, leases) in by_queue {
        match shared.engine.release_with_logs(&queue, &shared.cfg.worker_id, &leases).await {
            Ok(r) => tracing::info!(queue, released = r.iter().filter(|x| **x).count(), "unfinished tasks handed back"),
            Err(e) => tracing::warn!(queue, error = %e, "could not hand tasks back; their leases will expire"),
        }
    }
    for (_, f) in taken {
        f.cancel.cancel();
        if let Some(a) = f.abort {
            a.abort();
        }
    }
}
