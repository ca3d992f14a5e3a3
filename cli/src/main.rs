//! `chronos` — run any piece of Chronos locally and operate a deployment.
//!
//! # Layout
//! - `main.rs` — argument parsing ([`Cli`]) and one function per subcommand. Every subcommand
//!   reads its settings from the environment once (see the README's configuration table) and
//!   stops with a message naming the variable when one is wrong.
//! - `ops.rs` — the operator's commands (`task`, `tasks`, `cancel`, `retry`, `queues`, `dlq`,
//!   `schedules`, `keys`): the API's views, human tables or `--json`, refusals as sentences
//!   with an exit code by kind.
//! - `jobs.rs` — `jobs` and the bulk `dlq redrive --all`: start a job, follow it with a progress
//!   line (working it here when no runner holds it), list, show, cancel.
//! - `logging.rs` — the `tracing` subscriber: text or JSON lines (`CHRONOS_LOG_FORMAT`), with the
//!   worker's capture of a handler's log lines.
//! - `metrics_addr.rs` — a worker's own `/metrics` at `CHRONOS_METRICS_ADDR`.
//! - `otel.rs` — OpenTelemetry traces over OTLP/HTTP, on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

mod jobs;
mod logging;
mod metrics_addr;
mod ops;
mod otel;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
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
#[command(name = "chronos", version, about = "Chronos distributed task scheduler", after_help = ops::EXIT_CODES)]
struct Cli {
    /// Print what the matching API endpoint answers, as JSON, instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The variables every process reads (see the README's configuration table).
const CORE_ENV: &str = "  REDIS_URL                        queue store (default redis://127.0.0.1:6379)
  DATABASE_URL                     audit store (default postgres://postgres@127.0.0.1:5432/chronos)
  CHRONOS_NAMESPACE                prefix of every Redis key (default chronos)
  CHRONOS_CONNECT_TIMEOUT_S        how long start-up retries an unreachable Redis or Postgres (default 60)
  CHRONOS_LOG                      log filter (default info,sqlx=warn,aws=warn)";

const AWS_ENV: &str = "  AWS_ENDPOINT_URL, AWS_REGION     SQS endpoint and region (an emulator locally); the usual AWS credential variables
  CHRONOS_DLQ_QUEUE                SQS dead-letter queue (default chronos-dlq)";

const WORKER_ENV: &str = "  CHRONOS_QUEUES                   queues to serve (default default; `chronos dev`: *):
                                   a,b,c     these, taken in turn
                                   *         every queue, also those created later
                                   critical=6,default=3,low=1   weighted: picks in proportion
  CHRONOS_QUEUES_STRICT            1: always drain the earlier-listed queue first (a,b,c only)
  CHRONOS_CONCURRENCY              attempts run at once (default 16 x cores)
  CHRONOS_LEASE_MS                 lease length (default 30000)
  CHRONOS_SHUTDOWN_GRACE_MS        SIGTERM: how long running attempts may finish (default 25000)
  CHRONOS_WORKER_ID                name in attempts and audit records (default host-pid-random)
  CHRONOS_WORKER_AUDIT             0: no audit writer, DLQ forwarder or rebuild here (run `chronos services`)
  CHRONOS_WEBHOOK_SECRET           signs the http handler's requests
  CHRONOS_SMTP_URL, CHRONOS_EMAIL_FROM   the email handler (on when CHRONOS_SMTP_URL is set)
  CHRONOS_DIAGNOSTIC_HANDLERS      0: no noop, sleep, fail, gather handlers
  CHRONOS_METRICS_ADDR             serve Prometheus metrics at http://<addr>/metrics (e.g. 0.0.0.0:9090)
  CHRONOS_METRICS                  emf: every metric as CloudWatch EMF lines on stdout (each CHRONOS_METRICS_INTERVAL_S, 60)
  CHRONOS_METRICS_SERVICE          emit per-minute EMF metric lines on stdout for this service name";

const API_ENV: &str = "  CHRONOS_API_ADDR                 listen address (default 127.0.0.1:8080)
  CHRONOS_ADMIN_KEY                bootstrap admin key
  CHRONOS_MAX_BODY_BYTES           request body limit
  CHRONOS_MAX_PAYLOAD_BYTES        task payload limit (default 262144)
  CHRONOS_IDEMPOTENCY_RETENTION_S  how long an idempotency key dedupes (default 86400)
  CHRONOS_SCHEDULE_HORIZON_S       how far ahead schedules are planned";

const DASHBOARD_ENV: &str = "  CHRONOS_DASHBOARD_ADDR, CHRONOS_DASHBOARD_SECURE_COOKIES, CHRONOS_DASHBOARD_SESSION_TTL_S   the dashboard";

fn env_help(parts: &[&str]) -> String {
    format!("Environment:\n{}\n\nSIGTERM or SIGINT stops it at any stage, start-up included.", parts.join("\n"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply the Postgres migrations.
    Migrate,
    /// Run a worker: claims and runs tasks, drains the audit outbox, forwards dead letters.
    #[command(after_help = env_help(&[CORE_ENV, AWS_ENV, WORKER_ENV]))]
    Worker,
    /// Run the background services alone: the audit writer (outbox → Postgres), the DLQ
    /// forwarder and the Redis-loss rebuild, for workers started with CHRONOS_WORKER_AUDIT=0.
    Services,
    /// Serve the REST API (the same router the Lambda function runs).
    #[command(after_help = env_help(&[CORE_ENV, AWS_ENV, API_ENV]))]
    Api,
    /// Serve the operator's dashboard (live queues, task search, retry / cancel / redrive) on
    /// CHRONOS_DASHBOARD_ADDR.
    Dashboard,
    /// Everything in one process for local development (migrates first): API, dashboard,
    /// worker and tick.
    #[command(after_help = env_help(&[CORE_ENV, AWS_ENV, API_ENV, WORKER_ENV, DASHBOARD_ENV]))]
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
    /// List and search tasks, newest first (the filters of GET /v1/tasks).
    Tasks(ops::TaskFilterArgs),
    /// Cancel a task (waiting, scheduled, retrying or dead: at once; running: its handler is told).
    Cancel { id: uuid::Uuid },
    /// Run a scheduled, retrying or dead task now.
    Retry { id: uuid::Uuid },
    /// Every queue's counts (the view of GET /v1/queues); pause or resume one.
    Queues {
        #[command(subcommand)]
        cmd: Option<QueuesCmd>,
    },
    /// Dead tasks: list, redrive.
    #[command(subcommand)]
    Dlq(ops::DlqCmd),
    /// Schedules: list, show, pause, resume, trigger, delete.
    #[command(subcommand)]
    Schedules(ops::SchedulesCmd),
    /// API keys: list, create, revoke.
    #[command(subcommand)]
    Keys(ops::KeysCmd),
    /// Bulk operations (redrive, cancel or retry by filter): create with a progress line,
    /// list, show, cancel.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
}

#[derive(Subcommand)]
enum QueuesCmd {
    /// Workers stop claiming from the queue; it still accepts tasks.
    Pause {
        queue: String,
    },
    Resume {
        queue: String,
    },
    /// Set or remove a queue's limits (the body of PATCH /v1/queues/{queue}); each applies to
    /// the next claim. `none` removes a limit; an option not given stays as it is.
    Limit {
        queue: String,
        /// Attempts of the queue running at once across all workers (1–1000000), or `none`.
        #[arg(long, value_parser = ops::parse_count_or_none)]
        concurrency: Option<ops::Count>,
        /// At most N starts per period, as `N/PERIOD` (e.g. `100/1s`, `20/500ms`, `5/1m`), or `none`.
        #[arg(long, value_parser = ops::parse_rate_or_none)]
        rate: Option<ops::RateArg>,
        /// Attempts running at once per group (a task's `group`), or `none`.
        #[arg(long, value_parser = ops::parse_count_or_none)]
        group_concurrency: Option<ops::Count>,
        /// Starts per period per group, as `N/PERIOD`, or `none`.
        #[arg(long, value_parser = ops::parse_rate_or_none)]
        group_rate: Option<ops::RateArg>,
    },
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
    /// Run after this task has finished (repeat for several); the task is `pending` until then.
    #[arg(long = "depends-on", value_name = "TASK_ID")]
    depends_on: Vec<uuid::Uuid>,
    /// With --depends-on: a task it waits for that ends dead or cancelled does not cancel it.
    #[arg(long, requires = "depends_on")]
    ignore_failed_dependencies: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = match logging::init(cli.cmd.service_name()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chronos: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = run(cli).await;
    traces.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ops::ClosedStdout>() => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            match e.downcast_ref::<ops::Refusal>() {
                Some(r) => eprintln!("chronos: {r}"),
                None => eprintln!("chronos: {e:#}"),
            }
            ExitCode::from(code)
        }
    }
}

impl Cmd {
    /// The process's name in exported traces (`OTEL_SERVICE_NAME` overrides it).
    fn service_name(&self) -> &'static str {
        match self {
            Cmd::Api => "chronos-api",
            Cmd::Worker => "chronos-worker",
            Cmd::Services => "chronos-services",
            Cmd::Dashboard => "chronos-dashboard",
            Cmd::Tick { .. } => "chronos-tick",
            Cmd::Scaler { .. } => "chronos-scaler",
            _ => "chronos",
        }
    }
}

/// The documented exit code of a failure ([`ops::EXIT_CODES`]).
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(r) = e.downcast_ref::<ops::Refusal>() {
        return r.code();
    }
    for cause in e.chain() {
        if cause.is::<chronos_core::config::ConfigError>() || cause.is::<chronos_core::cron::CronError>() {
            return 2;
        }
        if cause.is::<StoreUnreachable>() {
            return 5;
        }
        if let Some(c) = cause.downcast_ref::<chronos_core::Error>() {
            return match c {
                chronos_core::Error::Invalid { .. } => 2,
                chronos_core::Error::NotFound(_) => 3,
                chronos_core::Error::Conflict(_) => 4,
                c if c.is_retryable() => 5,
                _ => 1,
            };
        }
    }
    1
}

async fn run(cli: Cli) -> Result<()> {
    let core = CoreConfig::from_env()?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Migrate => {
            Store::connect(core.database_url.expose()).await?.migrate().await.context("migrating DATABASE_URL")?;
            println!("migrations applied");
            Ok(())
        }
        Cmd::Worker => stopped_ok(run_worker(&core, "default", &Stop::on_signal()).await),
        Cmd::Services => stopped_ok(run_services(&core, &Stop::on_signal()).await),
        Cmd::Api => stopped_ok(run_api(&core, &Stop::on_signal()).await),
        Cmd::Dashboard => stopped_ok(run_dashboard(&core, &Stop::on_signal()).await),
        Cmd::Dev => {
            // One signal stops every piece: the API stops accepting, the worker drains.
            let stop = Stop::on_signal();
            stop.during(async { connect_store(&core, &stop).await?.migrate().await.context("migrating DATABASE_URL") }).await??;
            // One recorder for every role, before any of them counts: the API's /metrics shows all.
            chronos_core::metrics::install();
            let (a, d, w, t) = tokio::join!(
                run_api(&core, &stop),
                run_dashboard(&core, &stop),
                // Serves every queue: whatever a README example or a try-out sends runs.
                run_worker(&core, "*", &stop),
                run_tick(&core, None, 15, &stop)
            );
            stopped_ok(a.and(d).and(w).and(t))
        }
        Cmd::Tick { once, every_s, at } => {
            let at = at.map(|a| rfc3339("--at", &a)).transpose()?;
            stopped_ok(run_tick(&core, once.then_some(at), every_s, &Stop::on_signal()).await)
        }
        Cmd::Scaler { once, every_s } => run_scaler(&core, once, every_s).await,
        Cmd::Health { http } => health(&core, http.as_deref()).await,
        Cmd::Cron(CronCmd::Next { expr, tz, count, after }) => {
            let e = CronExpr::parse(&expr)?;
            let zone = parse_timezone(&tz)?;
            let after = after.map(|a| rfc3339("--after", &a)).transpose()?.unwrap_or_else(chrono::Utc::now);
            let lines: String =
                e.next_n(zone, after, count as usize).into_iter().map(|t| format!("{}\n", t.with_timezone(&zone).to_rfc3339())).collect();
            ops::emit(&lines)
        }
        Cmd::Enqueue(mut a) => {
            let c = client(&core).await?;
            let depends_on = std::mem::take(&mut a.depends_on);
            let on_failure = if a.ignore_failed_dependencies {
                chronos_core::flows::ChildFailure::Ignore
            } else {
                chronos_core::flows::ChildFailure::Fail
            };
            let task = enqueue_args(a).map_err(|e| ops::Refusal::new(ops::Kind::Invalid, format!("{e:#}")))?;
            if depends_on.is_empty() {
                let s = c.enqueue(task).await.map_err(ops::refusal)?;
                return ops::emit(&format!("{}\n", serde_json::json!({ "id": s.id, "created": s.created })));
            }
            let s = c.submit_after(task, &depends_on, on_failure, &ops::cli_caller()).await.map_err(ops::refusal)?;
            ops::emit(&format!("{}\n", serde_json::json!({ "id": s.task.id, "created": s.created, "status": s.task.status })))
        }
        Cmd::Task { id } => ops::task(&client(&core).await?, id, json).await,
        Cmd::Tasks(a) => ops::tasks(&client(&core).await?, a, json).await,
        Cmd::Cancel { id } => ops::act(&client(&core).await?, id, true, json).await,
        Cmd::Retry { id } => ops::act(&client(&core).await?, id, false, json).await,
        Cmd::Queues { cmd: None } => ops::queues(&client(&core).await?, json).await,
        Cmd::Queues { cmd: Some(QueuesCmd::Pause { queue }) } => ops::set_queue_paused(&client(&core).await?, &queue, true, json).await,
        Cmd::Queues { cmd: Some(QueuesCmd::Resume { queue }) } => ops::set_queue_paused(&client(&core).await?, &queue, false, json).await,
        Cmd::Queues { cmd: Some(QueuesCmd::Limit { queue, concurrency, rate, group_concurrency, group_rate }) } => {
            let patch = chronos_core::limits::LimitsPatch {
                concurrency: concurrency.map(|c| c.0),
                rate: rate.map(|r| r.0),
                group_concurrency: group_concurrency.map(|c| c.0),
                group_rate: group_rate.map(|r| r.0),
            };
            ops::set_queue_limits(&client(&core).await?, &queue, &patch, json).await
        }
        Cmd::Dlq(cmd) => {
            let c = client(&core).await?;
            // Redrive removes the tasks' SQS messages when SQS answers; without it they stay.
            let dlq = match Dlq::connect(&core.dlq_queue).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "SQS unreachable; redrive will not remove dead-letter messages");
                    None
                }
            };
            ops::dlq(&c.with_dlq(dlq), &core.dlq_queue, cmd, json).await
        }
        Cmd::Schedules(cmd) => ops::schedules(&Scheduler::new(client(&core).await?, core.schedule_horizon), cmd, json).await,
        Cmd::Keys(cmd) => ops::keys(&client(&core).await?, cmd, json).await,
        Cmd::Jobs(cmd) => jobs::jobs(&client(&core).await?, &core.dlq_queue, cmd, json).await,
    }
}

