//! Schedules as a user describes them and as Postgres records them, and what a tick reports.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cron::{CronExpr, parse_timezone};
use crate::error::{Error, Result};
use crate::model::{Backoff, NewTask, Overlap, Priority};

/// What a tick does with occurrences whose instant passed while no tick ran (an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Run every missed occurrence, oldest first.
    RunAll,
    /// Run the latest missed occurrence once.
    #[default]
    RunOnce,
    /// Run none of them.
    Skip,
}

impl Misfire {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::RunAll => "run_all",
            Misfire::RunOnce => "run_once",
            Misfire::Skip => "skip",
        }
    }
}

impl FromStr for Misfire {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Misfire::RunAll, Misfire::RunOnce, Misfire::Skip]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::invalid("misfire", format!("{s:?} is not a misfire policy; use run_all, run_once or skip")))
    }
}

/// The task each occurrence runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    pub name: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub priority: Priority,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
}

/// What a task runs, without when it runs.
impl From<NewTask> for TaskTemplate {
    fn from(t: NewTask) -> Self {
        TaskTemplate {
            name: t.name,
            queue: t.queue,
            payload: t.payload,
            priority: t.priority,
            max_attempts: t.max_attempts,
            backoff: t.backoff,
            timeout_ms: t.timeout.as_millis() as u64,
        }
    }
}

impl TaskTemplate {
    /// A template with the same defaults as a task submitted without options.
    pub fn new(name: impl Into<String>, payload: serde_json::Value) -> Self {
        TaskTemplate::from(NewTask::new(name, payload))
    }

    pub fn task(&self) -> NewTask {
        NewTask::new(self.name.clone(), self.payload.clone())
            .queue(self.queue.clone())
            .priority(self.priority)
            .max_attempts(self.max_attempts)
            .backoff(self.backoff)
            .timeout(Duration::from_millis(self.timeout_ms))
    }
}

/// A schedule as a user describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub paused: bool,
    pub overlap: Overlap,
    pub misfire: Misfire,
}

impl ScheduleSpec {
    pub fn new(name: impl Into<String>, cron: impl Into<String>, task: TaskTemplate) -> Self {
        ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            timezone: "UTC".into(),
            task,
            paused: false,
            overlap: Overlap::Allow,
            misfire: Misfire::RunOnce,
        }
    }
}

/// Changes to a schedule; `None` leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulePatch {
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub task: Option<TaskTemplate>,
    pub overlap: Option<Overlap>,
    pub misfire: Option<Misfire>,
}

impl SchedulePatch {
    pub fn is_empty(&self) -> bool {
        *self == SchedulePatch::default()
    }
}

/// A schedule as Postgres records it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub paused: bool,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// Every occurrence up to here has been planned (or skipped by the misfire policy).
    pub planned_until: DateTime<Utc>,
    pub last_fire_at: Option<DateTime<Utc>>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRecord {
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            task: self.task.clone(),
            paused: self.paused,
            overlap: self.overlap,
            misfire: self.misfire,
        }
    }

    /// The next `n` fire instants strictly after `after`.
    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        match (CronExpr::parse(&self.cron), parse_timezone(&self.timezone)) {
            (Ok(e), Ok(tz)) => e.next_n(tz, after, n),
            _ => Vec::new(),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Schedules planned (a schedule caught up over several passes counts once per pass).
    pub schedules: usize,
    /// Occurrences enqueued as tasks.
    pub planned: usize,
    /// Missed occurrences (their instant passed while no tick ran) left out by the misfire policy.
    pub misfires_skipped: u64,
    /// Schedules that could not be planned (their error is logged); retried next tick.
    pub failed: usize,
}

/// Why a schedule change could not be made.
#[derive(Debug)]
pub enum ChangeError {
    NotFound,
    /// Another schedule has this name.
    NameTaken(String),
    Other(Error),
}

impl From<Error> for ChangeError {
    fn from(e: Error) -> Self {
        ChangeError::Other(e)
    }
}

impl From<sqlx::Error> for ChangeError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e
            && d.constraint() == Some("schedules_name_key")
        {
            return ChangeError::NameTaken(d.message().to_owned());
        }
        ChangeError::Other(e.into())
    }
}
