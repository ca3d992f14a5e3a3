//! The role matrix: every `/v1` endpoint of the router, called by a key of each role and by
//! callers without a valid key, against real Redis and Postgres. A role that may act gets a
//! 2xx, a role that may not gets 403, and no/malformed/revoked keys get 401 with
//! `WWW-Authenticate: Bearer`. Producers see only their own tasks, and every manual action is
//! audited with the acting key's id.

use std::collections::BTreeSet;
use std::time::Duration;

use chronos_core::access::Role;
use chronos_core::model::NewTask;
use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_tests::{RunningApi, TestEnv, diag_registry, start_api, start_worker, wait_until, worker_config};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const Y: bool = true;
const N: bool = false;

/// Which roles may call each route, written out by hand from what the roles mean: admin may do
/// everything; operator everything on tasks, schedules, queues and the dead-letter queue but not
/// keys; producer creates tasks and reads its own (and has no access to schedules); viewer reads
/// tasks, schedules, queues and the dead-letter queue (not keys). Deliberately NOT derived from `Role::allows` or `auth::permission_for`:
/// this table is what they are checked against.
const MATRIX: &[(&str, &str, [bool; 4])] = &[
    // (method, route, [admin, operator, producer, viewer])
    ("POST", "/v1/tasks", [Y, Y, Y, N]),
    ("GET", "/v1/tasks", [Y, Y, Y, Y]),
    ("POST", "/v1/tasks/batch", [Y, Y, Y, N]),
    ("GET", "/v1/tasks/{id}", [Y, Y, Y, Y]),
    ("GET", "/v1/tasks/{id}/attempts", [Y, Y, Y, Y]),
    ("GET", "/v1/tasks/{id}/dependencies", [Y, Y, Y, Y]),
    ("POST", "/v1/flows", [Y, Y, Y, N]),
    ("POST", "/v1/tasks/{id}/cancel", [Y, Y, N, N]),
    ("POST", "/v1/tasks/{id}/retry", [Y, Y, N, N]),
    ("POST", "/v1/schedules", [Y, Y, N, N]),
    ("GET", "/v1/schedules", [Y, Y, N, Y]),
    ("GET", "/v1/schedules/preview", [Y, Y, N, Y]),
    ("GET", "/v1/schedules/{id}", [Y, Y, N, Y]),
    ("PATCH", "/v1/schedules/{id}", [Y, Y, N, N]),
    ("DELETE", "/v1/schedules/{id}", [Y, Y, N, N]),
    ("POST", "/v1/schedules/{id}/pause", [Y, Y, N, N]),
    ("POST", "/v1/schedules/{id}/resume", [Y, Y, N, N]),
    ("POST", "/v1/schedules/{id}/trigger", [Y, Y, N, N]),
    ("GET", "/v1/queues", [Y, Y, N, Y]),
    ("PATCH", "/v1/queues/{queue}", [Y, Y, N, N]),
    ("POST", "/v1/queues/{queue}/pause", [Y, Y, N, N]),
    ("POST", "/v1/queues/{queue}/resume", [Y, Y, N, N]),
    ("GET", "/v1/dlq", [Y, Y, N, Y]),
    ("POST", "/v1/dlq/redrive", [Y, Y, N, N]),
    ("POST", "/v1/dlq/{id}/redrive", [Y, Y, N, N]),
    ("POST", "/v1/jobs", [Y, Y, N, N]),
    ("GET", "/v1/jobs", [Y, Y, Y, Y]),
    ("GET", "/v1/jobs/{id}", [Y, Y, Y, Y]),
    ("POST", "/v1/jobs/{id}/cancel", [Y, Y, N, N]),
    ("POST", "/v1/keys", [Y, N, N, N]),
    ("GET", "/v1/keys", [Y, N, N, N]),
    ("DELETE", "/v1/keys/{id}", [Y, N, N, N]),
];

/// The matrix's columns, in order.
const ROLES: [Role; 4] = [Role::Admin, Role::Operator, Role::Producer, Role::Viewer];

