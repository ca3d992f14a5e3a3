//! Signing in and staying signed in. `POST /login` takes an API key (the API's keys, or the
//! bootstrap admin key) and sets a session cookie: a random secret, HttpOnly, SameSite=Strict,
//! Secure when configured. Postgres keeps only the secret's SHA-256, the signed-in key's hash
//! and a CSRF token, with an expiry; every request looks the session up again, so a revoked key
//! or an expired session is refused at once, and sessions outlive a dashboard restart.
//!
//! What a session may do is its key's role, decided by [`chronos_core::access::Role::allows`].

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use chronos_core::access::{BOOTSTRAP_ADMIN, Caller, Permission, Role, bootstrap_admin, constant_time_eq, hash_secret};
use sqlx::Row;

use crate::DashState;
use crate::error::PageError;

pub const SESSION_COOKIE: &str = "chronos_session";
const FLASH_COOKIE: &str = "chronos_flash";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The token every state-changing form must carry.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
    id_hash: String,
}

impl Session {
    pub fn may(&self, p: Permission) -> bool {
        self.caller.role.allows(p)
    }

    /// A 403 page unless the role allows `p`.
    pub fn require(&self, p: Permission) -> Result<(), PageError> {
        if self.may(p) { Ok(()) } else { Err(PageError::Forbidden(format!("The {} role may not do this.", self.caller.role))) }
    }

    /// A 403 page unless `token` is this session's CSRF token.
    pub fn check_csrf(&self, token: &str) -> Result<(), PageError> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(PageError::Forbidden("This form has expired or did not come from this dashboard. Reload the page and try again.".into()))
        }
    }

    /// A short name for the signed-in key.
    pub fn who(&self) -> String {
        if self.caller.key_id == BOOTSTRAP_ADMIN {
            "bootstrap admin".into()
        } else {
            format!("key {}", &self.caller.key_id[..8.min(self.caller.key_id.len())])
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Who `secret` is: the bootstrap admin key, or a live stored key.
pub async fn authenticate(state: &DashState, secret: &str) -> Result<Option<Caller>, PageError> {
    if let Some(admin) = bootstrap_admin(state.cfg.admin_key.as_ref(), secret) {
        return Ok(Some(admin));
    }
    Ok(state.chronos.authenticate(secret).await?)
}

/// Start a session for `caller`, who signed in with `secret`; returns the cookie value.
pub async fn create(state: &DashState, caller: &Caller, secret: &str) -> Result<String, PageError> {
    let token = random_token();
    let pool = state.chronos.store.pool();
    // Expired sessions are swept on sign-in: the table stays as small as the live sessions.
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()").execute(pool).await.map_err(chronos_core::Error::from)?;
    sqlx::query(
        "INSERT INTO dashboard_sessions (id_hash, key_id, key_hash, csrf, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(hash_secret(&token))
    .bind(&caller.key_id)
    .bind(hash_secret(secret))
    .bind(random_token())
    .bind(state.cfg.session_ttl.as_secs_f64())
    .execute(pool)
    .await
    .map_err(chronos_core::Error::from)?;
    Ok(token)
}

/// The live session a cookie value stands for: not expired, and its key still valid (a
/// stored key not revoked — its role read now —, or the bootstrap key still the configured one).
pub async fn lookup(state: &DashState, token: &str) -> Result<Option<Session>, PageError> {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let id_hash = hash_secret(token);
    let row = sqlx::query(
        "SELECT s.key_id, s.key_hash, s.csrf, s.expires_at, k.role
         FROM dashboard_sessions s LEFT JOIN api_keys k ON k.hash = s.key_hash AND k.revoked_at IS NULL
         WHERE s.id_hash = $1 AND s.expires_at > now()",
    )
    .bind(&id_hash)
    .fetch_optional(state.chronos.store.pool())
    .await
    .map_err(chronos_core::Error::from)?;
    let Some(r) = row else { return Ok(None) };
    let key_id: String = r.get(0);
    let key_hash: String = r.get(1);
    let role = if key_id == BOOTSTRAP_ADMIN {
        let current = state.cfg.admin_key.as_ref().map(|k| hash_secret(k.expose()));
        if !current.is_some_and(|h| constant_time_eq(h.as_bytes(), key_hash.as_bytes())) {
            return Ok(None);
        }
        Role::Admin
    } else {
        match r.get::<Option<String>, _>(4).and_then(|s| s.parse::<Role>().ok()) {
            Some(role) => role,
            None => return Ok(None),
        }
    };
    Ok(Some(Session { caller: Caller { key_id, role }, csrf: r.get(2), expires_at: r.get(3), id_hash }))
}

pub async fn destroy(state: &DashState, s: &Session) -> Result<(), PageError> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
        .bind(&s.id_hash)
        .execute(state.chronos.store.pool())
        .await
        .map_err(chronos_core::Error::from)?;
    Ok(())
}

/// The `Set-Cookie` value for a session token (`None`: clear it).
pub fn session_cookie(state: &DashState, token: Option<&str>) -> HeaderValue {
    let secure = if state.cfg.secure_cookies { "; Secure" } else { "" };
    let v = match token {
        Some(t) => format!("{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", state.cfg.session_ttl.as_secs()),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&v).expect("cookie is ASCII")
}

/// Where a signed-out browser goes: the sign-in page, coming back to `path` afterwards.
fn to_login(parts: &Parts) -> Response {
    let back = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if parts.method != axum::http::Method::GET || back == "/" {
        return Redirect::to("/login").into_response();
    }
    Redirect::to(&format!("/login?next={}", crate::ui::url_encode(back))).into_response()
}

impl<S> FromRequestParts<S> for Session
where
    DashState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = DashState::from_ref(state);
        let token = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned);
        match token {
            Some(t) => match lookup(&state, &t).await {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err(to_login(parts)),
                Err(e) => Err(e.into_response()),
            },
            None => Err(to_login(parts)),
        }
    }
}

impl<S> OptionalFromRequestParts<S> for Session
where
    DashState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let state = DashState::from_ref(state);
        let Some(t) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else { return Ok(None) };
        lookup(&state, &t).await.map_err(IntoResponse::into_response)
    }
}

/// A one-shot message shown on the next page (after a redirect): `(ok, text)`.
#[derive(Debug, Clone, Default)]
pub struct Flash(pub Option<(bool, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let f = cookie(&parts.headers, FLASH_COOKIE).and_then(|v| {
            let (kind, msg) = v.split_once('.')?;
            let text = String::from_utf8(hex::decode(msg).ok()?).ok()?;
            Some((kind == "ok", text))
        });
        Ok(Flash(f))
    }
}

impl Flash {
    /// The cookie that carries `text` to the next page.
    pub fn set(ok: bool, text: &str) -> HeaderValue {
        let text: String = text.chars().take(300).collect();
        HeaderValue::from_str(&format!(
            "{FLASH_COOKIE}={}.{}; Path=/; HttpOnly; SameSite=Strict; Max-Age=60",
            if ok { "ok" } else { "err" },
            hex::encode(text)
        ))
        .expect("hex is ASCII")
    }

    /// The cookie that clears a shown message.
    pub fn clear() -> HeaderValue {
        HeaderValue::from_static("chronos_flash=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Only paths of this site may be a redirect target (no `//host`, no scheme).
pub fn local_path(p: Option<&str>, default: &str) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control) => p.to_owned(),
        _ => default.to_owned(),
    }
}
