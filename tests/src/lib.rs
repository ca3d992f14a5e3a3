//! Test harness: every test gets its own Redis key namespace and its own fresh Postgres
//! database, so leftovers from earlier runs never matter. Services are real: Redis, Postgres
//! and the AWS emulator named by `AWS_ENDPOINT_URL` (scripts/test starts them).
//!
//! # Layout
//! - [`TestEnv`] — namespace, database, engine, store, client; `cleanup` drops the database.
//! - [`chronos_bin`] / [`spawn_worker_process`] — the real `chronos` binary as a child process.
//! - [`start_worker`] — an in-process worker with a shutdown handle.
//! - [`wait_until`] — wait on a condition (tests wait on state, not on sleeps).
//! - [`PrivatePostgres`] — a throwaway Postgres server on its own port, for outage tests.
//! - [`aws`] — a moto server of the test's own, the stack deployed to it, the venv's tools.
//! - [`lambda`] — a Lambda Runtime API the test serves, to run the real Lambda binaries.

pub mod aws;
pub mod lambda;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chronos_core::dlq::Dlq;
use chronos_core::{Chronos, Engine, Store};
use chronos_workers::{Registry, Worker, WorkerConfig};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Redis the tests use: `CHRONOS_TEST_REDIS_URL` (e.g. a Redis Cluster's seeds, for the
/// cluster pass of `scripts/test`), else `REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("CHRONOS_TEST_REDIS_URL").or_else(|_| std::env::var("REDIS_URL")).unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the tests run against a Redis Cluster (see [`redis_url`]).
pub fn on_cluster() -> bool {
    redis_url().contains(',') || std::env::var("CHRONOS_REDIS_CLUSTER").is_ok_and(|v| v == "1")
}

/// The server-level URL used to create and drop per-test databases.
pub fn admin_database_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/chronos".into());
    match url.rfind('/') {
        Some(i) if url[..i].contains('@') || url[..i].ends_with("//") || url[..i].contains(':') => format!("{}/postgres", &url[..i]),
        _ => url,
    }
}

pub fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub struct TestEnv {
    pub namespace: String,
    pub database: String,
    pub database_url: String,
    pub engine: Engine,
    pub store: Store,
    pub client: Chronos,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::with_admin_url(&admin_database_url()).await
    }

    /// A fresh database on the server at `admin_url` (e.g. a [`PrivatePostgres`]).
    pub async fn with_admin_url(admin_url: &str) -> TestEnv {
        let suffix = random_suffix();
        let namespace = format!("t{suffix}");
        let database = format!("chronos_t_{suffix}");
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to Postgres (is scripts/test's set-up running?)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await.expect("create test database");
        let _ = admin.close().await;
        let database_url = format!("{}/{database}", &admin_url[..admin_url.rfind('/').unwrap()]);
        let store = Store::connect(&database_url).await.expect("store");
        store.migrate().await.expect("migrate");
        let engine = Engine::connect(&redis_url(), &namespace).await.expect("connect to Redis");
        let client = Chronos::new(engine.clone(), store.clone(), 256 * 1024, Duration::from_secs(3600));
        TestEnv { namespace, database, database_url, engine, store, client }
    }

    /// Drop the test database and the namespace's keys.
    pub async fn cleanup(self) {
        let admin_url = format!("{}/postgres", &self.database_url[..self.database_url.rfind('/').unwrap()]);
        self.store.pool().close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)))
                .execute(&mut admin)
                .await;
        }
        let mut conn = self.engine.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.namespace)).query_async(&mut conn).await.unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }

    /// An SQS dead-letter queue of this test's own, on the emulator.
    pub async fn dlq(&self) -> Dlq {
        Dlq::with_client(sqs_client().await, &self.dlq_name()).await.expect("SQS emulator at AWS_ENDPOINT_URL (scripts/test starts it)")
    }

    pub fn dlq_name(&self) -> String {
        format!("chronos-dlq-{}", self.namespace)
    }

    pub async fn status(&self, id: uuid::Uuid) -> String {
        self.store.get_task(id).await.unwrap().map(|t| t.status).unwrap_or_default()
    }

    /// Environment for a `chronos` child process pointed at this test's namespace and database.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".into(), redis_url()),
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("CHRONOS_NAMESPACE".into(), self.namespace.clone()),
            ("CHRONOS_DLQ_QUEUE".into(), self.dlq_name()),
            ("AWS_ENDPOINT_URL".into(), aws_endpoint()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }
}

/// The emulator's endpoint: `AWS_ENDPOINT_URL`, else the local default. Tests never talk to AWS.
pub fn aws_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// An SQS client for the emulator with dummy credentials, whatever the shell exports.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    sqs_client_at(&aws_endpoint()).await
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `chronos` binary built next to this test executable (`cargo build --bins` first).
pub fn chronos_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("chronos");
    assert!(bin.exists(), "{} not found: run `cargo build --bins` first (scripts/test does)", bin.display());
    bin
}

/// Start `chronos worker` as a child process with `env` on top of the test's environment.
pub fn spawn_worker_process(env: &TestEnv, extra: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null());
    if std::env::var("CHRONOS_TEST_LOGS").is_err() {
        cmd.stderr(Stdio::null());
    }
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn chronos worker")
}