/// Queue of the scheduled task fixtures (no worker serves it, so they stay put).
const TASK_QUEUE: &str = "roles";
/// Queue paused and resumed by the matrix.
const PAUSE_QUEUE: &str = "roles-paused";
/// Dead task fixtures for `POST /v1/dlq/{id}/redrive`.
const DEAD_QUEUE: &str = "doomed";
/// Dead tasks for `POST /v1/dlq/redrive` (filtered to this queue, so the others stay dead).
const DEAD_ALL_QUEUE: &str = "doomed-all";

/// One kind of caller.
struct Caller {
    label: &'static str,
    /// The whole `Authorization` header value, if any.
    authorization: Option<String>,
    /// The matrix column of a valid key; `None` for callers that must get 401.
    column: Option<usize>,
    /// The key id: the audit actor, and the creator of this caller's task fixtures.
    key_id: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(api: &RunningApi, method: &str, path: &str, authorization: Option<&str>, body: Option<&Value>) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = api.http.request(method, format!("{}{path}", api.base));
    if let Some(a) = authorization {
        req = req.header(AUTHORIZATION, a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Answer { status, headers, body }
}

fn header<'a>(h: &'a HeaderMap, name: &reqwest::header::HeaderName) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What a 401 must look like: the status, `WWW-Authenticate: Bearer` and a problem document.
fn check_401(a: &Answer) -> Result<(), String> {
    if a.status != StatusCode::UNAUTHORIZED {
        return Err(format!("status {} instead of 401", a.status));
    }
    if header(&a.headers, &WWW_AUTHENTICATE) != "Bearer" {
        return Err(format!("WWW-Authenticate is {:?}, not \"Bearer\"", header(&a.headers, &WWW_AUTHENTICATE)));
    }
    check_problem(a, "urn:chronos:problem:unauthorized")
}

fn check_problem(a: &Answer, kind: &str) -> Result<(), String> {
    let ct = header(&a.headers, &CONTENT_TYPE);
    if ct != "application/problem+json" {
        return Err(format!("content-type {ct:?}, not application/problem+json"));
    }
    let b = &a.body;
    if b["type"] != kind || b["status"] != a.status.as_u16() || !b["title"].is_string() || b["detail"].as_str().is_none_or(str::is_empty) {
        return Err(format!("not a {kind} problem document: {b}"));
    }
    Ok(())
}

/// A paused yearly schedule whose task goes to [`TASK_QUEUE`], created directly in the core.
async fn schedule(env: &TestEnv) -> Uuid {
    let spec = ScheduleSpec {
        paused: true,
        ..ScheduleSpec::new(
            format!("fixture-{}", Uuid::now_v7()),
            "0 0 1 1 *",
            TaskTemplate { queue: TASK_QUEUE.into(), ..TaskTemplate::new("noop", json!({ "fixture": true })) },
        )
    };
    Scheduler::new(env.client.clone(), DEFAULT_HORIZON).create(&spec, Some("test-setup")).await.map_err(|e| format!("{e:?}")).unwrap().id
}

/// A task scheduled an hour ahead on [`TASK_QUEUE`], created by `owner`.
async fn scheduled_task(env: &TestEnv, owner: &str) -> Uuid {
    let mut t = NewTask::new("noop", json!({ "fixture": true })).queue(TASK_QUEUE).delay(Duration::from_secs(3600));
    t.created_by = Some(owner.to_owned());
    env.client.enqueue(t).await.unwrap().id
}

/// `n` dead tasks on `queue` (a worker serving the queue must be running).
async fn dead_tasks(env: &TestEnv, queue: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let t = NewTask::new("fail", json!({ "times": 1000, "permanent": true, "message": "fixture" })).queue(queue).max_attempts(1);
        ids.push(env.client.enqueue(t).await.unwrap().id);
    }
    for &id in &ids {
        wait_until(Duration::from_secs(20), "dead-task fixture is dead", || async { env.status(id).await == "dead" }).await;
        wait_until(Duration::from_secs(5), "dead-task fixture is dead in Redis", || async {
            env.engine.task_fields(queue, id).await.unwrap().get("st").map(String::as_str) == Some("dead")
        })
        .await;
    }
    ids
}

/// One audited manual action: (actor, action, subject), the subject being the schedule id, task
/// id, queue name or key id the action was about.
type AuditRow = (String, String, String);

