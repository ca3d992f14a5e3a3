//! Queue limits and groups (`core/src/limits.rs`, decided in `claim.lua`): concurrency across
//! worker processes, a sliding-window rate, fair turns among groups with strict priority inside
//! each, per-group limits, limit changes at the next claim, and the limits and groups surviving
//! the Redis-loss rebuild. Real Redis, Postgres and `chronos worker` processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_core::access::{Caller, Role};
use chronos_core::limits::{LimitsPatch, QueueLimits, Rate};
use chronos_core::model::Priority;
use chronos_core::{NewTask, TaskId};
use chronos_tests::*;
use serde_json::json;
use sqlx::Row;

const LEASE: Duration = Duration::from_secs(30);

fn admin() -> Caller {
    Caller { key_id: "test".into(), role: Role::Admin }
}

fn patch(json: serde_json::Value) -> LimitsPatch {
    serde_json::from_value(json).unwrap()
}

async fn claim_ids(env: &TestEnv, q: &str, max: usize) -> Vec<(TaskId, u64)> {
    env.engine.claim(q, "w1", max, LEASE).await.unwrap().tasks.into_iter().map(|t| (t.id, t.token)).collect()
}

/// An HTTP endpoint the `http` handler calls: holds each request `ms` and records how many were
/// in flight at once (sampled from the handler side).
#[derive(Default)]
struct InFlight {
    now: u32,
    max: u32,
    done: u32,
}

