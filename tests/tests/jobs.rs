//! Bulk operations as jobs: `202` at once, progress and result at `GET /v1/jobs/{id}`, every
//! SQS message of a redriven task removed, resumed after its runner was SIGKILLed (by the
//! tick), bulk cancel and retry by filter, and the refusals that say what to fix.

use std::time::Duration;

use chronos_core::access::{Caller, Role};
use chronos_core::dlq::{Dlq, forward_pending};
use chronos_core::jobs::{JobKind, Selection};
use chronos_core::model::NewTask;
use chronos_core::queue::FailKind;
use chronos_core::services::{RunningServices, Services};
use chronos_tests::{TestEnv, chronos_bin, start_api, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn admin() -> Caller {
    Caller { key_id: "job-tester".into(), role: Role::Admin }
}

/// `n` dead tasks in `queue` that failed with `error`, recorded dead in Postgres and with their
/// letters in SQS.
async fn dead_tasks(env: &TestEnv, dlq: &Dlq, queue: &str, n: usize, error: &str) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let tasks = chunk.iter().map(|_| NewTask::new("noop", json!({})).queue(queue).max_attempts(1)).collect();
        ids.extend(env.client.enqueue_batch(tasks).await.unwrap().into_iter().map(|s| s.id));
    }
    let mut failed = 0;
    while failed < n {
        let batch = env.engine.claim(queue, "setup", 100, Duration::from_secs(60)).await.unwrap().tasks;
        assert!(!batch.is_empty(), "every task claimed once");
        for t in batch {
            env.engine.fail(queue, t.id, t.token, "setup", FailKind::Permanent, error, "", None).await.unwrap();
            failed += 1;
        }
    }
    let audit = Services::new(env.engine.clone()).audit_writer(env.store.clone(), "setup-audit").start();
    wait_until(Duration::from_secs(60), "the deaths reach Postgres", || async { dead_in_postgres(env, &ids).await == n as i64 }).await;
    audit.stop().await;
    while env.engine.counts(queue).await.unwrap().dlq_pending > 0 {
        forward_pending(&env.engine, dlq).await.unwrap();
    }
    ids
}

async fn dead_in_postgres(env: &TestEnv, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'dead' AND id = ANY($1)")
        .bind(ids)
        .fetch_one(env.store.pool())
        .await
        .unwrap()
}

