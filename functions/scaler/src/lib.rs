//! The scaler: sets the ECS worker service's desired count from the queues' backlog. On AWS a
//! Lambda function on an EventBridge `rate(1 minute)` rule; locally `chronos scaler`.
//!
//! # Layout
//! - [`policy`] — [`policy::desired_count`], the decision as a pure, table-tested function:
//!   backlog-per-worker target, min/max, scale out at once, scale in after the cool-down, never
//!   below the workers busy with running attempts.
//! - [`emf`] — `QueueDepth`, `BacklogPerWorker`, `OldestTaskAgeSeconds` as CloudWatch
//!   embedded-metric-format log lines (namespace `Chronos`).
//! - [`config`] — [`config::ScalerConfig`] from the environment.
//! - [`Scaler::run_once`] — one run: read each queue's backlog ([`chronos_core::backlog`]),
//!   read the service's count (ECS `DescribeServices`), decide, call `UpdateService` only when
//!   the count changes, remember the decision in Redis, log it with its inputs.
//! - `main.rs` — the Lambda binary `chronos-scaler-lambda`.
//!
//! The cool-down's memory ("when was the current count last needed") lives in Redis under
//! [`chronos_core::keys::scaler_state`], not in ECS: ECS can say when the count last changed,
//! but not when the backlog last needed it, and a drained queue must wait a cool-down from the
//! drain, not from the last scale-out. Redis is where the backlog is read anyway, and its clock
//! (`TIME`) is the one every reading is stamped with, so two scalers (a Lambda retry beside a
//! local run) agree on time. If Redis loses the key the policy starts a fresh cool-down rather
//! than scaling in at once.
//!
//! A failed ECS call fails the run before anything is remembered: the count stays as it was
//! and the next run (a minute later) decides again from fresh readings.

pub mod config;
pub mod emf;
pub mod policy;

use std::sync::Arc;

use chronos_core::Engine;
use chronos_core::backlog::{self, Backlog};
use chronos_core::keys::scaler_state;
use serde::Serialize;

use crate::config::ScalerConfig;
use crate::policy::{Decision, Inputs, State, desired_count};

#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    #[error(transparent)]
    Core(#[from] chronos_core::Error),
    /// ECS refused or could not be reached; nothing was changed.
    #[error("ECS {call} failed: {message}")]
    Ecs { call: &'static str, message: String },
}

impl From<redis::RedisError> for ScalerError {
    fn from(e: redis::RedisError) -> Self {
        ScalerError::Core(e.into())
    }
}

fn ecs_err<E: std::error::Error>(call: &'static str) -> impl FnOnce(E) -> ScalerError {
    move |e| ScalerError::Ecs { call, message: aws_sdk_ecs::error::DisplayErrorContext(e).to_string().chars().take(500).collect() }
}

/// One queue as the run saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueReading {
    pub queue: String,
    pub waiting: u64,
    pub running: u64,
    pub paused: bool,
    pub oldest_waiting_s: f64,
}

/// What one run saw and did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub service: String,
    pub queues: Vec<QueueReading>,
    pub inputs: Inputs,
    pub decision: Decision,
    /// ECS `runningCount` when read.
    pub running_tasks: u32,
    /// Whether `UpdateService` was called (and succeeded).
    pub updated: bool,
}

/// Where embedded-metric-format lines go: stdout on Lambda (CloudWatch Logs reads them there).
pub type MetricSink = Arc<dyn Fn(&serde_json::Value) + Send + Sync>;

#[derive(Clone)]
pub struct Scaler {
    pub engine: Engine,
    pub ecs: aws_sdk_ecs::Client,
    pub config: ScalerConfig,
    metrics: MetricSink,
}

/// An ECS client from the usual AWS settings (`AWS_ENDPOINT_URL` for an emulator).
pub async fn ecs_client() -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&chronos_core::dlq::aws_config().await)
}

impl Scaler {
    pub fn new(engine: Engine, ecs: aws_sdk_ecs::Client, config: ScalerConfig) -> Self {
        Scaler { engine, ecs, config, metrics: Arc::new(|_| {}) }
    }

    /// Send each metric line to `sink` (default: dropped).
    pub fn with_metrics(mut self, sink: MetricSink) -> Self {
        self.metrics = sink;
        self
    }

    fn state_key(&self) -> String {
        scaler_state(self.engine.namespace(), &self.config.cluster, &self.config.service)
    }

