//! The scaling decision: a pure function of what the queues hold, the policy, the ECS
//! service's current count and what the scaler remembers from its last run. No I/O, no clock
//! (time comes in with the inputs), so every rule is a row of the table below.
//!
//! - **Target**: enough workers that each has at most `target_backlog_per_worker` waiting
//!   tasks, and never fewer than the workers busy with the attempts already running (running
//!   attempts ÷ each worker's concurrency, rounded up), within `min..=max` (the bounds win).
//! - **Scale out at once**: a target above the current count is applied in this run.
//! - **Scale in only after the cool-down**: a target below the current count is applied only
//!   when the current count has not been needed for `cooldown` (it was last needed when a run
//!   computed a target at or above it). A scaler with no memory (its first run, or its state
//!   lost) starts the cool-down instead of scaling in.
//! - A current count outside `min..=max` (the bounds were changed) is brought inside at once;
//!   going lower than that waits for the cool-down.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub min: u32,
    pub max: u32,
    /// Waiting tasks one worker should have at most.
    pub target_backlog_per_worker: u32,
    /// Attempts one worker runs at once (its `CHRONOS_CONCURRENCY`).
    pub worker_concurrency: u32,
    #[serde(serialize_with = "secs")]
    pub cooldown: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// What the run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Inputs {
    /// Waiting + due scheduled + due retrying, over the queues the workers serve (paused queues
    /// count zero: nobody claims from them).
    pub backlog: u64,
    /// Attempts running.
    pub running: u64,
    /// The service's desired count now.
    pub current: u32,
    /// Redis time of the reading (ms).
    pub now_ms: i64,
}

/// What the scaler remembers between runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// When a run last needed the count the service had then (or more); `None`: no memory.
    pub last_needed_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// The target equals the current count.
    Hold,
    ScaleOut,
    ScaleIn,
    /// The target is lower, but the current count was needed less than `cooldown` ago.
    CoolingDown {
        remaining_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The count to set (equal to `inputs.current` unless the action scales).
    pub desired: u32,
    /// What the backlog asks for, within bounds.
    pub target: u32,
    pub action: Action,
    /// What to remember for the next run.
    pub state: State,
}

impl Decision {
    pub fn changes(&self, current: u32) -> bool {
        self.desired != current
    }
}

fn div_ceil(n: u64, d: u32) -> u64 {
    n.div_ceil(u64::from(d.max(1)))
}

