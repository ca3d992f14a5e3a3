//! The work of `scripts/chaos`: each scenario runs real `chronos worker` (and `chronos api`) processes against a
//! Redis of its own (a `redis-server` it starts on a free port, and kills, restarts or flushes)
//! and a fresh Postgres database, breaks something while tasks run, then waits until every
//! accepted task is terminal. It prints one line of figures per scenario and, last, one JSON
//! line keyed by scenario; it exits non-zero when a task was lost (accepted and not terminal at
//! the end), and for `flushall` when a task ran again after it had completed.
//!
//! ```text
//! cargo build -p chronos-cli -p chronos-tests --bin chronos --example chaos
//! target/debug/examples/chaos --chronos-bin target/debug/chronos [--quick] [--only sigkill,flushall] [--json FILE]
//! ```
//!
//! Figures: `accepted` (tasks `Chronos::enqueue_batch` accepted), `completed`, `cancelled`, `dead`
//! (their status in Postgres at the end), `duplicates` (handler runs that succeeded beyond the
//! first per task: every task calls this program's own HTTP endpoint through the `http` handler,
//! which counts the 2xx answers it gave each task), `lost`, and `recover_ms`: the worst time,
//! over the faults of the scenario, from the fault to the next handler run that succeeded.
//!
//! Scenarios, in order: `sigkill` (3 worker processes, one SIGKILLed every second and started
//! again, for the whole run), `redis-restart-aof` and `redis-restart-empty` (Redis SIGKILLed in
//! mid-run and started again on the same port, with AOF `appendfsync everysec` and with no
//! persistence at all; the workers are never restarted), `flushall` (`FLUSHALL` in mid-run while
//! a producer keeps enqueuing and workers keep completing), `sqs-cut` (the SQS emulator cut off
//! through a TCP proxy while tasks exhaust their retries; afterwards every dead task's message
//! must arrive exactly once), `postgres-down` (a Postgres server of the scenario's own stopped
//! under load: enqueue answers 503 with `Retry-After`, workers keep completing, a key seen
//! before reads a task and the queues, every completion reaches Postgres), and in [`more`]
//! `api-restart`, `clock-skew` and `redis-oom`, in [`bad`] `bad-input` (malformed requests of
//! every kind against a `chronos api` process). Each of these has its own checks beside `lost`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chronos_core::{Backoff, Chronos, Engine, NewTask, Store};
use chronos_workers::handlers::http::TASK_ID_HEADER;
use serde_json::{Value, json};
use sqlx::Connection;

mod bad;
mod more;
mod soak;

const QUEUE: &str = "chaos";
/// The bootstrap admin key of the scenarios' `chronos api` processes.
const ADMIN_KEY: &str = "chk_chaos_admin_key_0123456789";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `chronos api` process to talk to over HTTP.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        // Every request has a deadline: a hang is a finding, never a stuck run.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Api { base: format!("http://127.0.0.1:{port}"), http }
    }

    fn req(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key)
    }

    /// Wait until `/healthz` answers at all (a store may be down; the process is up).
    async fn wait_up(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.http.get(format!("{}/healthz", self.base)).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("chronos api at {} did not answer", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// The body of `POST /v1/tasks` for a task that calls the hit endpoint.
fn hit_task(port: u16, i: u64, ms: u64) -> Value {
    json!({
        "name": "http", "queue": QUEUE, "max_attempts": 25,
        "backoff": {"kind": "fixed", "base_ms": 200, "cap_ms": 200, "jitter": "none"},
        "payload": {"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": i, "ms": ms}},
    })
}

struct Opts {
    chronos_bin: PathBuf,
    quick: bool,
    only: Option<Vec<String>>,
    json: Option<PathBuf>,
    /// `--soak [MINUTES]`: run the soak alone, this long.
    soak: Option<u64>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts { chronos_bin: PathBuf::new(), quick: false, only: None, json: None, soak: None };
    let mut args = std::env::args().skip(1).peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--soak" => {
                let minutes = args.next_if(|m| m.parse::<u64>().is_ok()).map_or(10, |m| m.parse().unwrap_or(10));
                o.soak = Some(minutes.max(1));
                o.only = Some(vec!["soak".into()]);
            }
            "--quick" => o.quick = true,
            "--chronos-bin" => o.chronos_bin = args.next().context("--chronos-bin needs a path")?.into(),
            "--json" => o.json = Some(args.next().context("--json needs a path")?.into()),
            "--only" => o.only = Some(args.next().context("--only needs a list")?.split(',').map(str::to_owned).collect()),
            other => bail!("unknown argument {other}"),
        }
    }
    if !o.chronos_bin.exists() {
        bail!("--chronos-bin {:?} not found (cargo build -p chronos-cli)", o.chronos_bin);
    }
    Ok(o)
}

/// What the handlers' HTTP endpoint saw: per task index, the successful runs, and when.
#[derive(Default)]
struct Hits {
    runs: HashMap<String, u32>,
    /// When each task's successful runs started (for where duplicates come from).
    starts: HashMap<String, Vec<Instant>>,
    at: Vec<Instant>,
    /// When each task's first successful run started, in epoch ms of this host's clock.
    wall: HashMap<String, i64>,
}

type SharedHits = Arc<Mutex<Hits>>;

