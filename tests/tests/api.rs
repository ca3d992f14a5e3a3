//! Every API endpoint through the real router against real Redis and Postgres: happy paths,
//! refusals with problem+json naming what to fix, and the end-to-end life of a task created
//! over HTTP (run by a worker, attempts visible, cancel, retry, dead-letter redrive).

use std::time::Duration;

use chronos_tests::{TestEnv, diag_registry, start_api, start_worker, wait_until, worker_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn body(r: reqwest::Response) -> (StatusCode, String, Value) {
    let status = r.status();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    (status, ct, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post(api: &chronos_tests::RunningApi, path: &str, v: Value) -> (StatusCode, String, Value) {
    body(api.admin(Method::POST, path).json(&v).send().await.unwrap()).await
}

async fn get(api: &chronos_tests::RunningApi, path: &str) -> (StatusCode, String, Value) {
    body(api.admin(Method::GET, path).send().await.unwrap()).await
}

#[tokio::test]
async fn creating_a_task_returns_201_and_a_repeated_idempotency_key_returns_200_with_the_same_task() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let req = json!({ "name": "email", "queue": "mail", "payload": { "to": "a@b.c", "subject": "Hi", "text": "…" }, "priority": "high", "delay_ms": 60000,
                      "max_attempts": 3, "backoff": { "kind": "fixed", "base_ms": 500, "cap_ms": 500, "jitter": "none" },
                      "timeout_ms": 1000, "idempotency_key": "order-1" });
    let (s, _, a) = post(&api, "/v1/tasks", req.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!((a["status"].as_str(), a["priority"].as_i64(), a["queue"].as_str()), (Some("scheduled"), Some(75), Some("mail")));
    assert_eq!(a["backoff"]["kind"], "fixed");
    let (s, _, b) = post(&api, "/v1/tasks", req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["id"], b["id"]);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(n, 1, "no second task");
    let (s, _, got) = get(&api, &format!("/v1/tasks/{}", a["id"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["payload"]["to"], "a@b.c");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_document_that_names_the_field_to_fix() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let cases = [
        (json!({ "name": "x", "colour": "red" }), 422, "colour"),
        (json!({ "name": 5 }), 422, "name"),
        (json!({ "payload": {} }), 422, "name"),
        (json!({ "name": "x", "priority": 101 }), 422, "priority"),
        (json!({ "name": "x", "priority": "urgent" }), 422, "priority"),
        (json!({ "name": "x", "run_at": "tomorrow" }), 422, "run_at"),
        (json!({ "name": "x", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5 }), 422, "run_at"),
        (json!({ "name": "x", "queue": "a b" }), 422, "queue"),
        (json!({ "name": "x", "max_attempts": 0 }), 422, "max_attempts"),
        (json!({ "name": "x", "backoff": { "kind": "linear" } }), 422, "backoff.kind"),
        (json!({ "name": "x", "timeout_ms": 0 }), 422, "timeout_ms"),
        (json!({ "name": "x", "payload": "y".repeat(300 * 1024) }), 422, "payload"),
    ];
    for (req, status, field) in cases {
        let (s, ct, p) = post(&api, "/v1/tasks", req.clone()).await;
        assert_eq!(s.as_u16(), status, "{req}: {p}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(p["type"], "urn:chronos:problem:validation");
        assert_eq!(p["field"], field, "{req}: {p}");
        assert!(p["detail"].as_str().unwrap().len() > field.len(), "a detail that says what to fix: {p}");
    }
    // not JSON at all, wrong content type, too large
    let r = api.admin(Method::POST, "/v1/tasks").header("content-type", "application/json").body("{oops").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api.admin(Method::POST, "/v1/tasks").header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"name\":\"x\",\"payload\":\"{}\"}}", "y".repeat(2 << 20));
    let r = api.admin(Method::POST, "/v1/tasks").header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, p) = get(&api, "/v1/tasks/not-a-uuid").await;
    assert_eq!((s, p["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:chronos:problem:malformed-request")));
    let (s, _, _) = get(&api, "/v1/tasks/0193a1b2-0000-7000-8000-000000000000").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, p) = get(&api, "/v1/tasks?limit=9999").await;
    assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("limit")));
    let (s, _, p) = get(&api, "/v1/tasks?sort=asc").await;
    assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sort")), "{p}");
    let (s, _, _) = get(&api, "/v1/nothing-here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = api.admin(Method::PUT, "/v1/tasks").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    env.cleanup().await;
}

#[tokio::test]
async fn a_wrong_type_in_valid_json_is_a_422_that_names_the_field_and_its_allowed_values() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let template = json!({ "name": "noop" });
    let cases = [
        ("/v1/tasks", json!({ "name": "x", "backoff": { "jitter": false } }), "backoff.jitter", "`none`, `full`, `equal`"),
        ("/v1/tasks", json!({ "name": "x", "backoff": { "kind": 5 } }), "backoff.kind", "`exponential` or `fixed`"),
        ("/v1/tasks", json!({ "name": "x", "backoff": { "jitter": ["full"] } }), "backoff.jitter", "`none`, `full`, `equal`"),
        (
            "/v1/tasks/batch",
            json!({ "tasks": [{ "name": "x" }, { "name": "x", "backoff": { "jitter": true } }] }),
            "tasks[1].backoff.jitter",
            "`full`",
        ),
        ("/v1/schedules", json!({ "name": "s", "cron": "* * * * *", "task": template, "overlap": false }), "overlap", "`queue_one`"),
        ("/v1/schedules", json!({ "name": "s", "cron": "* * * * *", "task": template, "misfire": 1 }), "misfire", "`run_once`"),
    ];
    for (path, req, field, allowed) in cases {
        let (s, ct, p) = post(&api, path, req.clone()).await;
        assert_eq!((s, ct.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "application/problem+json"), "{req}: {p}");
        assert_eq!(p["field"], field, "{req}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(allowed) && !detail.contains("not valid JSON"), "the allowed values, not a syntax error: {p}");
    }
    // Invalid JSON stays a 400.
    let r = api
        .admin(Method::POST, "/v1/tasks")
        .header("content-type", "application/json")
        .body(r#"{"name": "x", "backoff": {"jitter": fals}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(n, 0, "nothing accepted");
    env.cleanup().await;
}

#[tokio::test]
async fn a_retry_with_its_idempotency_key_enqueues_a_task_whose_first_submission_never_reached_redis() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let req = json!({ "name": "noop", "queue": "orphans", "idempotency_key": "order-7" });
    let (s, _, a) = post(&api, "/v1/tasks", req.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    // As if the API process died between the Postgres commit and the Redis enqueue.
    let k = env.engine.keys("orphans");
    let mut conn = env.engine.connection();
    let () = redis::pipe().del(k.task(&id)).del(k.payload(&id)).zrem(&k.ready, &id).query_async(&mut conn).await.unwrap();
    assert_eq!(env.engine.counts("orphans").await.unwrap().waiting, 0);
    // The producer, without an answer, sends it again: the same task, and now it waits in Redis.
    let (s, _, b) = post(&api, "/v1/tasks", req.clone()).await;
    assert_eq!((s, b["id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{b}");
    assert_eq!(env.engine.counts("orphans").await.unwrap().waiting, 1, "the task is enqueued");
    // Once more: still one task, enqueued once.
    let (s, _, _) = post(&api, "/v1/tasks", req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(env.engine.counts("orphans").await.unwrap().waiting, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn the_tick_enqueues_a_task_whose_submission_never_reached_redis_and_that_no_retry_named() {
    let env = TestEnv::new().await;
    // A running deployment: Redis holds its state, so the tick does not rebuild it.
    chronos_core::reconcile::ensure_redis_state(&env.engine, &env.store, "test").await.unwrap();
    let orphan = env.client.enqueue(chronos_core::NewTask::new("noop", json!({})).queue("orphans")).await.unwrap().id;
    let kept = env.client.enqueue(chronos_core::NewTask::new("noop", json!({})).queue("orphans")).await.unwrap().id;
    let done = env.client.enqueue(chronos_core::NewTask::new("noop", json!({})).queue("orphans")).await.unwrap().id;
    // As if the writer died before Redis: its keys gone; a minute old. `done` completed long ago
    // (its row says so), `kept` is in Redis: neither is touched.
    let k = env.engine.keys("orphans");
    let mut conn = env.engine.connection();
    for id in [orphan, done] {
        let id = id.to_string();
        let () = redis::pipe().del(k.task(&id)).del(k.payload(&id)).zrem(&k.ready, &id).query_async(&mut conn).await.unwrap();
    }
    sqlx::query("UPDATE tasks SET created_at = now() - interval '1 minute'").execute(env.store.pool()).await.unwrap();
    sqlx::query("UPDATE tasks SET status = 'completed', attempts = 1 WHERE id = $1").bind(done).execute(env.store.pool()).await.unwrap();
    let out =
        tokio::process::Command::new(chronos_tests::chronos_bin()).args(["tick", "--once"]).envs(env.child_env()).output().await.unwrap();
    assert!(out.status.success(), "chronos tick --once: {}", String::from_utf8_lossy(&out.stderr));
    let mut ready: Vec<String> = redis::cmd("ZRANGE").arg(&k.ready).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    ready.sort();
    let mut want = vec![orphan.to_string(), kept.to_string()];
    want.sort();
    assert_eq!(ready, want, "the orphan enqueued, the completed task not; {}", String::from_utf8_lossy(&out.stdout));
    env.cleanup().await;
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_names_the_bad_item() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (s, _, p) = post(&api, "/v1/tasks/batch", json!({ "tasks": [{ "name": "noop" }, { "name": "noop", "priority": -1 }] })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "tasks[1].priority");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(n, 0, "nothing accepted");
    let tasks: Vec<Value> = (0..1000).map(|i| json!({ "name": "noop", "payload": { "i": i } })).collect();
    let (s, _, r) = post(&api, "/v1/tasks/batch", json!({ "tasks": tasks })).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["tasks"].as_array().unwrap().len(), 1000);
    assert_eq!(env.engine.counts("default").await.unwrap().waiting, 1000);
    let too_many: Vec<Value> = (0..1001).map(|_| json!({ "name": "noop" })).collect();
    let (s, _, p) = post(&api, "/v1/tasks/batch", json!({ "tasks": too_many })).await;
    assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("tasks")));
    env.cleanup().await;
}

#[tokio::test]
async fn listing_filters_searches_and_pages_newest_first() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    for i in 0..5 {
        post(&api, "/v1/tasks", json!({ "name": "report.build", "queue": "reports", "payload": { "customer": format!("acme-{i}") } }))
            .await;
    }
    post(
        &api,
        "/v1/tasks",
        json!({ "name": "email", "queue": "mail", "payload": { "to": "zed@example.com", "subject": "Hi", "text": "…" } }),
    )
    .await;
    let (_, _, p1) = get(&api, "/v1/tasks?queue=reports&limit=2").await;
    let page1: Vec<&str> = p1["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(page1.len(), 2);
    assert!(page1[0] > page1[1], "newest first");
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, _, p2) = get(&api, &format!("/v1/tasks?queue=reports&limit=2&cursor={cursor}")).await;
    let (_, _, p3) = get(&api, &format!("/v1/tasks?queue=reports&limit=2&cursor={}", p2["next_cursor"].as_str().unwrap())).await;
    assert_eq!(p3["tasks"].as_array().unwrap().len(), 1);
    assert!(p3["next_cursor"].is_null(), "last page has no cursor");
    let (_, _, s) = get(&api, "/v1/tasks?q=zed@example.com").await;
    assert_eq!(s["tasks"].as_array().unwrap().len(), 1, "full-text search over payload text");
    assert_eq!(s["tasks"][0]["name"], "email");
    let (_, _, s) = get(&api, "/v1/tasks?q=acme-3").await;
    assert_eq!(s["tasks"][0]["payload"]["customer"], "acme-3");
    let (_, _, s) = get(&api, "/v1/tasks?status=queued&name=email").await;
    assert_eq!(s["tasks"].as_array().unwrap().len(), 1);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, _, s) = get(&api, &format!("/v1/tasks?created_after={future}")).await;
    assert_eq!(s["tasks"].as_array().unwrap().len(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn queues_report_counts_and_a_paused_queue_accepts_tasks_but_is_not_worked() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let w = start_worker(&env, diag_registry(), worker_config(&["q1"]), None);
    let (s, _, v) = post(&api, "/v1/queues/q1/pause", json!({})).await;
    assert_eq!((s, v["paused"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, _, t) = post(&api, "/v1/tasks", json!({ "name": "noop", "queue": "q1" })).await;
    assert_eq!(s, StatusCode::CREATED);
    post(&api, "/v1/tasks", json!({ "name": "noop", "queue": "q1", "delay_ms": 60000 })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, q) = get(&api, "/v1/queues").await;
    let q1 = q["queues"].as_array().unwrap().iter().find(|q| q["name"] == "q1").unwrap().clone();
    assert_eq!((q1["waiting"].as_u64(), q1["scheduled"].as_u64(), q1["paused"].as_bool()), (Some(1), Some(1), Some(true)), "{q1}");
    assert!(q1["oldest_waiting_age_s"].as_f64().unwrap() >= 0.4, "{q1}");
    let (s, _, _) = post(&api, "/v1/queues/q1/resume", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let id = uuid::Uuid::parse_str(t["id"].as_str().unwrap()).unwrap();
    wait_until(Duration::from_secs(5), "task runs after resume", || async { env.status(id).await == "completed" }).await;
    let (_, _, q) = get(&api, "/v1/queues").await;
    let q1 = q["queues"].as_array().unwrap().iter().find(|q| q["name"] == "q1").unwrap().clone();
    assert_eq!((q1["waiting"].as_u64(), q1["completed"].as_i64(), q1["paused"].as_bool()), (Some(0), Some(1), Some(false)));
    let (s, _, p) = post(&api, "/v1/queues/bad%20name/pause", json!({})).await;
    assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("queue")));
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(actions, ["pause_queue", "resume_queue"]);
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn keys_are_created_once_listed_without_secrets_and_revoked() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (s, _, k) = post(&api, "/v1/keys", json!({ "name": "billing", "role": "producer" })).await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let secret = k["secret"].as_str().unwrap().to_owned();
    let stored: String = sqlx::query_scalar("SELECT hash FROM api_keys").fetch_one(env.store.pool()).await.unwrap();
    assert_ne!(stored, secret, "stored hashed");
    assert!(!stored.contains(&secret[4..]));
    let r = api.as_key(&secret, Method::POST, "/v1/tasks").json(&json!({ "name": "noop" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, _, list) = get(&api, "/v1/keys").await;
    assert_eq!(list["keys"][0]["name"], "billing");
    assert!(list["keys"][0].get("secret").is_none());
    let (s, _, p) = post(&api, "/v1/keys", json!({ "name": "x", "role": "root" })).await;
    assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("role")));
    let r = api.admin(Method::DELETE, &format!("/v1/keys/{}", k["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = api.as_key(&secret, Method::GET, "/v1/tasks").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "revoked at once");
    let r = api.admin(Method::DELETE, &format!("/v1/keys/{}", k["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    env.cleanup().await;
}

#[tokio::test]
async fn health_metrics_and_the_spec_are_served_without_a_key() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    post(&api, "/v1/tasks", json!({ "name": "noop", "queue": "m" })).await;
    let (s, _, h) = body(api.http.get(format!("{}/healthz", api.base)).send().await.unwrap()).await;
    assert_eq!((s, h["redis"].as_str(), h["postgres"].as_str()), (StatusCode::OK, Some("ok"), Some("ok")));
    let m = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("chronos_queue_waiting{queue=\"m\"} 1"), "{m}");
    assert!(m.contains("chronos_tasks_created_total 1"), "{m}");
    let (s, _, spec) = body(api.http.get(format!("{}/openapi.json", api.base)).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/tasks",
        "/v1/tasks/batch",
        "/v1/tasks/{id}",
        "/v1/tasks/{id}/attempts",
        "/v1/tasks/{id}/cancel",
        "/v1/tasks/{id}/retry",
        "/v1/queues",
        "/v1/dlq",
        "/v1/dlq/redrive",
        "/v1/keys",
        "/v1/keys/{id}",
        "/healthz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} in the spec");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_task_created_over_http_runs_shows_its_attempts_and_can_be_cancelled_retried_and_redriven() {
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let api = start_api(&env, Some(dlq.clone())).await;
    let mut cfg = worker_config(&["default"]);
    cfg.lease = Duration::from_millis(900);
    let w = start_worker(&env, diag_registry(), cfg, Some(dlq.clone()));

    // runs, fails once, completes; attempts with error and stack trace
    let (_, _, t) = post(
        &api,
        "/v1/tasks",
        json!({ "name": "fail", "payload": { "times": 1, "message": "upstream 502" }, "backoff": { "base_ms": 50, "jitter": "none" } }),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    wait_until(Duration::from_secs(10), "completed", || async { env.status(uid).await == "completed" }).await;
    let (s, _, a) = get(&api, &format!("/v1/tasks/{id}/attempts")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["attempts"][0]["outcome"], "failed");
    assert_eq!(a["attempts"][0]["error"], "upstream 502");
    assert!(a["attempts"][0]["stack_trace"].as_str().unwrap().contains("Fail::handle"));
    assert!(a["attempts"][0]["worker"].as_str().is_some());
    assert!(a["attempts"][0]["duration_ms"].as_i64().is_some());
    assert_eq!(a["attempts"][1]["outcome"], "completed");
    // a completed task can be neither cancelled nor retried: 409 with the reason
    let (s, _, p) = post(&api, &format!("/v1/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(p["detail"].as_str().unwrap().contains("completed"), "{p}");
    let (s, _, _) = post(&api, &format!("/v1/tasks/{id}/retry"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // a scheduled task: retry now runs it at once; a running one: cancel reaches the handler
    let (_, _, later) = post(&api, "/v1/tasks", json!({ "name": "noop", "delay_ms": 3_600_000 })).await;
    let later_id = later["id"].as_str().unwrap().to_owned();
    let (s, _, r) = post(&api, &format!("/v1/tasks/{later_id}/retry"), json!({})).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("queued")));
    let luid = uuid::Uuid::parse_str(&later_id).unwrap();
    wait_until(Duration::from_secs(10), "retried-now task completed", || async { env.status(luid).await == "completed" }).await;
    let (_, _, long) = post(&api, "/v1/tasks", json!({ "name": "sleep", "payload": { "ms": 60000 } })).await;
    let long_id = long["id"].as_str().unwrap().to_owned();
    let lid = uuid::Uuid::parse_str(&long_id).unwrap();
    wait_until(Duration::from_secs(10), "sleep task running", || async {
        env.engine.task_fields("default", lid).await.unwrap().get("st").map(String::as_str) == Some("running")
    })
    .await;
    let (s, _, c) = post(&api, &format!("/v1/tasks/{long_id}/cancel"), json!({})).await;
    assert_eq!((s, c["cancel_requested"].as_bool()), (StatusCode::OK, Some(true)), "{c}");
    wait_until(Duration::from_secs(5), "running task cancelled", || async { env.status(lid).await == "cancelled" }).await;

    // dead: listed in the DLQ with its last error, in SQS; redrive removes the message and it completes
    let (_, _, d) =
        post(&api, "/v1/tasks", json!({ "name": "fail", "payload": { "times": 1, "permanent": true, "message": "bad address" } })).await;
    let dead_id = d["id"].as_str().unwrap().to_owned();
    let did = uuid::Uuid::parse_str(&dead_id).unwrap();
    wait_until(Duration::from_secs(10), "dead", || async { env.status(did).await == "dead" }).await;
    wait_until(Duration::from_secs(10), "letter sent to SQS", || async { env.engine.counts("default").await.unwrap().dlq_pending == 0 })
        .await;
    let (_, _, l) = get(&api, "/v1/dlq").await;
    assert_eq!(l["tasks"][0]["id"], dead_id.as_str());
    assert_eq!(l["tasks"][0]["last_error"], "bad address");
    let (s, _, r) = post(&api, &format!("/v1/dlq/{dead_id}/redrive"), json!({})).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("queued")), "{r}");
    // the redriven attempt is a fresh one: the fail handler sees attempt 2 > times 1 and succeeds
    wait_until(Duration::from_secs(10), "redriven task completed", || async { env.status(did).await == "completed" }).await;
    let msgs =
        dlq.client().receive_message().queue_url(dlq.queue_url()).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
    assert!(msgs.messages().is_empty(), "the SQS message was removed: {:?}", msgs.messages());
    let (s, _, _) = post(&api, &format!("/v1/dlq/{dead_id}/redrive"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "no longer dead");

    // redrive all, filtered by name
    for _ in 0..3 {
        post(&api, "/v1/tasks", json!({ "name": "fail", "payload": { "times": 1, "permanent": true } })).await;
    }
    wait_until(Duration::from_secs(10), "3 dead", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'dead'").fetch_one(env.store.pool()).await.unwrap() == 3
    })
    .await;
    wait_until(Duration::from_secs(10), "letters sent", || async { env.engine.counts("default").await.unwrap().dlq_pending == 0 }).await;
    // A bulk redrive is a job: 202 at once, worked by a process running the job runner.
    let runner = chronos_core::services::Services::new(env.engine.clone())
        .job_runner(env.store.clone(), Some(env.dlq_name()), "test-runner")
        .start();
    let (s, _, r) = post(&api, "/v1/dlq/redrive", json!({ "name": "fail" })).await;
    assert_eq!((s, r["kind"].as_str(), r["total"].as_u64()), (StatusCode::ACCEPTED, Some("redrive"), Some(3)), "{r}");
    let job = format!("/v1/jobs/{}", r["id"].as_str().unwrap());
    wait_until(Duration::from_secs(20), "the redrive job completed", || async { get(&api, &job).await.2["state"] == "completed" }).await;
    let (_, _, r) = get(&api, &job).await;
    assert_eq!((r["succeeded"].as_u64(), r["sqs_messages_removed"].as_u64(), r["progress"].as_f64()), (Some(3), Some(3), Some(1.0)), "{r}");
    runner.stop().await;
    wait_until(Duration::from_secs(10), "all redriven completed", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'dead'").fetch_one(env.store.pool()).await.unwrap() == 0
    })
    .await;
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log WHERE action IN ('retry_now', 'cancel_requested') ORDER BY id")
            .fetch_all(env.store.pool())
            .await
            .unwrap();
    assert!(actions.iter().all(|(actor, _)| actor == "bootstrap-admin"), "{actions:?}");
    assert_eq!(actions.iter().filter(|(_, a)| a == "retry_now").count(), 5, "{actions:?}");
    w.stop().await;
    env.cleanup().await;
}
