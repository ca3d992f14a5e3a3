//! Route handlers, one module per resource.

pub mod dlq;
pub mod flows;
pub mod jobs;
pub mod keys;
pub mod queues;
pub mod schedules;
pub mod system;
pub mod tasks;

use crate::error::ApiError;

/// Parse a task id from the path; a malformed one is a 400 that says what an id looks like.
pub(crate) fn parse_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    parse_uuid(s, "task")
}

/// Parse a schedule id from the path, like [`parse_id`].
pub(crate) fn parse_schedule_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    parse_uuid(s, "schedule")
}

pub(crate) fn parse_uuid(s: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::malformed(format!("{s:?} is not a {what} id (a UUID such as 0193a1b2-...)")))
}
