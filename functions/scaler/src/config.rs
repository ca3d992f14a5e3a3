//! Scaler settings from the environment; a bad value names its variable.

use std::time::Duration;

use chronos_core::config::{ConfigError, parse_var, var};
use chronos_core::model::validate_queue_name;

use crate::policy::Policy;

pub const DEFAULT_MIN: u32 = 1;
pub const DEFAULT_MAX: u32 = 10;
pub const DEFAULT_TARGET_BACKLOG: u32 = 100;
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// A worker's default `CHRONOS_CONCURRENCY` on a 2-vCPU Fargate task (16 per core).
pub const DEFAULT_WORKER_CONCURRENCY: u32 = 32;

#[derive(Debug, Clone)]
pub struct ScalerConfig {
    /// `CHRONOS_ECS_CLUSTER`: the cluster of the worker service (name or ARN).
    pub cluster: String,
    /// `CHRONOS_ECS_SERVICE`: the worker service (name or ARN).
    pub service: String,
    /// `CHRONOS_QUEUES`: the queues the workers serve (default, and `*`: every queue Redis
    /// knows). The workers' own syntax is read: weights (`critical=6,low=1`) name their queues.
    pub queues: Option<Vec<String>>,
    /// `CHRONOS_SCALER_MIN`, `CHRONOS_SCALER_MAX`, `CHRONOS_SCALER_TARGET_BACKLOG`,
    /// `CHRONOS_SCALER_WORKER_CONCURRENCY`, `CHRONOS_SCALER_COOLDOWN_S`.
    pub policy: Policy,
    /// `CHRONOS_SCALER_PASSES`: runs per Lambda invocation (1–6), spread over its minute.
    pub passes: u32,
}

impl ScalerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let required = |name: &'static str| var(name).ok_or(ConfigError { var: name, message: "must be set".into() });
        let cluster = required("CHRONOS_ECS_CLUSTER")?;
        let service = required("CHRONOS_ECS_SERVICE")?;
        let queues = var("CHRONOS_QUEUES").map(|v| scaled_queues(&v)).transpose()?.flatten();
        let count = |name: &'static str, default: u32, lo: u32, hi: u32| {
            parse_var(name, default, &format!("a whole number between {lo} and {hi}"), |v| v.parse().ok().filter(|n| (lo..=hi).contains(n)))
        };
        let min = count("CHRONOS_SCALER_MIN", DEFAULT_MIN, 0, 1000)?;
        let max = count("CHRONOS_SCALER_MAX", DEFAULT_MAX, 1, 1000)?;
        if max < min {
            return Err(ConfigError { var: "CHRONOS_SCALER_MAX", message: format!("{max} is below CHRONOS_SCALER_MIN ({min})") });
        }
        let target_backlog_per_worker = count("CHRONOS_SCALER_TARGET_BACKLOG", DEFAULT_TARGET_BACKLOG, 1, 1_000_000)?;
        let worker_concurrency = count("CHRONOS_SCALER_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY, 1, 10_000)?;
        let cooldown = parse_var("CHRONOS_SCALER_COOLDOWN_S", DEFAULT_COOLDOWN, "a number of seconds up to 86400", |v| {
            v.parse::<u64>().ok().filter(|n| *n <= 86_400).map(Duration::from_secs)
        })?;
        let passes = count("CHRONOS_SCALER_PASSES", 1, 1, 6)?;
        Ok(ScalerConfig {
            cluster,
            service,
            queues,
            policy: Policy { min, max, target_backlog_per_worker, worker_concurrency, cooldown },
            passes,
        })
    }
}

/// The queues whose backlog counts, from the workers' `CHRONOS_QUEUES` (the template hands the
/// same setting to both): `*` is every queue (`None`), weights (`critical=6,low=1`) name their
/// queues.
fn scaled_queues(v: &str) -> Result<Option<Vec<String>>, ConfigError> {
    if v.trim() == "*" {
        return Ok(None);
    }
    let q: Vec<String> =
        v.split(',').map(|q| q.split_once('=').map_or(q, |(name, _)| name).trim().to_owned()).filter(|q| !q.is_empty()).collect();
    for name in &q {
        validate_queue_name(name).map_err(|e| ConfigError { var: "CHRONOS_QUEUES", message: e.to_string() })?;
    }
    Ok((!q.is_empty()).then_some(q))
}

#[cfg(test)]
mod tests {
    use super::scaled_queues;

    #[test]
    fn the_scaler_reads_the_workers_queue_setting_star_and_weights_included() {
        assert_eq!(scaled_queues("*").unwrap(), None);
        assert_eq!(scaled_queues("critical=6, default=3,low=1").unwrap(), Some(vec!["critical".into(), "default".into(), "low".into()]));
        assert_eq!(scaled_queues("a,b").unwrap(), Some(vec!["a".into(), "b".into()]));
        assert_eq!(scaled_queues(" , ").unwrap(), None);
        assert!(scaled_queues("bad name").is_err());
    }
}
