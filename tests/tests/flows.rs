//! Flows and dependencies: a tree of tasks submitted at once (`POST /v1/flows`) whose parents
//! run after their children, and `depends_on` across existing tasks. A waiting task is
//! `pending` in Postgres only; the audit writer counts it down and queues it.

use std::collections::HashMap;
use std::time::Duration;

use chronos_tests::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn ids(v: &Value) -> Vec<Uuid> {
    v["task_ids"].as_array().unwrap_or_else(|| panic!("no task_ids in {v}")).iter().map(|i| i.as_str().unwrap().parse().unwrap()).collect()
}

async fn post(api: &RunningApi, path: &str, body: &Value) -> (u16, Value) {
    let r = api.admin(reqwest::Method::POST, path).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(api: &RunningApi, path: &str) -> Value {
    api.admin(reqwest::Method::GET, path).send().await.unwrap().json().await.unwrap()
}

/// Each task's first attempt's start and last attempt's end, from Postgres.
async fn timings(env: &TestEnv, ids: &[Uuid]) -> HashMap<Uuid, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let rows: Vec<(Uuid, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT task_id, min(started_at), max(finished_at) FROM task_attempts WHERE task_id = ANY($1) GROUP BY task_id")
            .bind(ids)
            .fetch_all(env.store.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(id, s, f)| (id, (s, f))).collect()
}

async fn all_terminal(env: &TestEnv, ids: &[Uuid]) -> bool {
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status NOT IN ('completed', 'dead', 'cancelled')")
            .bind(ids)
            .fetch_one(env.store.pool())
            .await
            .unwrap();
    open == 0
}

#[tokio::test]
async fn a_three_level_tree_runs_its_leaves_first_and_its_root_last_with_every_result() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let leaf = |ms: u64| json!({"name": "sleep", "payload": {"ms": ms}});
    let flow = json!({
        "name": "gather", "queue": "reports", "payload": {"report": "quarterly"},
        "children": [
            {"name": "gather", "children": [leaf(30), leaf(10)]},
            {"name": "gather", "children": [leaf(20)]},
            leaf(5),
        ],
    });
    let (status, v) = post(&api, "/v1/flows", &flow).await;
    assert_eq!(status, 201, "{v}");
    let ids = ids(&v);
    assert_eq!(ids.len(), 7, "{v}");
    assert_eq!(v["task"]["id"].as_str().unwrap(), ids[0].to_string());
    assert_eq!((v["task"]["status"].as_str(), v["task"]["waiting_for"].as_i64()), (Some("pending"), Some(3)), "{v}");
    // Nothing runs the parents before their children: without a worker, only the leaves wait.
    let root = get(&api, &format!("/v1/tasks/{}", ids[0])).await;
    assert_eq!(root["status"], "pending", "{root}");
    assert_eq!(root["queue"], "reports");
    let waiting = env.engine.counts("default").await.unwrap().waiting;
    assert_eq!(waiting, 4, "the four leaves are queued, the parents are not");

    let worker = start_worker(&env, diag_registry(), worker_config(&["default", "reports"]), None);
    wait_until(Duration::from_secs(30), "the root completed", || async { env.status(ids[0]).await == "completed" }).await;
    worker.stop().await;

    // Pre-order: 0 root, 1 gather(2, 3), 4 gather(5), 6 leaf. A parent started after each of
    // its children had finished.
    let t = timings(&env, &ids).await;
    for (parent, children) in [(0, vec![1, 4, 6]), (1, vec![2, 3]), (4, vec![5])] {
        for c in children {
            assert!(t[&ids[parent]].0 >= t[&ids[c]].1, "task {parent} started before its child {c} finished: {t:?}");
        }
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = ANY($1)")
        .bind(&ids)
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 7, "each task ran once");
    // The root read its children's results, and they theirs.
    let root = get(&api, &format!("/v1/tasks/{}", ids[0])).await;
    let kids = root["result"]["children"].as_array().unwrap_or_else(|| panic!("{root}"));
    assert_eq!(kids.len(), 3, "{root}");
    let first = kids.iter().find(|k| k["id"] == ids[1].to_string()).unwrap();
    let grandkids: Vec<u64> =
        first["result"]["children"].as_array().unwrap().iter().map(|g| g["result"]["slept_ms"].as_u64().unwrap()).collect();
    let mut sorted = grandkids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![10, 30], "{root}");
    let leaf6 = kids.iter().find(|k| k["id"] == ids[6].to_string()).unwrap();
    assert_eq!(leaf6["result"], json!({"slept_ms": 5}));
    // The API lists the same.
    let deps = get(&api, &format!("/v1/tasks/{}/dependencies", ids[0])).await;
    let listed: Vec<&str> = deps["dependencies"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(listed, vec!["completed"; 3], "{deps}");
    assert!(deps["dependencies"].as_array().unwrap().iter().all(|d| d["kind"] == "child"), "{deps}");
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM task_deps WHERE state = 'completed' AND task_id = ANY($1)")
        .bind(&ids)
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(edges, 6);
    env.cleanup().await;
}