async fn start_hold_server() -> (u16, Arc<Mutex<InFlight>>) {
    let state: Arc<Mutex<InFlight>> = Default::default();
    let s = state.clone();
    let app = axum::Router::new().route(
        "/hold",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let s = s.clone();
            async move {
                {
                    let mut g = s.lock().unwrap();
                    g.now += 1;
                    g.max = g.max.max(g.now);
                }
                tokio::time::sleep(Duration::from_millis(body["ms"].as_u64().unwrap_or(100))).await;
                let mut g = s.lock().unwrap();
                g.now -= 1;
                g.done += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, state)
}

#[tokio::test]
async fn queue_concurrency_caps_running_attempts_across_three_worker_processes() {
    let env = TestEnv::new().await;
    let q = "capped";
    env.client.set_queue_limits(&admin(), q, &patch(json!({"concurrency": 3}))).await.unwrap();
    let (port, seen) = start_hold_server().await;
    let tasks: Vec<NewTask> = (0..50)
        .map(|_| {
            NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hold"), "method": "POST", "body": {"ms": 100}})).queue(q)
        })
        .collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    // Each process could run 10 at once: 30 without the limit.
    let mut workers: Vec<_> = (0..3)
        .map(|i| {
            spawn_worker_process(&env, &[("CHRONOS_QUEUES", q), ("CHRONOS_CONCURRENCY", "10"), ("CHRONOS_WORKER_ID", &format!("w{i}"))])
        })
        .collect();
    wait_until(Duration::from_secs(60), "50 tasks ran", || async { seen.lock().unwrap().done >= 50 }).await;
    let max = seen.lock().unwrap().max;
    for w in &mut workers {
        let _ = w.kill().await;
    }
    assert_eq!(max, 3, "at most 3 attempts may run at once, and 3 workers with 30 slots reach 3");
    env.cleanup().await;
}

#[tokio::test]
async fn a_rate_limit_spreads_starts_over_a_sliding_window() {
    let env = TestEnv::new().await;
    let q = "rated";
    env.client.set_queue_limits(&admin(), q, &patch(json!({"rate": {"limit": 20, "period_ms": 1000}}))).await.unwrap();
    let tasks: Vec<NewTask> = (0..200).map(|_| NewTask::new("noop", json!({})).queue(q)).collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    let mut cfg = worker_config(&[q]);
    cfg.concurrency = 50;
    let started = Instant::now();
    let worker = start_worker(&env, diag_registry(), cfg, None);
    wait_until(Duration::from_secs(40), "200 rate-limited tasks completed", || async {
        env.store.status_counts(q).await.unwrap().completed == 200
    })
    .await;
    let took = started.elapsed();
    worker.stop().await;
    // Start instants in Redis time, as the claim script recorded them.
    let starts: Vec<i64> = sqlx::query("SELECT (extract(epoch FROM started_at) * 1000)::int8 AS ms FROM task_attempts ORDER BY started_at")
        .fetch_all(env.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64, _>("ms"))
        .collect();
    assert_eq!(starts.len(), 200);
    let worst = starts.iter().map(|&t| starts.iter().filter(|&&s| s >= t && s < t + 1000).count()).max().unwrap();
    assert!(worst <= 20, "{worst} starts in one second; the limit is 20");
    let span = starts[199] - starts[0];
    assert!(span >= 9000, "200 starts at 20/s span at least 9 s; they spanned {span} ms");
    assert!(took < Duration::from_secs(20), "the burst waited, it was not stalled: {took:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn groups_take_turns_so_a_small_tenant_is_not_starved_by_a_big_one() {
    let env = TestEnv::new().await;
    let q = "tenants";
    let big: Vec<NewTask> = (0..10_000).map(|_| NewTask::new("noop", json!({})).queue(q).group("big")).collect();
    for chunk in big.chunks(1000) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    let small: Vec<NewTask> = (0..10).map(|_| NewTask::new("noop", json!({})).queue(q).group("small")).collect();
    let small_ids: Vec<TaskId> = env.client.enqueue_batch(small).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(env.engine.counts(q).await.unwrap().waiting, 10_010);
    let mut cfg = worker_config(&[q]);
    cfg.concurrency = 4;
    let worker = start_worker(&env, diag_registry(), cfg, None);
    wait_until(Duration::from_secs(60), "the small group's 10 tasks completed", || async {
        let mut n = 0;
        for id in &small_ids {
            n += (env.status(*id).await == "completed") as usize;
        }
        n == 10
    })
    .await;
    worker.stop().await;
    // Rank of the small group's last start among all starts: with turns, about 20 (one each).
    let rows = sqlx::query("SELECT t.task_group FROM task_attempts a JOIN tasks t ON t.id = a.task_id ORDER BY a.started_at, a.task_id")
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    let last_small = rows.iter().rposition(|r| r.get::<Option<String>, _>("task_group").as_deref() == Some("small")).unwrap();
    assert!(last_small < 40, "the small group's last task started as number {}; with fair turns it is about 20", last_small + 1);
    env.cleanup().await;
}

#[tokio::test]
async fn turns_rotate_among_groups_and_priorities_stay_strict_within_each() {
    let env = TestEnv::new().await;
    let q = "turns";
    let t = |g: Option<&str>, p: u8, tag: &str| {
        let t = NewTask::new("noop", json!({ "tag": tag })).queue(q).priority(Priority::new(p as i64).unwrap());
        match g {
            Some(g) => t.group(g),
            None => t,
        }
    };
    let tasks = vec![
        t(Some("a"), 10, "a10"),
        t(Some("a"), 90, "a90"),
        t(Some("a"), 50, "a50"),
        t(Some("b"), 20, "b20"),
        t(None, 0, "u0"),
        t(None, 60, "u60"),
    ];
    let ids = env.client.enqueue_batch(tasks).await.unwrap();
    let tag: HashMap<TaskId, &str> = ids.iter().map(|s| s.id).zip(["a10", "a90", "a50", "b20", "u0", "u60"]).collect();
    let mut order = Vec::new();
    for _ in 0..6 {
        let got = claim_ids(&env, q, 1).await;
        assert_eq!(got.len(), 1);
        order.push(tag[&got[0].0]);
    }
    // Ungrouped tasks are one more member of the rotation; each member gives its highest priority.
    assert_eq!(order, ["u60", "a90", "b20", "u0", "a50", "a10"]);
    // One batch takes its tasks in the same turns.
    let env2 = TestEnv::new().await;
    let tasks: Vec<NewTask> = ["x", "x", "x", "y", "y", "z"].iter().map(|g| NewTask::new("noop", json!({})).queue(q).group(*g)).collect();
    let ids = env2.client.enqueue_batch(tasks).await.unwrap();
    let group: HashMap<TaskId, &str> = ids.iter().map(|s| s.id).zip(["x", "x", "x", "y", "y", "z"]).collect();
    let batch = env2.engine.claim(q, "w1", 4, LEASE).await.unwrap();
    let groups: Vec<&str> = batch.tasks.iter().map(|t| group[&t.id]).collect();
    assert_eq!(groups, ["x", "y", "z", "x"]);
    env.cleanup().await;
    env2.cleanup().await;
}

#[tokio::test]
async fn limits_apply_to_the_next_claim_and_slots_free_when_attempts_end() {
    let env = TestEnv::new().await;
    let q = "slots";
    let c = &env.client;
    c.set_queue_limits(&admin(), q, &patch(json!({"concurrency": 2}))).await.unwrap();
    c.enqueue_batch((0..10).map(|_| NewTask::new("noop", json!({})).queue(q)).collect()).await.unwrap();
    let first = claim_ids(&env, q, 10).await;
    assert_eq!(first.len(), 2, "concurrency 2");
    assert!(claim_ids(&env, q, 10).await.is_empty(), "both slots are taken");
    env.engine.ack(q, "w1", &first[..1]).await.unwrap();
    assert_eq!(claim_ids(&env, q, 10).await.len(), 1, "an ack frees one slot");
    c.set_queue_limits(&admin(), q, &patch(json!({"concurrency": 5}))).await.unwrap();
    assert_eq!(claim_ids(&env, q, 10).await.len(), 3, "raised to 5: three more at the next claim");
    c.set_queue_limits(&admin(), q, &patch(json!({"concurrency": null}))).await.unwrap();
    assert_eq!(claim_ids(&env, q, 10).await.len(), 4, "no limit: the other four");

    // Per group: one running attempt per group; a failure and a reap free the slot too.
    let q = "per-group";
    c.set_queue_limits(&admin(), q, &patch(json!({"group_concurrency": 1}))).await.unwrap();
    let mk = |g: &str| NewTask::new("noop", json!({})).queue(q).group(g).max_attempts(3);
    c.enqueue_batch(vec![mk("a"), mk("a"), mk("a"), mk("b"), mk("b")]).await.unwrap();
    let got = claim_ids(&env, q, 10).await;
    assert_eq!(got.len(), 2, "one of a, one of b");
    assert!(claim_ids(&env, q, 10).await.is_empty());
    let out = env
        .engine
        .fail(q, got[0].0, got[0].1, "w1", chronos_core::FailKind::Retryable, "boom", "", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(matches!(out, chronos_core::FailOutcome::Retrying { .. }));
    assert_eq!(claim_ids(&env, q, 10).await.len(), 1, "the failed attempt freed its group's slot");
    c.set_queue_limits(&admin(), q, &patch(json!({"group_concurrency": 3}))).await.unwrap();
    assert_eq!(claim_ids(&env, q, 10).await.len(), 2, "raised: the rest of the waiting tasks");
    env.cleanup().await;
}

#[tokio::test]
async fn a_group_rate_makes_its_group_wait_for_a_token_while_others_run() {
    let env = TestEnv::new().await;
    let q = "group-rate";
    env.client.set_queue_limits(&admin(), q, &patch(json!({"group_rate": {"limit": 2, "period_ms": 1500}}))).await.unwrap();
    let mk = |g: &str| NewTask::new("noop", json!({})).queue(q).group(g);
    env.client.enqueue_batch(vec![mk("a"), mk("a"), mk("a"), mk("a"), mk("b")]).await.unwrap();
    let batch = env.engine.claim(q, "w1", 10, LEASE).await.unwrap();
    assert_eq!(batch.tasks.len(), 3, "two of a (its rate), one of b");
    let due = batch.next_due_ms.expect("the claim says when a's next token is due");
    assert!((1400..=1600).contains(&(due - batch.now_ms)), "a's token is due about 1.5 s later: {} ms", due - batch.now_ms);
    assert!(claim_ids(&env, q, 10).await.is_empty(), "a waits for its token");
    tokio::time::sleep(Duration::from_millis((due - batch.now_ms) as u64 + 50)).await;
    assert_eq!(claim_ids(&env, q, 10).await.len(), 2, "a's tokens came back");
    env.cleanup().await;
}

#[tokio::test]
async fn limits_and_groups_survive_the_redis_loss_rebuild() {
    let env = TestEnv::new().await;
    let q = "rebuilt";
    let limits = QueueLimits {
        concurrency: Some(4),
        rate: Some(Rate { limit: 100, period_ms: 1000 }),
        group_concurrency: Some(1),
        group_rate: None,
    };
    env.client.set_queue_limits(&admin(), q, &patch(serde_json::to_value(limits).unwrap())).await.unwrap();
    let mk = |g: &str| NewTask::new("noop", json!({})).queue(q).group(g);
    env.client.enqueue_batch(vec![mk("a"), mk("a"), mk("b")]).await.unwrap();
    // Redis loses everything of this namespace.
    let mut conn = env.engine.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", env.namespace)).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    assert!(chronos_core::reconcile::ensure_redis_state(&env.engine, &env.store, "test").await.unwrap().is_some(), "rebuilt");
    let k = env.engine.keys(q);
    let lim: HashMap<String, String> = redis::cmd("HGETALL").arg(&k.limits).query_async(&mut conn).await.unwrap();
    let want: HashMap<String, String> =
        [("c", "4"), ("rl", "100"), ("rp", "1000"), ("gc", "1")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(lim, want);
    assert_eq!(env.engine.counts(q).await.unwrap().waiting, 3);
    assert_eq!(env.client.queue(q).await.unwrap().limits, limits);
    let got = claim_ids(&env, q, 10).await;
    assert_eq!(got.len(), 2, "group_concurrency 1 holds after the rebuild: one of a, one of b");
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_sets_limits_names_the_field_at_fault_and_takes_a_group() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let patch_q = |body: serde_json::Value| api.admin(reqwest::Method::PATCH, "/v1/queues/apiq").json(&body).send();
    for (body, field) in [
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"concurrency": "three"}), "concurrency"),
        (json!({"rate": {"limit": 10}}), "period_ms"),
        (json!({"rate": {"limit": 10, "period_ms": 0}}), "rate.period_ms"),
        (json!({"group_rate": {"limit": 0, "period_ms": 1000}}), "group_rate.limit"),
        (json!({"speed": 3}), "speed"),
    ] {
        let r = patch_q(body.clone()).await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_client_error(), "{body}: {status} {text}");
        assert!(text.contains(field), "{body}: the answer names {field}: {text}");
    }
    let r = patch_q(json!({"concurrency": 3, "rate": {"limit": 20, "period_ms": 1000}})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["limits"],
        json!({"concurrency": 3, "rate": {"limit": 20, "period_ms": 1000}, "group_concurrency": null, "group_rate": null})
    );
    let r = patch_q(json!({})).await.unwrap();
    assert_eq!(r.status(), 200, "an empty patch changes nothing");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["limits"]["concurrency"], 3);
    let r = patch_q(json!({"rate": null, "group_concurrency": 2})).await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["limits"],
        json!({"concurrency": 3, "rate": null, "group_concurrency": 2, "group_rate": null}),
        "an absent field stays, null removes"
    );
    let list: serde_json::Value = api.admin(reqwest::Method::GET, "/v1/queues").send().await.unwrap().json().await.unwrap();
    let q = list["queues"].as_array().unwrap().iter().find(|q| q["name"] == "apiq").expect("a queue with limits is listed");
    assert_eq!(q["limits"]["group_concurrency"], 2);
    let audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'queue_limits'").fetch_one(env.store.pool()).await.unwrap_or(-1);
    assert_eq!(audit, 2, "each change is audited");

    let r = api
        .admin(reqwest::Method::POST, "/v1/tasks")
        .json(&json!({"name": "noop", "queue": "apiq", "group": "customer-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["group"], "customer-42");
    let id: TaskId = v["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.store.get_task(id).await.unwrap().unwrap().group.as_deref(), Some("customer-42"));
    let r = api.admin(reqwest::Method::POST, "/v1/tasks").json(&json!({"name": "noop", "group": "has space"})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("group"));
    env.cleanup().await;
}

#[tokio::test]
async fn the_cli_sets_and_removes_limits() {
    let env = TestEnv::new().await;
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(chronos_bin());
        cmd.args(args).stdin(std::process::Stdio::null());
        for (k, v) in env.child_env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&["queues", "limit", "cliq", "--concurrency", "3", "--rate", "20/1s", "--group-rate", "5/500ms"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "queue cliq limits: concurrency=3 rate=20/1000ms group_rate=5/500ms\n");
    let want = QueueLimits {
        concurrency: Some(3),
        rate: Some(Rate { limit: 20, period_ms: 1000 }),
        group_concurrency: None,
        group_rate: Some(Rate { limit: 5, period_ms: 500 }),
    };
    assert_eq!(env.client.queue("cliq").await.unwrap().limits, want);
    let out = run(&["queues", "limit", "cliq", "--rate", "none"]);
    assert!(out.status.success());
    assert_eq!(env.client.queue("cliq").await.unwrap().limits, QueueLimits { rate: None, ..want });
    let out = run(&["queues", "limit", "cliq", "--rate", "fast"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("N/PERIOD"), "{}", String::from_utf8_lossy(&out.stderr));
    env.cleanup().await;
}
