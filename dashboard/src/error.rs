//! Errors as pages: 404, 403, 409, 422 and 503 each render a page that says what happened
//! and where to go; internals (connection strings, SQL) never reach the browser.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ui;

#[derive(Debug)]
pub enum PageError {
    NotFound(String),
    Forbidden(String),
    /// The state does not allow the action; the message says why.
    Conflict(String),
    Invalid(String),
    /// A store is unreachable; trying again later may work.
    Unavailable(String),
    Internal,
}

impl From<chronos_core::Error> for PageError {
    fn from(e: chronos_core::Error) -> Self {
        use chronos_core::Error as E;
        match e {
            E::NotFound(m) => PageError::NotFound(m),
            E::Conflict(m) => PageError::Conflict(m),
            E::Invalid { .. } => PageError::Invalid(e.to_string()),
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "dashboard: store unavailable");
                PageError::Unavailable(
                    match e {
                        E::Redis(_) => "The queue store (Redis) is not answering.",
                        E::Postgres(_) => "The audit store (Postgres) is not answering.",
                        _ => "The dead-letter queue (SQS) is not answering.",
                    }
                    .into(),
                )
            }
            e => {
                tracing::error!(error = %e, "dashboard: unexpected error");
                PageError::Internal
            }
        }
    }
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            PageError::NotFound(m)
            | PageError::Forbidden(m)
            | PageError::Conflict(m)
            | PageError::Invalid(m)
            | PageError::Unavailable(m) => m,
            PageError::Internal => "Something went wrong on our side; it has been logged.",
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::CONFLICT => "Not possible now",
            StatusCode::UNPROCESSABLE_ENTITY => "Not valid",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Error",
        };
        (status, ui::error_page(status.as_u16(), title, self.message())).into_response()
    }
}