#[tokio::test]
async fn a_child_that_dies_fails_its_parent_and_the_root_unless_the_parent_ignores_it() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let dies = json!({"name": "fail", "payload": {"times": 5, "message": "partner API refused"}, "max_attempts": 1});
    let ok = json!({"name": "sleep", "payload": {"ms": 5}});
    // Failing: the dead grandchild cancels its parent, which cancels the root.
    let (st, failing) =
        post(&api, "/v1/flows", &json!({"name": "gather", "children": [{"name": "gather", "children": [dies, ok]}, ok]})).await;
    assert_eq!(st, 201, "{failing}");
    let failing = ids(&failing);
    // Ignoring: the same shape, the middle parent ignores its dead child.
    let (st, ignoring) = post(
        &api,
        "/v1/flows",
        &json!({"name": "gather", "children": [{"name": "gather", "on_child_failure": "ignore", "children": [dies, ok]}, ok]}),
    )
    .await;
    assert_eq!(st, 201, "{ignoring}");
    let ignoring = ids(&ignoring);
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(30), "both flows ended", || async {
        all_terminal(&env, &failing).await && all_terminal(&env, &ignoring).await
    })
    .await;
    worker.stop().await;
    let status = |id: Uuid| {
        let env = &env;
        async move { env.status(id).await }
    };
    // failing: 0 root, 1 middle, 2 dies, 3 ok, 4 ok.
    assert_eq!(status(failing[2]).await, "dead");
    assert_eq!(status(failing[1]).await, "cancelled");
    assert_eq!(status(failing[0]).await, "cancelled");
    let middle = env.store.get_task(failing[1]).await.unwrap().unwrap();
    assert_eq!(middle.attempts, 0, "a failed parent never runs");
    let why = middle.last_error.unwrap_or_default();
    assert!(why.contains(&failing[2].to_string()) && why.contains("dead"), "{why}");
    let why = env.store.get_task(failing[0]).await.unwrap().unwrap().last_error.unwrap_or_default();
    assert!(why.contains(&failing[1].to_string()) && why.contains("cancelled"), "{why}");
    // ignoring: the middle ran with the dead child's status in its results, the root completed.
    assert_eq!(status(ignoring[2]).await, "dead");
    assert_eq!(status(ignoring[1]).await, "completed");
    assert_eq!(status(ignoring[0]).await, "completed");
    let mid = get(&api, &format!("/v1/tasks/{}", ignoring[1])).await;
    let sts: Vec<&str> = mid["result"]["children"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(sts.iter().filter(|s| **s == "dead").count(), 1, "{mid}");
    env.cleanup().await;
}

