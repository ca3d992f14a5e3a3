//! Authentication and authorisation, in one place: every `/v1` route passes through
//! [`authorize`], which finds the route's [`Permission`] in [`permission_for`], checks the
//! bearer key, and refuses a role that may not (401 without a valid key, 403 for the role).
//! While Postgres cannot be reached, keys seen recently still sign in ([`KeyCache`]).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chronos_core::access::{Caller, Permission, bootstrap_admin, hash_secret};

use crate::AppState;
use crate::error::ApiError;

/// The permission each `/v1` route needs. A route missing here is refused for everyone.
pub fn permission_for(method: &Method, path: &str) -> Option<Permission> {
    use Permission::*;
    let p = path.strip_prefix("/v1").unwrap_or(path);
    // HEAD is answered by every GET route and reads the same data.
    let m = if method == Method::HEAD { "GET" } else { method.as_str() };
    Some(match (m, p) {
        ("POST", "/tasks" | "/tasks/batch" | "/flows") => TasksCreate,
        ("GET", "/tasks" | "/tasks/{id}" | "/tasks/{id}/attempts" | "/tasks/{id}/dependencies") => TasksRead,
        ("POST", "/tasks/{id}/cancel" | "/tasks/{id}/retry") => TasksManage,
        ("GET", "/schedules" | "/schedules/preview" | "/schedules/{id}") => SchedulesRead,
        ("POST", "/schedules" | "/schedules/{id}/pause" | "/schedules/{id}/resume" | "/schedules/{id}/trigger")
        | ("PATCH" | "DELETE", "/schedules/{id}") => SchedulesManage,
        ("GET", "/queues") => QueuesRead,
        ("POST", "/queues/{queue}/pause" | "/queues/{queue}/resume") | ("PATCH", "/queues/{queue}") => QueuesManage,
        ("GET", "/dlq") => DlqRead,
        ("POST", "/dlq/redrive" | "/dlq/{id}/redrive") => DlqManage,
        // Producers follow their own jobs; a redrive job also needs DlqManage (checked by the handler).
        ("GET", "/jobs" | "/jobs/{id}") => TasksRead,
        ("POST", "/jobs" | "/jobs/{id}/cancel") => TasksManage,
        ("POST" | "GET", "/keys") | ("DELETE", "/keys/{id}") => Keys,
        _ => return None,
    })
}

pub async fn authorize(State(state): State<AppState>, path: MatchedPath, mut req: Request, next: Next) -> Result<Response, ApiError> {
    // Owned before any await: the request body is not Sync, so the request cannot be borrowed
    // across one.
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let caller = authenticate(&state, header.as_deref()).await?;
    let Some(perm) = permission_for(req.method(), path.as_str()) else {
        return Err(ApiError::forbidden("this route is not open to any role"));
    };
    if !caller.role.allows(perm) {
        return Err(ApiError::forbidden(format!("the {} role may not do this", caller.role)));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, ApiError> {
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let bearer = header.and_then(|h| h.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, k)| k.trim());
    let Some(secret) = bearer else {
        return Err(ApiError::unauthorized("send an API key as Authorization: Bearer <key>"));
    };
    if let Some(admin) = bootstrap_admin(state.admin_key.as_ref(), secret) {
        return Ok(admin);
    }
    // Postgres just failed another request: a key seen recently is taken from the cache.
    if state.chronos.store.recently_unreachable()
        && let Some(c) = state.keys.recall(secret)
    {
        return Ok(c);
    }
    match state.chronos.authenticate(secret).await {
        Ok(Some(c)) => {
            state.keys.remember(secret, &c);
            Ok(c)
        }
        Ok(None) => {
            state.keys.forget(secret);
            Err(ApiError::unauthorized("the API key is not valid (unknown or revoked)"))
        }
        Err(e @ chronos_core::Error::Postgres(_)) => {
            state.chronos.store.note_unreachable();
            state.keys.recall(secret).ok_or_else(|| e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// API keys this process looked up recently, for while Postgres cannot be reached: a key that
/// signed in within [`KeyCache::TTL`] still does, so the reads Redis can answer (a live task,
/// the queues) keep working through an outage. Postgres is asked first on every request (but
/// within [`chronos_core::store::SKIP_AFTER_UNREACHABLE`] of finding it unreachable), so a
/// revocation applies at once whenever it answers. Held by the hash of the secret, never the
/// secret.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl KeyCache {
    /// How long a key seen once stays usable while Postgres is down.
    pub const TTL: Duration = Duration::from_secs(300);
    /// Beyond this many keys, the oldest entries are dropped.
    const MAX_KEYS: usize = 10_000;

    fn remember(&self, secret: &str, caller: &Caller) {
        let mut m = self.entries.lock().unwrap();
        if m.len() >= Self::MAX_KEYS {
            m.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if m.len() >= Self::MAX_KEYS {
                m.clear();
            }
        }
        m.insert(hash_secret(secret), (caller.clone(), Instant::now()));
    }

    fn forget(&self, secret: &str) {
        self.entries.lock().unwrap().remove(&hash_secret(secret));
    }

    /// Drop every entry of a key id (it was revoked through this process).
    pub fn forget_key_id(&self, key_id: &str) {
        self.entries.lock().unwrap().retain(|_, (c, _)| c.key_id != key_id);
    }

    fn recall(&self, secret: &str) -> Option<Caller> {
        let m = self.entries.lock().unwrap();
        m.get(&hash_secret(secret)).filter(|(_, at)| at.elapsed() < Self::TTL).map(|(c, _)| c.clone())
    }
}
