//! The `http` handler: one webhook request per attempt.
//!
//! # Contract
//! - Payload (unknown fields are refused, so a typo fails loudly instead of being ignored):
//!   `{url, method?, headers?: {name: value}, body?, timeout_ms?}`. A string `body` is sent as
//!   is; any other JSON value is sent as JSON with `Content-Type: application/json` (unless
//!   `headers` names a content type). `method` defaults to `POST` with a body, `GET` without.
//! - Outcome: 2xx succeeds. 408, 429, 5xx, connection failures and timeouts are retryable: the
//!   receiver may recover. Any other status (other 4xx, 1xx, 3xx) is permanent: sending the same
//!   request again gets the same answer. Redirects are not followed (see [`HttpHandler::new`]).
//!   Failure messages name the status and the URL; the detail carries up to 512 bytes of the
//!   response body. A 429 or 503 with `Retry-After` (seconds, or an HTTP date) sets the next
//!   attempt's delay ([`TaskContext::retry_after`]): the task's backoff cap bounds it, and the
//!   attempt's error says when the next one is due and why.
//! - Every request carries `X-Chronos-Task-Id`, `X-Chronos-Attempt` and `Idempotency-Key`:
//!   a retry after a lost response repeats a request the receiver may already have processed,
//!   and these let it drop the repeat.
//! - With a secret, `X-Chronos-Signature: t=<unix seconds>,v1=<hex hmac-sha256(secret,
//!   "<t>.<body bytes>")>` proves the request came from Chronos and that the body is intact;
//!   receivers check it with [`verify_signature`] and should also reject an old `t` (replays).
//! - Cancellation ends the attempt at once with [`HandlerError::Cancelled`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronos_core::builtin::HttpPayload;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use sha2::Sha256;

use crate::handler::{Handler, HandlerError, Task, TaskContext};

// Public so receivers and tests name the headers exactly as they are sent.
pub const SIGNATURE_HEADER: &str = "X-Chronos-Signature";
pub const TASK_ID_HEADER: &str = "X-Chronos-Task-Id";
pub const ATTEMPT_HEADER: &str = "X-Chronos-Attempt";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Enough of an error page to see what the receiver complained about, without storing a whole
/// HTML page per failed attempt.
const BODY_EXCERPT_BYTES: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// Sends webhooks. One client is shared by every task so connections and TLS sessions are reused.
pub struct HttpHandler {
    client: reqwest::Client,
    secret: Option<String>,
}

/// A payload checked up front, so everything that retrying cannot fix fails permanently before
/// any request is sent.
struct Prepared {
    method: Method,
    url: Url,
    /// The URL as shown in messages: the password, if any, is masked since messages are stored.
    shown: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl HttpHandler {
    /// `secret` signs every request; an empty secret counts as none, because an unset
    /// environment variable often arrives as an empty string and an empty HMAC key proves nothing.
    ///
    /// The client has no overall timeout: the task's own timeout bounds the attempt, and
    /// `timeout_ms` bounds a single request. It does not follow redirects: a 301/302 turns a
    /// POST into a bodiless GET (the webhook would "succeed" without being delivered) and would
    /// forward the signature and idempotency headers to another host.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (rustls with bundled roots; only a broken build).
    pub fn new(secret: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chronos/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the HTTP client (TLS backend initialisation failed)");
        HttpHandler { client, secret: secret.filter(|s| !s.is_empty()) }
    }

    fn prepare(&self, ctx: &TaskContext, p: HttpPayload) -> Result<Prepared, HandlerError> {
        let url = Url::parse(&p.url).map_err(|e| HandlerError::permanent_msg(format!("http: invalid url {:?}: {e}", p.url)))?;
        let shown = shown_url(&url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HandlerError::permanent_msg(format!("http: url {shown} is not http or https")));
        }

        let (body, json) = match p.body {
            None => (None, false),
            Some(serde_json::Value::String(s)) => (Some(s.into_bytes()), false),
            Some(v) => (Some(serde_json::to_vec(&v).expect("a JSON value serialises")), true),
        };

        let method = match p.method {
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| HandlerError::permanent_msg(format!("http: invalid method {m:?} for {shown}")))?,
            None if body.is_some() => Method::POST,
            None => Method::GET,
        };