#[tokio::test]
async fn cancelling_a_root_mid_flow_cancels_its_unfinished_subtree_running_tasks_included() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let long = json!({"name": "sleep", "payload": {"ms": 60_000}});
    let quick = json!({"name": "sleep", "payload": {"ms": 1}});
    let (st, v) =
        post(&api, "/v1/flows", &json!({"name": "gather", "children": [long, {"name": "gather", "children": [long, quick]}]})).await;
    assert_eq!(st, 201, "{v}");
    // 0 root, 1 long, 2 middle, 3 long, 4 quick.
    let ids = ids(&v);
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(20), "both long sleeps running and the quick one done", || async {
        env.engine.counts("default").await.unwrap().running == 2 && env.status(ids[4]).await == "completed"
    })
    .await;
    let (st, root) = post(&api, &format!("/v1/tasks/{}/cancel", ids[0]), &json!({})).await;
    assert_eq!(st, 200, "{root}");
    assert_eq!(root["status"], "cancelled", "{root}");
    wait_until(Duration::from_secs(20), "the subtree ended", || async { all_terminal(&env, &ids).await }).await;
    worker.stop().await;
    for (i, want) in [(0, "cancelled"), (1, "cancelled"), (2, "cancelled"), (3, "cancelled"), (4, "completed")] {
        assert_eq!(env.status(ids[i]).await, want, "task {i}");
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = ANY($1) AND outcome = 'completed'")
        .bind(&ids)
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 1, "only the quick leaf completed");
    // A cancelled flow's root cannot be cancelled twice.
    let (st, _) = post(&api, &format!("/v1/tasks/{}/cancel", ids[0]), &json!({})).await;
    assert_eq!(st, 409);
    env.cleanup().await;
}

