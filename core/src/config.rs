//! Settings shared by every Chronos process, read from the environment once at start-up.
//! A bad value stops the process with a message that names the variable.

use std::fmt;
use std::time::Duration;

use crate::model::DEFAULT_MAX_PAYLOAD_BYTES;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/chronos";
pub const DEFAULT_NAMESPACE: &str = "chronos";
pub const DEFAULT_DLQ_QUEUE: &str = "chronos-dlq";
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a process keeps retrying Redis and Postgres at start-up before it gives up: on ECS
/// a worker often starts a moment before its stores answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A value that never prints (database URLs carry passwords).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// `REDIS_URL`
    pub redis_url: Secret,
    /// `DATABASE_URL`
    pub database_url: Secret,
    /// `CHRONOS_NAMESPACE`: prefix of every Redis key.
    pub namespace: String,
    /// `CHRONOS_DLQ_QUEUE`: SQS queue that receives dead tasks.
    pub dlq_queue: String,
    /// `CHRONOS_MAX_PAYLOAD_BYTES`
    pub max_payload_bytes: usize,
    /// `CHRONOS_IDEMPOTENCY_RETENTION_S`
    pub idempotency_retention: Duration,
    /// `CHRONOS_SCHEDULE_HORIZON_S`: how far ahead the tick plans schedules' occurrences.
    pub schedule_horizon: Duration,
    /// `CHRONOS_CONNECT_TIMEOUT_S`: how long start-up retries an unreachable Redis or Postgres.
    pub connect_timeout: Duration,
}

/// Read a variable; `None` when unset or empty.
pub fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parse a variable with `parse`, naming it in the error.
pub fn parse_var<T>(name: &'static str, default: T, what: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => parse(v.trim()).ok_or_else(|| ConfigError { var: name, message: format!("{v:?} is not {what}") }),
    }
}

/// The address in a store URL, for messages: host and port (or a socket path), never the user
/// or password.
pub fn url_address(url: &str) -> String {
    if url.contains(',') {
        // A Redis Cluster's seeds.
        return url.split(',').map(|seed| url_address(seed.trim())).collect::<Vec<_>>().join(",");
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = if url.starts_with("unix://") { rest } else { &rest[..end] };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split('?').next().unwrap_or(host);
    if host.is_empty() { "(no host)".to_owned() } else { host.to_owned() }
}

impl CoreConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let redis_url = var("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.into());
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://") || redis_url.starts_with("unix://")) {
            return Err(ConfigError { var: "REDIS_URL", message: "must start with redis://, rediss:// or unix://".into() });
        }
        if let Some(v) = var(crate::queue::conn::CLUSTER_ENV)
            && !matches!(v.trim(), "" | "0" | "1" | "true" | "false" | "yes" | "no")
        {
            return Err(ConfigError { var: crate::queue::conn::CLUSTER_ENV, message: "must be 1 or 0".into() });
        }
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError { var: "DATABASE_URL", message: "must start with postgres:// or postgresql://".into() });
        }
        let namespace = var("CHRONOS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        if namespace.contains(['{', '}', ' ']) {
            return Err(ConfigError { var: "CHRONOS_NAMESPACE", message: "must not contain braces or spaces".into() });
        }
        let dlq_queue = var("CHRONOS_DLQ_QUEUE").unwrap_or_else(|| DEFAULT_DLQ_QUEUE.into());
        if dlq_queue.len() > 80 || !dlq_queue.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(ConfigError {
                var: "CHRONOS_DLQ_QUEUE", message: "must be 1–80 of A–Z a–z 0–9 - _ (an SQS queue name)".into()
            });
        }
        let max_payload_bytes =
            parse_var("CHRONOS_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, "a byte count between 1024 and 16777216", |v| {
                v.parse().ok().filter(|n| (1024..=16 << 20).contains(n))
            })?;
        let idempotency_retention =
            parse_var("CHRONOS_IDEMPOTENCY_RETENTION_S", DEFAULT_IDEMPOTENCY_RETENTION, "a number of seconds (1–2592000)", |v| {
                v.parse::<u64>().ok().filter(|n| (1..=2_592_000).contains(n)).map(Duration::from_secs)
            })?;
        let schedule_horizon = parse_var(
            "CHRONOS_SCHEDULE_HORIZON_S",
            crate::schedule::DEFAULT_HORIZON,
            "a number of seconds (120–86400; the tick runs every minute)",
            |v| v.parse::<u64>().ok().filter(|n| (120..=86_400).contains(n)).map(Duration::from_secs),
        )?;
        let connect_timeout = parse_var("CHRONOS_CONNECT_TIMEOUT_S", DEFAULT_CONNECT_TIMEOUT, "a number of seconds (0–3600)", |v| {
            v.parse::<u64>().ok().filter(|n| *n <= 3600).map(Duration::from_secs)
        })?;
        if let Some(ep) = var("AWS_ENDPOINT_URL")
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError { var: "AWS_ENDPOINT_URL", message: format!("{ep:?} must be an http:// or https:// URL") });
        }
        Ok(CoreConfig {
            redis_url: Secret::new(redis_url),
            database_url: Secret::new(database_url),
            namespace,
            dlq_queue,
            max_payload_bytes,
            idempotency_retention,
            schedule_horizon,
            connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::url_address;

    #[test]
    fn a_store_address_in_a_message_never_carries_the_password() {
        assert_eq!(url_address("redis://:hunter2@10.0.0.5:6380/0"), "10.0.0.5:6380");
        assert_eq!(url_address("postgres://chronos:s3cret@db.internal:5432/chronos?sslmode=disable"), "db.internal:5432");
        assert_eq!(url_address("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(url_address("unix:///run/redis.sock"), "/run/redis.sock");
        assert_eq!(url_address("redis://10.0.0.1:7001, redis://:pw@10.0.0.2:7002"), "10.0.0.1:7001,10.0.0.2:7002");
    }
}
