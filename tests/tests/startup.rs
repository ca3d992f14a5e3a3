//! Real `chronos worker` processes started while a store or SQS does not answer: the worker
//! runs tasks whatever SQS does, waits a bounded time for Redis and Postgres (saying once which
//! variable and which address, never a password), and honours SIGTERM at every stage.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_core::model::NewTask;
use chronos_tests::{TcpProxy, TestEnv, chronos_bin, wait_until};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// A `chronos worker` child whose stderr the test reads.
struct Child {
    proc: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Child {
    fn spawn(env: &TestEnv, extra: &[(&str, &str)]) -> Child {
        let mut cmd = tokio::process::Command::new(chronos_bin());
        cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env.child_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().expect("spawn chronos worker");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(proc.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if std::env::var("CHRONOS_TEST_LOGS").is_ok() {
                    eprintln!("{l}");
                }
                sink.lock().unwrap().push(l);
            }
        });
        Child { proc, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    async fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        wait_until(timeout, &format!("{needle:?} on the worker's stderr"), || async { self.stderr().contains(needle) }).await;
    }

    fn sigterm(&self) {
        let pid = self.proc.id().expect("running child").to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// SIGTERM, then the exit status within `within`.
    async fn stop(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        self.sigterm();
        let status = tokio::time::timeout(within, self.proc.wait()).await.expect("the worker exits on SIGTERM").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // the last stderr lines
        (status, self.stderr())
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn moto_addr() -> std::net::SocketAddr {
    let ep = chronos_tests::aws_endpoint();
    let host = ep.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(host).unwrap().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_sqs_is_unreachable_runs_tasks_and_forwards_dead_letters_once_sqs_answers() {
    let env = TestEnv::new().await;
    let sqs = TcpProxy::start(moto_addr()).await;
    sqs.cut();
    let ok = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    let doomed = env.client.enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true }))).await.unwrap().id;
    let w = Child::spawn(&env, &[("AWS_ENDPOINT_URL", &sqs.url())]);
    wait_until(Duration::from_secs(20), "both tasks finished while SQS is unreachable", || async {
        env.status(ok).await == "completed" && env.status(doomed).await == "dead"
    })
    .await;
    let dlq_key = env.engine.keys("default").dlq;
    let mut conn = env.engine.connection();
    let waiting: Option<f64> = redis::cmd("ZSCORE").arg(&dlq_key).arg(doomed.to_string()).query_async(&mut conn).await.unwrap();
    assert!(waiting.is_some(), "the dead letter waits in Redis while SQS is unreachable");

    sqs.restore();
    wait_until(Duration::from_secs(60), "the dead letter left Redis for SQS", || async {
        let mut conn = env.engine.connection();
        let left: Option<f64> = redis::cmd("ZSCORE").arg(&dlq_key).arg(doomed.to_string()).query_async(&mut conn).await.unwrap();
        left.is_none()
    })
    .await;
    let dlq = env.dlq().await;
    let got = dlq.client().receive_message().queue_url(dlq.queue_url()).max_number_of_messages(10).send().await.unwrap();
    let bodies: Vec<serde_json::Value> = got.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect();
    assert!(bodies.iter().any(|b| b["id"] == doomed.to_string()), "the letter reached SQS: {bodies:?}");

    let (status, log) = w.stop(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{log}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_still_waiting_for_its_redis_and_the_wait_names_the_variable_not_the_password() {
    let env = TestEnv::new().await;
    let port = closed_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let w = Child::spawn(&env, &[("REDIS_URL", &url), ("CHRONOS_CONNECT_TIMEOUT_S", "120")]);
    w.wait_for_stderr("cannot reach Redis", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a few retries later
    let started = Instant::now();
    let (status, log) = w.stop(Duration::from_secs(5)).await;
    assert!(status.success(), "a stop during start-up is a clean exit: {status:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(3), "stopped in {:?}", started.elapsed());
    assert!(log.contains("REDIS_URL") && log.contains(&format!("127.0.0.1:{port}")), "{log}");
    assert!(!log.contains("hunter2"), "the password must never be printed:\n{log}");
    assert_eq!(log.matches("cannot reach Redis").count(), 1, "said once, not on every retry:\n{log}");
    assert!(!log.contains('\u{1b}'), "logs to a pipe carry no ANSI colour codes:\n{log:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gives_up_on_an_unreachable_postgres_after_the_connect_timeout_naming_database_url() {
    let env = TestEnv::new().await;
    let port = closed_port();
    let url = format!("postgres://postgres:s3cret@127.0.0.1:{port}/chronos");
    let started = Instant::now();
    let mut w = Child::spawn(&env, &[("DATABASE_URL", &url), ("CHRONOS_CONNECT_TIMEOUT_S", "3")]);
    let status = tokio::time::timeout(Duration::from_secs(30), w.proc.wait()).await.expect("gives up in bounded time").unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let log = w.stderr();
    assert_eq!(status.code(), Some(5), "a store that cannot be reached exits with 5: {log}");
    assert!(took >= Duration::from_secs(3), "retried for the connect timeout, not once: {took:?}\n{log}");
    assert!(log.contains("DATABASE_URL") && log.contains(&format!("127.0.0.1:{port}")), "{log}");
    assert!(log.contains("Postgres"), "{log}");
    assert!(!log.contains("s3cret"), "the password must never be printed:\n{log}");
    assert_eq!(log.matches("cannot reach Postgres").count(), 1, "said once:\n{log}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_redis_answers_waits_for_it_and_then_runs_tasks() {
    let env = TestEnv::new().await;
    let shared = chronos_core::config::url_address(&chronos_tests::redis_url());
    let redis = TcpProxy::start(std::net::ToSocketAddrs::to_socket_addrs(&shared).unwrap().next().unwrap()).await;
    redis.cut();
    let id = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let w = Child::spawn(&env, &[("REDIS_URL", &url), ("CHRONOS_CONNECT_TIMEOUT_S", "60")]);
    w.wait_for_stderr("cannot reach Redis", Duration::from_secs(15)).await;
    redis.restore();
    wait_until(Duration::from_secs(30), "the task ran once Redis answered", || async { env.status(id).await == "completed" }).await;
    let (status, log) = w.stop(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{log}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_fails_the_check_before_claiming_the_warning_names_postgres_and_the_worker_still_runs() {
    let env = TestEnv::new().await;
    // A database that answers but has no schema: the check before claiming reads Postgres and fails.
    let bare = format!("chronos_t_bare_{}", chronos_tests::random_suffix());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {bare}"))).execute(env.store.pool()).await.unwrap();
    let url = format!("{}/{bare}", &env.database_url[..env.database_url.rfind('/').unwrap()]);
    let id = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    let w = Child::spawn(&env, &[("DATABASE_URL", &url), ("CHRONOS_WORKER_AUDIT", "0")]);
    w.wait_for_stderr("cannot check whether Redis lost its data", Duration::from_secs(20)).await;
    let log = w.stderr();
    assert!(log.contains("the audit store (Postgres, DATABASE_URL) failed"), "the warning names Postgres and its variable:\n{log}");
    // The worker claims anyway (the task leaves the ready set and completes in Redis).
    wait_until(Duration::from_secs(20), "the task ran", || async { env.engine.task_fields("default", id).await.unwrap().is_empty() }).await;
    let (status, log) = w.stop(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{log}");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {bare} WITH (FORCE)"))).execute(env.store.pool()).await;
    env.cleanup().await;
}
