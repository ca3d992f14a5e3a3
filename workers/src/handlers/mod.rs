//! Built-in handlers: `http` (webhooks), `email` (SMTP), and the diagnostic `noop`, `sleep`
//! and `fail` used by demos, tests and benchmarks.

pub mod diag;
pub mod email;
pub mod http;

pub use diag::{Fail, Gather, Noop, Sleep};
pub use email::EmailHandler;
pub use http::HttpHandler;