async fn client(core: &CoreConfig) -> Result<Chronos> {
    client_until(core, &Stop::never()).await
}

async fn client_until(core: &CoreConfig, stop: &Stop) -> Result<Chronos> {
    let engine = connect_engine(core, stop).await?;
    let store = connect_store(core, stop).await?;
    Ok(Chronos::new(engine, store, core.max_payload_bytes, core.idempotency_retention))
}

/// Redis at `REDIS_URL`, retried with backoff for up to `CHRONOS_CONNECT_TIMEOUT_S`.
async fn connect_engine(core: &CoreConfig, stop: &Stop) -> Result<Engine> {
    let url = core.redis_url.expose();
    retry_connect("Redis", "REDIS_URL", url, core.connect_timeout, stop, || Engine::connect(url, &core.namespace)).await
}

/// Postgres at `DATABASE_URL` (the pool connects lazily, so one query proves it answers),
/// retried like [`connect_engine`].
async fn connect_store(core: &CoreConfig, stop: &Stop) -> Result<Store> {
    let url = core.database_url.expose();
    retry_connect("Postgres", "DATABASE_URL", url, core.connect_timeout, stop, || async {
        let store = Store::connect(url).await?;
        store.probe(Duration::from_secs(5)).await?;
        Ok(store)
    })
    .await
}