/// The desired worker count for `inputs` under `policy`, given the last run's `state`.
pub fn desired_count(inputs: &Inputs, policy: &Policy, state: &State) -> Decision {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    let by_backlog = div_ceil(inputs.backlog, policy.target_backlog_per_worker);
    let busy = div_ceil(inputs.running, policy.worker_concurrency);
    let target = by_backlog.max(busy).clamp(u64::from(min), u64::from(max)) as u32;
    let needed_now = State { last_needed_ms: Some(inputs.now_ms) };
    let current = inputs.current;
    if target >= current {
        let action = if target > current { Action::ScaleOut } else { Action::Hold };
        return Decision { desired: target, target, action, state: needed_now };
    }
    // target < current
    if current > max {
        // Into bounds at once; anything further down waits for the cool-down from here.
        return Decision { desired: max, target, action: Action::ScaleIn, state: needed_now };
    }
    let cooldown_ms = policy.cooldown.as_millis() as i64;
    match state.last_needed_ms {
        // A clock behind the memory (another scaler's Redis time was ahead) counts as no time passed.
        Some(at) if (inputs.now_ms - at).max(0) >= cooldown_ms => {
            Decision { desired: target, target, action: Action::ScaleIn, state: needed_now }
        }
        Some(at) => Decision {
            desired: current,
            target,
            action: Action::CoolingDown { remaining_ms: (cooldown_ms - (inputs.now_ms - at).max(0)) as u64 },
            state: *state,
        },
        None => Decision { desired: current, target, action: Action::CoolingDown { remaining_ms: cooldown_ms as u64 }, state: needed_now },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy =
        Policy { min: 1, max: 20, target_backlog_per_worker: 100, worker_concurrency: 16, cooldown: Duration::from_secs(300) };
    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    #[test]
    fn each_rule_of_the_policy_holds() {
        use Action::*;
        // (what, backlog, running, current, now, last_needed, policy) → (desired, target, action, remembered)
        #[allow(clippy::type_complexity)]
        let table: &[(&str, u64, u64, u32, i64, Option<i64>, Policy, (u32, u32, Action, Option<i64>))] = &[
            ("idle at min holds", 0, 0, 1, T0, Some(T0 - MIN), P, (1, 1, Hold, Some(T0))),
            ("a burst scales out at once", 5000, 0, 1, T0, Some(T0), P, (20, 20, ScaleOut, Some(T0))),
            ("backlog per worker rounds up", 250, 0, 1, T0, Some(T0), P, (3, 3, ScaleOut, Some(T0))),
            ("exactly on target", 300, 0, 3, T0, Some(T0 - MIN), P, (3, 3, Hold, Some(T0))),
            ("max holds", 1_000_000, 0, 5, T0, None, P, (20, 20, ScaleOut, Some(T0))),
            ("min holds on an empty queue", 0, 0, 0, T0, None, Policy { min: 2, ..P }, (2, 2, ScaleOut, Some(T0))),
            ("min 0 lets an idle fleet reach zero", 0, 0, 1, T0, Some(T0 - 5 * MIN), Policy { min: 0, ..P }, (0, 0, ScaleIn, Some(T0))),
            (
                "a drained queue waits for the cool-down",
                0,
                0,
                10,
                T0,
                Some(T0 - MIN),
                P,
                (10, 1, CoolingDown { remaining_ms: 240_000 }, Some(T0 - MIN)),
            ),
            (
                "one millisecond short of the cool-down",
                0,
                0,
                10,
                T0,
                Some(T0 - 300_000 + 1),
                P,
                (10, 1, CoolingDown { remaining_ms: 1 }, Some(T0 - 300_000 + 1)),
            ),
            ("after the cool-down it scales in to the target", 0, 0, 10, T0, Some(T0 - 300_000), P, (1, 1, ScaleIn, Some(T0))),
            ("scale in stops at the running workers", 0, 64, 10, T0, Some(T0 - 10 * MIN), P, (4, 4, ScaleIn, Some(T0))),
            ("running attempts round up to whole workers", 0, 65, 1, T0, Some(T0), P, (5, 5, ScaleOut, Some(T0))),
            ("running and backlog: the larger wins", 150, 64, 3, T0, Some(T0 - 10 * MIN), P, (4, 4, ScaleOut, Some(T0))),
            ("running beyond max: max still holds", 0, 10_000, 20, T0, Some(T0), P, (20, 20, Hold, Some(T0))),
            (
                "no memory: start the cool-down rather than scale in",
                0,
                0,
                10,
                T0,
                None,
                P,
                (10, 1, CoolingDown { remaining_ms: 300_000 }, Some(T0)),
            ),
            ("a count above a lowered max comes down to max at once", 0, 0, 30, T0, Some(T0), P, (20, 1, ScaleIn, Some(T0))),
            ("above max with backlog: down to max at once", 5000, 0, 30, T0, Some(T0), P, (20, 20, ScaleIn, Some(T0))),
            (
                "a partial drain also waits",
                500,
                0,
                10,
                T0,
                Some(T0 - MIN),
                P,
                (10, 5, CoolingDown { remaining_ms: 240_000 }, Some(T0 - MIN)),
            ),
            (
                "a clock behind the memory waits the full cool-down",
                0,
                0,
                10,
                T0 - MIN,
                Some(T0),
                P,
                (10, 1, CoolingDown { remaining_ms: 300_000 }, Some(T0)),
            ),
            ("a max below min is raised to min", 0, 0, 1, T0, Some(T0), Policy { min: 3, max: 2, ..P }, (3, 3, ScaleOut, Some(T0))),
            (
                "zero cool-down scales in at once",
                0,
                0,
                10,
                T0,
                Some(T0),
                Policy { cooldown: Duration::ZERO, ..P },
                (1, 1, ScaleIn, Some(T0)),
            ),
        ];
        for (what, backlog, running, current, now, last, policy, (desired, target, action, remembered)) in table {
            let inputs = Inputs { backlog: *backlog, running: *running, current: *current, now_ms: *now };
            let d = desired_count(&inputs, policy, &State { last_needed_ms: *last });
            assert_eq!(
                (d.desired, d.target, d.action, d.state.last_needed_ms),
                (*desired, *target, *action, *remembered),
                "{what}: {inputs:?}"
            );
            assert_eq!(d.changes(*current), desired != current, "{what}");
        }
    }

    #[test]
    fn a_drain_then_quiet_runs_scale_in_exactly_once_after_the_cool_down() {
        // A run every minute: burst, drain, then quiet; the count drops at the first run at or
        // after five minutes since the burst was last seen, and not again.
        let mut state = State::default();
        let mut current = 1;
        let mut changes = Vec::new();
        for minute in 0..12i64 {
            let backlog = if minute < 2 { 1500 } else { 0 };
            let d = desired_count(&Inputs { backlog, running: 0, current, now_ms: T0 + minute * MIN }, &P, &state);
            if d.changes(current) {
                changes.push((minute, d.desired));
            }
            current = d.desired;
            state = d.state;
        }
        assert_eq!(changes, vec![(0, 15), (6, 1)]);
    }
}