async fn audit_rows(env: &TestEnv) -> Vec<AuditRow> {
    let mut rows: Vec<AuditRow> =
        sqlx::query_as("SELECT actor, action, coalesce(detail->>'schedule_id', detail->>'job_id', task_id::text, detail->>'queue', detail->>'key_id', '') FROM audit_log ORDER BY id")
            .fetch_all(env.store.pool())
            .await
            .unwrap();
    rows.sort();
    rows
}

/// Wait until `audit_log` holds exactly `expected` (the outbox reaches Postgres through the
/// audit writer, a moment after the API answered).
async fn wait_for_audit(env: &TestEnv, mut expected: Vec<AuditRow>) {
    expected.sort();
    let want = expected.len();
    wait_until(Duration::from_secs(15), "manual actions reach audit_log", || async { audit_rows(env).await.len() >= want }).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // anything unexpected would arrive too
    let got = audit_rows(env).await;
    assert_eq!(got, expected, "audit_log (actor, action, subject) rows, sorted");
}

/// A queued job started by `caller`'s key (as an admin when the caller has no valid key).
async fn job_of(env: &TestEnv, caller: &Caller) -> uuid::Uuid {
    use chronos_core::jobs::{JobKind, Selection};
    let role = caller.column.map_or(Role::Admin, |c| ROLES[c]);
    let who = chronos_core::access::Caller { key_id: caller.key_id.clone(), role };
    let sel = Selection { queue: Some(TASK_QUEUE.into()), name: Some("no-such-task".into()), ..Default::default() };
    let job = env.client.start_job(&who, JobKind::Cancel, sel).await.unwrap();
    // Fixture set-up, not the caller's action: keep it out of the audit comparison.
    sqlx::query("DELETE FROM audit_log WHERE action = 'job_start' AND detail->>'job_id' = $1")
        .bind(job.id.to_string())
        .execute(env.store.pool())
        .await
        .unwrap();
    job.id
}

async fn new_key(env: &TestEnv, name: &str, role: Role) -> (String, String) {
    let (key, secret) = env.store.create_key(name, role, "test-setup").await.unwrap();
    (key.id.to_string(), secret)
}

/// A key of each role, plus no key, a malformed key and a revoked key.
async fn callers(env: &TestEnv) -> Vec<Caller> {
    let mut out = Vec::new();
    for (column, role) in ROLES.into_iter().enumerate() {
        let (key_id, secret) = new_key(env, &format!("{role}-key"), role).await;
        out.push(Caller { label: role.as_str(), authorization: Some(format!("Bearer {secret}")), column: Some(column), key_id });
    }
    let admin_id = out[0].key_id.clone();
    out.push(Caller { label: "no key", authorization: None, column: None, key_id: admin_id.clone() });
    out.push(Caller {
        label: "malformed key",
        authorization: Some("Bearer this-is-not-a-chronos-key".into()),
        column: None,
        key_id: admin_id.clone(),
    });
    let (revoked_id, revoked_secret) = new_key(env, "revoked-admin", Role::Admin).await;
    assert!(env.store.revoke_key(revoked_id.parse().unwrap()).await.unwrap());
    out.push(Caller {
        label: "revoked admin key",
        authorization: Some(format!("Bearer {revoked_secret}")),
        column: None,
        key_id: revoked_id,
    });
    out
}

/// Fixtures for the matrix; each request gets fresh ones where the action consumes them.
struct Fixtures {
    dead: Vec<Uuid>,
}

