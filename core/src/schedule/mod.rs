//! Recurring schedules: stored in Postgres, planned ahead by the tick.
//!
//! Each tick plans every occurrence in `(planned_until, now + horizon]` as a delayed task and
//! advances `planned_until`, while a transaction holds the schedule's row lock
//! (`FOR NO KEY UPDATE SKIP LOCKED`): two ticks never plan one schedule at once, and a tick that
//! stops half-way leaves `planned_until` where it was, so the next one plans the same window.
//! An occurrence's task id is derived from (schedule, fire instant) ([`Origin::task_id`]).
//!
//! Under the lock, in this order:
//! 1. the occurrences' task rows are inserted and committed (`ON CONFLICT (id) DO NOTHING`) on
//!    a connection of their own, so the audit writer finds a row for every event a worker
//!    produces, however fast the task runs;
//! 2. the new occurrences, and any earlier-inserted ones Postgres still shows as not started,
//!    are enqueued in Redis, which skips an id it holds live and one that already ran (the
//!    tombstone `done:<id>` that finishing an occurrence leaves for six hours);
//! 3. `planned_until` moves and the lock's transaction commits.
//!
//! So a tick that dies anywhere, a retried Lambda or two ticks racing never enqueue an
//! occurrence twice, and never lose one: the window is planned again and step 2 fills the gap.
//!
//! Sub-minute schedules are exact because the delayed set fires them, not the tick.
//!
//! # Layout
//! - [`model`] — schedules as described and as recorded, patches, tick reports, change errors.
//! - [`validate`] — the checks before a schedule is stored (each error names its field).
//! - [`planner`] — which occurrences one pass plans: a pure function of the clock.
//! - [`db`] — the schedules table's columns and row mapping.
//! - [`scheduler`] — [`Scheduler`]: the use cases and the tick.

mod db;
pub mod model;
pub mod planner;
pub mod scheduler;
mod validate;

use std::time::Duration;

pub use model::{ChangeError, Misfire, SchedulePatch, ScheduleRecord, ScheduleSpec, TaskTemplate, TickReport};
pub use scheduler::Scheduler;
pub use validate::validate_schedule_name;

/// The shortest planning horizon: a tick runs every minute, so one late or failed tick must
/// not leave a gap.
pub const MIN_HORIZON: Duration = Duration::from_secs(120);
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(180);
