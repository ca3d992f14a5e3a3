//! A handler's result kept with its task, and a task's deadline (`expires_at` / `ttl_ms`):
//! never started after it, ended `cancelled` with the reason, kept through the rebuild.

use std::time::Duration;

use chronos_core::NewTask;
use chronos_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_handlers_result_is_kept_with_its_task_and_shown_by_the_api() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let r = api.admin(reqwest::Method::POST, "/v1/tasks").json(&json!({"name": "sleep", "payload": {"ms": 5}})).send().await.unwrap();
    let id: uuid::Uuid = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    wait_until(Duration::from_secs(20), "the sleep completed", || async { env.status(id).await == "completed" }).await;
    let v: serde_json::Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], json!({"slept_ms": 5}));
    // fail {times: 1} succeeds on its second attempt and says so; a failed attempt keeps no result.
    let s = env
        .client
        .enqueue_batch(vec![NewTask::new("fail", json!({"times": 1})).backoff(chronos_core::Backoff::fixed(Duration::from_millis(10)))])
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "fail {times: 1} completed", || async { env.status(s[0].id).await == "completed" }).await;
    let t = env.store.get_task(s[0].id).await.unwrap().unwrap();
    assert_eq!(t.result, Some(json!({"succeeded_on_attempt": 2})));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_result_over_64_kib_fails_the_attempt_permanently() {
    let (ctx, _cancel) = chronos_workers::TaskContext::detached(uuid::Uuid::now_v7(), 1);
    let big = "x".repeat(chronos_workers::handler::MAX_RESULT_BYTES);
    let err = ctx.set_result(&big).unwrap_err();
    assert!(matches!(err, chronos_workers::HandlerError::Permanent { .. }), "{err:?}");
    assert!(format!("{err:?}").contains("the limit is 65536"), "{err:?}");
    ctx.set_result(&json!({"ok": true})).unwrap();
}

#[tokio::test]
async fn a_task_past_its_deadline_never_starts_and_ends_cancelled_with_the_reason() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let post = |body: serde_json::Value| api.admin(reqwest::Method::POST, "/v1/tasks").json(&body).send();
    // Bad deadlines name their field.
    for (body, field) in [
        (json!({"name": "noop", "expires_at": "2026-01-01T00:00:00Z", "ttl_ms": 5}), "expires_at"),
        (json!({"name": "noop", "delay_ms": 60000, "ttl_ms": 1000}), "expires_at"),
        (json!({"name": "noop", "ttl_ms": 0}), "ttl_ms"),
        (json!({"name": "noop", "expires_at": "soon"}), "expires_at"),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(&format!("\"field\":\"{field}\"")), "{body}: {text}");
    }
    // No worker yet: one task with a 300 ms deadline, one with an hour.
    let short: serde_json::Value = post(json!({"name": "noop", "ttl_ms": 300})).await.unwrap().json().await.unwrap();
    let long: serde_json::Value = post(json!({"name": "noop", "ttl_ms": 3_600_000})).await.unwrap().json().await.unwrap();
    assert!(short["expires_at"].is_string(), "{short}");
    let (short, long): (uuid::Uuid, uuid::Uuid) =
        (short["id"].as_str().unwrap().parse().unwrap(), long["id"].as_str().unwrap().parse().unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(20), "both ended", || async {
        env.status(short).await == "cancelled" && env.status(long).await == "completed"
    })
    .await;
    worker.stop().await;
    let t = env.store.get_task(short).await.unwrap().unwrap();
    assert!(t.last_error.as_deref().unwrap_or_default().starts_with("expired: not started by its deadline"), "{:?}", t.last_error);
    assert_eq!(t.attempts, 0, "it never ran");
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = $1").bind(short).fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(attempts, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_deadline_survives_the_redis_loss_rebuild() {
    let env = TestEnv::new().await;
    let at = chronos_core::model::stored_precision(chrono::Utc::now() + chrono::Duration::hours(1));
    let s = env.client.enqueue_batch(vec![NewTask::new("noop", json!({})).expires_at(at)]).await.unwrap();
    let mut conn = env.engine.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", env.namespace)).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    assert!(chronos_core::reconcile::ensure_redis_state(&env.engine, &env.store, "test").await.unwrap().is_some());
    let ex: Option<i64> =
        redis::cmd("HGET").arg(env.engine.keys("default").task(&s[0].id.to_string())).arg("ex").query_async(&mut conn).await.unwrap();
    assert_eq!(ex, Some(at.timestamp_millis()));
    env.cleanup().await;
}

/// Reports progress halfway, then finishes after a while.
struct Halfway;

impl chronos_workers::Handler for Halfway {
    fn kind(&self) -> &'static str {
        "halfway"
    }
    async fn handle(&self, ctx: chronos_workers::TaskContext, _task: chronos_workers::Task) -> Result<(), chronos_workers::HandlerError> {
        ctx.progress(10, "starting");
        ctx.progress(50, "halfway: 5 of 10 pages rendered");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    }
}

#[tokio::test]
async fn progress_reported_by_a_handler_shows_while_it_runs_and_stays_with_the_task() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut registry = diag_registry();
    registry.register(Halfway).unwrap();
    let mut cfg = worker_config(&["default"]);
    cfg.lease = Duration::from_millis(600); // a heartbeat every 200 ms
    let worker = start_worker(&env, registry, cfg, None);
    let s = env.client.enqueue_batch(vec![NewTask::new("halfway", json!({}))]).await.unwrap();
    let id = s[0].id;
    let want = json!({"pct": 50, "message": "halfway: 5 of 10 pages rendered"});
    let mut seen_running = false;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let v: serde_json::Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks/{id}")).send().await.unwrap().json().await.unwrap();
        if v["status"] == "running" && v["progress"] == want {
            seen_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_running, "the API showed the progress while the task ran");
    wait_until(Duration::from_secs(10), "completed", || async { env.status(id).await == "completed" }).await;
    assert_eq!(env.store.get_task(id).await.unwrap().unwrap().progress, Some(want), "the last progress stays with the task");
    worker.stop().await;
    env.cleanup().await;
}