/// Every message in the SQS queue (visible, and hidden by a receive), by task id.
async fn letters(dlq: &Dlq) -> (i64, i64) {
    let out = dlq
        .client()
        .get_queue_attributes()
        .queue_url(dlq.queue_url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |k: aws_sdk_sqs::types::QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(-1);
    (
        get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

fn runner(env: &TestEnv, who: &str) -> RunningServices {
    Services::new(env.engine.clone()).job_runner(env.store.clone(), Some(env.dlq_name()), who).start()
}

/// How many of these tasks of `queue` are in each live (Redis) status.
async fn live_statuses(env: &TestEnv, queue: &str, ids: &[Uuid]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let keys: Vec<(&str, Uuid)> = ids.iter().map(|id| (queue, *id)).collect();
    for f in env.engine.task_fields_many(&keys).await.unwrap() {
        *out.entry(f.get("st").cloned().unwrap_or_default()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_of_an_error_group_answers_202_and_removes_every_sqs_message_of_its_tasks() {
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let api = start_api(&env, Some(dlq.clone())).await;
    let smtp = dead_tasks(&env, &dlq, "mail", 150, "smtp: 421 try later").await;
    let other = dead_tasks(&env, &dlq, "mail", 10, "bad address").await;
    assert_eq!(letters(&dlq).await, (160, 0), "every letter is in SQS before the redrive");

    let r = api.admin(Method::POST, "/v1/dlq/redrive").json(&json!({ "error": "smtp: 421 try later" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/v1/jobs/{}", job["id"].as_str().unwrap()));
    assert_eq!((job["state"].as_str(), job["total"].as_i64(), job["processed"].as_i64()), (Some("queued"), Some(150), Some(0)), "{job}");
    assert_eq!(job["filter"], json!({ "status": "dead", "error": "smtp: 421 try later" }));

    // No runner yet: the job waits, nothing is lost. Then one starts and works it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting: Value = api.admin(Method::GET, &location).send().await.unwrap().json().await.unwrap();
    assert_eq!(waiting["state"], "queued");
    let run = runner(&env, "runner-a");
    let mut seen_progress = Vec::new();
    let done = loop {
        let j: Value = api.admin(Method::GET, &location).send().await.unwrap().json().await.unwrap();
        seen_progress.push(j["processed"].as_i64().unwrap());
        if j["state"] == "completed" {
            break j;
        }
        assert!(seen_progress.len() < 2_400, "the job completes within two minutes: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    run.stop().await;
    assert_eq!(
        (done["processed"].as_i64(), done["succeeded"].as_i64(), done["skipped"].as_i64(), done["progress"].as_f64()),
        (Some(150), Some(150), Some(0), Some(1.0)),
        "{done}"
    );
    assert_eq!(
        (done["sqs_messages_removed"].as_i64(), done["sqs_letters_not_found"].as_i64(), done["sqs_letters_pending"].as_i64()),
        (Some(150), Some(0), Some(0)),
        "every message of a redriven task removed: {done}"
    );
    assert!(seen_progress.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen_progress:?}");
    assert_eq!(letters(&dlq).await, (10, 0), "the other group's 10 letters stay, visible again");
    assert_eq!(live_statuses(&env, "mail", &smtp).await, [("queued".to_owned(), 150)].into(), "the group is queued again");
    assert_eq!(live_statuses(&env, "mail", &other).await, [("dead".to_owned(), 10)].into(), "the other group stays dead");
    let list: Value = api.admin(Method::GET, "/v1/jobs").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["jobs"][0]["id"], done["id"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_runner_is_sigkilled_is_resumed_by_the_tick_and_redrives_each_task_once() {
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let ids = dead_tasks(&env, &dlq, "hooks", 520, "http 500").await;
    let mut services = tokio::process::Command::new(chronos_bin());
    services.arg("services").kill_on_drop(true).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    services.envs(env.child_env());
    let job = env.client.start_job(&admin(), JobKind::Redrive, Selection::default()).await.unwrap();
    assert_eq!(job.total, 520);
    let mut proc = services.spawn().unwrap();
    // Kill it while a step is in flight: Redis holds more redriven (queued) tasks than the job
    // has committed, with the committed count the same before and after the look.
    let ready = env.engine.keys("hooks").ready;
    let mut conn = env.engine.connection();
    let started = std::time::Instant::now();
    loop {
        let before = env.client.job(&admin(), job.id).await.unwrap().processed;
        let queued: i64 = redis::cmd("ZCARD").arg(&ready).query_async(&mut conn).await.unwrap();
        let after = env.client.job(&admin(), job.id).await.unwrap().processed;
        if before == after && queued > before && queued < 520 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never saw a step in flight");
    }
    proc.start_kill().unwrap();
    proc.wait().await.unwrap();
    let at_kill = env.client.job(&admin(), job.id).await.unwrap();
    let queued: i64 = redis::cmd("ZCARD").arg(&ready).query_async(&mut conn).await.unwrap();
    assert!(!at_kill.is_finished(), "killed mid-job: {at_kill:?}");
    // Almost always mid-step; a step that committed in the microseconds before the signal
    // landed makes this a kill between steps, which must hold as well.
    eprintln!("killed with {queued} tasks redriven and {} committed", at_kill.processed);

    // The lease (30 s) runs out; rather than wait for it, end it as time would.
    sqlx::query("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(job.id)
        .execute(env.store.pool())
        .await
        .unwrap();
    let mut ticks = 0;
    loop {
        let out = std::process::Command::new(chronos_bin()).args(["tick", "--once"]).envs(env.child_env()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["jobs"].as_u64().unwrap() >= 1 || env.client.job(&admin(), job.id).await.unwrap().is_finished(), "{report}");
        ticks += 1;
        if env.client.job(&admin(), job.id).await.unwrap().is_finished() || ticks == 5 {
            break;
        }
    }
    let done = env.client.job(&admin(), job.id).await.unwrap();
    assert_eq!(done.state, "completed", "{done:?}");
    assert_eq!((done.processed, done.succeeded, done.skipped), (520, 520, 0), "each task counted once: {done:?}");
    assert_eq!((done.sqs_messages_removed, done.sqs_letters_not_found), (520, 0), "{done:?}");
    assert_eq!(letters(&dlq).await, (0, 0), "no letter of a redriven task is left");
    // Each task was redriven exactly once (the audit writer records every retry-now).
    let audit = Services::new(env.engine.clone()).audit_writer(env.store.clone(), "check-audit").start();
    wait_until(Duration::from_secs(30), "the redrives reach the audit log", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log WHERE action = 'retry_now'").fetch_one(env.store.pool()).await.unwrap()
            >= 520
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rows, tasks): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT task_id) FROM audit_log WHERE action = 'retry_now'")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!((rows, tasks), (520, 520), "one redrive per task, none twice");
    audit.stop().await;
    assert_eq!(live_statuses(&env, "hooks", &ids).await, [("queued".to_owned(), 520)].into());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_and_retry_by_filter_touch_only_the_selected_tasks_and_refusals_name_the_field() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let later = |q: &str| NewTask::new("noop", json!({})).queue(q).delay(Duration::from_secs(600));
    let bulk: Vec<Uuid> =
        env.client.enqueue_batch((0..300).map(|_| later("bulk")).collect()).await.unwrap().into_iter().map(|s| s.id).collect();
    let keep: Vec<Uuid> =
        env.client.enqueue_batch((0..20).map(|_| later("keep")).collect()).await.unwrap().into_iter().map(|s| s.id).collect();
    let soon: Vec<Uuid> =
        env.client.enqueue_batch((0..10).map(|_| later("soon")).collect()).await.unwrap().into_iter().map(|s| s.id).collect();

    let post = |body: Value| {
        let api = &api;
        async move {
            let r = api.admin(Method::POST, "/v1/jobs").json(&body).send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    for (body, field) in [
        (json!({ "kind": "cancel", "filter": {} }), "filter"),
        (json!({ "kind": "cancel" }), "filter"),
        (json!({ "kind": "cancel", "filter": { "status": "gone" } }), "filter.status"),
        (json!({ "kind": "redrive", "filter": { "status": "queued" } }), "filter.status"),
        (json!({ "kind": "nuke", "filter": { "queue": "bulk" } }), "kind"),
    ] {
        let (s, p) = post(body.clone()).await;
        assert_eq!((s, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{body} → {p}");
    }
    let (s, p) = post(json!({ "kind": "cancel", "filter": { "queue": "bulk", "colour": "red" } })).await;
    assert!(s.is_client_error() && p["detail"].as_str().unwrap().contains("colour"), "{p}");

    // A queued job can be cancelled before any runner takes it; twice is a 409.
    let (_, stale) = post(json!({ "kind": "cancel", "filter": { "queue": "keep" } })).await;
    let url = format!("/v1/jobs/{}/cancel", stale["id"].as_str().unwrap());
    let r = api.admin(Method::POST, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    assert_eq!(api.admin(Method::POST, &url).send().await.unwrap().status(), StatusCode::CONFLICT);

    let (s, cancel) = post(json!({ "kind": "cancel", "filter": { "queue": "bulk" } })).await;
    assert_eq!((s, cancel["total"].as_i64()), (StatusCode::ACCEPTED, Some(300)), "{cancel}");
    let (s, retry) = post(json!({ "kind": "retry", "filter": { "queue": "soon", "status": "scheduled" } })).await;
    assert_eq!((s, retry["total"].as_i64()), (StatusCode::ACCEPTED, Some(10)), "{retry}");
    let run = Services::new(env.engine.clone())
        .job_runner(env.store.clone(), Some(env.dlq_name()), "runner-b")
        .audit_writer(env.store.clone(), "audit-b")
        .start();
    for j in [&cancel, &retry] {
        let url = format!("/v1/jobs/{}", j["id"].as_str().unwrap());
        wait_until(Duration::from_secs(20), "the job completed", || async {
            api.admin(Method::GET, &url).send().await.unwrap().json::<Value>().await.unwrap()["state"] == "completed"
        })
        .await;
    }
    // Cancelled tasks leave Redis; their rows say so once the audit writer caught up.
    wait_until(Duration::from_secs(20), "the cancellations reach Postgres", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'cancelled' AND id = ANY($1)")
            .bind(&bulk)
            .fetch_one(env.store.pool())
            .await
            .unwrap()
            == 300
    })
    .await;
    run.stop().await;
    let c: Value =
        api.admin(Method::GET, &format!("/v1/jobs/{}", cancel["id"].as_str().unwrap())).send().await.unwrap().json().await.unwrap();
    assert_eq!((c["succeeded"].as_i64(), c["skipped"].as_i64()), (Some(300), Some(0)), "{c}");
    assert_eq!(live_statuses(&env, "bulk", &bulk).await, [(String::new(), 300)].into(), "no longer in Redis");
    assert_eq!(live_statuses(&env, "keep", &keep).await, [("scheduled".to_owned(), 20)].into(), "the cancelled job touched nothing");
    assert_eq!(live_statuses(&env, "soon", &soon).await, [("queued".to_owned(), 10)].into(), "retried: queued now");
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action IN ('job_start', 'job_cancel')")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(actions, 4, "three jobs started and one cancelled, each audited");
    env.cleanup().await;
}
