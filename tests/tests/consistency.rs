//! One truth in Redis and Postgres: what a task's live view says is what its row says once the
//! audit writer caught up.

use std::time::Duration;

use chronos_core::access::{Caller, Role};
use chronos_core::model::NewTask;
use chronos_core::store::TaskFilter;
use chronos_tests::{TestEnv, diag_registry, start_worker, wait_until, worker_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_task_retried_now_has_its_fresh_attempt_budget_in_postgres_as_in_redis() {
    let env = TestEnv::new().await;
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let admin = Caller { key_id: "test".into(), role: Role::Admin };
    let id = env.client.enqueue(NewTask::new("fail", json!({ "times": 10, "permanent": true })).max_attempts(5)).await.unwrap().id;
    wait_until(Duration::from_secs(10), "the task is dead", || async { env.status(id).await == "dead" }).await;
    env.client.retry_now(&admin, id).await.unwrap();
    wait_until(Duration::from_secs(10), "the second attempt died too, recorded in Postgres", || async {
        let row = env.store.get_task(id).await.unwrap().unwrap();
        row.status == "dead" && row.attempts == 2
    })
    .await;
    let live = env.client.task(&admin, id).await.unwrap();
    let row = env.store.get_task(id).await.unwrap().unwrap();
    let listed = env.client.tasks(&admin, TaskFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(live.max_attempts, 6, "one attempt used, then a fresh budget of 5");
    assert_eq!(row.max_attempts, live.max_attempts, "the Postgres row says what the live view says");
    assert_eq!(listed[0].max_attempts, live.max_attempts, "and so do lists");
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_kind_with_a_payload_its_handler_would_refuse_is_a_422_naming_the_field_at_submit() {
    let env = TestEnv::new().await;
    let api = chronos_tests::start_api(&env, None).await;
    let post = |body: serde_json::Value| api.admin(reqwest::Method::POST, "/v1/tasks").json(&body).send();
    let r = post(json!({ "name": "sleep", "payload": { "ms": 10, "n": 1 } })).await.unwrap();
    assert_eq!(r.status(), 422);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["field"], "payload", "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("unknown field `n`") && detail.contains("payload.n") && detail.contains("{ms}"), "{detail}");
    let r = post(json!({ "name": "http", "payload": { "url": "https://example.com", "headers": { "x": 1 } } })).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].as_str().unwrap().contains("payload.headers.x"));
    // A batch is refused whole, naming the item.
    let r = api
        .admin(reqwest::Method::POST, "/v1/tasks/batch")
        .json(&json!({ "tasks": [{ "name": "noop" }, { "name": "fail", "payload": { "time": 1 } }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: serde_json::Value = r.json().await.unwrap();
    assert!(p["field"].as_str().unwrap().starts_with("tasks[1]"), "{p}");
    // Kinds Chronos does not know stay accepted (custom handlers, rolling deploys), and so does
    // a built-in kind with a payload its handler takes.
    assert_eq!(post(json!({ "name": "report.build", "payload": { "n": 1 } })).await.unwrap().status(), 201);
    assert_eq!(post(json!({ "name": "sleep", "payload": { "ms": 10 } })).await.unwrap().status(), 201);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows, 2, "nothing refused was stored");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_to_a_submission_shows_the_times_as_stored() {
    let env = TestEnv::new().await;
    let api = chronos_tests::start_api(&env, None).await;
    for body in [
        json!({ "name": "noop" }),
        json!({ "name": "noop", "delay_ms": 1234 }),
        json!({ "name": "noop", "run_at": "2030-01-02T03:04:05.123456789Z" }),
    ] {
        let created: serde_json::Value =
            api.admin(reqwest::Method::POST, "/v1/tasks").json(&body).send().await.unwrap().json().await.unwrap();
        let id = created["id"].as_str().unwrap();
        let stored: serde_json::Value =
            api.admin(reqwest::Method::GET, &format!("/v1/tasks/{id}")).send().await.unwrap().json().await.unwrap();
        for f in ["created_at", "updated_at", "run_at", "status"] {
            assert_eq!(created[f], stored[f], "{f} of {body}: answered {} but stored {}", created[f], stored[f]);
        }
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_at_and_delay_ms_share_one_range_of_at_most_ten_years_ahead() {
    let env = TestEnv::new().await;
    let api = chronos_tests::start_api(&env, None).await;
    let status = |body: serde_json::Value| {
        let req = api.admin(reqwest::Method::POST, "/v1/tasks").json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let nine_years = (chrono::Utc::now() + chrono::Duration::days(9 * 365)).to_rfc3339();
    let eleven_years = (chrono::Utc::now() + chrono::Duration::days(11 * 365)).to_rfc3339();
    assert_eq!(status(json!({ "name": "noop", "run_at": nine_years })).await.0, 201);
    assert_eq!(status(json!({ "name": "noop", "delay_ms": 9u64 * 365 * 86_400_000 })).await.0, 201);
    let (s, p) = status(json!({ "name": "noop", "run_at": eleven_years })).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("run_at")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("10 years"), "{p}");
    let (s, p) = status(json!({ "name": "noop", "run_at": "9999-12-31T00:00:00Z" })).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("run_at")), "9999 is past the range: {p}");
    let (s, p) = status(json!({ "name": "noop", "delay_ms": 11u64 * 365 * 86_400_000 })).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("delay_ms")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("10 years"), "{p}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_refused_for_their_shape_get_a_message_that_says_what_is_wrong() {
    let env = TestEnv::new().await;
    let api = chronos_tests::start_api(&env, None).await;
    let send = |body: String| {
        let req = api.admin(reqwest::Method::POST, "/v1/tasks").header("content-type", "application/json").body(body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let deep = format!(r#"{{"name":"noop","payload":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    let (s, p) = send(deep).await;
    assert_eq!(s, 400);
    assert!(p["detail"].as_str().unwrap().contains("deeper than 128 levels"), "valid JSON is not called invalid: {p}");
    let (s, p) = send(r#"{"name":"noop","payload":{"a":"\ud800x"}}"#.into()).await;
    assert_eq!(s, 400);
    assert!(p["detail"].as_str().unwrap().contains("lone UTF-16 surrogate"), "{p}");
    let long = "n".repeat(100_000) + " ";
    let (s, p) = send(json!({ "name": long }).to_string()).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("name")), "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.len() < 300 && detail.contains("100001 bytes"), "a long value is cut, not echoed whole: {} bytes", detail.len());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronos_api_answers_a_megabyte_header_with_a_431_problem_document_and_still_stops_on_sigterm() {
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = tokio::process::Command::new(chronos_tests::chronos_bin());
    cmd.arg("api").kill_on_drop(true).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    if std::env::var("CHRONOS_TEST_LOGS").is_err() {
        cmd.stderr(std::process::Stdio::null());
    }
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    let addr = format!("127.0.0.1:{port}");
    cmd.env("CHRONOS_API_ADDR", &addr).env("CHRONOS_ADMIN_KEY", chronos_tests::ADMIN_KEY);
    let mut api = cmd.spawn().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    wait_until(Duration::from_secs(20), "chronos api answers", || async {
        http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let r = http
        .get(format!("{base}/v1/queues"))
        .bearer_auth(chronos_tests::ADMIN_KEY)
        .header("x-big", "a".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:chronos:problem:headers-too-large", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("at most"), "{p}");
    let ok = http.get(format!("{base}/v1/queues")).bearer_auth(chronos_tests::ADMIN_KEY).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let pid = api.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), api.wait()).await.expect("stops on SIGTERM").unwrap();
    assert!(status.success(), "{status:?}");
    env.cleanup().await;
}
