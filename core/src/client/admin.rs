//! API keys, the manual-action log, health and raw live counts: the use cases around the
//! engine that the API, the CLI and the dashboard share.

use uuid::Uuid;

use super::Chronos;
use crate::access::{ApiKey, Caller, Role};
use crate::error::Result;
use crate::queue::QueueCounts;

/// Whether each store answers; `Err` holds a short reason safe to show.
#[derive(Debug, Clone)]
pub struct Health {
    pub redis: std::result::Result<(), String>,
    pub postgres: std::result::Result<(), String>,
}

impl Chronos {
    /// The caller a stored API key stands for; `None` for an unknown or revoked key.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>> {
        self.store.authenticate(secret).await
    }

    /// Create a key (its secret is returned once and stored hashed); audited.
    pub async fn create_key(&self, caller: &Caller, name: &str, role: Role) -> Result<(ApiKey, String)> {
        let (key, secret) = self.store.create_key(name, role, &caller.key_id).await?;
        self.audit(caller, "create_key", None, serde_json::json!({ "key_id": key.id, "name": key.name, "role": role })).await?;
        Ok((key, secret))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.store.list_keys().await
    }

    /// Revoke a key; false when no live key has this id. Audited.
    pub async fn revoke_key(&self, caller: &Caller, id: Uuid) -> Result<bool> {
        if !self.store.revoke_key(id).await? {
            return Ok(false);
        }
        self.audit(caller, "revoke_key", None, serde_json::json!({ "key_id": id })).await?;
        Ok(true)
    }

    /// Record a manual action in the audit log.
    pub async fn audit(&self, caller: &Caller, action: &str, task: Option<Uuid>, detail: serde_json::Value) -> Result<()> {
        self.store.audit(&caller.key_id, action, task, detail).await
    }

    /// One round trip to each store.
    pub async fn health(&self) -> Health {
        let mut conn = self.engine.connection();
        let redis = redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|e| format!("{:?}", e.kind()));
        let postgres = self.store.ping().await.map_err(|_| "cannot reach the database".to_owned());
        Health { redis, postgres }
    }

    /// Every queue Redis knows of with its raw live counts; a queue whose counts cannot be read
    /// is left out.
    pub async fn live_counts(&self) -> Result<Vec<(String, QueueCounts)>> {
        let mut out = Vec::new();
        for q in self.engine.queues().await? {
            if let Ok(c) = self.engine.counts(&q).await {
                out.push((q, c));
            }
        }
        Ok(out)
    }
}