/// The endpoint every task's `http` handler calls: `POST /hit` with `{"i": n, "ms": m}`; it
/// waits `m` ms (so kills land on running attempts), counts the run under the task id the
/// handler sends and answers 200.
async fn start_hit_server() -> Result<(u16, SharedHits)> {
    let hits: SharedHits = Default::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hit",
        axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let h = h.clone();
            async move {
                let started = Instant::now();
                let ms = body["ms"].as_u64().unwrap_or(0);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut g = h.lock().unwrap();
                let id = headers.get(TASK_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                g.wall.entry(id.clone()).or_insert(chrono::Utc::now().timestamp_millis() - started.elapsed().as_millis() as i64);
                *g.runs.entry(id.clone()).or_default() += 1;
                g.starts.entry(id).or_default().push(started);
                g.at.push(Instant::now());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, hits))
}

/// A `redis-server` of the scenario's own, which it may kill and start again on the same port
/// and directory (so an AOF survives the restart).
struct RedisProc {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl RedisProc {
    fn start(args: &[&str]) -> Result<RedisProc> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let dir = std::env::temp_dir().join(format!("chronos-chaos-redis-{port}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let mut r = RedisProc { port, dir, args: args.iter().map(|s| s.to_string()).collect(), child: None };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir", self.dir.to_str().unwrap()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = redis::Client::open(self.url().as_str())?.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not answer", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One scenario's database, namespace, Redis and clients.
struct Env {
    bin: PathBuf,
    redis: RedisProc,
    database: String,
    database_url: String,
    admin_url: String,
    namespace: String,
    store: Store,
    client: Chronos,
    aws_endpoint: String,
}

impl Env {
    async fn new(bin: &std::path::Path, redis: RedisProc) -> Result<Env> {
        Env::on_postgres(bin, redis, &chronos_tests::admin_database_url()).await
    }

    /// A fresh database on the Postgres server at `admin_url` (e.g. a private one).
    async fn on_postgres(bin: &std::path::Path, redis: RedisProc, admin_url: &str) -> Result<Env> {
        let admin_url = admin_url.to_owned();
        let database = format!("chronos_chaos_{:08x}", rand::random::<u32>());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.context("connect to Postgres")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await?;
        let _ = admin.close().await;
        let database_url = format!("{}/{database}", &admin_url[..admin_url.rfind('/').context("DATABASE_URL")?]);
        let store = Store::connect(&database_url).await?;
        store.migrate().await?;
        let namespace = format!("chaos{:06x}", rand::random::<u32>() & 0xff_ffff);
        let engine = Engine::connect(&redis.url(), &namespace).await?;
        // A running deployment: the Redis-state check has passed once.
        chronos_core::reconcile::ensure_redis_state(&engine, &store, "chaos").await?;
        let client = Chronos::new(engine, store.clone(), 256 * 1024, Duration::from_secs(3600));
        Ok(Env {
            bin: bin.to_owned(),
            redis,
            database,
            database_url,
            admin_url,
            namespace,
            store,
            client,
            aws_endpoint: chronos_tests::aws_endpoint(),
        })
    }

    fn dlq_name(&self) -> String {
        format!("chronos-dlq-{}", self.namespace)
    }

    /// `chronos <sub>` on this scenario's Redis, database and namespace, its stderr kept in
    /// `CHRONOS_CHAOS_LOGS` when set; `envs` on top.
    fn command(&self, sub: &str, name: &str, envs: &[(&str, String)]) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg(sub).kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Ok(dir) = std::env::var("CHRONOS_CHAOS_LOGS") {
            cmd.stderr(std::fs::File::create(PathBuf::from(dir).join(format!("{}-{name}.log", self.namespace)))?);
        }
        cmd.envs([
            ("REDIS_URL", self.redis.url()),
            ("DATABASE_URL", self.database_url.clone()),
            ("CHRONOS_NAMESPACE", self.namespace.clone()),
            ("CHRONOS_DLQ_QUEUE", self.dlq_name()),
            ("AWS_ENDPOINT_URL", self.aws_endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("CHRONOS_LOG", "info".to_owned()),
        ]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// `chronos worker` on this scenario's Redis, database and namespace.
    fn worker(&self, name: &str, extra: &[(&str, String)]) -> Result<tokio::process::Child> {
        let mut cmd = self.command(
            "worker",
            name,
            &[
                ("CHRONOS_QUEUES", QUEUE.to_owned()),
                ("CHRONOS_WORKER_ID", name.to_owned()),
                ("CHRONOS_CONCURRENCY", "8".to_owned()),
                ("CHRONOS_LEASE_MS", "2000".to_owned()),
            ],
        )?;
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().context("spawn chronos worker")
    }

    /// `chronos api` on this scenario's Redis, database and namespace, listening on `port`.
    fn api(&self, name: &str, port: u16) -> Result<tokio::process::Child> {
        let envs = [("CHRONOS_API_ADDR", format!("127.0.0.1:{port}")), ("CHRONOS_ADMIN_KEY", ADMIN_KEY.to_owned())];
        self.command("api", name, &envs)?.spawn().context("spawn chronos api")
    }

    /// Enqueue `n` tasks that call the hit endpoint (indices from `first`); returns how many
    /// were accepted.
    async fn enqueue_hits(&self, port: u16, first: u64, n: u64, ms: u64) -> Result<u64> {
        let mut accepted = 0;
        let mut i = first;
        while i < first + n {
            let end = (i + 500).min(first + n);
            let batch: Vec<NewTask> = (i..end)
                .map(|i| {
                    NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": i, "ms": ms}}))
                        .queue(QUEUE)
                        .max_attempts(25)
                        .backoff(Backoff::fixed(Duration::from_millis(200)))
                })
                .collect();
            accepted += self.client.enqueue_batch(batch).await?.len() as u64;
            i = end;
        }
        Ok(accepted)
    }

    async fn counts(&self) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status").fetch_all(self.store.pool()).await?;
        Ok(rows.into_iter().collect())
    }

    /// What became of up to ten tasks that are not terminal: each one's row in Postgres and what
    /// Redis holds of it, so that a scenario that loses tasks says where they stopped.
    async fn unfinished(&self, engine: &Engine) -> Value {
        let rows: Vec<(String, String, String, i32, f64)> = match sqlx::query_as(
            "SELECT id::text, queue, status, attempts, extract(epoch FROM now() - updated_at)::float8 FROM tasks
             WHERE status NOT IN ('completed', 'cancelled', 'dead') ORDER BY id LIMIT 10",
        )
        .fetch_all(self.store.pool())
        .await
        {
            Ok(rows) => rows,
            Err(e) => return json!(format!("reading Postgres failed: {e}")),
        };
        let mut conn = engine.connection();
        let mut out = Vec::new();
        for (id, queue, status, attempts, idle_s) in rows {
            let k = engine.keys(&queue);
            let mut r = json!({"id": id, "queue": queue, "status": status, "attempts": attempts, "idle_s": idle_s.round()});
            let hash: redis::RedisResult<HashMap<String, String>> = redis::cmd("HGETALL").arg(k.task(&id)).query_async(&mut conn).await;
            r["redis_hash"] = json!(
                hash.map(|h| {
                    let mut h: Vec<_> = h.into_iter().collect();
                    h.sort();
                    h
                })
                .map_err(|e| e.to_string())
                .ok()
            );
            for (name, key) in [("ready", &k.ready), ("delayed", &k.delayed), ("retry", &k.retry), ("active", &k.active), ("dead", &k.dead)]
            {
                let score: Option<f64> = redis::cmd("ZSCORE").arg(key).arg(&id).query_async(&mut conn).await.unwrap_or(None);
                if let Some(score) = score {
                    r[name] = json!(score);
                }
            }
            let paused: Option<String> = redis::cmd("GET").arg(&k.paused).query_async(&mut conn).await.unwrap_or(None);
            let intact: bool = redis::cmd("EXISTS").arg(&k.intact).query_async(&mut conn).await.unwrap_or(false);
            let outbox: u64 = redis::cmd("XLEN").arg(&k.outbox).query_async(&mut conn).await.unwrap_or(0);
            r["queue_paused"] = json!(paused);
            r["queue_intact"] = json!(intact);
            r["queue_outbox"] = json!(outbox);
            out.push(r);
        }
        let ns = engine.namespace();
        let epoch: Option<String> = redis::cmd("GET").arg(chronos_core::keys::epoch_key(ns)).query_async(&mut conn).await.unwrap_or(None);
        let lock: Option<String> = redis::cmd("GET").arg(chronos_core::keys::rebuild_lock(ns)).query_async(&mut conn).await.unwrap_or(None);
        json!({"tasks": out, "epoch": epoch, "rebuild_lock": lock})
    }

    /// Wait until every accepted task is terminal in Postgres (or `limit` passes).
    async fn settle(&self, accepted: u64, limit: Duration) -> Result<HashMap<String, i64>> {
        let start = Instant::now();
        loop {
            // Postgres may just have come back: its pool's first queries can fail.
            let c = match self.counts().await {
                Err(_) if start.elapsed() < limit => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                c => c?,
            };
            let terminal: i64 = ["completed", "cancelled", "dead"].iter().map(|s| c.get(*s).copied().unwrap_or(0)).sum();
            if terminal as u64 >= accepted || start.elapsed() > limit {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn cleanup(self) {
        self.store.pool().close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)))
                .execute(&mut admin)
                .await;
        }
    }
}

/// One scenario's figures.
#[derive(Default)]
struct Figures {
    accepted: u64,
    completed: i64,
    cancelled: i64,
    dead: i64,
    duplicates: u64,
    lost: i64,
    recover_ms: u64,
    extra: serde_json::Map<String, Value>,
}

impl Figures {
    fn from_counts(accepted: u64, c: &HashMap<String, i64>, hits: &SharedHits, faults: &[Instant]) -> Figures {
        let get = |s: &str| c.get(s).copied().unwrap_or(0);
        let (completed, cancelled, dead) = (get("completed"), get("cancelled"), get("dead"));
        let h = hits.lock().unwrap();
        let duplicates = h.runs.values().map(|n| n.saturating_sub(1) as u64).sum();
        let mut at = h.at.clone();
        at.sort();
        let recover_ms = faults
            .iter()
            // A fault after the last run had nothing left to recover (a task it stranded
            // would be counted as lost).
            .filter_map(|f| {
                let next = at.partition_point(|t| t <= f);
                at.get(next).map(|t| t.duration_since(*f).as_millis() as u64)
            })
            .max()
            .unwrap_or(0);
        Figures {
            accepted,
            completed,
            cancelled,
            dead,
            duplicates,
            lost: accepted as i64 - completed - cancelled - dead,
            recover_ms,
            extra: Default::default(),
        }
    }

    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("accepted".into(), json!(self.accepted));
        m.insert("completed".into(), json!(self.completed));
        m.insert("cancelled".into(), json!(self.cancelled));
        m.insert("dead".into(), json!(self.dead));
        m.insert("duplicates".into(), json!(self.duplicates));
        m.insert("lost".into(), json!(self.lost));
        m.insert("recover_ms".into(), json!(self.recover_ms));
        m.extend(self.extra.clone());
        Value::Object(m)
    }

    fn line(&self, name: &str) -> String {
        let mut s = format!(
            "{name}: accepted {} completed {} cancelled {} dead {} duplicates {} lost {} worst recovery {} ms",
            self.accepted, self.completed, self.cancelled, self.dead, self.duplicates, self.lost, self.recover_ms
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(" {k} {v}"));
        }
        s
    }
}

fn settle_limit(o: &Opts) -> Duration {
    Duration::from_secs(if o.quick { 90 } else { 600 })
}

/// 1. Three worker processes, one SIGKILLed every second (in turn) and started again, until
///    every task is terminal.
async fn sigkill(o: &Opts) -> Result<Figures> {
    let n = if o.quick { 2_000 } else { 20_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (port, hits) = start_hit_server().await?;
    let accepted = env.enqueue_hits(port, 0, n, 30).await?;
    let mut workers: Vec<_> = (0..3).map(|i| env.worker(&format!("w{i}-0"), &[])).collect::<Result<_>>()?;
    let mut faults = Vec::new();
    let mut kills = 0usize;
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = env.counts().await?;
        let terminal: i64 = ["completed", "cancelled", "dead"].iter().map(|s| c.get(*s).copied().unwrap_or(0)).sum();
        if terminal as u64 >= accepted || start.elapsed() > settle_limit(o) {
            break;
        }
        let i = kills % 3;
        workers[i].kill().await?;
        faults.push(Instant::now());
        kills += 1;
        workers[i] = env.worker(&format!("w{i}-{kills}"), &[])?;
    }
    let c = env.settle(accepted, Duration::from_secs(10)).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &faults);
    f.extra.insert("kills".into(), json!(kills));
    // Why a task died, when one did: its last error, with how many died of it.
    let why: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT last_error, count(*) FROM tasks WHERE status = 'dead' GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
            .fetch_all(env.store.pool())
            .await?;
    if !why.is_empty() {
        f.extra.insert("dead_errors".into(), json!(why.into_iter().map(|(e, n)| json!({"error": e, "tasks": n})).collect::<Vec<_>>()));
    }
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

/// 2. Redis SIGKILLed once in mid-run and started again on the same port; the workers carry on
///    by themselves. `persistence` are redis-server arguments.
async fn redis_restart(o: &Opts, persistence: &[&str]) -> Result<Figures> {
    let n = if o.quick { 1_000 } else { 5_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(persistence)?).await?;
    let (port, hits) = start_hit_server().await?;
    // Slow enough tasks (2 workers × 8 at 100 ms: 160/s) that Redis goes down mid-run.
    let accepted = env.enqueue_hits(port, 0, n, 100).await?;
    let mut env = env;
    let workers: Vec<_> = (0..2).map(|i| env.worker(&format!("w{i}"), &[])).collect::<Result<_>>()?;
    // Mid-run: about a third done.
    let deadline = Instant::now() + settle_limit(o);
    while (hits.lock().unwrap().runs.len() as u64) < n / 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the AOF's once-a-second fsync catch up with the enqueue, then kill without warning.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    env.redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.redis.spawn()?;
    let faults = vec![Instant::now()];
    let c = env.settle(accepted, settle_limit(o)).await?;
    let f = Figures::from_counts(accepted, &c, &hits, &faults);
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

/// 3. `FLUSHALL` while workers complete tasks and a producer keeps enqueuing. A task that had
///    completed must not run again: the figure for duplicates must be 0.
async fn flushall(o: &Opts) -> Result<Figures> {
    let n = if o.quick { 2_000 } else { 10_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (port, hits) = start_hit_server().await?;
    // Most tasks up front, so Postgres holds many live ones when Redis loses them; the rest
    // arrive while the rebuild runs.
    let mut accepted = env.enqueue_hits(port, 0, n * 3 / 4, 10).await?;
    let workers: Vec<_> = (0..3).map(|i| env.worker(&format!("w{i}"), &[])).collect::<Result<_>>()?;
    let mut faults = Vec::new();
    let mut leased_at_flush = std::collections::HashSet::new();
    let mut next = n * 3 / 4;
    let step = 50;
    while next < n {
        accepted += env.enqueue_hits(port, next, step, 10).await?;
        next += step;
        if next == n * 3 / 4 + 5 * step {
            // The tasks leased at the instant of the flush, read in the same transaction.
            let mut conn = redis::Client::open(env.redis.url().as_str())?.get_multiplexed_async_connection().await?;
            faults.push(Instant::now());
            let (active, ()): (Vec<String>, ()) =
                redis::pipe().atomic().zrange(env.client.engine.keys(QUEUE).active, 0, -1).cmd("FLUSHALL").query_async(&mut conn).await?;
            leased_at_flush.extend(active);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = env.settle(accepted, settle_limit(o)).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &faults);
    // Where the duplicates come from. A task leased when Redis lost its data, or whose first
    // successful run started before that (its completion was still in the outbox), lost that
    // attempt with Redis, so it runs again (at-least-once). Any other task that ran again was
    // claimed and completed after the flush, beside the rebuild: running it again is the
    // rebuild's fault, and that is the figure this scenario holds at 0.
    let flush = faults[0];
    let (mut before, mut after) = (0u64, 0u64);
    {
        let h = hits.lock().unwrap();
        for (id, starts) in h.starts.iter().filter(|(_, e)| e.len() > 1) {
            let first = starts.iter().min().unwrap();
            let extra = starts.len() as u64 - 1;
            if *first <= flush || leased_at_flush.contains(id) { before += extra } else { after += extra }
        }
    }
    f.duplicates = after;
    f.extra.insert("reruns_of_attempts_redis_lost".into(), json!(before));
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

/// 5. The SQS emulator cut off (through a TCP proxy) while tasks exhaust their retries, for a
///    while after they died; then every dead task's message must arrive exactly once.
async fn sqs_cut(o: &Opts) -> Result<Figures> {
    let n: u64 = if o.quick { 200 } else { 1_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let target: std::net::SocketAddr = env
        .aws_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("AWS_ENDPOINT_URL must be http://host:port for the proxy")?;
    let proxy = chronos_tests::TcpProxy::start(target).await;
    let sqs = chronos_tests::sqs_client().await;
    let queue_url = sqs.create_queue().queue_name(env.dlq_name()).send().await?.queue_url.context("queue url")?;
    let worker = env.worker("w0", &[("AWS_ENDPOINT_URL", proxy.url())])?;
    // The worker reaches SQS once before the cut (its forwarder is up).
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    let fault = Instant::now();
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| {
            NewTask::new("fail", json!({"times": 100, "message": format!("chaos {i}")}))
                .queue(QUEUE)
                .max_attempts(3)
                .backoff(Backoff::fixed(Duration::from_millis(100)))
        })
        .collect();
    let mut accepted = 0;
    for chunk in tasks.chunks(500) {
        accepted += env.client.enqueue_batch(chunk.to_vec()).await?.len() as u64;
    }
    let c = env.settle(accepted, settle_limit(o)).await?;
    // Every task is dead; SQS stays cut off a little longer, then comes back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();
    let back = Instant::now();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut last_new = Instant::now();
    let mut arrived_ms = 0;
    while last_new.elapsed() < Duration::from_secs(if seen.len() as u64 >= accepted { 6 } else { 30 }) {
        let r = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1).send().await?;
        for m in r.messages() {
            let letter: chronos_core::dlq::DeadLetter = serde_json::from_str(m.body().unwrap_or_default())?;
            let k = seen.entry(letter.id).or_default();
            *k += 1;
            if *k == 1 {
                last_new = Instant::now();
                arrived_ms = back.elapsed().as_millis() as u64;
            }
            if let Some(h) = m.receipt_handle() {
                sqs.delete_message().queue_url(&queue_url).receipt_handle(h).send().await?;
            }
        }
    }
    let mut f = Figures::from_counts(accepted, &c, &Default::default(), &[]);
    // From SQS answering again to the last dead letter arriving.
    f.recover_ms = arrived_ms;
    f.extra.insert("cut_ms".into(), json!(back.duration_since(fault).as_millis() as u64));
    f.extra.insert("dlq_messages".into(), json!(seen.values().sum::<u32>()));
    f.extra.insert("dlq_tasks".into(), json!(seen.len()));
    f.extra.insert("dlq_repeated".into(), json!(seen.values().filter(|n| **n > 1).count()));
    drop(worker);
    let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
    env.cleanup().await;
    Ok(f)
}

/// 6. `sigkill` on a Redis Cluster of the scenario's own (3 masters, 3 replicas on free ports,
///    node timeout 2 s): three workers, one SIGKILLed every second; an eighth of the way through
///    a replica takes over its master (`CLUSTER FAILOVER`), 2 s later another master is
///    SIGKILLed (its replica is promoted; the killed node comes back 5 s later and rejoins as a
///    replica), and 2 s after that a master is SIGKILLed and started again at once, inside the
///    node timeout, so it comes back empty as the master of its slots (that shard alone lost its
///    data, or the set of queues with it; the Redis-loss check rebuilds from Postgres). The
///    tasks (120 ms each) spread over queues on every master; the run lasts until the last
///    fault happened and every task is terminal, and says how many were unfinished then.
async fn sigkill_cluster(o: &Opts) -> Result<Figures> {
    let n = if o.quick { 2_000 } else { 20_000 };
    let args = [
        "--save",
        "",
        "--appendonly",
        "no",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ];
    let mut nodes: Vec<RedisProc> = (0..6).map(|_| RedisProc::start(&args)).collect::<Result<_>>()?;
    let addrs: Vec<String> = nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .context("redis-cli --cluster create")?;
    if !created.success() {
        bail!("redis-cli --cluster create failed");
    }
    let cli = |port: u16, args: &[&str]| -> String {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let role = |port: u16| cli(port, &["role"]).lines().next().unwrap_or_default().to_owned();
    let healthy = |ports: &[u16]| ports.iter().all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"));
    let ports: Vec<u16> = nodes.iter().map(|r| r.port).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(&ports) {
        if Instant::now() > deadline {
            bail!("the scenario's Redis Cluster did not become ok");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seeds = addrs.iter().map(|a| format!("redis://{a}")).collect::<Vec<_>>().join(",");

    // `Env::new` with the cluster's seeds; `Env::redis` is the first node (left running).
    let first = nodes.remove(0);
    let admin_url = chronos_tests::admin_database_url();
    let database = format!("chronos_chaos_{:08x}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.context("connect to Postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await?;
    let _ = admin.close().await;
    let database_url = format!("{}/{database}", &admin_url[..admin_url.rfind('/').context("DATABASE_URL")?]);
    let store = Store::connect(&database_url).await?;
    store.migrate().await?;
    let namespace = format!("chaos{:06x}", rand::random::<u32>() & 0xff_ffff);
    let engine = Engine::connect(&seeds, &namespace).await?;
    chronos_core::reconcile::ensure_redis_state(&engine, &store, "chaos").await?;
    let client = Chronos::new(engine.clone(), store.clone(), 256 * 1024, Duration::from_secs(3600));
    let env = Env {
        bin: o.chronos_bin.clone(),
        redis: first,
        database,
        database_url,
        admin_url,
        namespace,
        store,
        client,
        aws_endpoint: chronos_tests::aws_endpoint(),
    };

    // One queue per master (by the slot of its hash tag), the tasks dealt over them.
    let mut queues: Vec<String> = Vec::new();
    let mut thirds = [false; 3];
    let mut conn = engine.connection();
    for i in 0.. {
        let q = format!("{QUEUE}{i}");
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&q).query_async(&mut conn).await?;
        let third = (slot as usize * 3 / 16384).min(2);
        if !thirds[third] {
            thirds[third] = true;
            queues.push(q);
        }
        if thirds.iter().all(|t| *t) {
            break;
        }
    }
    let (port, hits) = start_hit_server().await?;
    let mut accepted = 0;
    for (qi, q) in queues.iter().enumerate() {
        let batch: Vec<NewTask> = (0..n)
            .filter(|i| i % 3 == qi as u64)
            .map(|i| {
                NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": i, "ms": 120}}))
                    .queue(q)
                    .max_attempts(25)
                    .backoff(Backoff::fixed(Duration::from_millis(200)))
            })
            .collect();
        for chunk in batch.chunks(500) {
            accepted += env.client.enqueue_batch(chunk.to_vec()).await?.len() as u64;
        }
    }
    let extra = [("REDIS_URL", seeds.clone()), ("CHRONOS_QUEUES", queues.join(","))];
    let mut workers: Vec<_> = (0..3).map(|i| env.worker(&format!("w{i}-0"), &extra)).collect::<Result<_>>()?;
    let mut faults = Vec::new();
    let (mut kills, mut failed_over, mut master_killed) = (0usize, None, None);
    let (mut restarted, mut shard_lost, mut bounced) = (None, false, false);
    let (mut unfinished_at_bounce, mut failed_over_at) = (0, None);
    let start = Instant::now();
    // The faults follow each other in time (not in progress, which a fast machine makes before
    // the last fault could happen); the run lasts until the last one happened and every task
    // is terminal.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = env.counts().await?;
        let terminal: i64 = ["completed", "cancelled", "dead"].iter().map(|s| c.get(*s).copied().unwrap_or(0)).sum();
        if (terminal as u64 >= accepted && bounced) || start.elapsed() > settle_limit(o) {
            break;
        }
        if failed_over.is_none() && terminal as u64 >= accepted / 8 {
            // A replica takes over its master, both alive: the planned failover.
            if let Some(r) = nodes.iter().find(|r| role(r.port) == "slave") {
                cli(r.port, &["cluster", "failover"]);
                failed_over = Some(r.port);
                failed_over_at = Some(Instant::now());
                faults.push(Instant::now());
            }
        } else if master_killed.is_none() && failed_over_at.is_some_and(|at: Instant| at.elapsed() >= Duration::from_secs(2)) {
            // A master dies without warning (not the one just promoted): its replica is elected.
            if let Some(i) = nodes.iter().position(|r| Some(r.port) != failed_over && role(r.port) == "master") {
                nodes[i].kill();
                master_killed = Some((i, Instant::now()));
                faults.push(Instant::now());
            }
        } else if let Some((i, at)) = master_killed
            && restarted.is_none()
            && at.elapsed() >= Duration::from_secs(5)
        {
            // Still holding its slots (its replica not elected yet): it comes back empty
            // and its queues lost their data, which the Redis-loss check must rebuild.
            let needle = format!(":{}@", nodes[i].port);
            shard_lost =
                cli(env.redis.port, &["cluster", "nodes"]).lines().any(|l| l.contains(&needle) && l.split_whitespace().count() > 8);
            nodes[i].spawn()?;
            restarted = Some(Instant::now());
        } else if restarted.is_some_and(|at| at.elapsed() >= Duration::from_secs(2)) && !bounced {
            // A master killed and started again at once (a supervisor restarting it), well inside
            // the node timeout: no replica is elected, it comes back empty as the master of its
            // slots and its replica syncs the emptiness. Only that shard's queues lost their
            // data; the Redis-loss check must find and rebuild them.
            if let Some(i) = nodes.iter().position(|r| role(r.port) == "master") {
                nodes[i].kill();
                faults.push(Instant::now());
                nodes[i].spawn()?;
                bounced = true;
                unfinished_at_bounce = accepted.saturating_sub(terminal as u64);
            }
        }
        let i = kills % 3;
        workers[i].kill().await?;
        faults.push(Instant::now());
        kills += 1;
        workers[i] = env.worker(&format!("w{i}-{kills}"), &extra)?;
    }
    let c = env.settle(accepted, Duration::from_secs(10)).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &faults);
    if f.lost > 0 {
        f.extra.insert("unfinished".into(), env.unfinished(&engine).await);
    }
    f.extra.insert("kills".into(), json!(kills));
    f.extra.insert("failover".into(), json!(failed_over.is_some()));
    f.extra.insert("master_killed".into(), json!(master_killed.is_some()));
    f.extra.insert("killed_master_back".into(), json!(restarted.is_some()));
    f.extra.insert("came_back_empty_as_master".into(), json!(shard_lost));
    f.extra.insert("master_bounced_empty".into(), json!(bounced));
    f.extra.insert("unfinished_at_bounce".into(), json!(unfinished_at_bounce));
    drop(workers);
    env.cleanup().await;
    drop(nodes);
    Ok(f)
}

/// The answer to one `POST /v1/tasks`.
enum Answer {
    /// A 2xx, with the task's id.
    Created(String),
    /// A 503, and whether it said when to retry.
    Unavailable { retry_after: bool },
    /// Any other status, with its body.
    Other(String),
    /// No answer at all (connection refused or reset, or the deadline passed).
    Unanswered(String),
}

async fn post_task(api: &Api, body: &Value) -> Answer {
    match api.req(ADMIN_KEY, reqwest::Method::POST, "/v1/tasks").json(body).send().await {
        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
            Ok(v) => match v["id"].as_str() {
                Some(id) => Answer::Created(id.to_owned()),
                None => Answer::Other(format!("a 2xx without a task id: {v}")),
            },
            // The process died between the status line and the body.
            Err(e) => Answer::Unanswered(format!("2xx, then no body: {e}")),
        },
        Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
            Answer::Unavailable { retry_after: r.headers().contains_key("retry-after") }
        }
        Ok(r) => {
            let status = r.status();
            Answer::Other(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
        Err(e) => Answer::Unanswered(e.to_string()),
    }
}

/// What a producer sending `POST /v1/tasks` through an outage saw.
#[derive(Default)]
struct Produced {
    /// Ids of the tasks that got a 2xx.
    accepted: Vec<String>,
    /// 503s, and those without a `Retry-After`.
    unavailable: u64,
    unavailable_without_retry_after: u64,
    /// Any other answer (status and detail), or no answer.
    other: Vec<String>,
    /// When the first 2xx after `since` came (set by the scenario).
    first_accept_after: Option<Instant>,
    since: Option<Instant>,
}

/// 4. The scenario's own Postgres stopped (60 s, 10 s with `--quick`) while a producer sends
///    `POST /v1/tasks` to a `chronos api` process and two workers run a backlog. While it is
///    down, enqueue must answer 503 with `Retry-After`, workers must keep completing tasks, and
///    a viewer key used before the outage must still read a live task and the queues. After,
///    every accepted task is terminal in Postgres with its attempts recorded.
async fn postgres_down(o: &Opts) -> Result<Figures> {
    let outage = Duration::from_secs(if o.quick { 10 } else { 60 });
    let backlog: u64 = if o.quick { 600 } else { 3_000 };
    let pg = chronos_tests::PrivatePostgres::start();
    let env = Env::on_postgres(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?, &pg.admin_url()).await?;
    let (hit_port, hits) = start_hit_server().await?;
    let api_port = free_port()?;
    let _api_proc = env.api("api", api_port)?;
    let api = Api::new(api_port);
    api.wait_up(Duration::from_secs(30)).await?;
    let r = api.req(ADMIN_KEY, reqwest::Method::POST, "/v1/keys").json(&json!({"name": "chaos-viewer", "role": "viewer"})).send().await?;
    let key: Value = r.error_for_status()?.json().await?;
    let viewer = key["secret"].as_str().context("POST /v1/keys answers the secret")?.to_owned();
    // Enough work that the workers are busy through the outage (2 × 8 at 20 ms ≈ 500/s at most,
    // fewer with the audit writer's load), then the producer on top.
    let mut accepted = env.enqueue_hits(hit_port, 0, backlog, if o.quick { 150 } else { 300 }).await?;
    let workers: Vec<_> = (0..2).map(|i| env.worker(&format!("w{i}"), &[])).collect::<Result<_>>()?;
    let produced: Arc<Mutex<Produced>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (api, produced, stop) = (Api::new(api_port), produced.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 1_000_000u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let answer = post_task(&api, &hit_task(hit_port, i, 5)).await;
                {
                    let mut p = produced.lock().unwrap();
                    match answer {
                        Answer::Created(id) => {
                            p.accepted.push(id);
                            if p.since.is_some() && p.first_accept_after.is_none() {
                                p.first_accept_after = Some(Instant::now());
                            }
                        }
                        Answer::Unavailable { retry_after } => {
                            p.unavailable += 1;
                            if !retry_after {
                                p.unavailable_without_retry_after += 1;
                            }
                        }
                        Answer::Other(m) | Answer::Unanswered(m) => p.other.push(m),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A task the viewer reads while Postgres is down, and the key's first use.
    let probe = env
        .client
        .enqueue(
            NewTask::new("http", json!({"url": format!("http://127.0.0.1:{hit_port}/hit"), "body": {"i": 0}}))
                .queue(QUEUE)
                .delay(Duration::from_secs(3600)),
        )
        .await?
        .id;
    accepted += 1;
    let read_path = format!("/v1/tasks/{probe}");
    api.req(&viewer, reqwest::Method::GET, &read_path).send().await?.error_for_status()?;
    // Mid-run: a sixth of the backlog done.
    let deadline = Instant::now() + settle_limit(o);
    while (hits.lock().unwrap().runs.len() as u64) < backlog / 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.down();
    let down = Instant::now();
    let (mut reads_ok, mut reads_failed, mut worst_read_ms) = (0u64, Vec::new(), 0u64);
    while down.elapsed() < outage {
        for path in [read_path.as_str(), "/v1/queues"] {
            let t = Instant::now();
            match api.req(&viewer, reqwest::Method::GET, path).send().await {
                Ok(r) if r.status().is_success() => reads_ok += 1,
                Ok(r) => reads_failed.push(format!("GET {path}: {}", r.status())),
                Err(e) => reads_failed.push(format!("GET {path}: {e}")),
            }
            worst_read_ms = worst_read_ms.max(t.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ran_during = hits.lock().unwrap().at.iter().filter(|t| **t > down + Duration::from_secs(1)).count() as u64;
    pg.up();
    let up = Instant::now();
    produced.lock().unwrap().since = Some(up);
    // The producer carries on until Postgres takes its tasks again, and a little after.
    while produced.lock().unwrap().first_accept_after.is_none() && up.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await?;
    let p = std::mem::take(&mut *produced.lock().unwrap());
    accepted += p.accepted.len() as u64;
    // The probe was only for reading; cancel it so the run can settle.
    api.req(ADMIN_KEY, reqwest::Method::POST, &format!("/v1/tasks/{probe}/cancel")).send().await?.error_for_status()?;
    let c = env.settle(accepted, settle_limit(o)).await?;
    // Every transition reached Postgres: each finished task's attempts have rows, the last
    // one with the task's outcome.
    let unrecorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks t WHERE t.status = 'completed' AND NOT EXISTS
           (SELECT 1 FROM task_attempts a WHERE a.task_id = t.id AND a.outcome = 'completed')",
    )
    .fetch_one(env.store.pool())
    .await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &[]);
    f.recover_ms = p.first_accept_after.map(|t| t.duration_since(up).as_millis() as u64).unwrap_or(u64::MAX);
    f.extra.insert("outage_s".into(), json!(outage.as_secs()));
    f.extra.insert("runs_during_outage".into(), json!(ran_during));
    f.extra.insert("enqueue_503".into(), json!(p.unavailable));
    f.extra.insert("enqueue_503_without_retry_after".into(), json!(p.unavailable_without_retry_after));
    f.extra.insert("enqueue_other".into(), json!(p.other.len()));
    f.extra.insert("reads_ok".into(), json!(reads_ok));
    f.extra.insert("reads_failed".into(), json!(reads_failed.len()));
    f.extra.insert("worst_read_ms".into(), json!(worst_read_ms));
    f.extra.insert("completed_without_attempt_row".into(), json!(unrecorded));
    for m in p.other.iter().chain(&reads_failed).take(5) {
        eprintln!("chaos: postgres-down: {m}");
    }
    drop(workers);
    env.cleanup().await;
    drop(pg);
    Ok(f)
}

const SCENARIOS: &[&str] = &[
    "sigkill",
    "redis-restart-aof",
    "redis-restart-empty",
    "flushall",
    "postgres-down",
    "sqs-cut",
    "api-restart",
    "clock-skew",
    "redis-oom",
    "bad-input",
    "sigkill-cluster",
    // Only with --soak.
    "soak",
];

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let mut out = serde_json::Map::new();
    let mut failures = Vec::new();
    for &name in SCENARIOS {
        if o.only.as_ref().is_some_and(|only| !only.iter().any(|s| s == name)) || (name == "soak" && o.soak.is_none()) {
            continue;
        }
        eprintln!("chaos: {name} …");
        let started = Instant::now();
        let mut f = match name {
            "sigkill" => sigkill(&o).await,
            "redis-restart-aof" => redis_restart(&o, &["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]).await,
            "redis-restart-empty" => redis_restart(&o, &["--save", "", "--appendonly", "no"]).await,
            "flushall" => flushall(&o).await,
            "sqs-cut" => sqs_cut(&o).await,
            "sigkill-cluster" => sigkill_cluster(&o).await,
            "postgres-down" => postgres_down(&o).await,
            "api-restart" => more::api_restart(&o).await,
            "clock-skew" => more::clock_skew(&o).await,
            "redis-oom" => more::redis_oom(&o).await,
            "bad-input" => bad::bad_input(&o).await,
            "soak" => soak::soak(&o, o.soak.unwrap_or(10)).await,
            _ => unreachable!(),
        }
        .with_context(|| format!("scenario {name}"))?;
        f.extra.insert("seconds".into(), json!(started.elapsed().as_secs()));
        println!("{}", f.line(name));
        if f.lost != 0 {
            failures.push(format!("{name}: {} accepted tasks not terminal", f.lost));
        }
        if name == "flushall" && f.duplicates != 0 {
            failures.push(format!("{name}: {} tasks ran again after completing", f.duplicates));
        }
        failures.extend(match name {
            "api-restart" => more::api_restart_failures(&f),
            "clock-skew" => more::clock_skew_failures(&f),
            "redis-oom" => more::redis_oom_failures(&f),
            "bad-input" => bad::bad_input_failures(&f),
            "soak" => soak::soak_failures(&f),
            _ => Vec::new(),
        });
        if name == "postgres-down" {
            let n = |k: &str| f.extra[k].as_u64().unwrap_or(0);
            if n("enqueue_503") == 0 || n("enqueue_503_without_retry_after") != 0 || n("enqueue_other") != 0 {
                failures.push(format!(
                    "{name}: enqueue answered {} 503s ({} without Retry-After) and {} other answers",
                    n("enqueue_503"),
                    n("enqueue_503_without_retry_after"),
                    n("enqueue_other")
                ));
            }
            if n("runs_during_outage") == 0 {
                failures.push(format!("{name}: no task ran while Postgres was down"));
            }
            if n("reads_failed") != 0 || n("reads_ok") == 0 {
                failures.push(format!("{name}: {} reads failed while Postgres was down", n("reads_failed")));
            }
            if n("completed_without_attempt_row") != 0 {
                failures.push(format!("{name}: {} completed tasks without their attempt in Postgres", n("completed_without_attempt_row")));
            }
        }
        if name == "sqs-cut" {
            let (msgs, tasks) = (f.extra["dlq_messages"].as_u64().unwrap_or(0), f.extra["dlq_tasks"].as_u64().unwrap_or(0));
            if tasks as i64 != f.dead || msgs != tasks {
                failures.push(format!("{name}: {} dead tasks, {tasks} with a DLQ message, {msgs} messages", f.dead));
            }
        }
        out.insert(name.to_owned(), f.json());
    }
    let line = Value::Object(out).to_string();
    if let Some(p) = &o.json {
        std::fs::write(p, &line)?;
    }
    println!("{line}");
    if !failures.is_empty() {
        bail!("chaos failed: {}", failures.join("; "));
    }
    Ok(())
}
