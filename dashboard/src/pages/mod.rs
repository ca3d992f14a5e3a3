//! One module per page; each handler reads through `chronos_core` and renders with [`crate::ui`].

pub mod dlq;
pub mod jobs;
pub mod login;
pub mod overview;
pub mod schedules;
pub mod tasks;

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::error::PageError;
use crate::session::{Flash, local_path};

/// The fields every action form carries.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    /// Where to go afterwards (a path of this site).
    pub back: Option<String>,
}

/// After an action: back to `back` with a message. A refusal the operator can act on (the
/// state changed meanwhile) is a message too; anything else is an error page.
pub fn after_action(result: Result<String, PageError>, back: Option<&str>, default: &str) -> Response {
    let to = local_path(back, default);
    let (ok, text) = match result {
        Ok(text) => (true, text),
        Err(PageError::Conflict(m)) => (false, m),
        Err(e) => return e.into_response(),
    };
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut().append(header::SET_COOKIE, Flash::set(ok, &text));
    r
}
