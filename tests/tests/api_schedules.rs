//! `/v1/schedules` through the real router against real Redis and Postgres: create, read, list,
//! change (and the replanning it causes), pause and resume, trigger, delete, the preview of an
//! expression's fire instants across DST, and the refusals that name the field to fix. Every
//! change is audited with the caller's key id.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use chronos_core::access::BOOTSTRAP_ADMIN;
use chronos_core::schedule::{DEFAULT_HORIZON, Scheduler};
use chronos_tests::{RunningApi, TestEnv, diag_registry, start_api, start_worker, wait_until, worker_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

async fn body(r: reqwest::Response) -> (StatusCode, String, Value) {
    let status = r.status();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    (status, ct, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn send(api: &RunningApi, method: Method, path: &str, v: Option<Value>) -> (StatusCode, String, Value) {
    let mut req = api.admin(method, path);
    if let Some(v) = v {
        req = req.json(&v);
    }
    body(req.send().await.unwrap()).await
}

async fn post(api: &RunningApi, path: &str, v: Value) -> (StatusCode, String, Value) {
    send(api, Method::POST, path, Some(v)).await
}

async fn patch(api: &RunningApi, path: &str, v: Value) -> (StatusCode, String, Value) {
    send(api, Method::PATCH, path, Some(v)).await
}

async fn get(api: &RunningApi, path: &str) -> (StatusCode, String, Value) {
    send(api, Method::GET, path, None).await
}

/// Create a schedule; panics unless 201.
async fn create(api: &RunningApi, req: Value) -> Value {
    let (s, _, v) = post(api, "/v1/schedules", req.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{req}: {v}");
    v
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

/// (task id, fire_at, status) of the schedule's tasks in Postgres, by fire instant.
async fn planned(env: &TestEnv, schedule: Uuid) -> Vec<(Uuid, DateTime<Utc>, String)> {
    sqlx::query_as("SELECT id, fire_at, status FROM tasks WHERE schedule_id = $1 ORDER BY fire_at")
        .bind(schedule)
        .fetch_all(env.store.pool())
        .await
        .unwrap()
}

/// A problem document of `status` whose `field` is `field`; returns its detail.
fn problem(got: &(StatusCode, String, Value), status: u16, field: &str) -> String {
    let (s, ct, p) = got;
    assert_eq!(s.as_u16(), status, "{p}");
    assert_eq!(ct, "application/problem+json", "{p}");
    assert_eq!(p["field"], field, "{p}");
    let detail = p["detail"].as_str().unwrap().to_owned();
    assert!(detail.len() > field.len() + 2, "a detail that says what to fix: {p}");
    detail
}

/// (actor, action, schedule id) of every audited schedule action.
async fn schedule_audit(env: &TestEnv) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT actor, action, detail->>'schedule_id' FROM audit_log WHERE action LIKE 'schedule\\_%' ORDER BY id")
        .fetch_all(env.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_schedule_is_created_with_defaults_and_read_back_with_its_next_fires_in_its_zone() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let s = create(
        &api,
        json!({ "name": "nightly-report", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                "task": { "name": "report.build", "queue": "reports", "payload": { "kind": "daily" } } }),
    )
    .await;
    assert_eq!(
        (s["name"].as_str(), s["cron"].as_str(), s["timezone"].as_str()),
        (Some("nightly-report"), Some("0 3 * * *"), Some("Europe/Berlin"))
    );
    assert_eq!((s["overlap"].as_str(), s["misfire"].as_str(), s["paused"].as_bool()), (Some("allow"), Some("run_once"), Some(false)));
    assert_eq!(s["created_by"], BOOTSTRAP_ADMIN);
    // the task template with the defaults of POST /v1/tasks
    let t = &s["task"];
    assert_eq!((t["name"].as_str(), t["queue"].as_str(), t["priority"].as_i64()), (Some("report.build"), Some("reports"), Some(50)));
    assert_eq!(
        (t["max_attempts"].as_i64(), t["timeout_ms"].as_i64(), t["backoff"]["kind"].as_str()),
        (Some(5), Some(30_000), Some("exponential"))
    );
    assert_eq!(t["payload"]["kind"], "daily");
    // five instants at 03:00 Berlin wall time, each with Berlin's offset at that instant
    let fires: Vec<&str> = s["next_fires"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(fires.len(), 5, "{s}");
    for f in &fires {
        assert!(f.ends_with("T03:00:00+01:00") || f.ends_with("T03:00:00+02:00"), "{f} is 03:00 in Berlin");
        assert!(DateTime::parse_from_rfc3339(f).unwrap() > Utc::now(), "{f} is ahead");
    }
    assert!(s.get("runs").is_none(), "runs come with GET /v1/schedules/{{id}} only");

    let (st, _, got) = get(&api, &format!("/v1/schedules/{}", s["id"].as_str().unwrap())).await;
    assert_eq!(st, StatusCode::OK);
    for f in ["id", "name", "cron", "timezone", "task", "paused", "overlap", "misfire", "created_by", "created_at", "planned_until"] {
        assert_eq!(got[f], s[f], "{f}");
    }
    assert_eq!(got["next_fires"], s["next_fires"]);
    assert_eq!(got["runs"], json!([]), "nothing has run yet");
    assert_eq!(schedule_audit(&env).await, vec![(BOOTSTRAP_ADMIN.into(), "schedule_create".into(), s["id"].as_str().unwrap().into())]);
    env.cleanup().await;
}

#[tokio::test]
async fn preview_lists_fire_instants_with_the_zone_offset_across_the_dst_change_and_creates_nothing() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let fires = |v: &Value| -> Vec<String> { v["next_fires"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect() };

    // Berlin springs forward on 2026-03-29 at 02:00 → 03:00.
    let (s, _, v) = get(&api, "/v1/schedules/preview?cron=0+3+*+*+*&timezone=Europe/Berlin&count=3&after=2026-03-27T12:00:00Z").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(fires(&v), ["2026-03-28T03:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"]);
    assert_eq!((v["fixed_time"].as_bool(), v["has_seconds"].as_bool()), (Some(true), Some(false)));
    assert_eq!((v["cron"].as_str(), v["timezone"].as_str()), (Some("0 3 * * *"), Some("Europe/Berlin")));
    // 02:30 does not exist that night: a fixed-time job runs once, at the end of the gap
    let (_, _, v) =
        get(&api, "/v1/schedules/preview?cron=30%202%20*%20*%20*&timezone=Europe%2FBerlin&count=3&after=2026-03-27T12%3A00%3A00Z").await;
    assert_eq!(fires(&v), ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]);
    // every 30 minutes is not fixed-time: the skipped hour simply has no fires
    let (_, _, v) = get(&api, "/v1/schedules/preview?cron=*/30+*+*+*+*&timezone=Europe/Berlin&count=4&after=2026-03-29T00:15:00Z").await;
    assert_eq!(
        fires(&v),
        ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-29T04:00:00+02:00"]
    );
    assert_eq!(v["fixed_time"], false);
    // seconds, the default zone and count, strictly after `after`
    let (_, _, v) = get(&api, "/v1/schedules/preview?cron=*/20+*+*+*+*+*&after=2026-01-01T00:00:00Z").await;
    assert_eq!(
        fires(&v),
        [
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00",
            "2026-01-01T00:01:20+00:00",
            "2026-01-01T00:01:40+00:00"
        ]
    );
    assert_eq!((v["has_seconds"].as_bool(), v["timezone"].as_str()), (Some(true), Some("UTC")));
    // without `after`: from now
    let (_, _, v) = get(&api, "/v1/schedules/preview?cron=@hourly&count=100").await;
    let f = fires(&v);
    assert_eq!(f.len(), 100);
    assert!(DateTime::parse_from_rfc3339(&f[0]).unwrap() > Utc::now() - chrono::Duration::seconds(1));

    // refusals name the parameter and, for cron, which cron field is wrong
    let detail = problem(&get(&api, "/v1/schedules/preview?cron=61+*+*+*+*").await, 422, "cron");
    assert!(detail.contains("minute"), "{detail}");
    let detail = problem(&get(&api, "/v1/schedules/preview?cron=0+0+*+*+MON-FUNDAY").await, 422, "cron");
    assert!(detail.contains("day-of-week"), "{detail}");
    problem(&get(&api, "/v1/schedules/preview?cron=*+*+*").await, 422, "cron");
    problem(&get(&api, "/v1/schedules/preview").await, 422, "cron");
    let detail = problem(&get(&api, "/v1/schedules/preview?cron=@daily&timezone=europe/berlin").await, 422, "timezone");
    assert!(detail.contains("Europe/Berlin"), "suggests the right spelling: {detail}");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&timezone=CEST").await, 422, "timezone");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&count=0").await, 422, "count");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&count=101").await, 422, "count");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&count=many").await, 422, "count");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&after=tomorrow").await, 422, "after");
    problem(&get(&api, "/v1/schedules/preview?cron=@daily&colour=red").await, 422, "colour");
    // `preview` is a route of its own, not a schedule id
    let (s, _, _) = send(&api, Method::DELETE, "/v1/schedules/preview", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let n: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM schedules) + (SELECT count(*) FROM tasks)")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "a preview creates nothing");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_schedules_get_a_problem_document_that_names_the_field_to_fix() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let task = json!({ "name": "noop" });
    let cases = [
        (json!({ "name": "s", "cron": "61 * * * *", "task": task }), "cron", Some("minute")),
        (json!({ "name": "s", "cron": "0 25 * * *", "task": task }), "cron", Some("hour")),
        (json!({ "name": "s", "cron": "0 0 32 * *", "task": task }), "cron", Some("day-of-month")),
        (json!({ "name": "s", "cron": "0 0 * 13 *", "task": task }), "cron", Some("month")),
        (json!({ "name": "s", "cron": "0 0 30 2 *", "task": task }), "cron", None),
        (json!({ "name": "s", "cron": "* * *", "task": task }), "cron", Some("5 fields")),
        (json!({ "name": "s", "cron": "@reboot", "task": task }), "cron", Some("@reboot")),
        (json!({ "name": "s", "cron": 5, "task": task }), "cron", None),
        (json!({ "name": "s", "task": task }), "cron", None),
        (json!({ "name": "s", "cron": "@daily", "timezone": "Mars/Olympus_Mons", "task": task }), "timezone", None),
        (json!({ "name": "s", "cron": "@daily", "timezone": "", "task": task }), "timezone", None),
        (json!({ "name": "bad name!", "cron": "@daily", "task": task }), "name", None),
        (json!({ "cron": "@daily", "task": task }), "name", None),
        (json!({ "name": "s", "cron": "@daily" }), "task", None),
        (json!({ "name": "s", "cron": "@daily", "task": ["noop"] }), "task", None),
        (json!({ "name": "s", "cron": "@daily", "task": {} }), "task.name", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "no spaces" } }), "task.name", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "queue": "a b" } }), "task.queue", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "priority": 101 } }), "task.priority", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "max_attempts": 0 } }), "task.max_attempts", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "timeout_ms": 0 } }), "task.timeout_ms", None),
        (
            json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "backoff": { "base_ms": 500, "cap_ms": 100 } } }),
            "task.backoff.cap_ms",
            None,
        ),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "payload": "y".repeat(300 * 1024) } }), "task.payload", None),
        (json!({ "name": "s", "cron": "@daily", "task": { "name": "noop", "delay_ms": 5 } }), "task.delay_ms", None),
        (json!({ "name": "s", "cron": "@daily", "task": task, "overlap": "sometimes" }), "overlap", None),
        (json!({ "name": "s", "cron": "@daily", "task": task, "misfire": "never" }), "misfire", None),
        (json!({ "name": "s", "cron": "@daily", "task": task, "paused": "yes" }), "paused", None),
        (json!({ "name": "s", "cron": "@daily", "task": task, "colour": "red" }), "colour", None),
    ];
    for (req, field, mentions) in cases {
        let got = post(&api, "/v1/schedules", req.clone()).await;
        let detail = problem(&got, 422, field);
        if let Some(m) = mentions {
            assert!(detail.contains(m), "{req}: the detail names what is wrong: {detail}");
        }
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(n, 0, "nothing created");

    // a name is taken once
    let first = create(&api, json!({ "name": "taken", "cron": "@daily", "task": task })).await;
    let (s, ct, p) = post(&api, "/v1/schedules", json!({ "name": "taken", "cron": "@hourly", "task": task })).await;
    assert_eq!(
        (s, ct.as_str(), p["type"].as_str()),
        (StatusCode::CONFLICT, "application/problem+json", Some("urn:chronos:problem:conflict"))
    );
    assert!(p["detail"].as_str().unwrap().contains("\"taken\""), "{p}");
    let other = create(&api, json!({ "name": "other", "cron": "@daily", "task": task })).await;
    let (s, _, p) = patch(&api, &format!("/v1/schedules/{}", id_of(&other)), json!({ "name": "taken" })).await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    let (_, _, still) = get(&api, &format!("/v1/schedules/{}", id_of(&first))).await;
    assert_eq!(still["cron"], "@daily");

    // ids: malformed is 400, unknown is 404, on every schedule route
    let unknown = Uuid::now_v7();
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PATCH, "", Some(json!({ "cron": "@daily" }))),
        (Method::DELETE, "", None),
        (Method::POST, "/pause", Some(json!({}))),
        (Method::POST, "/resume", Some(json!({}))),
        (Method::POST, "/trigger", Some(json!({}))),
    ] {
        let (s, _, p) = send(&api, method.clone(), &format!("/v1/schedules/not-a-uuid{suffix}"), body.clone()).await;
        assert_eq!(
            (s, p["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("urn:chronos:problem:malformed-request")),
            "{method} {suffix}: {p}"
        );
        assert!(p["detail"].as_str().unwrap().contains("schedule id"), "{p}");
        let (s, _, p) = send(&api, method.clone(), &format!("/v1/schedules/{unknown}{suffix}"), body).await;
        assert_eq!((s, p["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:chronos:problem:not-found")), "{method} {suffix}: {p}");
    }

    // a patch must change something, and pausing is not a patch
    let path = format!("/v1/schedules/{}", id_of(&other));
    let detail = problem(&patch(&api, &path, json!({})).await, 422, "body");
    assert!(detail.contains("nothing to change"), "{detail}");
    problem(&patch(&api, &path, json!({ "cron": null })).await, 422, "body");
    let detail = problem(&patch(&api, &path, json!({ "paused": true })).await, 422, "paused");
    assert!(detail.contains("/pause"), "{detail}");
    problem(&patch(&api, &path, json!({ "cron": "0 0 * * 8" })).await, 422, "cron");
    problem(&patch(&api, &path, json!({ "timezone": "Berlin" })).await, 422, "timezone");
    problem(&patch(&api, &path, json!({ "task": { "queue": "x" } })).await, 422, "task.name");
    problem(&patch(&api, &path, json!({ "task": { "name": "noop", "run_at": "2030-01-01T00:00:00Z" } })).await, 422, "task.run_at");
    problem(&patch(&api, &path, json!({ "colour": "red" })).await, 422, "colour");
    env.cleanup().await;
}

#[tokio::test]
async fn schedules_are_listed_by_name_a_page_at_a_time() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    for name in ["e-five", "a-one", "d-four", "c-three", "b-two"] {
        create(&api, json!({ "name": name, "cron": "@daily", "task": { "name": "noop" }, "paused": true })).await;
    }
    let names =
        |v: &Value| -> Vec<String> { v["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect() };
    let (s, _, p1) = get(&api, "/v1/schedules?limit=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&p1), ["a-one", "b-two"]);
    assert_eq!(p1["next_cursor"], "b-two");
    assert_eq!(p1["schedules"][0]["next_fires"], json!([]), "a paused schedule has no next fires");
    let (_, _, p2) = get(&api, "/v1/schedules?limit=2&after=b-two").await;
    assert_eq!(names(&p2), ["c-three", "d-four"]);
    let (_, _, p3) = get(&api, &format!("/v1/schedules?limit=2&after={}", p2["next_cursor"].as_str().unwrap())).await;
    assert_eq!(names(&p3), ["e-five"]);
    assert!(p3["next_cursor"].is_null(), "the last page has no cursor: {p3}");
    let (_, _, all) = get(&api, "/v1/schedules").await;
    assert_eq!(names(&all).len(), 5);
    assert!(all["next_cursor"].is_null());
    let (_, _, exact) = get(&api, "/v1/schedules?limit=5").await;
    assert!(exact["next_cursor"].is_null(), "exactly a page: no cursor");
    problem(&get(&api, "/v1/schedules?limit=0").await, 422, "limit");
    problem(&get(&api, "/v1/schedules?limit=501").await, 422, "limit");
    problem(&get(&api, "/v1/schedules?sort=name").await, 422, "sort");
    env.cleanup().await;
}

#[tokio::test]
async fn changing_the_cron_replaces_the_planned_occurrences_and_a_template_change_replaces_the_whole_task() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    // every 10 s on a queue no worker serves: occurrences are planned at once and stay put
    let s = create(
        &api,
        json!({ "name": "ticker", "cron": "*/10 * * * * *", "task": { "name": "noop", "queue": "ticks", "priority": "high", "max_attempts": 2 } }),
    )
    .await;
    let id = id_of(&s);
    let before = planned(&env, id).await;
    let horizon = DEFAULT_HORIZON.as_secs() as usize;
    assert!(before.len() >= horizon / 10 - 1, "the horizon is planned at create time: {} tasks", before.len());
    assert!(before.iter().all(|(_, at, _)| at.second() % 10 == 0));
    for (task, at, _) in before.iter().filter(|(_, at, _)| *at > Utc::now() + chrono::Duration::seconds(2)) {
        assert_eq!(env.status(*task).await, "scheduled", "{task} at {at}");
    }

    let (st, _, v) = patch(&api, &format!("/v1/schedules/{id}"), json!({ "cron": "5-55/10 * * * * *" })).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let done_at = Utc::now();
    assert_eq!(v["cron"], "5-55/10 * * * * *");
    assert!(v["next_fires"].as_array().unwrap().iter().all(|f| f.as_str().unwrap()[17..19].ends_with('5')), "{v}");
    let after = planned(&env, id).await;
    // the old occurrences still ahead are gone, from Postgres and from Redis
    let stale: Vec<_> = after.iter().filter(|(_, at, _)| *at > done_at && at.second() % 10 == 0).collect();
    assert!(stale.is_empty(), "occurrences of the old cron left: {stale:?}");
    for (task, at, _) in before.iter().filter(|(_, at, _)| *at > done_at) {
        assert!(env.engine.task_fields("ticks", *task).await.unwrap().is_empty(), "{task} at {at} still in Redis");
    }
    // and the new ones fill the horizon
    let fresh: Vec<_> = after.iter().filter(|(_, at, _)| *at > done_at).collect();
    assert!(fresh.len() >= horizon / 10 - 1, "{} new occurrences", fresh.len());
    assert!(fresh.iter().all(|(_, at, _)| at.second() % 10 == 5), "{fresh:?}");
    let (_, _, page) = get(&api, "/v1/tasks?queue=ticks&status=scheduled&limit=500").await;
    let ahead: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["run_at"].as_str().unwrap())
        .filter(|at| DateTime::parse_from_rfc3339(at).unwrap() > done_at)
        .collect();
    assert_eq!(ahead.len(), fresh.len(), "GET /v1/tasks shows the new occurrences");
    assert!(ahead.iter().all(|at| at[17..19].ends_with('5')), "{ahead:?}");

    // a misfire change does not replan: the same tasks
    let (st, _, v) = patch(&api, &format!("/v1/schedules/{id}"), json!({ "misfire": "skip" })).await;
    assert_eq!((st, v["misfire"].as_str(), v["cron"].as_str()), (StatusCode::OK, Some("skip"), Some("5-55/10 * * * * *")));
    let same: Vec<Uuid> = planned(&env, id).await.into_iter().filter(|(_, at, _)| *at > done_at).map(|(t, _, _)| t).collect();
    let fresh_ids: Vec<Uuid> = fresh.iter().map(|(t, _, _)| *t).collect();
    assert_eq!(same, fresh_ids);

    // `task` replaces the whole template: what it leaves out takes the defaults again
    let (st, _, v) = patch(
        &api,
        &format!("/v1/schedules/{id}"),
        json!({ "task": { "name": "sleep", "queue": "ticks", "payload": { "ms": 1 } }, "name": "ticker-2" }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["task"]["name"].as_str(), v["task"]["priority"].as_i64(), v["task"]["max_attempts"].as_i64()),
        (Some("ticker-2"), Some("sleep"), Some(50), Some(5))
    );
    let t = Utc::now();
    let ahead: Vec<(String, i16)> = sqlx::query_as("SELECT name, priority FROM tasks WHERE schedule_id = $1 AND fire_at > $2")
        .bind(id)
        .bind(t)
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert!(!ahead.is_empty());
    assert!(ahead.iter().all(|(n, p)| n == "sleep" && *p == 50), "the occurrences ahead run the new template: {ahead:?}");

    let actions: Vec<String> = schedule_audit(&env).await.into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(actions, ["schedule_create", "schedule_update", "schedule_update", "schedule_update"]);
    env.cleanup().await;
}

#[tokio::test]
async fn pausing_drops_what_has_not_started_and_plans_nothing_until_resumed() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let s = create(&api, json!({ "name": "pulse", "cron": "*/10 * * * * *", "task": { "name": "noop", "queue": "pulses" } })).await;
    let id = id_of(&s);
    let first = planned(&env, id).await;
    assert!(!first.is_empty());

    let (st, _, v) = post(&api, &format!("/v1/schedules/{id}/pause"), json!({})).await;
    assert_eq!((st, v["paused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["next_fires"], json!([]));
    assert!(planned(&env, id).await.is_empty(), "every occurrence not started is gone");
    for (task, _, _) in &first {
        assert!(env.engine.task_fields("pulses", *task).await.unwrap().is_empty(), "{task} still in Redis");
    }
    let counts = env.engine.counts("pulses").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (0, 0));
    // idempotent, and a tick plans nothing for a paused schedule
    let (st, _, again) = post(&api, &format!("/v1/schedules/{id}/pause"), json!({})).await;
    assert_eq!((st, again["paused"].as_bool()), (StatusCode::OK, Some(true)));
    let report = Scheduler::new(env.client.clone(), DEFAULT_HORIZON).tick().await.unwrap();
    assert_eq!(report.planned, 0, "{report:?}");
    assert!(planned(&env, id).await.is_empty());
    let (_, _, got) = get(&api, &format!("/v1/schedules/{id}")).await;
    assert_eq!(got["paused"], true);

    let (st, _, v) = post(&api, &format!("/v1/schedules/{id}/resume"), json!({})).await;
    assert_eq!((st, v["paused"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    assert_eq!(v["next_fires"].as_array().unwrap().len(), 5);
    let resumed = planned(&env, id).await;
    assert!(resumed.len() >= DEFAULT_HORIZON.as_secs() as usize / 10 - 1, "planned again at once: {}", resumed.len());
    let (st, _, _) = post(&api, &format!("/v1/schedules/{id}/resume"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(planned(&env, id).await.len(), resumed.len(), "resuming twice plans nothing twice");

    let actions: Vec<String> = schedule_audit(&env).await.into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(actions, ["schedule_create", "schedule_pause", "schedule_pause", "schedule_resume", "schedule_resume"]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_trigger_runs_the_task_now_and_the_run_shows_on_the_schedule() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let w = start_worker(&env, diag_registry(), worker_config(&["triggered"]), None);
    // paused and yearly: the only run is the one triggered
    let s = create(
        &api,
        json!({ "name": "on-demand", "cron": "0 0 1 1 *", "paused": true, "task": { "name": "noop", "queue": "triggered", "payload": { "n": 1 } } }),
    )
    .await;
    let id = id_of(&s);
    let (st, _, v) = post(&api, &format!("/v1/schedules/{id}/trigger"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["schedule_id"], id.to_string());
    let task: Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(v["task"]["id"], task.to_string());
    assert_eq!((v["task"]["name"].as_str(), v["task"]["queue"].as_str()), (Some("noop"), Some("triggered")));
    wait_until(Duration::from_secs(20), "the triggered task completes", || async { env.status(task).await == "completed" }).await;
    let rec = env.store.get_task(task).await.unwrap().unwrap();
    assert_eq!(rec.schedule_id, Some(id), "the task knows its schedule");
    assert_eq!(rec.payload["n"], 1);

    let (_, _, got) = get(&api, &format!("/v1/schedules/{id}")).await;
    let runs = got["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{got}");
    assert_eq!(
        (runs[0]["task_id"].as_str(), runs[0]["status"].as_str(), runs[0]["attempts"].as_i64()),
        (Some(task.to_string().as_str()), Some("completed"), Some(1))
    );
    assert!(runs[0]["fire_at"].as_str().unwrap().ends_with("+00:00"), "{}", runs[0]);
    assert!(runs[0]["finished_at"].is_string());
    assert_eq!(got["paused"], true, "triggering does not resume");

    let audit: Vec<(String, String, Option<Uuid>)> =
        sqlx::query_as("SELECT actor, action, task_id FROM audit_log WHERE action = 'schedule_trigger'")
            .fetch_all(env.store.pool())
            .await
            .unwrap();
    assert_eq!(audit, vec![(BOOTSTRAP_ADMIN.to_owned(), "schedule_trigger".to_owned(), Some(task))]);
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn deleting_a_schedule_removes_it_and_its_occurrences_that_have_not_started() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let s = create(&api, json!({ "name": "doomed", "cron": "*/10 * * * * *", "task": { "name": "noop", "queue": "doomed" } })).await;
    let id = id_of(&s);
    let keep = create(&api, json!({ "name": "kept", "cron": "*/10 * * * * *", "task": { "name": "noop", "queue": "doomed" } })).await;
    let occurrences = planned(&env, id).await;
    assert!(!occurrences.is_empty());
    let kept = planned(&env, id_of(&keep)).await.len();

    let r = api.admin(Method::DELETE, &format!("/v1/schedules/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _, _) = get(&api, &format!("/v1/schedules/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for (task, at, _) in &occurrences {
        assert!(env.store.get_task(*task).await.unwrap().is_none(), "{task} at {at} is still in Postgres");
        assert!(env.engine.task_fields("doomed", *task).await.unwrap().is_empty(), "{task} at {at} is still in Redis");
    }
    assert_eq!(planned(&env, id_of(&keep)).await.len(), kept, "the other schedule is untouched");
    let (_, _, all) = get(&api, "/v1/schedules").await;
    assert_eq!(all["schedules"].as_array().unwrap().len(), 1);
    for (method, suffix) in [(Method::DELETE, ""), (Method::POST, "/pause"), (Method::POST, "/resume"), (Method::POST, "/trigger")] {
        let (st, _, p) = send(&api, method.clone(), &format!("/v1/schedules/{id}{suffix}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {suffix} after delete: {p}");
    }
    let (st, _, _) = patch(&api, &format!("/v1/schedules/{id}"), json!({ "cron": "@daily" })).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let audit = schedule_audit(&env).await;
    assert_eq!(audit.last().unwrap(), &(BOOTSTRAP_ADMIN.to_owned(), "schedule_delete".to_owned(), id.to_string()));
    env.cleanup().await;
}