        let timeout = match p.timeout_ms {
            Some(0) => {
                return Err(HandlerError::permanent_msg("http: timeout_ms must be positive"));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };

        let mut headers = HeaderMap::new();
        for (name, value) in &p.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HandlerError::permanent_msg(format!("http: invalid header name {name:?}")))?;
            // The value is left out of the message: headers often carry credentials.
            let v = HeaderValue::from_str(value)
                .map_err(|_| HandlerError::permanent_msg(format!("http: invalid value for header {name:?}")))?;
            headers.append(n, v);
        }
        if json && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }

        // Set after the payload's headers so a payload cannot spoof them.
        headers.insert(TASK_ID_HEADER, header_value(&ctx.id.to_string())?);
        headers.insert(ATTEMPT_HEADER, header_value(&ctx.attempt.to_string())?);
        headers.insert(IDEMPOTENCY_HEADER, header_value(&ctx.idempotency_key)?);
        if let Some(secret) = &self.secret {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let sig = sign(secret, &t.to_string(), body.as_deref().unwrap_or_default());
            headers.insert(SIGNATURE_HEADER, header_value(&format!("t={t},v1={sig}"))?);
        }

        Ok(Prepared { method, url, shown, headers, body, timeout })
    }

    async fn send(&self, ctx: &TaskContext, p: Prepared) -> Result<(), HandlerError> {
        let mut req = self.client.request(p.method.clone(), p.url).headers(p.headers);
        if let Some(body) = p.body {
            req = req.body(body);
        }
        if let Some(t) = p.timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| transport_error(&p.method, &p.shown, p.timeout, e))?;

        let status = resp.status();
        if status.is_success() {
            return ctx.set_result(&serde_json::json!({ "status": status.as_u16() }));
        }
        let mut message = format!("http: {} {} returned {status}", p.method, p.shown);
        if let Some(v) = header_str(&resp, RETRY_AFTER) {
            let _ = write!(message, " (Retry-After: {v})");
            if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
                && let Some(d) = parse_retry_after(&v, SystemTime::now())
            {
                ctx.retry_after(d);
            }
        }
        if status.is_redirection() {
            let location = header_str(&resp, LOCATION).unwrap_or_else(|| "none".into());
            let _ = write!(message, " (redirects are not followed; Location: {location})");
        }
        let detail = body_excerpt(resp).await;
        Err(if is_retryable_status(status) {
            HandlerError::Retryable { message, detail }
        } else {
            HandlerError::Permanent { message, detail }
        })
    }
}

impl Handler for HttpHandler {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn handle(&self, ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let payload: HttpPayload = task.payload()?;
        let prepared = self.prepare(&ctx, payload)?;
        tokio::select! {
            r = self.send(&ctx, prepared) => r,
            _ = ctx.cancelled() => Err(HandlerError::Cancelled),
        }
    }
}

/// 408 and 429 ask the client to come back later; 5xx is the receiver's own failure.
fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// Checks an `X-Chronos-Signature` header against the raw request body.
///
/// Several `v1=` entries are accepted (any match verifies) so a sender can sign with an old and
/// a new secret while receivers switch over. The comparison is constant-time, so response
/// timing does not reveal how much of a forged signature was right. It does not judge `t`:
/// how old a request may be is the receiver's policy.
pub fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("t", _)) => return false,
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())) else {
        return false;
    };
    let mac = mac_for(secret, t, body);
    sigs.into_iter().filter_map(|s| hex::decode(s).ok()).any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

fn mac_for(secret: &str, t: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn sign(secret: &str, t: &str, body: &[u8]) -> String {
    hex::encode(mac_for(secret, t, body).finalize().into_bytes())
}

fn header_value(s: &str) -> Result<HeaderValue, HandlerError> {
    HeaderValue::from_str(s).map_err(|_| HandlerError::permanent_msg(format!("http: {s:?} cannot be sent as a header value")))
}

/// `Retry-After`: delay-seconds, or an HTTP date (a date already past is no delay); `None`
/// when it is neither (the task's backoff applies).
fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn header_str(resp: &reqwest::Response, name: HeaderName) -> Option<String> {
    resp.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Reads at most [`BODY_EXCERPT_BYTES`] so a huge or endless error body cannot stall the
/// attempt or bloat the stored error. A body that breaks off keeps what arrived.
async fn body_excerpt(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(BODY_EXCERPT_BYTES);
    String::from_utf8_lossy(&buf).into_owned()
}

/// No response at all. Only a request reqwest refuses to build is permanent; everything else
/// (refused, reset, DNS, TLS handshake, timeout) may go away.
fn transport_error(method: &Method, shown: &str, timeout: Option<Duration>, err: reqwest::Error) -> HandlerError {
    // Without the URL: reqwest's copy would show a password that `shown` masks.
    let err = err.without_url();
    let what = if err.is_timeout() {
        match timeout {
            Some(t) => format!("timed out after {} ms", t.as_millis()),
            None => "timed out".to_owned(),
        }
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut detail = String::new();
    let mut root = err.to_string();
    let mut cur = std::error::Error::source(&err);
    while let Some(e) = cur {
        root = e.to_string();
        let _ = writeln!(detail, "caused by: {e}");
        cur = e.source();
    }
    let message = format!("http: {method} {shown} {what}: {root}");
    if err.is_builder() { HandlerError::Permanent { message, detail } } else { HandlerError::Retryable { message, detail } }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a date past");
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