/// A request ready to send, and what it will audit if it succeeds.
struct Prepared {
    path: String,
    body: Option<Value>,
    /// (action, subject) audited on success; the subject `*` stands for the ids in the answer.
    audits: Option<(&'static str, String)>,
}

impl Fixtures {
    async fn prepare(&mut self, env: &TestEnv, method: &str, route: &str, caller: &Caller) -> Prepared {
        let task = |id: Uuid| route.replace("{id}", &id.to_string());
        let none = |path: String| Prepared { path, body: None, audits: None };
        let post_empty = |path: String, audits| Prepared { path, body: Some(json!({})), audits };
        match (method, route) {
            ("POST", "/v1/tasks") => Prepared {
                path: route.into(),
                body: Some(json!({ "name": "noop", "queue": TASK_QUEUE, "delay_ms": 3_600_000 })),
                audits: None,
            },
            ("POST", "/v1/flows") => Prepared {
                path: route.into(),
                body: Some(
                    json!({ "name": "noop", "queue": TASK_QUEUE, "children": [{ "name": "noop", "queue": TASK_QUEUE, "delay_ms": 3_600_000 }] }),
                ),
                audits: None,
            },
            ("POST", "/v1/tasks/batch") => Prepared {
                path: route.into(),
                body: Some(json!({ "tasks": [{ "name": "noop", "queue": TASK_QUEUE, "delay_ms": 3_600_000 }] })),
                audits: None,
            },
            ("GET", "/v1/tasks" | "/v1/queues" | "/v1/dlq" | "/v1/keys") => none(route.into()),
            // the caller's own task, so a producer may read it
            ("GET", "/v1/tasks/{id}" | "/v1/tasks/{id}/attempts" | "/v1/tasks/{id}/dependencies") => {
                none(task(scheduled_task(env, &caller.key_id).await))
            }
            ("POST", "/v1/tasks/{id}/cancel") => {
                let id = scheduled_task(env, &caller.key_id).await;
                post_empty(task(id), Some(("cancel", id.to_string())))
            }
            ("POST", "/v1/tasks/{id}/retry") => {
                let id = scheduled_task(env, &caller.key_id).await;
                post_empty(task(id), Some(("retry_now", id.to_string())))
            }
            ("POST", "/v1/schedules") => Prepared {
                path: route.into(),
                body: Some(json!({ "name": format!("made-by-{}", caller.label.replace(' ', "-")), "cron": "0 0 1 1 *",
                                   "paused": true, "task": { "name": "noop", "queue": TASK_QUEUE } })),
                audits: Some(("schedule_create", "*".into())),
            },
            ("GET", "/v1/schedules") => none(route.into()),
            ("GET", "/v1/schedules/preview") => none(format!("{route}?cron=@daily&timezone=Europe/Berlin")),
            ("GET", "/v1/schedules/{id}") => none(task(schedule(env).await)),
            ("PATCH", "/v1/schedules/{id}") => {
                let id = schedule(env).await;
                Prepared { path: task(id), body: Some(json!({ "cron": "0 0 2 1 *" })), audits: Some(("schedule_update", id.to_string())) }
            }
            ("DELETE", "/v1/schedules/{id}") => {
                let id = schedule(env).await;
                Prepared { path: task(id), body: None, audits: Some(("schedule_delete", id.to_string())) }
            }
            ("POST", "/v1/schedules/{id}/pause") => {
                let id = schedule(env).await;
                post_empty(task(id), Some(("schedule_pause", id.to_string())))
            }
            ("POST", "/v1/schedules/{id}/resume") => {
                let id = schedule(env).await;
                post_empty(task(id), Some(("schedule_resume", id.to_string())))
            }
            ("POST", "/v1/schedules/{id}/trigger") => {
                let id = schedule(env).await;
                post_empty(task(id), Some(("schedule_trigger", id.to_string())))
            }
            ("PATCH", "/v1/queues/{queue}") => Prepared {
                path: route.replace("{queue}", PAUSE_QUEUE),
                body: Some(json!({ "concurrency": 50 })),
                audits: Some(("queue_limits", PAUSE_QUEUE.to_owned())),
            },
            ("POST", "/v1/queues/{queue}/pause") => {
                post_empty(route.replace("{queue}", PAUSE_QUEUE), Some(("pause_queue", PAUSE_QUEUE.to_owned())))
            }
            ("POST", "/v1/queues/{queue}/resume") => {
                post_empty(route.replace("{queue}", PAUSE_QUEUE), Some(("resume_queue", PAUSE_QUEUE.to_owned())))
            }
            ("POST", "/v1/dlq/redrive") => {
                // A job: its start is audited at once; no runner works it in this test.
                Prepared { path: route.into(), body: Some(json!({ "queue": DEAD_ALL_QUEUE })), audits: Some(("job_start", "*".into())) }
            }
            ("POST", "/v1/jobs") => Prepared {
                path: route.into(),
                body: Some(json!({ "kind": "cancel", "filter": { "queue": TASK_QUEUE, "name": "no-such-task" } })),
                audits: Some(("job_start", "*".into())),
            },
            ("GET", "/v1/jobs") => none(route.into()),
            ("GET", "/v1/jobs/{id}") => {
                // The caller's own job: a producer sees only its own.
                let id = job_of(env, caller).await;
                none(route.replace("{id}", &id.to_string()))
            }
            ("POST", "/v1/jobs/{id}/cancel") => {
                let id = job_of(env, caller).await;
                post_empty(route.replace("{id}", &id.to_string()), Some(("job_cancel", id.to_string())))
            }
            ("POST", "/v1/dlq/{id}/redrive") => {
                let id = self.dead.pop().expect("enough dead-task fixtures");
                post_empty(task(id), Some(("retry_now", id.to_string())))
            }
            ("POST", "/v1/keys") => Prepared {
                path: route.into(),
                body: Some(json!({ "name": format!("made-by-{}", caller.label.replace(' ', "-")), "role": "viewer" })),
                audits: Some(("create_key", "*".into())),
            },
            ("DELETE", "/v1/keys/{id}") => {
                let (id, _) = new_key(env, "to-revoke", Role::Viewer).await;
                Prepared { path: route.replace("{id}", &id), body: None, audits: Some(("revoke_key", id)) }
            }
            other => panic!("no fixture for {other:?}: add one when adding a route to the matrix"),
        }
    }
}

#[tokio::test]
async fn every_endpoint_answers_every_caller_as_the_role_table_says_and_audits_what_it_let_through() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    // serves the dead-task queues, and its audit writer drains every queue's outbox
    let worker = start_worker(&env, diag_registry(), worker_config(&[DEAD_QUEUE, DEAD_ALL_QUEUE]), None);
    let callers = callers(&env).await;
    let mut fixtures = Fixtures { dead: dead_tasks(&env, DEAD_QUEUE, callers.len()).await };
    dead_tasks(&env, DEAD_ALL_QUEUE, 2).await;

