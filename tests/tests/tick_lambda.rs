//! The tick as AWS runs it: the real `chronos-tick-lambda` binary polling a Lambda Runtime API
//! (served here by the test, speaking the documented protocol) for EventBridge scheduled events.

use std::process::Stdio;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::{SubsecRound, Utc};
use chronos_core::cron::{CronExpr, Tz};
use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_tests::{TestEnv, chronos_bin};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

#[derive(Clone)]
struct Runtime {
    events: std::sync::Arc<Mutex<mpsc::Receiver<(String, Value)>>>,
    results: mpsc::Sender<(String, Result<Value, Value>)>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    // Long-polls like the real endpoint: answers when an invocation is there.
    let (id, event) = rt.events.lock().await.recv().await.expect("test ended");
    let mut h = HeaderMap::new();
    h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    let deadline = (Utc::now() + chrono::Duration::seconds(60)).timestamp_millis();
    h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
    h.insert("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:chronos-tick".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    (h, event.to_string())
}

async fn response(State(rt): State<Runtime>, Path(id): Path<String>, body: String) -> StatusCode {
    rt.results.send((id, Ok(serde_json::from_str(&body).unwrap_or(Value::String(body))))).await.unwrap();
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Runtime>, Path(id): Path<String>, body: String) -> StatusCode {
    rt.results.send((id, Err(serde_json::from_str(&body).unwrap_or(Value::String(body))))).await.unwrap();
    StatusCode::ACCEPTED
}

fn scheduled_event(n: u32) -> Value {
    json!({
        "version": "0",
        "id": format!("00000000-0000-0000-0000-00000000000{n}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": Utc::now().trunc_subsecs(0).to_rfc3339(),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/chronos-tick"],
        "detail": {}
    })
}

#[tokio::test]
async fn the_tick_lambda_plans_schedules_on_each_eventbridge_invocation() {
    let env = TestEnv::new().await;
    let s = Scheduler::new(env.client.clone(), DEFAULT_HORIZON);
    let mut spec = ScheduleSpec::new("every-10s", "*/10 * * * * *", TaskTemplate::new("noop", json!({})));
    spec.paused = true;
    let id = s.create(&spec, None).await.unwrap().id;
    let armed_at = Utc::now();
    sqlx::query("UPDATE schedules SET enabled = true, planned_until = $2 WHERE id = $1")
        .bind(id)
        .bind(armed_at)
        .execute(env.store.pool())
        .await
        .unwrap();

    let (ev_tx, ev_rx) = mpsc::channel(4);
    let (res_tx, mut res_rx) = mpsc::channel(4);
    let rt = Runtime { events: std::sync::Arc::new(Mutex::new(ev_rx)), results: res_tx };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let bin = chronos_bin().with_file_name("chronos-tick-lambda");
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "chronos-tick")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins)", bin.display()));

    ev_tx.send(("req-1".into(), scheduled_event(1))).await.unwrap();
    let (rid, out) = tokio::time::timeout(Duration::from_secs(30), res_rx.recv()).await.expect("first invocation answered").unwrap();
    assert_eq!(rid, "req-1");
    let out = out.unwrap_or_else(|e| panic!("the tick failed: {e}"));
    let planned: Vec<chrono::DateTime<Utc>> = sqlx::query_scalar("SELECT fire_at FROM tasks WHERE schedule_id = $1 ORDER BY fire_at")
        .bind(id)
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert!(planned.len() >= 17, "three minutes of a 10-second schedule: {planned:?}");
    assert_eq!(out["planned"].as_u64(), Some(planned.len() as u64), "{out}");
    assert_eq!(out["schedules"].as_u64(), Some(1), "{out}");
    let expected = CronExpr::parse("*/10 * * * * *").unwrap().occurrences(Tz::UTC, armed_at, *planned.last().unwrap(), 1000);
    assert_eq!(planned, expected);

    // The next invocation (a minute later on AWS; now here) has little or nothing left to plan,
    // and never plans an occurrence again.
    ev_tx.send(("req-2".into(), scheduled_event(2))).await.unwrap();
    let (rid, out) = tokio::time::timeout(Duration::from_secs(30), res_rx.recv()).await.expect("second invocation answered").unwrap();
    assert_eq!(rid, "req-2");
    let out = out.unwrap();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE schedule_id = $1").bind(id).fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(total as u64, planned.len() as u64 + out["planned"].as_u64().unwrap(), "{out}");
    assert!(out["planned"].as_u64().unwrap() <= 2, "{out}");

    child.kill().await.unwrap();
    server.abort();
    env.cleanup().await;
}
