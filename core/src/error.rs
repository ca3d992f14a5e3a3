//! The library's error type. Whether an error is worth retrying is part of the type, so the
//! API can answer 503 (try again) versus 4xx (fix the request) without string matching.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The request itself is wrong; `field` names what to fix.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// Redis could not be reached or refused the command. Retrying later is safe.
    #[error("queue store (Redis) unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// Postgres could not be reached. Enqueue refuses rather than accept a task it cannot record.
    #[error("audit store (Postgres) unavailable: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQS dead-letter queue could not be reached.
    #[error("dead-letter queue (SQS) unavailable: {0}")]
    Sqs(String),
    /// The thing asked for does not exist (or the caller may not see it).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but its state does not allow the action; the message says why.
    #[error("{0}")]
    Conflict(String),
    /// A script answered something this version does not understand.
    #[error("unexpected reply from Redis script {script}: {detail}")]
    Protocol { script: &'static str, detail: String },
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid { field, message: message.into() }
    }

    /// The same error for another caller (one coalesced write answers many): the same variant
    /// and message, so retryability and the API's answer do not change.
    pub fn replicate(&self) -> Error {
        match self {
            Error::Invalid { field, message } => Error::Invalid { field, message: message.clone() },
            Error::Redis(e) => Error::Redis(redis::RedisError::from(std::io::Error::other(e.to_string()))),
            Error::Postgres(e) => Error::Postgres(sqlx::Error::Io(std::io::Error::other(e.to_string()))),
            Error::Migrate(e) => Error::Protocol { script: "migrate", detail: e.to_string() },
            Error::Sqs(m) => Error::Sqs(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::Conflict(m) => Error::Conflict(m.clone()),
            Error::Protocol { script, detail } => Error::Protocol { script, detail: detail.clone() },
        }
    }

    /// True when the same request may succeed later (a store was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Redis(_) | Error::Postgres(_) | Error::Sqs(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