#[tokio::test]
async fn depends_on_waits_for_existing_tasks_and_bad_dependencies_get_a_422_naming_the_field() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, a) = post(&api, "/v1/tasks", &json!({"name": "sleep", "payload": {"ms": 5}, "delay_ms": 400})).await;
    let (_, b) = post(&api, "/v1/tasks", &json!({"name": "sleep", "payload": {"ms": 5}})).await;
    let (st, c) = post(&api, "/v1/tasks", &json!({"name": "gather", "depends_on": [a["id"], b["id"]]})).await;
    assert_eq!(st, 201, "{c}");
    assert_eq!((c["status"].as_str(), c["waiting_for"].as_i64()), (Some("pending"), Some(2)), "{c}");
    let c_id: Uuid = c["id"].as_str().unwrap().parse().unwrap();

    let unknown = Uuid::now_v7();
    let (_, dead) = post(&api, "/v1/tasks", &json!({"name": "fail", "payload": {"times": 9}, "max_attempts": 1})).await;
    let dead_id: Uuid = dead["id"].as_str().unwrap().parse().unwrap();
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(30), "c completed", || async {
        env.status(c_id).await == "completed" && env.status(dead_id).await == "dead"
    })
    .await;
    let t = timings(&env, &[a["id"].as_str().unwrap().parse().unwrap(), c_id]).await;
    let a_id: Uuid = a["id"].as_str().unwrap().parse().unwrap();
    assert!(t[&c_id].0 >= t[&a_id].1, "c started before a finished");
    let deps = get(&api, &format!("/v1/tasks/{c_id}/dependencies")).await;
    assert!(deps["dependencies"].as_array().unwrap().iter().all(|d| d["kind"] == "depends_on" && d["status"] == "completed"), "{deps}");

    // A task that depends only on finished tasks runs at once; on a dead one, only with ignore.
    let (st, now) = post(&api, "/v1/tasks", &json!({"name": "noop", "depends_on": [a["id"]]})).await;
    assert_eq!((st, now["status"].as_str()), (201, Some("queued")), "{now}");
    for (body, field, words) in [
        (json!({"name": "noop", "depends_on": [unknown]}), "depends_on", "names no task"),
        (json!({"name": "noop", "depends_on": [dead_id]}), "depends_on", "ended dead"),
        (json!({"name": "noop", "depends_on": []}), "depends_on", "1–100"),
        (json!({"name": "noop", "depends_on": ["not-a-uuid"]}), "depends_on[0]", ""),
        (json!({"name": "noop", "depends_on": [a["id"]], "on_child_failure": "sometimes"}), "on_child_failure", "ignore"),
        (json!({"name": "noop", "on_child_failure": "ignore"}), "on_child_failure", "depends_on"),
        (json!({"name": "noop", "children": [{"name": "noop"}]}), "children", "POST /v1/flows"),
    ] {
        let (st, v) = post(&api, "/v1/tasks", &body).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["errors"][0]["field"].as_str().or(v["field"].as_str()), Some(field), "{body}: {v}");
        assert!(v.to_string().contains(words), "{body}: {v}");
    }
    let (st, v) = post(&api, "/v1/tasks", &json!({"name": "noop", "depends_on": [dead_id], "on_child_failure": "ignore"})).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("queued")), "{v}");
    // Not in a batch, not inside a flow.
    let (st, v) = post(&api, "/v1/tasks/batch", &json!({"tasks": [{"name": "noop"}, {"name": "noop", "depends_on": [a["id"]]}]})).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("tasks[1].depends_on"), "{v}");
    let (st, v) = post(&api, "/v1/flows", &json!({"name": "noop", "children": [{"name": "noop", "depends_on": [a["id"]]}]})).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("children[0].depends_on"), "{v}");
    let (st, v) = post(&api, "/v1/flows", &json!({"name": "noop", "children": [{"name": "noop", "idempotency_key": "k"}]})).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("idempotency_key"), "{v}");
    let (st, v) = post(&api, "/v1/flows", &json!({"name": "noop", "children": [{"name": "sleep", "payload": {"ms": "long"}}]})).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("children[0].payload"), "{v}");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_thousand_task_flow_is_created_at_once_and_completes_with_its_counts_right() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    // 1 root, 9 parents, 990 leaves.
    let parents: Vec<Value> = (0..9).map(|_| json!({"name": "noop", "children": vec![json!({"name": "noop"}); 110]})).collect();
    let flow = json!({"name": "noop", "idempotency_key": "nightly-2026-12-04", "children": parents});
    let (st, v) = post(&api, "/v1/flows", &flow).await;
    assert_eq!(st, 201, "{v}");
    let ids = ids(&v);
    assert_eq!(ids.len(), 1000);
    assert_eq!(v["task"]["waiting_for"], 9);
    // The same key again: the same flow, nothing new.
    let (st, again) = post(&api, "/v1/flows", &flow).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["task"]["id"], v["task"]["id"]);
    let mut a = self::ids(&again);
    let mut b = ids.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the repeat lists the same tasks");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows, 1000);
    // One more node is refused, and nothing of it is created.
    let mut big = flow.clone();
    big["idempotency_key"] = json!("another");
    big["children"][0]["children"].as_array_mut().unwrap().push(json!({"name": "noop"}));
    let (st, e) = post(&api, "/v1/flows", &big).await;
    assert_eq!(st, 422, "{e}");
    assert!(e.to_string().contains("at most 1000"), "{e}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows, 1000);

    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(60), "the root completed", || async { env.status(ids[0]).await == "completed" }).await;
    worker.stop().await;
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(counts, vec![("completed".to_owned(), 1000)]);
    let edges: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM task_deps GROUP BY state").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(edges, vec![(Some("completed".to_owned()), 999)]);
    let t = timings(&env, &ids).await;
    let last_leaf = ids[1..].iter().map(|i| t[i].1).max().unwrap();
    assert!(t[&ids[0]].0 >= last_leaf, "the root ran last");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_sigkilled_mid_flow_and_a_redis_that_lost_its_data_lose_nothing() {
    let redis = PrivateRedis::start();
    let env = TestEnv::with_redis(&redis.url()).await;
    let api = start_api(&env, None).await;
    // 5 flows of 1 root, 4 parents, 40 leaves of 200 ms (with max_attempts to spare for kills).
    let leaf = json!({"name": "sleep", "payload": {"ms": 200}, "max_attempts": 20});
    let parent = json!({"name": "gather", "max_attempts": 20, "children": vec![leaf.clone(); 10]});
    let mut all = Vec::new();
    let mut roots = Vec::new();
    for _ in 0..5 {
        let (st, v) = post(&api, "/v1/flows", &json!({"name": "gather", "max_attempts": 20, "children": vec![parent.clone(); 4]})).await;
        assert_eq!(st, 201, "{v}");
        let ids = ids(&v);
        roots.push(ids[0]);
        all.extend(ids);
    }
    let url = redis.url();
    let cfg = [("CHRONOS_LEASE_MS", "1500"), ("CHRONOS_CONCURRENCY", "8"), ("CHRONOS_QUEUES", "default"), ("REDIS_URL", url.as_str())];
    let mut workers: Vec<_> = (0..2).map(|_| spawn_worker_process(&env, &cfg)).collect();
    for kill in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let victim = kill % workers.len();
        workers[victim].start_kill().unwrap();
        let _ = workers[victim].wait().await;
        workers[victim] = spawn_worker_process(&env, &cfg);
    }
    // Redis loses everything mid-flow: leaves come back from Postgres; the waiting parents were
    // never in Redis and keep their counts.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let pending_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'pending'").fetch_one(env.store.pool()).await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    wait_until(Duration::from_secs(180), "every flow completed", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'completed'")
            .bind(&roots)
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        done == roots.len() as i64
    })
    .await;
    for w in &mut workers {
        let _ = w.start_kill();
    }
    assert!(pending_before > 0, "the flush came while parents were waiting");
    let statuses: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM tasks WHERE id = ANY($1) GROUP BY status")
        .bind(&all)
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert_eq!(statuses, vec![("completed".to_owned(), all.len() as i64)]);
    // A parent ran only after its children, whatever ran twice.
    let early: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_deps d
           JOIN task_attempts p ON p.task_id = d.task_id AND p.outcome = 'completed'
           WHERE NOT EXISTS (SELECT 1 FROM task_attempts c WHERE c.task_id = d.depends_on AND c.outcome = 'completed' AND c.finished_at <= p.started_at)",
    )
    .fetch_one(env.store.pool())
    .await
    .unwrap();
    assert_eq!(early, 0, "a parent completed an attempt that started before a child completed");
    let lost: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE outcome = 'lost'").fetch_one(env.store.pool()).await.unwrap();
    println!(
        "flows under SIGKILL and FLUSHALL: {} tasks, {lost} attempts lost with their worker, {pending_before} parents waiting at the flush",
        all.len()
    );
    env.cleanup().await;
}