    let mut failures = Vec::new();
    let mut expected_audit: Vec<AuditRow> = Vec::new();
    for &(method, route, allowed) in MATRIX {
        for caller in &callers {
            let p = fixtures.prepare(&env, method, route, caller).await;
            let a = call(&api, method, &p.path, caller.authorization.as_deref(), p.body.as_ref()).await;
            let what = format!("{method} {} as {}", p.path, caller.label);
            let verdict = match caller.column {
                None => check_401(&a),
                Some(c) if allowed[c] => {
                    if a.status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("status {} instead of 2xx: {}", a.status, a.body))
                    }
                }
                Some(_) => {
                    if a.status == StatusCode::FORBIDDEN {
                        check_problem(&a, "urn:chronos:problem:forbidden")
                    } else {
                        Err(format!("status {} instead of 403: {}", a.status, a.body))
                    }
                }
            };
            if let Err(e) = verdict {
                failures.push(format!("{what}: {e}"));
            }
            if a.status.is_success()
                && let Some((action, subject)) = p.audits
            {
                let subjects: Vec<String> = match (subject.as_str(), action) {
                    ("*", "create_key" | "schedule_create" | "job_start") => vec![a.body["id"].as_str().unwrap().to_owned()],
                    ("*", _) => a.body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect(),
                    _ => vec![subject],
                };
                for s in subjects {
                    expected_audit.push((caller.key_id.clone(), action.to_owned(), s));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} calls answered wrongly:\n{}", failures.len(), MATRIX.len() * callers.len(), failures.join("\n"));
    // admin and operator each cancel, retry, pause, resume, redrive one, redrive the rest, and
    // create, change, delete, pause, resume and trigger a schedule; admin creates and revokes a key
    let actors: BTreeSet<&str> = expected_audit.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(actors, BTreeSet::from([callers[0].key_id.as_str(), callers[1].key_id.as_str()]));
    assert!(expected_audit.len() >= 2 * 5 + 2 * 6 + 2 + 2, "{expected_audit:?}");
    wait_for_audit(&env, expected_audit).await;
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_role_table_covers_every_v1_operation_of_the_api() {
    let spec = serde_json::to_value(chronos_api::openapi::spec()).unwrap();
    let mut in_spec = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                in_spec.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let in_table: BTreeSet<(String, String)> = MATRIX.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(in_table.len(), MATRIX.len(), "no route twice in the table");
    assert_eq!(in_spec, in_table, "every /v1 operation has a row in the role table, and every row is an operation");
}

#[tokio::test]
async fn a_producer_sees_its_own_tasks_and_gets_404_for_tasks_of_other_keys() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, mine) = new_key(&env, "producer-a", Role::Producer).await;
    let (_, theirs) = new_key(&env, "producer-b", Role::Producer).await;
    let (_, admin) = new_key(&env, "admin", Role::Admin).await;
    let (_, viewer) = new_key(&env, "viewer", Role::Viewer).await;
    let create = |key: String, body: Value| {
        let api = &api;
        async move {
            let r = api.as_key(&key, Method::POST, "/v1/tasks").json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }
    };
    let mut own = BTreeSet::new();
    own.insert(create(mine.clone(), json!({ "name": "noop", "queue": "a", "delay_ms": 60_000 })).await);
    own.insert(create(mine.clone(), json!({ "name": "noop", "queue": "b", "delay_ms": 60_000 })).await);
    let batch = api
        .as_key(&mine, Method::POST, "/v1/tasks/batch")
        .json(&json!({ "tasks": [{ "name": "noop", "queue": "a", "delay_ms": 60_000 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), StatusCode::CREATED);
    own.insert(batch.json::<Value>().await.unwrap()["tasks"][0]["task"]["id"].as_str().unwrap().to_owned());
    let other_producers = create(theirs.clone(), json!({ "name": "noop", "queue": "a", "delay_ms": 60_000 })).await;
    let admins = create(admin.clone(), json!({ "name": "noop", "queue": "a", "delay_ms": 60_000 })).await;
    let mut env_task = NewTask::new("noop", json!({})).queue("a").delay(Duration::from_secs(60));
    env_task.created_by = None; // created outside the API (a producer library, the CLI)
    let unowned = env.client.enqueue(env_task).await.unwrap().id.to_string();

    for id in &own {
        for path in [format!("/v1/tasks/{id}"), format!("/v1/tasks/{id}/attempts")] {
            let a = call(&api, "GET", &path, Some(&format!("Bearer {mine}")), None).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        }
    }
    let nonexistent = Uuid::now_v7().to_string();
    let absent = call(&api, "GET", &format!("/v1/tasks/{nonexistent}"), Some(&format!("Bearer {mine}")), None).await;
    for id in [&other_producers, &admins, &unowned] {
        for path in [format!("/v1/tasks/{id}"), format!("/v1/tasks/{id}/attempts")] {
            let a = call(&api, "GET", &path, Some(&format!("Bearer {mine}")), None).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path} is not the producer's: {}", a.body);
            check_problem(&a, "urn:chronos:problem:not-found").unwrap();
            // indistinguishable from a task that does not exist
            assert_eq!(
                a.body["detail"].as_str().unwrap().replace(id.as_str(), "X"),
                absent.body["detail"].as_str().unwrap().replace(&nonexistent, "X")
            );
        }
        // the others still see it
        let a = call(&api, "GET", &format!("/v1/tasks/{id}"), Some(&format!("Bearer {viewer}")), None).await;
        assert_eq!(a.status, StatusCode::OK);
    }

    let ids =
        |v: &Value| -> BTreeSet<String> { v["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect() };
    let list = |key: String, query: &'static str| {
        let api = &api;
        async move {
            let a = call(api, "GET", &format!("/v1/tasks{query}"), Some(&format!("Bearer {key}")), None).await;
            assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
            a.body
        }
    };
    assert_eq!(ids(&list(mine.clone(), "").await), own, "a producer lists only its own tasks");
    assert_eq!(ids(&list(mine.clone(), "?queue=a").await).len(), 2, "filters apply within its own tasks");
    assert_eq!(ids(&list(mine.clone(), "?status=scheduled&name=noop").await), own);
    // paging through one at a time still never reaches another key's task
    let mut paged = BTreeSet::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let a = call(&api, "GET", &format!("/v1/tasks{query}"), Some(&format!("Bearer {mine}")), None).await;
        paged.extend(ids(&a.body));
        match a.body["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, own);
    assert_eq!(ids(&list(theirs, "").await), BTreeSet::from([other_producers.clone()]));
    let everything: BTreeSet<String> = own.iter().cloned().chain([other_producers, admins, unowned]).collect();
    assert_eq!(ids(&list(admin, "").await), everything, "an admin lists every task");
    assert_eq!(ids(&list(viewer, "").await), everything, "a viewer lists every task");
    env.cleanup().await;
}

#[tokio::test]
async fn a_producer_cannot_read_another_keys_task_by_reusing_its_idempotency_key() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, mine) = new_key(&env, "producer-a", Role::Producer).await;
    let (_, theirs) = new_key(&env, "producer-b", Role::Producer).await;
    let secret =
        json!({ "name": "noop", "queue": "billing", "delay_ms": 60_000, "payload": { "card": "4111-1111" }, "idempotency_key": "order-7" });
    let r = api.as_key(&theirs, Method::POST, "/v1/tasks").json(&secret).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let theirs_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&api, "GET", &format!("/v1/tasks/{theirs_id}"), Some(&format!("Bearer {mine}")), None).await.status,
        StatusCode::NOT_FOUND
    );