/// Try `connect` until it succeeds, `timeout` passes or `stop` fires. Says once that the store
/// is unreachable (naming the variable and the address, never a password), then retries
/// quietly with backoff; the final error says the same again with the last cause.
async fn retry_connect<T, F, Fut>(what: &str, var: &str, url: &str, timeout: Duration, stop: &Stop, mut connect: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = chronos_core::Result<T>>,
{
    let addr = chronos_core::config::url_address(url);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let err = match stop.during(connect()).await? {
            Ok(v) => {
                if tries > 1 {
                    tracing::info!("{what} at {addr} ({var}) answers");
                }
                return Ok(v);
            }
            Err(e) => root_cause(&e),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(StoreUnreachable(format!(
                "{var}: gave up on {what} at {addr} after {} s (CHRONOS_CONNECT_TIMEOUT_S): {err}",
                timeout.as_secs()
            ))
            .into());
        }
        if tries == 1 {
            tracing::warn!(
                "{var}: cannot reach {what} at {addr}: {err}; retrying for up to {} s (CHRONOS_CONNECT_TIMEOUT_S)",
                timeout.as_secs()
            );
        }
        stop.during(tokio::time::sleep(backoff.min(deadline - now))).await?;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Start-up gave up on a store (exit code 5).
#[derive(Debug)]
struct StoreUnreachable(String);

impl std::fmt::Display for StoreUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreUnreachable {}

/// The innermost cause of a store error, once: the client libraries repeat it in their chains.
fn root_cause(e: &chronos_core::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
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
        .map_err(|_| ops::Refusal::new(ops::Kind::Invalid, format!("{flag} {s:?} is not an RFC 3339 time such as 2026-03-29T00:00:00Z")))?
        .to_utc())
}

/// `once`: `Some(clock)` runs one tick (at `clock`, default now) and prints what it did.
async fn run_tick(core: &CoreConfig, once: Option<Option<chrono::DateTime<chrono::Utc>>>, every_s: u64, stop: &Stop) -> Result<()> {
    let keep = chronos_core::retention::Retention::from_env()?;
    let scheduler = Scheduler::new(client_until(core, stop).await?, core.schedule_horizon);
    let who = format!("tick-{}", std::process::id());
    if let Some(at) = once {
        let out = chronos_tick::tick_at(&scheduler, &who, keep, Some(&core.dlq_queue), at.unwrap_or_else(chrono::Utc::now)).await?;
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    chronos_tick::run_loop(scheduler, who, keep, Some(core.dlq_queue.clone()), Duration::from_secs(every_s), stop.wait()).await;
    Ok(())
}

async fn run_scaler(core: &CoreConfig, once: bool, every_s: u64) -> Result<()> {
    let cfg = chronos_scaler::config::ScalerConfig::from_env()?;
    let stop = Stop::on_signal();
    let engine = connect_engine(core, &stop).await?;
    // Locally the embedded-metric-format lines are only of interest when debugging.
    let sink: chronos_scaler::MetricSink = std::sync::Arc::new(|line| tracing::debug!(target: "chronos::emf", "{line}"));
    let scaler = chronos_scaler::Scaler::new(engine, chronos_scaler::ecs_client().await, cfg).with_metrics(sink);
    if once {
        println!("{}", serde_json::to_string_pretty(&scaler.run_once().await?)?);
        return Ok(());
    }
    chronos_scaler::run_loop(scaler, Duration::from_secs(every_s), stop.wait()).await;
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

async fn run_api(core: &CoreConfig, stop: &Stop) -> Result<()> {
    let cfg = chronos_api::config::ApiConfig::from_env()?;
    let engine = connect_engine(core, stop).await?;
    let store = connect_store(core, stop).await?;
    let dlq = match stop.during(Dlq::connect(&core.dlq_queue)).await? {
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
    serve_api(listener, app, stop.wait()).await;
    Ok(())
}

/// Headers `chronos api` reads in before it answers: well above the API's own limit
/// (`chronos_api::MAX_HEADER_BYTES`), so an oversized header gets the API's `431` problem
/// document; beyond this, hyper's bare `431`.
const MAX_HEADER_READ: usize = 4 << 20;

/// Header lines `chronos api` parses (hyper's default is 100, answered with a bare `431`): as many
/// as fit in the API's header limit at a few bytes each, so too many headers get the API's
/// problem document too. Beyond it, hyper's bare `431`.
const MAX_HEADER_COUNT: usize = 4096;

/// `axum::serve` with hyper's header buffer raised to [`MAX_HEADER_READ`]; stops accepting on
/// `shutdown` and lets open requests finish.
async fn serve_api(listener: tokio::net::TcpListener, app: axum::Router, shutdown: impl std::future::Future<Output = ()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_READ).max_headers(MAX_HEADER_COUNT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}

async fn run_dashboard(core: &CoreConfig, stop: &Stop) -> Result<()> {
    let cfg = chronos_dashboard::config::DashboardConfig::from_env()?;
    let dlq = match stop.during(Dlq::connect(&core.dlq_queue)).await? {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "SQS unreachable; redrive will not remove dead-letter messages");
            None
        }
    };
    let chronos = client_until(core, stop).await?.with_dlq(dlq);
    let scheduler = Scheduler::new(chronos.clone(), core.schedule_horizon);
    // Stops the outbox reader and ends open event streams, so the graceful shutdown completes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = chronos_dashboard::DashState::start(chronos, scheduler, cfg.clone(), stop_rx);
    let listener =
        tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("CHRONOS_DASHBOARD_ADDR: cannot listen on {}", cfg.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
    let shutdown = stop.wait();
    chronos_dashboard::serve(listener, state, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await?;
    Ok(())
}

/// `default_queues`: what the worker serves when `CHRONOS_QUEUES` is unset.
async fn run_worker(core: &CoreConfig, default_queues: &str, stop: &Stop) -> Result<()> {
    let cfg = WorkerConfig::from_env_serving(default_queues)?;
    let registry = builtin_registry(&cfg).map_err(anyhow::Error::msg)?;
    let engine = connect_engine(core, stop).await?;
    metrics_addr::start(&engine, stop.wait()).await?;
    let emf = metrics_addr::start_emf(&engine, stop.wait())?;
    let store = connect_store(core, stop).await?;
    let worker = if cfg.background_services {
        // SQS is reached in the background: tasks run whatever SQS does, and dead letters wait
        // in Redis until it answers.
        Worker::new(engine, registry, cfg)
            .with_audit(store.clone())
            .with_dlq_queue(core.dlq_queue.clone())
            .with_jobs(store, Some(core.dlq_queue.clone()))
    } else {
        // `chronos services` runs the audit writer, the DLQ forwarder and the rebuild apart;
        // this worker only reaps the leases of its queues (and settles Redis's state first).
        Worker::new(engine, registry, cfg).settling_with(store)
    };
    // With CHRONOS_METRICS=emf every metric goes out as EMF, these two among them.
    if !emf && let Some(service) = chronos_core::config::var("CHRONOS_METRICS_SERVICE") {
        tokio::spawn(emit_worker_metrics(worker.stats(), service));
    }
    worker.run(stop.wait()).await?;
    Ok(())
}

/// `chronos services`: the background services alone, for a deployment whose workers run with
/// `CHRONOS_WORKER_AUDIT=0`.
async fn run_services(core: &CoreConfig, stop: &Stop) -> Result<()> {
    let c = client_until(core, stop).await?;
    let who = format!("services-{}-{}", hostname(), std::process::id());
    let services = Services::new(c.engine.clone())
        .audit_writer(c.store.clone(), who.clone())
        .rebuild(c.store.clone(), who.clone())
        .dlq_forwarder_connecting(core.dlq_queue.clone())
        .job_runner(c.store.clone(), Some(core.dlq_queue.clone()), who);
    let running = services.start();
    tracing::info!("background services started: audit writer, DLQ forwarder, Redis-loss rebuild, job runner");
    stop.wait().await;
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

/// The process's stop request (SIGTERM or SIGINT), seen at every stage: while connecting to the
/// stores at start-up, while settling, and while running. `None`: never (one-shot commands keep
/// the default signal behaviour).
#[derive(Clone)]
struct Stop(Option<tokio::sync::watch::Receiver<bool>>);

/// A stop request arrived before start-up finished: nothing ran yet, the process exits 0.
#[derive(Debug)]
struct StoppedDuringStartUp;

impl std::fmt::Display for StoppedDuringStartUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped during start-up")
    }
}

impl std::error::Error for StoppedDuringStartUp {}

impl Stop {
    /// Installs the SIGTERM and SIGINT handlers now.
    fn on_signal() -> Stop {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let sig = shutdown_signal();
        tokio::spawn(async move {
            sig.await;
            let _ = tx.send(true);
            tx.closed().await; // keep the sender: a dropped one would read as a stop
        });
        Stop(Some(rx))
    }

    fn never() -> Stop {
        Stop(None)
    }

    /// Resolves once a stop was requested.
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.0.clone();
        async move {
            match rx {
                Some(rx) => wait_true(rx).await,
                None => std::future::pending().await,
            }
        }
    }

    /// `fut`, unless a stop is requested first: then [`StoppedDuringStartUp`].
    async fn during<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T> {
        tokio::select! {
            v = fut => Ok(v),
            _ = self.wait() => Err(StoppedDuringStartUp.into()),
        }
    }
}

/// A process stopped before it finished starting did what it was asked: exit 0.
fn stopped_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is::<StoppedDuringStartUp>() => {
            tracing::info!("stopped during start-up");
            Ok(())
        }
        r => r,
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
