//! Worker settings from the environment. A bad value stops the worker at start-up with a
//! message that names the variable.

use std::time::Duration;

use chronos_core::config::{ConfigError, parse_var, var};

use crate::queues::QueueSpec;

pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Webhooks and e-mail spend their time waiting on the network, so a worker runs many
/// attempts per core.
pub const TASKS_PER_CORE: usize = 16;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `CHRONOS_WORKER_ID` (default: host-pid-random).
    pub worker_id: String,
    /// `CHRONOS_QUEUES` (default `default`; `*` for `chronos dev`) and `CHRONOS_QUEUES_STRICT`:
    /// the queues this worker serves and the order it claims from them ([`crate::queues`]).
    pub queues: QueueSpec,
    /// `CHRONOS_CONCURRENCY`: attempts run at once (default 16 × cores).
    pub concurrency: usize,
    /// `CHRONOS_LEASE_MS`: how long a claim holds a task without a heartbeat.
    pub lease: Duration,
    /// `CHRONOS_SHUTDOWN_GRACE_MS`: how long SIGTERM waits for running attempts.
    pub shutdown_grace: Duration,
    /// `CHRONOS_DIAGNOSTIC_HANDLERS`: register `noop`, `sleep`, `fail` (default on).
    pub diagnostic_handlers: bool,
    /// `CHRONOS_WORKER_AUDIT`: run the audit writer, the DLQ forwarder and the Redis-loss
    /// rebuild in this process (default on). Off when `chronos services` runs them apart.
    pub background_services: bool,
    /// `CHRONOS_WEBHOOK_SECRET`: signs `http` handler requests when set.
    pub webhook_secret: Option<String>,
    /// `CHRONOS_SMTP_URL`: the `email` handler's server (the handler is off when unset).
    pub smtp_url: Option<String>,
    /// `CHRONOS_EMAIL_FROM`: default sender of the `email` handler.
    pub email_from: String,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_serving("default")
    }

    /// [`WorkerConfig::from_env`] with `default_queues` when `CHRONOS_QUEUES` is unset.
    pub fn from_env_serving(default_queues: &str) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let strict = parse_var("CHRONOS_QUEUES_STRICT", false, "0, 1, true or false", |v| match v {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        })?;
        let spec = var("CHRONOS_QUEUES").unwrap_or_else(|| default_queues.into());
        let queues = QueueSpec::parse(&spec, strict).map_err(|message| ConfigError { var: "CHRONOS_QUEUES", message })?;
        let concurrency = parse_var("CHRONOS_CONCURRENCY", TASKS_PER_CORE * cores, "a number between 1 and 10000", |v| {
            v.parse().ok().filter(|n| (1..=10_000).contains(n))
        })?;
        let lease = parse_var("CHRONOS_LEASE_MS", DEFAULT_LEASE, "a number of milliseconds between 500 and 3600000", |v| {
            v.parse::<u64>().ok().filter(|n| (500..=3_600_000).contains(n)).map(Duration::from_millis)
        })?;
        let shutdown_grace =
            parse_var("CHRONOS_SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE, "a number of milliseconds up to 3600000", |v| {
                v.parse::<u64>().ok().filter(|n| *n <= 3_600_000).map(Duration::from_millis)
            })?;
        let diagnostic_handlers = parse_var("CHRONOS_DIAGNOSTIC_HANDLERS", true, "0, 1, true or false", |v| match v {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        })?;
        let background_services = parse_var("CHRONOS_WORKER_AUDIT", true, "0, 1, true or false", |v| match v {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        })?;
        let smtp_url = var("CHRONOS_SMTP_URL");
        if let Some(u) = &smtp_url
            && !(u.starts_with("smtp://") || u.starts_with("smtps://"))
        {
            return Err(ConfigError { var: "CHRONOS_SMTP_URL", message: "must start with smtp:// or smtps://".into() });
        }
        let worker_id = var("CHRONOS_WORKER_ID").unwrap_or_else(default_worker_id);
        Ok(WorkerConfig {
            worker_id,
            queues,
            concurrency,
            lease,
            shutdown_grace,
            diagnostic_handlers,
            background_services,
            webhook_secret: var("CHRONOS_WEBHOOK_SECRET"),
            smtp_url,
            email_from: var("CHRONOS_EMAIL_FROM").unwrap_or_else(|| "chronos@localhost".into()),
        })
    }

    /// Settings for embedding a worker in a program or test; it serves `queues` in turn.
    pub fn new(queues: Vec<String>) -> Self {
        Self::serving(QueueSpec::named(queues))
    }

    /// [`WorkerConfig::new`] for any [`QueueSpec`] (`*`, weights, strict order).
    pub fn serving(queues: QueueSpec) -> Self {
        WorkerConfig {
            worker_id: default_worker_id(),
            queues,
            concurrency: 16,
            lease: DEFAULT_LEASE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            diagnostic_handlers: true,
            background_services: true,
            webhook_secret: None,
            smtp_url: None,
            email_from: "chronos@localhost".into(),
        }
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}