/// A worker running inside the test process.
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    pub stats: std::sync::Arc<chronos_workers::WorkerStats>,
    pub handle: JoinHandle<chronos_core::Result<()>>,
}

impl RunningWorker {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.handle.abort();
        }
    }
}

/// Start an in-process worker with the audit writer and, when given, the DLQ forwarder.
pub fn start_worker(env: &TestEnv, registry: Registry, cfg: WorkerConfig, dlq: Option<Dlq>) -> RunningWorker {
    let (tx, rx) = oneshot::channel();
    let mut w = Worker::new(env.engine.clone(), registry, cfg).with_audit(env.store.clone());
    if let Some(d) = dlq {
        w = w.with_dlq(d);
    }
    let stats = w.stats();
    let handle = tokio::spawn(w.run(async move {
        let _ = rx.await;
    }));
    RunningWorker { stop: Some(tx), stats, handle }
}

pub fn diag_registry() -> Registry {
    let mut r = Registry::new();
    r.register(chronos_workers::handlers::Noop).unwrap();
    r.register(chronos_workers::handlers::Sleep).unwrap();
    r.register(chronos_workers::handlers::Fail).unwrap();
    r.register(chronos_workers::handlers::Gather).unwrap();
    r
}

pub fn worker_config(queues: &[&str]) -> WorkerConfig {
    let mut c = WorkerConfig::new(queues.iter().map(|q| q.to_string()).collect());
    c.lease = Duration::from_secs(5);
    c.shutdown_grace = Duration::from_secs(5);
    c
}

/// A Postgres server of the test's own, in a temp dir on a free port, that the test may stop
/// and start (never the shared one).
pub struct PrivatePostgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

fn pg_bin_dir() -> PathBuf {
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(&base)
        .expect("Postgres server binaries (apt install postgresql)")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.pop().expect("a Postgres version").join("bin")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Run a Postgres tool; as root it must run as the `postgres` user.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let is_root =
        std::process::Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    let path = bin.join(tool);
    let mut cmd = if is_root {
        let mut c = std::process::Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(&path);
        c
    } else {
        std::process::Command::new(&path)
    };
    cmd.args(args).stdin(Stdio::null()).output().expect("run Postgres tool")
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = pg_bin_dir();
        let dir = std::env::temp_dir().join(format!("chronos-pg-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::process::Command::new("chown").arg("postgres:postgres").arg(&dir).status();
        let data = dir.join("data");
        let out = pg_tool(&bin, "initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePostgres { dir, port: free_port(), bin };
        pg.up();
        pg
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) {
        let data = self.dir.join("data");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("pg.log");
        let out = pg_tool(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "30", "start"],
        );
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn down(&self) {
        let data = self.dir.join("data");
        let out = pg_tool(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = pg_tool(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy the test controls, to cut a client off from a shared service (the AWS emulator)
/// without stopping it for everyone else.
pub struct TcpProxy {
    pub port: u16,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let enabled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (gen_tx, _) = tokio::sync::watch::channel(0u64);
        let generation = std::sync::Arc::new(gen_tx);
        let (en, gen_) = (enabled.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !en.load(Ordering::SeqCst) {
                    drop(inbound); // refused: connection closed at once
                    continue;
                }
                let mut cut = gen_.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy { port, enabled, generation, task }
    }

    /// Cut every open connection and refuse new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.enabled.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.enabled.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An SQS client for the emulator reached through `endpoint` (e.g. a [`TcpProxy`]).
pub async fn sqs_client_at(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = chronos_core::dlq::aws_config().await;
    let sqs = aws_sdk_sqs::config::Builder::from(&conf)
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "chronos-tests"))
        .build();
    aws_sdk_sqs::Client::from_conf(sqs)
}

/// The bootstrap admin key the in-process API accepts.
pub const ADMIN_KEY: &str = "chk_test_admin_key_0123456789";

/// The API served in-process on a free port, like `chronos api`.
pub struct RunningApi {
    pub base: String,
    pub app: axum::Router,
    pub http: reqwest::Client,
    task: JoinHandle<()>,
}

impl RunningApi {
    /// A request builder with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.as_key(ADMIN_KEY, method, path)
    }

    pub fn as_key(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key)
    }
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve the API for `env`, with the SQS dead-letter queue `dlq` when given.
pub async fn start_api(env: &TestEnv, dlq: Option<Dlq>) -> RunningApi {
    // As `chronos api` runs it: concurrent submissions share writes.
    let state = chronos_api::AppState::new(
        env.client.clone().with_write_coalescing(4),
        Some(chronos_core::config::Secret::new(ADMIN_KEY)),
        dlq,
        chronos_core::schedule::DEFAULT_HORIZON,
    );
    let app = chronos_api::app(state, 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = app.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, served).await;
    });
    RunningApi { base, app, http: reqwest::Client::new(), task }
}

/// A Redis server of the test's own on a free port, which the test may flush or restart.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// A fresh database on the shared Postgres and a namespace on the Redis at `redis_url`.
    pub async fn with_redis(redis_url: &str) -> TestEnv {
        let mut env = TestEnv::new().await;
        env.engine = Engine::connect(redis_url, &env.namespace).await.expect("connect to Redis");
        env.client = Chronos::new(env.engine.clone(), env.store.clone(), 256 * 1024, Duration::from_secs(3600));
        env
    }
}