/// A bulk cancel by filter reaches tasks that wait for their dependencies (in Postgres only, not
/// in Redis, where a cancel by filter used to look for them and skip them) and what waits under
/// them, and leaves alone what they wait for when the filter does not name it.
#[tokio::test]
async fn a_bulk_cancel_by_filter_cancels_tasks_waiting_for_their_dependencies() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, a) = post(&api, "/v1/tasks", &json!({"name": "noop", "queue": "later", "delay_ms": 600_000})).await;
    let a_id: Uuid = a["id"].as_str().unwrap().parse().unwrap();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (st, p) = post(&api, "/v1/tasks", &json!({"name": "noop", "queue": "bulkflow", "depends_on": [a["id"]]})).await;
        assert_eq!((st, p["status"].as_str()), (201, Some("pending")), "{p}");
        waiting.push(p["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let (st, job) = post(&api, "/v1/jobs", &json!({"kind": "cancel", "filter": {"queue": "bulkflow", "status": "pending"}})).await;
    assert_eq!((st, job["total"].as_i64()), (202, Some(2)), "{job}");
    let run = chronos_core::services::Services::new(env.engine.clone())
        .job_runner(env.store.clone(), None, "runner")
        .audit_writer(env.store.clone(), "audit")
        .start();
    let url = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    wait_until(Duration::from_secs(20), "the job completed", || async { get(&api, &url).await["state"] == "completed" }).await;
    run.stop().await;
    let done = get(&api, &url).await;
    assert_eq!((done["succeeded"].as_i64(), done["skipped"].as_i64()), (Some(2), Some(0)), "{done}");
    for id in &waiting {
        assert_eq!(env.status(*id).await, "cancelled");
    }
    assert_eq!(env.status(a_id).await, "scheduled", "the task they waited for is not in the filter");
    env.cleanup().await;
}
