//! The bench's own state: a fresh Postgres database and Redis key namespace per scenario
//! (dropped afterwards), and `chronos` child processes (the release binary users deploy).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chronos_core::{Chronos, Engine, Store};
use sqlx::Connection;

/// The queue every scenario uses.
pub const QUEUE: &str = "bench";

/// Settings shared by every scenario of one run.
pub struct Bench {
    pub redis_url: String,
    /// The Postgres server's `postgres` database, to create and drop databases with.
    pub admin_db_url: String,
    /// Prefixes every database (`chronos_bench_<run>_<n>`) so scripts/bench can drop leftovers.
    pub run_id: String,
    pub chronos_bin: PathBuf,
    /// Child processes' stderr goes to files here (else nowhere).
    pub log_dir: Option<PathBuf>,
    pub aws_endpoint: String,
    envs: AtomicUsize,
}

impl Bench {
    pub fn new(chronos_bin: PathBuf, log_dir: Option<PathBuf>) -> Result<Bench> {
        if !chronos_bin.exists() {
            bail!("{} not found: cargo build --release -p chronos-cli first (scripts/bench does)", chronos_bin.display());
        }
        let run_id = std::env::var("CHRONOS_BENCH_RUN").unwrap_or_else(|_| format!("{:08x}", rand::random::<u32>()));
        if !run_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("CHRONOS_BENCH_RUN must be letters and digits");
        }
        Ok(Bench {
            redis_url: chronos_tests::redis_url(),
            admin_db_url: chronos_tests::admin_database_url(),
            run_id,
            chronos_bin,
            log_dir,
            aws_endpoint: chronos_tests::aws_endpoint(),
            envs: AtomicUsize::new(0),
        })
    }

    /// Refuse a Redis that holds data this bench did not create: its figures would be someone
    /// else's load, and its cleanup could never be told apart from theirs.
    pub async fn check_redis_is_ours(&self) -> Result<()> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await.with_context(|| format!("connect to {}", self.redis_url))?;
        let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
        if keys > 0 {
            bail!(
                "the Redis at {} holds {keys} keys this bench did not create; refusing to run (scripts/bench starts a private redis-server)",
                self.redis_url
            );
        }
        Ok(())
    }
}

/// One scenario's namespace, database and clients.
pub struct BenchEnv {
    pub namespace: String,
    pub database: String,
    pub database_url: String,
    pub engine: Engine,
    pub store: Store,
    pub client: Chronos,
}

impl BenchEnv {
    pub async fn new(b: &Bench) -> Result<BenchEnv> {
        let n = b.envs.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("cb{}x{n}", b.run_id);
        let database = format!("chronos_bench_{}_{n}", b.run_id.to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&b.admin_db_url).await.context("connect to Postgres")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await?;
        let _ = admin.close().await;
        let database_url = format!("{}/{database}", &b.admin_db_url[..b.admin_db_url.rfind('/').context("DATABASE_URL")?]);
        let store = Store::connect(&database_url).await?;
        store.migrate().await?;
        let engine = Engine::connect(&b.redis_url, &namespace).await?;
        // A running deployment: the Redis-state check has passed once. Without it the first
        // worker would "rebuild" the freshly enqueued tasks from Postgres before claiming.
        chronos_core::reconcile::ensure_redis_state(&engine, &store, "bench").await?;
        let client = Chronos::new(engine.clone(), store.clone(), 256 * 1024, Duration::from_secs(3600));
        Ok(BenchEnv { namespace, database, database_url, engine, store, client })
    }

    /// Drop the database and delete the namespace's keys.
    pub async fn cleanup(self, b: &Bench) {
        self.store.pool().close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&b.admin_db_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)))
                .execute(&mut admin)
                .await;
        }
        let mut conn = self.engine.connection();
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.namespace))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
            else {
                break;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }

    /// Environment for a `chronos` child process on this scenario's namespace and database.
    pub fn child_env(&self, b: &Bench) -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".into(), b.redis_url.clone()),
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("CHRONOS_NAMESPACE".into(), self.namespace.clone()),
            ("CHRONOS_DLQ_QUEUE".into(), format!("chronos-dlq-{}", self.namespace)),
            ("AWS_ENDPOINT_URL".into(), b.aws_endpoint.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("CHRONOS_LOG".into(), "warn".into()),
        ]
    }

    /// Start `chronos <sub>` with `extra` on top of [`BenchEnv::child_env`].
    pub fn spawn(&self, b: &Bench, sub: &str, name: &str, extra: &[(&str, String)]) -> Result<ChildProc> {
        let mut cmd = tokio::process::Command::new(&b.chronos_bin);
        cmd.arg(sub).kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(dir) = &b.log_dir {
            let f = std::fs::File::create(dir.join(format!("{}-{name}.log", self.namespace)))?;
            cmd.stderr(f);
        }
        cmd.envs(self.child_env(b));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("spawn {} {sub}", b.chronos_bin.display()))?;
        let pid = child.id().context("child pid")?;
        Ok(ChildProc { child, pid })
    }
}

pub struct ChildProc {
    pub child: tokio::process::Child,
    pub pid: u32,
}

impl ChildProc {
    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// SIGKILL: the crash a lease exists for.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Poll `cond` every `every` until it holds (true) or `limit` passes (false).
pub async fn poll_until<F, Fut>(limit: Duration, every: Duration, mut cond: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if cond().await? {
            return Ok(true);
        }
        if start.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(every).await;
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
