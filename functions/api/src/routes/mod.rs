//! Route handlers, one module per resource.

pub mod dlq;
pub mod keys;
pub mod queues;
pub mod system;
pub mod tasks;

use crate::error::ApiError;

/// Parse a task id from the path; a malformed one is a 400 that says what an id looks like.
pub(crate) fn parse_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::malformed(format!("{s:?} is not a task id (a UUID such as 0193a1b2-...)")))
}
