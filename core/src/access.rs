//! Access control: API keys and roles. Keys are random; only their SHA-256 is stored. What each
//! role may do is decided here, in [`Role::allows`], and nowhere else.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::Store;

/// Key id used for the bootstrap admin key (`CHRONOS_ADMIN_KEY`) in audit records.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";
const KEY_PREFIX: &str = "chk_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including keys.
    Admin,
    /// Everything on tasks, queues and the dead-letter queue.
    Operator,
    /// Create tasks and read its own.
    Producer,
    /// Read only.
    Viewer,
}

/// One kind of action; each API route needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    TasksCreate,
    TasksRead,
    TasksManage,
    QueuesRead,
    QueuesManage,
    DlqRead,
    DlqManage,
    SchedulesRead,
    SchedulesManage,
    Keys,
}

impl Role {
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => p != Keys,
            Role::Producer => matches!(p, TasksCreate | TasksRead),
            Role::Viewer => matches!(p, TasksRead | QueuesRead | DlqRead | SchedulesRead),
        }
    }

    /// Producers see only the tasks their key created.
    pub fn sees_only_own_tasks(self) -> bool {
        self == Role::Producer
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Producer => "producer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "producer" => Ok(Role::Producer),
            "viewer" => Ok(Role::Viewer),
            _ => Err(Error::invalid("role", format!("{s:?} is not a role; use admin, operator, producer or viewer"))),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (or [`BOOTSTRAP_ADMIN`]); recorded as the actor of manual actions.
    pub key_id: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compare in constant time, so response timing does not reveal how much of a key matched.
/// The bootstrap admin (`CHRONOS_ADMIN_KEY`) if `secret` is that key, compared in constant
/// time. The API and the dashboard both sign in with it.
pub fn bootstrap_admin(admin_key: Option<&crate::config::Secret>, secret: &str) -> Option<Caller> {
    let admin = admin_key?;
    constant_time_eq(admin.expose().as_bytes(), secret.as_bytes()).then(|| Caller { key_id: BOOTSTRAP_ADMIN.into(), role: Role::Admin })
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

impl Store {
    /// Create a key; returns it with its secret (shown once, never stored).
    pub async fn create_key(&self, name: &str, role: Role, created_by: &str) -> Result<(ApiKey, String)> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(Error::invalid("name", "must be 1–100 characters"));
        }
        let secret = new_secret();
        let id = Uuid::now_v7();
        let prefix: String = secret.chars().take(KEY_PREFIX.len() + 6).collect();
        let row = sqlx::query(
            "INSERT INTO api_keys (id, name, role, hash, prefix, created_by) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING created_at",
        )
        .bind(id)
        .bind(name)
        .bind(role.as_str())
        .bind(hash_secret(&secret))
        .bind(&prefix)
        .bind(created_by)
        .fetch_one(self.pool())
        .await?;
        let key =
            ApiKey { id, name: name.to_owned(), role, prefix, created_at: row.get(0), created_by: created_by.to_owned(), revoked_at: None };
        Ok((key, secret))
    }

    /// The caller a secret belongs to, if it is a live key.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>> {
        if !secret.starts_with(KEY_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT id, role FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash_secret(secret))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(|r| {
            let role: String = r.get(1);
            Some(Caller { key_id: r.get::<Uuid, _>(0).to_string(), role: role.parse().ok()? })
        }))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT id, name, role, prefix, created_at, created_by, revoked_at FROM api_keys ORDER BY created_at DESC")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(ApiKey {
                    id: r.get(0),
                    name: r.get(1),
                    role: r.get::<String, _>(2).parse().ok()?,
                    prefix: r.get(3),
                    created_at: r.get(4),
                    created_by: r.get(5),
                    revoked_at: r.get(6),
                })
            })
            .collect())
    }

    /// Revoke a key; false when there is no live key with that id.
    pub async fn revoke_key(&self, id: Uuid) -> Result<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Record a manual action that does not pass through a Redis script (pause, keys, ...).
    pub async fn audit(&self, actor: &str, action: &str, task_id: Option<Uuid>, detail: serde_json::Value) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (actor, action, task_id, detail) VALUES ($1, $2, $3, $4)")
            .bind(actor)
            .bind(action)
            .bind(task_id)
            .bind(detail)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_exactly_their_permissions() {
        use Permission::*;
        let all = [TasksCreate, TasksRead, TasksManage, QueuesRead, QueuesManage, DlqRead, DlqManage, SchedulesRead, SchedulesManage, Keys];
        let allowed = |r: Role| all.iter().filter(|p| r.allows(**p)).count();
        assert_eq!(allowed(Role::Admin), 10);
        assert_eq!(allowed(Role::Operator), 9);
        assert!(!Role::Operator.allows(Keys));
        assert_eq!(allowed(Role::Producer), 2);
        assert!(Role::Producer.allows(TasksCreate) && !Role::Producer.allows(TasksManage));
        assert_eq!(allowed(Role::Viewer), 4);
        assert!(Role::Viewer.allows(SchedulesRead) && !Role::Viewer.allows(SchedulesManage));
        assert!(!Role::Viewer.allows(TasksCreate));
    }

    #[test]
    fn secrets_compare_in_constant_time_and_hash_stably() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(hash_secret("x").len(), 64);
        let s = new_secret();
        assert!(s.starts_with("chk_") && s.len() == 52);
    }
}
