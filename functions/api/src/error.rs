//! Every API error is an RFC 9457 `application/problem+json` document with a stable `type`.
//! Internals (SQL, Redis replies) are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// RFC 9457 problem details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `urn:chronos:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The request field at fault, when there is one (e.g. `tasks[3].priority`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, slug, title, detail: detail.into(), field: None }
    }
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-request", "Malformed request", detail)
    }
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = format!("{field}: {}", detail.into());
        ApiError { field: Some(field), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid request", detail) }
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed for this role", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Not possible in the current state", detail)
    }
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request body too large", detail)
    }
    pub fn headers_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", "Request headers too large", detail)
    }
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request body too slow", detail)
    }
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "this path does not accept that method")
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable", detail)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "an unexpected error occurred; it has been logged")
    }
}

impl From<chronos_core::Error> for ApiError {
    fn from(e: chronos_core::Error) -> Self {
        use chronos_core::Error as E;
        match e {
            E::Invalid { field, message } => ApiError::validation(field, message),
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::conflict(m),
            // `maxmemory` reached with `noeviction`: say so, it is not a connection problem. A
            // coalesced write's copy of the error keeps only its text.
            E::Redis(ref r) if r.code() == Some("OOM") || r.to_string().contains("used memory > 'maxmemory'") => {
                tracing::warn!(error = %e, "Redis out of memory");
                ApiError::unavailable(
                    "the queue store (Redis) is out of memory (maxmemory reached); nothing was changed; \
                     retry later, once workers have drained the queues or Redis has more memory",
                )
            }
            E::Redis(_) | E::Postgres(_) | E::Sqs(_) => {
                tracing::warn!(error = %e, "store unavailable");
                let which = match e {
                    E::Redis(_) => "the queue store (Redis)",
                    E::Postgres(_) => "the audit store (Postgres)",
                    _ => "the dead-letter queue (SQS)",
                };
                ApiError::unavailable(format!("{which} is unavailable; nothing was changed; retry later"))
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:chronos:problem:{}", self.slug),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Problem responses shared by many operations, declared once for the OpenAPI spec.
fn problems(list: &[(u16, &str)]) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
            (
                status.to_string(),
                ResponseBuilder::new().description(*description).content("application/problem+json", content).build().into(),
            )
        })
        .collect()
}

macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident: $($status:literal => $desc:literal),+ $(,)?) => {
        $(#[$doc])*
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
                problems(&[$(($status, $desc)),+])
            }
        }
    };
}

problem_set!(
    /// Every `/v1` operation: no key, a role that may not, a store down.
    AuthErrors:
    401 => "No valid API key",
    403 => "The key's role may not do this",
    503 => "A store is unavailable; nothing was changed; retry",
);
problem_set!(
    /// Operations that read a JSON body.
    BodyErrors:
    400 => "Malformed JSON",
    408 => "The body did not arrive in time",
    413 => "Body too large",
    415 => "Not JSON",
    422 => "A field is invalid; `field` names it (e.g. tasks[3].priority)",
);
problem_set!(
    /// Operations with query parameters or a named path segment.
    InputErrors:
    400 => "Malformed query string or path",
    422 => "A parameter is invalid; `field` names it",
);
problem_set!(
    /// Operations on one resource by id.
    IdErrors:
    400 => "Malformed id",
    404 => "Not found (or, for a producer key, not its own)",
);
problem_set!(
    /// State-changing actions the current state may not allow.
    StateErrors:
    409 => "The current state does not allow it; `detail` says why",
);
