//! Traces: a producer's `traceparent` on `POST /v1/tasks` is continued by the API's spans and,
//! through the task's stored trace context, by the worker's (claim, run, ack), exported with
//! OTLP/HTTP from real `chronos api` and `chronos worker` processes to a collector in this test.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chronos_tests::{ADMIN_KEY, TestEnv, chronos_bin, wait_until};
use serde_json::{Value, json};

/// One exported span: its service, trace id, span id, parent span id and name.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attrs: Value,
}

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP collector taking JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`): what it
/// receives, flattened to [`Span`]s.
async fn collector() -> (String, Spans) {
    async fn traces(State(spans): State<Spans>, body: Bytes) -> &'static str {
        let v: Value = serde_json::from_slice(&body).expect("OTLP JSON");
        let mut out = spans.lock().unwrap();
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attrs = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| (a["key"].as_str().unwrap_or_default().to_owned(), a["value"].clone()))
                        .collect::<serde_json::Map<_, _>>();
                    out.push(Span {
                        service: service.clone(),
                        trace: s["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        id: s["spanId"].as_str().unwrap_or_default().to_lowercase(),
                        parent: s["parentSpanId"].as_str().unwrap_or_default().to_lowercase(),
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        attrs: Value::Object(attrs),
                    });
                }
            }
        }
        "{}"
    }
    let spans: Spans = Arc::default();
    let app = Router::new().route("/v1/traces", post(traces)).with_state(spans.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn spawn(env: &TestEnv, role: &str, otel: &[(&str, &str)], extra: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg(role).kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null());
    if std::env::var("CHRONOS_TEST_LOGS").is_err() {
        cmd.stderr(Stdio::null());
    }
    cmd.envs(env.child_env()).envs(otel.iter().copied()).envs(extra.iter().copied());
    cmd.spawn().expect("spawn chronos")
}

async fn wait_healthy(api: &str) {
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if http.get(format!("http://{api}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the API at {api} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_sent_to_the_api_is_continued_by_the_workers_spans() {
    let env = TestEnv::new().await;
    let (endpoint, spans) = collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let api = free_addr();
    let mut api_p = spawn(&env, "api", &otel, &[("CHRONOS_API_ADDR", &api), ("CHRONOS_ADMIN_KEY", ADMIN_KEY)]);
    let mut worker = spawn(&env, "worker", &otel, &[]);
    wait_healthy(&api).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{api}/v1/tasks"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", format!("00-{trace}-{producer_span}-01"))
        .json(&json!({ "name": "sleep", "payload": { "ms": 50 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let task: Value = r.json().await.unwrap();
    assert_eq!(task["trace_id"], trace, "the task names the trace it continues: {task}");
    let id: uuid::Uuid = task["id"].as_str().unwrap().parse().unwrap();
    // A task sent without one starts a trace of its own in the API.
    let r = http.post(format!("http://{api}/v1/tasks")).bearer_auth(ADMIN_KEY).json(&json!({ "name": "noop" })).send().await.unwrap();
    let other: Value = r.json().await.unwrap();
    let other_trace = other["trace_id"].as_str().expect("the API's own trace").to_owned();
    assert_ne!(other_trace, trace);

    wait_until(Duration::from_secs(30), "the task completed", || async { env.status(id).await == "completed" }).await;
    let find = |name: &'static str, service: &'static str| {
        let spans = spans.clone();
        move || {
            let spans = spans.clone();
            async move { spans.lock().unwrap().iter().any(|s| s.trace == trace && s.name == name && s.service == service) }
        }
    };
    wait_until(Duration::from_secs(20), "the worker's ack span was exported", find("chronos.ack", "chronos-worker")).await;
    wait_until(Duration::from_secs(20), "the API's request span was exported", find("POST /v1/tasks", "chronos-api")).await;

    let all = spans.lock().unwrap().clone();
    let ours: Vec<&Span> = all.iter().filter(|s| s.trace == trace).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = ours.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span in the trace: {ours:#?}");
        found[0]
    };
    // API: the request continues the producer's span; enqueue is its child.
    let request = one("POST /v1/tasks");
    assert_eq!(request.parent, producer_span);
    // OTLP JSON writes an int64 as a string; accept a number too.
    let status = &request.attrs["http.response.status_code"]["intValue"];
    assert!(status == &json!("201") || status == &json!(201), "{:?}", request.attrs);
    let enqueue = one("chronos.enqueue");
    assert_eq!(enqueue.parent, request.id);
    // Worker: the task span continues the enqueue span; claim, the handler's run and the ack
    // are its children.
    let task_span = one("chronos.task");
    assert_eq!(task_span.service, "chronos-worker");
    assert_eq!(task_span.parent, enqueue.id, "the worker continues the span that enqueued the task");
    assert_eq!(task_span.attrs["chronos.task_id"]["stringValue"], json!(id.to_string()));
    assert_eq!(task_span.attrs["chronos.outcome"]["stringValue"], json!("completed"));
    for child in ["chronos.claim", "attempt", "chronos.ack"] {
        assert_eq!(one(child).parent, task_span.id, "{child} is a child of chronos.task");
    }
    // No library's spans (sqlx, hyper, the AWS SDK) leave the process.
    assert!(all.iter().all(|s| s.name.starts_with("chronos.") || s.name == "attempt" || s.name.contains(" /")), "{all:#?}");
    // The other task's worker spans are in the API's trace for it.
    wait_until(Duration::from_secs(20), "the other task's worker span", || {
        let (spans, t) = (spans.clone(), other_trace.clone());
        async move { spans.lock().unwrap().iter().any(|s| s.trace == t && s.name == "chronos.task") }
    })
    .await;

    for p in [&mut api_p, &mut worker] {
        p.start_kill().unwrap();
        let _ = p.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_a_valid_traceparent_is_kept_and_an_invalid_one_ignored() {
    let env = TestEnv::new().await;
    let api = free_addr();
    let mut api_p = spawn(&env, "api", &[], &[("CHRONOS_API_ADDR", &api), ("CHRONOS_ADMIN_KEY", ADMIN_KEY)]);
    wait_healthy(&api).await;
    let http = reqwest::Client::new();
    let send = |tp: &'static str| {
        http.post(format!("http://{api}/v1/tasks"))
            .bearer_auth(ADMIN_KEY)
            .header("traceparent", tp)
            .json(&json!({ "name": "noop", "delay_ms": 3_600_000 }))
            .send()
    };
    let kept: Value = send("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").await.unwrap().json().await.unwrap();
    assert_eq!(kept["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    let id: uuid::Uuid = kept["id"].as_str().unwrap().parse().unwrap();
    let stored = env.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(stored.trace_context.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    let r = send("00-not-a-trace-01").await.unwrap();
    assert_eq!(r.status(), 201, "a malformed traceparent is ignored, as W3C asks, not refused");
    let ignored: Value = r.json().await.unwrap();
    assert!(ignored.get("trace_id").is_none(), "{ignored}");
    api_p.start_kill().unwrap();
    let _ = api_p.wait().await;
    env.cleanup().await;
}