    let probe = json!({ "name": "noop", "queue": "billing", "delay_ms": 60_000, "idempotency_key": "order-7" });
    let single = call(&api, "POST", "/v1/tasks", Some(&format!("Bearer {mine}")), Some(&probe)).await;
    let batch = call(&api, "POST", "/v1/tasks/batch", Some(&format!("Bearer {mine}")), Some(&json!({ "tasks": [probe] }))).await;
    let mut leaks = Vec::new();
    for (what, a) in [("POST /v1/tasks", &single), ("POST /v1/tasks/batch", &batch)] {
        let text = a.body.to_string();
        if text.contains(&theirs_id) || text.contains("4111-1111") {
            leaks.push(format!("{what} answered {} with the other key's task: {text}", a.status));
        }
    }
    // Idempotency keys are scoped to the API key that submitted them
    // (`PreparedTask::dedupe_key`), so another key's task can never come back.
    assert!(leaks.is_empty(), "a producer reused another key's idempotency key:\n{}", leaks.join("\n"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_head_request_is_authorised_like_the_get_it_mirrors() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, admin) = new_key(&env, "admin", Role::Admin).await;
    let (_, viewer) = new_key(&env, "viewer", Role::Viewer).await;
    let mut wrong = Vec::new();
    for (key, path, get_status) in [(&admin, "/v1/tasks", 200), (&viewer, "/v1/queues", 200), (&viewer, "/v1/keys", 403)] {
        let get = api.as_key(key, Method::GET, path).send().await.unwrap().status();
        assert_eq!(get.as_u16(), get_status, "GET {path}");
        let head = api.as_key(key, Method::HEAD, path).send().await.unwrap().status();
        if head != get {
            wrong.push(format!("HEAD {path}: {head}, but GET: {get}"));
        }
    }
    // axum answers HEAD on every GET route; auth::permission_for must treat it as the GET.
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    env.cleanup().await;
}

#[tokio::test]
async fn every_401_carries_www_authenticate_bearer_and_a_problem_document() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let (_, valid) = new_key(&env, "live", Role::Admin).await;
    let (revoked_id, revoked) = new_key(&env, "revoked", Role::Admin).await;
    let unknown = format!("chk_{}", "ab".repeat(24)); // well-formed, never issued
    let r = api.admin(Method::DELETE, &format!("/v1/keys/{revoked_id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "revoked over the API");
    let bad: Vec<(&str, Option<HeaderValue>)> = vec![
        ("no Authorization header", None),
        ("an empty bearer token", Some(HeaderValue::from_static("Bearer "))),
        ("the Basic scheme", Some(HeaderValue::from_static("Basic YWRtaW46YWRtaW4="))),
        ("a key without a scheme", Some(HeaderValue::from_str(&valid).unwrap())),
        ("a malformed key", Some(HeaderValue::from_static("Bearer not a key at all"))),
        ("an unknown well-formed key", Some(HeaderValue::from_str(&format!("Bearer {unknown}")).unwrap())),
        ("a revoked key", Some(HeaderValue::from_str(&format!("Bearer {revoked}")).unwrap())),
        ("a revoked key, lower-case scheme", Some(HeaderValue::from_str(&format!("bearer {revoked}")).unwrap())),
        ("a header that is not UTF-8", Some(HeaderValue::from_bytes(b"Bearer chk_\xff\xfe").unwrap())),
        ("an over-long key", Some(HeaderValue::from_str(&format!("Bearer chk_{}", "a".repeat(5000))).unwrap())),
    ];
    // an open route, a producer route and an admin-only one: authentication comes first
    for (method, path) in
        [(Method::GET, "/v1/tasks"), (Method::POST, "/v1/tasks"), (Method::GET, "/v1/keys"), (Method::DELETE, "/v1/keys/x")]
    {
        for (what, h) in &bad {
            let mut req = api.http.request(method.clone(), format!("{}{path}", api.base)).json(&json!({ "name": "noop" }));
            if let Some(h) = h {
                req = req.header(AUTHORIZATION, h.clone());
            }
            let r = req.send().await.unwrap();
            let (status, headers) = (r.status(), r.headers().clone());
            let body = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            let a = Answer { status, headers, body };
            if let Err(e) = check_401(&a) {
                panic!("{method} {path} with {what}: {e}");
            }
        }
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(n, 0, "nothing was created by an unauthenticated call");
    let ok = api.as_key(&valid, Method::GET, "/v1/keys").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "the live key still works");
    env.cleanup().await;
}

#[tokio::test]
async fn manual_actions_are_audited_with_the_acting_key_id_as_actor() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["some-queue-no-one-uses"]), None);
    let (admin_id, admin) = new_key(&env, "admin", Role::Admin).await;
    let (operator_id, operator) = new_key(&env, "operator", Role::Operator).await;
    let (_, viewer) = new_key(&env, "viewer", Role::Viewer).await;
    let cancel_me = scheduled_task(&env, &admin_id).await;
    let retry_me = scheduled_task(&env, &admin_id).await;

    let ok = |a: Answer, what: &str| {
        assert!(a.status.is_success(), "{what}: {} {}", a.status, a.body);
        a.body
    };
    // refused attempts leave no trace
    let a = call(&api, "POST", &format!("/v1/tasks/{cancel_me}/cancel"), Some(&format!("Bearer {viewer}")), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = call(&api, "POST", "/v1/keys", Some(&format!("Bearer {operator}")), Some(&json!({ "name": "x", "role": "admin" }))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    let op = Some(format!("Bearer {operator}"));
    let ad = Some(format!("Bearer {admin}"));
    let c = ok(call(&api, "POST", &format!("/v1/tasks/{cancel_me}/cancel"), op.as_deref(), None).await, "cancel");
    assert_eq!(c["status"], "cancelled");
    let r = ok(call(&api, "POST", &format!("/v1/tasks/{retry_me}/retry"), op.as_deref(), None).await, "retry");
    assert_eq!(r["status"], "queued");
    ok(call(&api, "POST", "/v1/queues/mail/pause", op.as_deref(), None).await, "pause");
    ok(call(&api, "POST", "/v1/queues/mail/resume", ad.as_deref(), None).await, "resume");
    let k = ok(call(&api, "POST", "/v1/keys", ad.as_deref(), Some(&json!({ "name": "ci", "role": "producer" }))).await, "create key");
    let new_id = k["id"].as_str().unwrap().to_owned();
    assert_eq!(k["created_by"], admin_id.as_str(), "the key records who created it");
    let a = call(&api, "DELETE", &format!("/v1/keys/{new_id}"), ad.as_deref(), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);

    wait_for_audit(
        &env,
        vec![
            (operator_id.clone(), "cancel".into(), cancel_me.to_string()),
            (operator_id.clone(), "retry_now".into(), retry_me.to_string()),
            (operator_id.clone(), "pause_queue".into(), "mail".into()),
            (admin_id.clone(), "resume_queue".into(), "mail".into()),
            (admin_id.clone(), "create_key".into(), new_id.clone()),
            (admin_id.clone(), "revoke_key".into(), new_id.clone()),
        ],
    )
    .await;
    // the task actions say what the task was before
    let details: Vec<(String, Value)> = sqlx::query_as("SELECT action, detail FROM audit_log WHERE task_id IS NOT NULL ORDER BY action")
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert_eq!(details.len(), 2);
    for (action, d) in &details {
        assert_eq!(d["previous_status"], "scheduled", "{action}: {d}");
    }
    let (role,): (String,) =
        sqlx::query_as("SELECT detail->>'role' FROM audit_log WHERE action = 'create_key'").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(role, "producer");
    worker.stop().await;
    env.cleanup().await;
}
