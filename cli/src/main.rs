//! `chronos` — run any piece of Chronos locally and operate a deployment.
//!
//! # Layout
//! - `main.rs` — argument parsing ([`Cli`]) and one function per subcommand. Every subcommand
//!   reads its settings from the environment once (see the README's configuration table) and
//!   stops with a message naming the variable when one is wrong.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chronos_core::access::{Caller, Role};
use chronos_core::config::CoreConfig;
use chronos_core::cron::{CronExpr, parse_timezone};
use chronos_core::dlq::Dlq;
use chronos_core::model::{Backoff, BackoffKind, Jitter, NewTask, Priority};
use chronos_core::schedule::Scheduler;
use chronos_core::services::Services;
use chronos_core::{Chronos, Engine, Store};
use chronos_workers::{Worker, WorkerConfig, builtin_registry};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "chronos", version, about = "Chronos distributed task scheduler")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply the Postgres migrations.
    Migrate,
    /// Run a worker: claims and runs tasks, drains the audit outbox, forwards dead letters.
    Worker,
    /// Run the background services alone: the audit writer (outbox → Postgres), the DLQ
    /// forwarder and the Redis-loss rebuild, for workers started with CHRONOS_WORKER_AUDIT=0.
    Services,
    /// Serve the REST API (the same router the Lambda function runs).
    Api,
    /// Serve the operator's dashboard (live queues, task search, retry / cancel / redrive) on
    /// CHRONOS_DASHBOARD_ADDR.
    Dashboard,
    /// Everything in one process for local development (migrates first): API, dashboard,
    /// worker and tick.
    Dev,
    /// Plan schedules ahead, reconcile and reap, every `--every-s` seconds (the tick Lambda's
    /// work, as a local loop).
    Tick {
        /// Run one tick, print what it did, and exit.
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
        every_s: u64,
        /// With --once: plan as if the clock read this RFC 3339 instant (replay or simulation).
        #[arg(long, requires = "once")]
        at: Option<String>,
    },
    /// Set the ECS worker service's desired count from the queues' backlog every `--every-s`
    /// seconds (the scaler Lambda's work, as a local loop); needs CHRONOS_ECS_CLUSTER and
    /// CHRONOS_ECS_SERVICE.
    Scaler {
        /// Run once, print the decision with its inputs, and exit.
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
        every_s: u64,
    },
    /// Container health check: exit 0 when Redis answers PING (and, with --http, the URL
    /// answers 2xx), 1 otherwise; within 3 seconds.
    Health {
        /// Also GET this URL, e.g. http://127.0.0.1:8081/healthz for the dashboard.
        #[arg(long)]
        http: Option<String>,
    },
    /// Cron expressions.
    #[command(subcommand)]
    Cron(CronCmd),
    /// Submit a task.
    Enqueue(EnqueueArgs),
    /// Show a task with its attempts.
    Task { id: uuid::Uuid },
    /// Cancel a task (waiting, scheduled, retrying or dead: at once; running: its handler is told).
    Cancel { id: uuid::Uuid },
    /// Run a scheduled, retrying or dead task now.
    Retry { id: uuid::Uuid },
    /// Live counts per queue.
    Queues,
}

