//! Observability: a handler's own log lines are captured with its attempt (bounded), returned by
//! `GET /v1/tasks/{id}/attempts`, found by the log search, and a worker's JSON log lines name
//! the attempt they belong to.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_core::model::NewTask;
use chronos_tests::{TestEnv, chronos_bin, diag_registry, random_suffix, start_api, start_worker, wait_until, worker_config};
use chronos_workers::{Handler, HandlerError, Task, TaskContext};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Logs `lines` lines at info naming the word whose letters `drow` has backwards (so the word
/// itself is in no payload the search also reads), then succeeds.
struct Chatty;

impl Handler for Chatty {
    fn kind(&self) -> &'static str {
        "chatty"
    }
    async fn handle(&self, _ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: Value = task.payload()?;
        let word: String = p["drow"].as_str().unwrap_or_default().chars().rev().collect();
        for i in 0..p["lines"].as_u64().unwrap_or(1) {
            tracing::info!(line = i, "reconciling the ledger for {word}");
        }
        Ok(())
    }
}

/// This test process's subscriber: the worker's capture layer, as `chronos` installs it.
fn install_capture() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(chronos_workers::logs::CaptureLayer)
        .try_init();
}

async fn attempts(api: &chronos_tests::RunningApi, id: uuid::Uuid) -> Vec<Value> {
    let r: Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks/{id}/attempts")).send().await.unwrap().json().await.unwrap();
    r["attempts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_logged_inside_a_handler_is_stored_with_its_attempt_and_found_by_search() {
    install_capture();
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut registry = diag_registry();
    registry.register(Chatty).unwrap();
    let worker = start_worker(&env, registry, worker_config(&["default"]), None);

    // A word only the handler's log line has (not the name, the payload or an error).
    let word = format!("kumquat{}", random_suffix());
    let one =
        env.client.enqueue(NewTask::new("chatty", json!({ "lines": 1, "drow": word.chars().rev().collect::<String>() }))).await.unwrap().id;
    let many = env.client.enqueue(NewTask::new("chatty", json!({ "lines": 300, "drow": "x" }))).await.unwrap().id;
    let quiet = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    for id in [one, many, quiet] {
        wait_until(Duration::from_secs(20), "the task completed in Postgres", || async { env.status(id).await == "completed" }).await;
    }

    let a = attempts(&api, one).await;
    assert_eq!(a.len(), 1, "{a:?}");
    let logs = a[0]["logs"].as_str().expect("the attempt has its logs");
    assert!(logs.contains(&format!("INFO {}: reconciling the ledger for {word}", module_path!())), "{logs}");
    assert!(logs.contains("line=0"), "fields are kept: {logs}");
    assert_eq!(logs.lines().count(), 1, "{logs}");

    let found: Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks?q={word}")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = found["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![one.to_string()], "the search finds the word of the log line");

    // 300 lines: the last 200 kept, the first line says so.
    let logs = attempts(&api, many).await[0]["logs"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 201, "{}", lines[0]);
    assert!(lines[0].starts_with("[100 earlier lines not kept"), "{}", lines[0]);
    assert!(lines[1].contains("line=100"), "{}", lines[1]);
    assert!(lines[200].contains("line=299"), "{}", lines[200]);

    // A handler that says nothing stores nothing, and the test's own line (outside any attempt)
    // is in no attempt.
    tracing::info!("{word} outside an attempt");
    assert_eq!(attempts(&api, quiet).await[0]["logs"], Value::Null);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fail_handler_logs_its_message_which_a_worker_process_stores_and_writes_as_a_json_line_naming_the_attempt() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.envs(env.child_env()).env("CHRONOS_LOG_FORMAT", "json").env("CHRONOS_WORKER_ID", "w-observed");
    let mut child = cmd.spawn().expect("spawn chronos worker");
    let stderr = child.stderr.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            keep.lock().unwrap().push(l);
        }
    });

    let message = format!("card declined {}", random_suffix());
    let id = env
        .client
        .enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true, "message": message })).queue("default"))
        .await
        .unwrap()
        .id;
    wait_until(Duration::from_secs(30), "the task is dead in Postgres", || async { env.status(id).await == "dead" }).await;

    let a = attempts(&api, id).await;
    let logs = a[0]["logs"].as_str().expect("the attempt has its logs");
    assert!(logs.contains(&format!("WARN chronos_workers::handlers::diag: {message}")), "{logs}");
    assert_eq!(a[0]["error"], message.as_str());

    let line = {
        let seen = seen.lock().unwrap();
        seen.iter().find(|l| l.contains(&message)).cloned().unwrap_or_else(|| panic!("no log line with the message in {seen:?}"))
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["fields"]["message"], message.as_str(), "{v}");
    let span = &v["span"];
    assert_eq!(span["task_id"], id.to_string(), "{v}");
    assert_eq!(span["queue"], "default", "{v}");
    assert_eq!(span["task_name"], "fail", "{v}");
    assert_eq!(span["attempt"], 1, "{v}");
    assert_eq!(span["worker"], "w-observed", "{v}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    env.cleanup().await;
}