    /// One run; see the crate docs.
    pub async fn run_once(&self) -> Result<Report, ScalerError> {
        let names = match &self.config.queues {
            Some(q) => q.clone(),
            None => self.engine.queues().await?,
        };
        let mut readings: Vec<Backlog> = Vec::with_capacity(names.len());
        for q in &names {
            readings.push(backlog::read(&self.engine, q).await?);
        }
        let now_ms = match readings.first() {
            Some(b) => b.now_ms,
            None => redis_now_ms(&self.engine).await?,
        };

        // The metrics go out before ECS is asked anything: queue depth matters most when ECS is down.
        let (cluster, service) = (&self.config.cluster, &self.config.service);
        let described = self.ecs.describe_services().cluster(cluster).services(service).send().await;
        let current = described.as_ref().ok().and_then(|d| d.services().first()).map(|s| s.desired_count().max(0) as u32);
        let workers = f64::from(current.unwrap_or(0).max(1));
        let mut t = emf::Totals::default();
        for b in &readings {
            let age = b.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0;
            (self.metrics)(&emf::line(now_ms, service, Some(&b.queue), b.waiting(), b.waiting() as f64 / workers, age));
            t.depth += b.waiting();
            t.oldest_s = t.oldest_s.max(age);
            t.outbox += b.outbox;
            t.dead += b.dead;
        }
        t.per_worker = t.depth as f64 / workers;
        (self.metrics)(&emf::service_line(now_ms, service, &t));

        let described = described.map_err(ecs_err("DescribeServices"))?;
        let Some(svc) = described.services().first() else {
            let why = described.failures().first().and_then(|f| f.reason()).unwrap_or("not returned").to_owned();
            return Err(ScalerError::Ecs { call: "DescribeServices", message: format!("service {service} in {cluster}: {why}") });
        };
        let current = svc.desired_count().max(0) as u32;
        let running_tasks = svc.running_count().max(0) as u32;

        let inputs = Inputs {
            // Nobody claims from a paused queue: its backlog asks for no workers.
            backlog: readings.iter().filter(|b| !b.paused).map(Backlog::waiting).sum(),
            running: readings.iter().map(|b| b.running).sum(),
            current,
            now_ms,
        };
        let key = self.state_key();
        let mut conn = self.engine.connection();
        let last: Option<i64> = redis::cmd("HGET").arg(&key).arg("last_needed_ms").query_async(&mut conn).await?;
        let decision = desired_count(&inputs, &self.config.policy, &State { last_needed_ms: last });

        let updated = decision.changes(current);
        if updated {
            self.ecs
                .update_service()
                .cluster(cluster)
                .service(service)
                .desired_count(decision.desired as i32)
                .send()
                .await
                .map_err(ecs_err("UpdateService"))?;
        }
        let mut pipe = redis::pipe();
        pipe.hset(&key, "desired", decision.desired).ignore().hset(&key, "at_ms", now_ms).ignore();
        match decision.state.last_needed_ms {
            Some(at) => pipe.hset(&key, "last_needed_ms", at).ignore(),
            None => pipe.hdel(&key, "last_needed_ms").ignore(),
        };
        let _: () = pipe.query_async(&mut conn).await?;

        let queues = readings
            .iter()
            .map(|b| QueueReading {
                queue: b.queue.clone(),
                waiting: b.waiting(),
                running: b.running,
                paused: b.paused,
                oldest_waiting_s: b.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0,
            })
            .collect();
        let report = Report { cluster: cluster.clone(), service: service.clone(), queues, inputs, decision, running_tasks, updated };
        tracing::info!(
            cluster = %report.cluster,
            service = %report.service,
            backlog = inputs.backlog,
            running = inputs.running,
            current = inputs.current,
            running_tasks,
            target = decision.target,
            desired = decision.desired,
            action = ?decision.action,
            updated,
            policy = ?self.config.policy,
            "scaler decision"
        );
        Ok(report)
    }
}

async fn redis_now_ms(engine: &Engine) -> Result<i64, ScalerError> {
    let mut conn = engine.connection();
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
    Ok(s * 1000 + us / 1000)
}

/// Run every `every` until `stop` resolves; an error is logged and the next run retries.
pub async fn run_loop(scaler: Scaler, every: std::time::Duration, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = timer.tick() => {}
        }
        if let Err(e) = scaler.run_once().await {
            tracing::warn!(error = %e, "scaler run failed; the count is unchanged, retrying at the next run");
        }
    }
}