#[derive(Subcommand)]
enum CronCmd {
    /// Print the next fire instants of an expression (RFC 3339, in the zone's offset).
    Next {
        /// 5 fields (minute hour day-of-month month day-of-week), 6 with leading seconds, or a macro such as @daily.
        expr: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        tz: String,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        count: u64,
        /// Start strictly after this RFC 3339 instant (default: now).
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackoffArg {
    Exponential,
    Fixed,
}

#[derive(Clone, Copy, ValueEnum)]
enum JitterArg {
    None,
    Full,
    Equal,
}

#[derive(clap::Args)]
struct EnqueueArgs {
    /// Handler kind, e.g. http, email, noop.
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "default")]
    queue: String,
    /// JSON payload.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// 0–100 or critical, high, normal, low.
    #[arg(long, default_value = "normal")]
    priority: String,
    /// First run at this RFC 3339 instant.
    #[arg(long, conflicts_with = "delay_ms")]
    run_at: Option<String>,
    /// First run after this many milliseconds.
    #[arg(long)]
    delay_ms: Option<u64>,
    #[arg(long, default_value_t = chronos_core::model::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    #[arg(long, value_enum, default_value = "exponential")]
    backoff: BackoffArg,
    #[arg(long, default_value_t = 1000)]
    backoff_base_ms: u64,
    #[arg(long, default_value_t = 3_600_000)]
    backoff_cap_ms: u64,
    #[arg(long, value_enum, default_value = "full")]
    jitter: JitterArg,
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CHRONOS_LOG").unwrap_or_else(|_| "info,sqlx=warn,aws=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chronos: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let core = CoreConfig::from_env()?;
    match cli.cmd {
        Cmd::Migrate => {
            Store::connect(core.database_url.expose()).await?.migrate().await.context("migrating DATABASE_URL")?;
            println!("migrations applied");
            Ok(())
        }
        Cmd::Worker => run_worker(&core, false, shutdown_signal()).await,
        Cmd::Services => run_services(&core, shutdown_signal()).await,
        Cmd::Api => run_api(&core, shutdown_signal()).await,
        Cmd::Dashboard => run_dashboard(&core, shutdown_signal()).await,
        Cmd::Dev => {
            Store::connect(core.database_url.expose()).await?.migrate().await.context("migrating DATABASE_URL")?;
            // One signal stops both: the API stops accepting, the worker drains.
            let (tx, rx) = tokio::sync::watch::channel(false);
            let api_stop = wait_true(rx.clone());
            let worker_stop = wait_true(rx.clone());
            let sig = shutdown_signal();
            let signal = tokio::spawn(async move {
                sig.await;
                let _ = tx.send(true);
            });
            let dashboard_stop = wait_true(rx.clone());
            let tick_stop = wait_true(rx);
            let (a, d, w, t) = tokio::join!(
                run_api(&core, api_stop),
                run_dashboard(&core, dashboard_stop),
                run_worker(&core, true, worker_stop),
                run_tick(&core, None, 15, tick_stop)
            );
            signal.abort();
            a.and(d).and(w).and(t)
        }
        Cmd::Tick { once, every_s, at } => {
            let at = at.map(|a| rfc3339("--at", &a)).transpose()?;
            run_tick(&core, once.then_some(at), every_s, shutdown_signal()).await
        }
        Cmd::Scaler { once, every_s } => run_scaler(&core, once, every_s).await,
        Cmd::Health { http } => health(&core, http.as_deref()).await,
        Cmd::Cron(CronCmd::Next { expr, tz, count, after }) => {
            let e = CronExpr::parse(&expr)?;
            let zone = parse_timezone(&tz)?;
            let after = after.map(|a| rfc3339("--after", &a)).transpose()?.unwrap_or_else(chrono::Utc::now);
            for t in e.next_n(zone, after, count as usize) {
                println!("{}", t.with_timezone(&zone).to_rfc3339());
            }
            Ok(())
        }
        Cmd::Enqueue(a) => {
            let c = client(&core).await?;
            let task = enqueue_args(a)?;
            let s = c.enqueue(task).await?;
            println!("{}", serde_json::json!({ "id": s.id, "created": s.created }));
            Ok(())
        }
        Cmd::Task { id } => {
            let c = client(&core).await?;
            let t = c.task(&cli_caller(), id).await?;
            let attempts = c.attempts(&cli_caller(), id).await?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "task": t, "attempts": attempts }))?);
            Ok(())
        }
        Cmd::Cancel { id } => {
            let c = client(&core).await?;
            let t = c.cancel(&cli_caller(), id).await?;
            println!("{}", serde_json::json!({ "id": t.id, "status": t.status, "cancel_requested": t.cancel_requested }));
            Ok(())
        }
        Cmd::Retry { id } => {
            let c = client(&core).await?;
            let t = c.retry_now(&cli_caller(), id).await?;
            println!("{}", serde_json::json!({ "id": t.id, "status": t.status }));
            Ok(())
        }
        Cmd::Queues => {
            let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await?;
            let mut out = serde_json::Map::new();
            for q in engine.queues().await? {
                out.insert(q.clone(), serde_json::to_value(engine.counts(&q).await?)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

/// The operator at the terminal: the CLI talks to the stores directly, with an admin's rights,
/// and is recorded as `cli` in the manual-action log.
fn cli_caller() -> Caller {
    Caller { key_id: "cli".into(), role: Role::Admin }
}

async fn client(core: &CoreConfig) -> Result<Chronos> {
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await.context("connecting to REDIS_URL")?;
    let store = Store::connect(core.database_url.expose()).await.context("DATABASE_URL")?;
    Ok(Chronos::new(engine, store, core.max_payload_bytes, core.idempotency_retention))
}

fn enqueue_args(a: EnqueueArgs) -> Result<NewTask> {
    let payload: serde_json::Value = serde_json::from_str(&a.payload).context("--payload is not valid JSON")?;
    let priority: Priority = a.priority.parse()?;
    let backoff = Backoff {
        kind: match a.backoff {
            BackoffArg::Exponential => BackoffKind::Exponential,
            BackoffArg::Fixed => BackoffKind::Fixed,
        },
        base_ms: a.backoff_base_ms,
        cap_ms: a.backoff_cap_ms,
        jitter: match a.jitter {
            JitterArg::None => Jitter::None,
            JitterArg::Full => Jitter::Full,
            JitterArg::Equal => Jitter::Equal,
        },
    };
    let mut t = NewTask::new(a.name, payload)
        .queue(a.queue)
        .priority(priority)
        .max_attempts(a.max_attempts)
        .backoff(backoff)
        .timeout(Duration::from_millis(a.timeout_ms));
    if let Some(at) = a.run_at {
        let at = chrono::DateTime::parse_from_rfc3339(&at).with_context(|| format!("--run-at {at:?} is not an RFC 3339 time"))?;
        t = t.run_at(at.with_timezone(&chrono::Utc));
    } else if let Some(ms) = a.delay_ms {
        t = t.delay(Duration::from_millis(ms));
    }
    if let Some(k) = a.idempotency_key {
        t = t.idempotency_key(k);
    }
    Ok(t)
}

fn rfc3339(flag: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{flag} {s:?} is not an RFC 3339 time such as 2026-03-29T00:00:00Z"))?
        .to_utc())
}

/// `once`: `Some(clock)` runs one tick (at `clock`, default now) and prints what it did.
async fn run_tick(
    core: &CoreConfig,
    once: Option<Option<chrono::DateTime<chrono::Utc>>>,
    every_s: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let scheduler = Scheduler::new(client(core).await?, core.schedule_horizon);
    let who = format!("tick-{}", std::process::id());
    if let Some(at) = once {
        let out = chronos_tick::tick_at(&scheduler, &who, at.unwrap_or_else(chrono::Utc::now)).await?;
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    chronos_tick::run_loop(scheduler, who, Duration::from_secs(every_s), shutdown).await;
    Ok(())
}

async fn run_scaler(core: &CoreConfig, once: bool, every_s: u64) -> Result<()> {
    let cfg = chronos_scaler::config::ScalerConfig::from_env()?;
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await.context("connecting to REDIS_URL")?;
    // Locally the embedded-metric-format lines are only of interest when debugging.
    let sink: chronos_scaler::MetricSink = std::sync::Arc::new(|line| tracing::debug!(target: "chronos::emf", "{line}"));
    let scaler = chronos_scaler::Scaler::new(engine, chronos_scaler::ecs_client().await, cfg).with_metrics(sink);
    if once {
        println!("{}", serde_json::to_string_pretty(&scaler.run_once().await?)?);
        return Ok(());
    }
    chronos_scaler::run_loop(scaler, Duration::from_secs(every_s), shutdown_signal()).await;
    Ok(())
}

async fn health(core: &CoreConfig, http: Option<&str>) -> Result<()> {
    let check = async {
        let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await.context("connecting to REDIS_URL")?;
        let mut conn = engine.connection();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.context("Redis PING")?;
        if let Some(url) = http {
            let status = reqwest::get(url).await.with_context(|| format!("GET {url}"))?.status();
            if !status.is_success() {
                bail!("GET {url}: {status}");
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), check).await.context("no answer within 3 s")??;
    println!("healthy");
    Ok(())
}

async fn wait_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run_api(core: &CoreConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    let cfg = chronos_api::config::ApiConfig::from_env()?;
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await.context("connecting to REDIS_URL")?;
    let store = Store::connect(core.database_url.expose()).await?;
    let dlq = match Dlq::connect(&core.dlq_queue).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "SQS unreachable; redrive will not remove dead-letter messages");
            None
        }
    };
    // Concurrent POST /v1/tasks share Postgres transactions and Redis round trips.
    let chronos = Chronos::new(engine, store, core.max_payload_bytes, core.idempotency_retention).with_write_coalescing(4);
    let app = chronos_api::app(chronos_api::AppState::new(chronos, cfg.admin_key, dlq, core.schedule_horizon), cfg.max_body_bytes);
    let listener =
        tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("CHRONOS_API_ADDR: cannot listen on {}", cfg.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn run_dashboard(core: &CoreConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    let cfg = chronos_dashboard::config::DashboardConfig::from_env()?;
    let dlq = match Dlq::connect(&core.dlq_queue).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "SQS unreachable; redrive will not remove dead-letter messages");
            None
        }
    };
    let chronos = client(core).await?.with_dlq(dlq);
    let scheduler = Scheduler::new(chronos.clone(), core.schedule_horizon);
    // Stops the outbox reader and ends open event streams, so the graceful shutdown completes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = chronos_dashboard::DashState::start(chronos, scheduler, cfg.clone(), stop_rx);
    let listener =
        tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("CHRONOS_DASHBOARD_ADDR: cannot listen on {}", cfg.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
    chronos_dashboard::serve(listener, state, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await?;
    Ok(())
}

async fn run_worker(core: &CoreConfig, dev: bool, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let cfg = WorkerConfig::from_env()?;
    let store = Store::connect(core.database_url.expose()).await?;
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await.context("connecting to REDIS_URL")?;
    let registry = builtin_registry(&cfg).map_err(anyhow::Error::msg)?;
    // SQS being down must not stop task processing: the forwarder retries, nothing is lost.
    let dlq = loop {
        match Dlq::connect(&core.dlq_queue).await {
            Ok(d) => break Some(d),
            Err(e) if dev => {
                tracing::warn!(error = %e, "SQS dead-letter queue unreachable; dead letters stay pending in Redis");
                break None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SQS dead-letter queue unreachable; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    if dlq.is_none() && !dev {
        bail!("no dead-letter queue");
    }
    let worker = if cfg.background_services {
        let w = Worker::new(engine, registry, cfg).with_audit(store);
        match dlq {
            Some(d) => w.with_dlq(d),
            None => w,
        }
    } else {
        // `chronos services` runs the audit writer, the DLQ forwarder and the rebuild apart;
        // this worker only reaps the leases of its queues (and settles Redis's state first).
        Worker::new(engine, registry, cfg).settling_with(store)
    };
    if let Some(service) = chronos_core::config::var("CHRONOS_METRICS_SERVICE") {
        tokio::spawn(emit_worker_metrics(worker.stats(), service));
    }
    worker.run(shutdown).await?;
    Ok(())
}

/// `chronos services`: the background services alone, for a deployment whose workers run with
/// `CHRONOS_WORKER_AUDIT=0`.
async fn run_services(core: &CoreConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let c = client(core).await?;
    let who = format!("services-{}-{}", hostname(), std::process::id());
    let mut services = Services::new(c.engine.clone()).audit_writer(c.store.clone(), who.clone()).rebuild(c.store.clone(), who);
    match Dlq::connect(&core.dlq_queue).await {
        Ok(d) => services = services.dlq_forwarder(d),
        Err(e) => tracing::warn!(error = %e, "SQS dead-letter queue unreachable; dead letters stay pending in Redis"),
    }
    let running = services.start();
    tracing::info!("background services started: audit writer, DLQ forwarder, Redis-loss rebuild");
    shutdown.await;
    running.stop().await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into())
}

/// With `CHRONOS_METRICS_SERVICE` (the ECS task definition sets it): once a minute, the attempts
/// completed and failed since the last line, as a CloudWatch embedded-metric-format line on
/// stdout; the awslogs driver ships it and CloudWatch turns it into the metrics the worker
/// error-rate alarm reads.
async fn emit_worker_metrics(stats: std::sync::Arc<chronos_workers::WorkerStats>, service: String) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = (0, 0);
    let mut timer = tokio::time::interval(Duration::from_secs(60));
    timer.tick().await;
    loop {
        timer.tick().await;
        let now = (stats.completed.load(Relaxed), stats.failed.load(Relaxed));
        let at = chrono::Utc::now().timestamp_millis();
        println!("{}", chronos_scaler::emf::worker_line(at, &service, now.0 - last.0, now.1 - last.1));
        last = now;
    }
}

/// Resolves on SIGTERM (ECS stopping the task) or SIGINT (Ctrl-C). The handlers are installed
/// when this is called, not when the future is first polled: a SIGTERM that arrives while the
/// worker is busy claiming must still mean "drain", never the default "die at once".
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    }
}
