//! Validation of a schedule before it is stored: every error names the field to fix.

use crate::cron::{CronExpr, Tz, parse_timezone};
use crate::error::{Error, Result};

use super::{ScheduleSpec, TaskTemplate};

const MAX_SCHEDULE_NAME: usize = 128;

impl TaskTemplate {
    /// Validate as a task would be validated when submitted.
    pub fn validate(&self, max_payload: usize) -> Result<()> {
        self.task().prepare(max_payload).map(|_| ())
    }
}

impl ScheduleSpec {
    /// Check every part; the error names the field to fix.
    pub fn validate(&self, max_payload: usize) -> Result<(CronExpr, Tz)> {
        validate_schedule_name(&self.name)?;
        let expr = CronExpr::parse(&self.cron)?;
        let tz = parse_timezone(&self.timezone)?;
        self.task.validate(max_payload)?;
        Ok((expr, tz))
    }
}

pub fn validate_schedule_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > MAX_SCHEDULE_NAME || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)) {
        return Err(Error::invalid(
            "name",
            format!("{n:?} is not a valid schedule name; use 1–{MAX_SCHEDULE_NAME} of A–Z a–z 0–9 _ - . : /"),
        ));
    }
    Ok(())
}
