//! The payloads of the built-in handler kinds (`http`, `email`, `sleep`, `fail`; `noop` takes
//! anything), declared once: the worker's handlers decode these types, and submitting a task
//! of a built-in kind decodes its payload with them first ([`check_payload`]), so a payload the
//! handler would refuse is a `422` naming the field at submit instead of a dead task at run
//! time. Other kinds are not checked: custom handlers, and kinds a rolling deploy has not
//! reached yet. With the `openapi` feature the types carry their JSON Schema, published in the
//! API's OpenAPI document.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// `sleep`: sleeps `ms` milliseconds (returns early when cancelled).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    pub ms: u64,
}

/// `fail`: fails its first `times` attempts (permanently if `permanent`), then succeeds.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailPayload {
    pub times: u32,
    #[serde(default)]
    pub permanent: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// `http`: one request per attempt.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpPayload {
    pub url: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Any JSON, sent as the request body.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub body: Option<serde_json::Value>,
    pub timeout_ms: Option<u64>,
}

/// `email`: one SMTP submission per attempt.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailPayload {
    pub to: Recipients,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub from: Option<String>,
    pub reply_to: Option<String>,
}

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

/// The payload's shape for messages, per built-in kind; `None` for a kind not checked.
fn shape(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "sleep" => "{ms}",
        "fail" => "{times, permanent?, message?}",
        "http" => "{url, method?, headers?, body?, timeout_ms?}",
        "email" => "{to, subject, text?, html?, from?, reply_to?}",
        _ => return None,
    })
}

fn decode<'de, T: Deserialize<'de>>(kind: &str, payload: &'de serde_json::Value) -> Result<()> {
    serde_path_to_error::deserialize::<_, T>(payload).map(drop).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let at = if path == "." { String::new() } else { format!(" (at payload.{path})") };
        Error::invalid("payload", format!("{inner}{at}; the built-in {kind} handler takes {}", shape(kind).unwrap_or("{}")))
    })
}

/// Refuse a payload the built-in handler of `kind` would refuse to decode; any payload of
/// another kind passes.
pub fn check_payload(kind: &str, payload: &serde_json::Value) -> Result<()> {
    match kind {
        "sleep" => decode::<SleepPayload>(kind, payload),
        "fail" => decode::<FailPayload>(kind, payload),
        "http" => decode::<HttpPayload>(kind, payload),
        "email" => decode::<EmailPayload>(kind, payload),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_payload;

    #[test]
    fn a_built_in_payload_is_checked_and_the_message_names_the_field() {
        let msg = |kind: &str, p: serde_json::Value| check_payload(kind, &p).unwrap_err().to_string();
        let extra = msg("sleep", json!({"ms": 5, "n": 1}));
        assert!(
            extra.starts_with("payload: unknown field `n`, expected `ms` (at payload.n); the built-in sleep handler takes {ms}"),
            "{extra}"
        );
        assert!(msg("sleep", json!({})).starts_with("payload: missing field `ms`; the built-in"));
        let typed = msg("sleep", json!({"ms": "soon"}));
        assert!(typed.contains("invalid type") && typed.contains("(at payload.ms)"), "{typed}");
        assert!(msg("http", json!({"url": "https://x", "headers": {"a": 1}})).contains("(at payload.headers.a)"));
        assert!(msg("email", json!({"subject": "s"})).contains("missing field `to`"));
        check_payload("sleep", &json!({"ms": 5})).unwrap();
        check_payload("http", &json!({"url": "https://x", "body": {"any": [1]}})).unwrap();
        check_payload("report.build", &json!({"anything": true})).unwrap();
        check_payload("noop", &json!([1, 2])).unwrap();
    }
}
