//! Observability: a handler's own log lines are captured with its attempt (bounded), returned by
//! `GET /v1/tasks/{id}/attempts`, found by the log search, and a worker's JSON log lines name
//! the attempt they belong to.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_core::model::NewTask;
use chronos_tests::{TestEnv, chronos_bin, diag_registry, random_suffix, start_api, start_worker, wait_until, worker_config};
use chronos_workers::{Handler, HandlerError, Task, TaskContext};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Logs `lines` lines at info naming the word whose letters `drow` has backwards (so the word
/// itself is in no payload the search also reads), then succeeds.
struct Chatty;

impl Handler for Chatty {
    fn kind(&self) -> &'static str {
        "chatty"
    }
    async fn handle(&self, _ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let p: Value = task.payload()?;
        let word: String = p["drow"].as_str().unwrap_or_default().chars().rev().collect();
        for i in 0..p["lines"].as_u64().unwrap_or(1) {
            tracing::info!(line = i, "reconciling the ledger for {word}");
        }
        Ok(())
    }
}

/// This test process's subscriber: the worker's capture layer, as `chronos` installs it.
fn install_capture() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(chronos_workers::logs::CaptureLayer)
        .try_init();
}

async fn attempts(api: &chronos_tests::RunningApi, id: uuid::Uuid) -> Vec<Value> {
    let r: Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks/{id}/attempts")).send().await.unwrap().json().await.unwrap();
    r["attempts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_logged_inside_a_handler_is_stored_with_its_attempt_and_found_by_search() {
    install_capture();
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut registry = diag_registry();
    registry.register(Chatty).unwrap();
    let worker = start_worker(&env, registry, worker_config(&["default"]), None);

    // A word only the handler's log line has (not the name, the payload or an error).
    let word = format!("kumquat{}", random_suffix());
    let one =
        env.client.enqueue(NewTask::new("chatty", json!({ "lines": 1, "drow": word.chars().rev().collect::<String>() }))).await.unwrap().id;
    let many = env.client.enqueue(NewTask::new("chatty", json!({ "lines": 300, "drow": "x" }))).await.unwrap().id;
    let quiet = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap().id;
    for id in [one, many, quiet] {
        wait_until(Duration::from_secs(20), "the task completed in Postgres", || async { env.status(id).await == "completed" }).await;
    }

    let a = attempts(&api, one).await;
    assert_eq!(a.len(), 1, "{a:?}");
    let logs = a[0]["logs"].as_str().expect("the attempt has its logs");
    assert!(logs.contains(&format!("INFO {}: reconciling the ledger for {word}", module_path!())), "{logs}");
    assert!(logs.contains("line=0"), "fields are kept: {logs}");
    assert_eq!(logs.lines().count(), 1, "{logs}");

    let found: Value = api.admin(reqwest::Method::GET, &format!("/v1/tasks?q={word}")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = found["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![one.to_string()], "the search finds the word of the log line");

    // 300 lines: the last 200 kept, the first line says so.
    let logs = attempts(&api, many).await[0]["logs"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 201, "{}", lines[0]);
    assert!(lines[0].starts_with("[100 earlier lines not kept"), "{}", lines[0]);
    assert!(lines[1].contains("line=100"), "{}", lines[1]);
    assert!(lines[200].contains("line=299"), "{}", lines[200]);

    // A handler that says nothing stores nothing, and the test's own line (outside any attempt)
    // is in no attempt.
    tracing::info!("{word} outside an attempt");
    assert_eq!(attempts(&api, quiet).await[0]["logs"], Value::Null);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fail_handler_logs_its_message_which_a_worker_process_stores_and_writes_as_a_json_line_naming_the_attempt() {
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.envs(env.child_env()).env("CHRONOS_LOG_FORMAT", "json").env("CHRONOS_WORKER_ID", "w-observed");
    let mut child = cmd.spawn().expect("spawn chronos worker");
    let stderr = child.stderr.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            keep.lock().unwrap().push(l);
        }
    });

    let message = format!("card declined {}", random_suffix());
    let id = env
        .client
        .enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true, "message": message })).queue("default"))
        .await
        .unwrap()
        .id;
    wait_until(Duration::from_secs(30), "the task is dead in Postgres", || async { env.status(id).await == "dead" }).await;

    let a = attempts(&api, id).await;
    let logs = a[0]["logs"].as_str().expect("the attempt has its logs");
    assert!(logs.contains(&format!("WARN chronos_workers::handlers::diag: {message}")), "{logs}");
    assert_eq!(a[0]["error"], message.as_str());

    let line = {
        let seen = seen.lock().unwrap();
        seen.iter().find(|l| l.contains(&message)).cloned().unwrap_or_else(|| panic!("no log line with the message in {seen:?}"))
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["fields"]["message"], message.as_str(), "{v}");
    let span = &v["span"];
    assert_eq!(span["task_id"], id.to_string(), "{v}");
    assert_eq!(span["queue"], "default", "{v}");
    assert_eq!(span["task_name"], "fail", "{v}");
    assert_eq!(span["attempt"], 1, "{v}");
    assert_eq!(span["worker"], "w-observed", "{v}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    env.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics, scraped from real processes.

/// One sample of a Prometheus text exposition: name, labels, value.
type Sample = (String, std::collections::BTreeMap<String, String>, f64);

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("bad label in {line}"));
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().unwrap_or_else(|_| panic!("bad value in {line}"))));
    }
    out
}

/// The value of `name` whose labels include `want`, 0 when absent.
fn sample(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
        .unwrap_or(0.0)
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn scrape(url: &str) -> Vec<Sample> {
    for _ in 0..250 {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return parse_exposition(&r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no metrics at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_counts_each_tasks_life_in_its_metrics() {
    let env = TestEnv::new().await;
    let addr = free_addr();
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.envs(env.child_env()).env("CHRONOS_METRICS_ADDR", &addr);
    let mut child = cmd.spawn().expect("spawn chronos worker");
    let url = format!("http://{addr}/metrics");
    let before = scrape(&url).await;
    let q = ("queue", "default");
    assert_eq!(sample(&before, "chronos_tasks_started_total", &[q, ("name", "noop")]), 0.0);

    let fast = chronos_core::model::Backoff { base_ms: 20, cap_ms: 20, ..Default::default() };
    for _ in 0..3 {
        env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap();
    }
    let sleep = env.client.enqueue(NewTask::new("sleep", json!({ "ms": 250 }))).await.unwrap().id;
    let flaky = env.client.enqueue(NewTask::new("fail", json!({ "times": 1 })).backoff(fast)).await.unwrap().id;
    let doomed = env.client.enqueue(NewTask::new("fail", json!({ "times": 9, "permanent": true }))).await.unwrap().id;
    for (id, status) in [(sleep, "completed"), (flaky, "completed"), (doomed, "dead")] {
        wait_until(Duration::from_secs(30), "the task finished", || async { env.status(id).await == status }).await;
    }
    let after = scrape(&url).await;
    let noop = [q, ("name", "noop")];
    let fail = [q, ("name", "fail")];
    assert_eq!(sample(&after, "chronos_tasks_started_total", &noop), 3.0);
    assert_eq!(sample(&after, "chronos_tasks_completed_total", &noop), 3.0);
    assert_eq!(sample(&after, "chronos_task_wait_seconds_count", &noop), 3.0);
    // fail: the flaky task's first attempt retried, its second completed; the doomed one dead.
    assert_eq!(sample(&after, "chronos_tasks_started_total", &fail), 3.0);
    assert_eq!(sample(&after, "chronos_tasks_retried_total", &fail), 1.0);
    assert_eq!(sample(&after, "chronos_tasks_dead_total", &fail), 1.0);
    assert_eq!(sample(&after, "chronos_tasks_failed_total", &fail), 2.0);
    assert_eq!(sample(&after, "chronos_tasks_completed_total", &fail), 1.0);
    let sleep_l = [q, ("name", "sleep")];
    assert_eq!(sample(&after, "chronos_task_run_seconds_count", &sleep_l), 1.0);
    let ran = sample(&after, "chronos_task_run_seconds_sum", &sleep_l);
    assert!((0.25..5.0).contains(&ran), "the sleep ran {ran} s");
    assert_eq!(sample(&after, "chronos_task_run_seconds_bucket", &[q, ("name", "sleep"), ("le", "0.1")]), 0.0);
    assert_eq!(sample(&after, "chronos_task_run_seconds_bucket", &[q, ("name", "sleep"), ("le", "0.5")]), 1.0);
    assert!(after.iter().any(|(n, l, _)| n == "chronos_queue_depth" && l.get("queue").map(String::as_str) == Some("default")));
    assert_eq!(sample(&after, "chronos_queue_depth", &[q]), 0.0);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronos_dev_exports_the_metrics_of_every_role_on_the_apis_metrics() {
    let env = TestEnv::new().await;
    let (api, dash) = (free_addr(), free_addr());
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("dev").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.envs(env.child_env())
        .env("CHRONOS_API_ADDR", &api)
        .env("CHRONOS_DASHBOARD_ADDR", &dash)
        .env("CHRONOS_ADMIN_KEY", chronos_tests::ADMIN_KEY);
    let mut child = cmd.spawn().expect("spawn chronos dev");
    let url = format!("http://{api}/metrics");
    scrape(&url).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{api}/v1/tasks"))
        .bearer_auth(chronos_tests::ADMIN_KEY)
        .json(&json!({ "name": "noop", "payload": {} }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let id: uuid::Uuid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    wait_until(Duration::from_secs(30), "the task completed", || async { env.status(id).await == "completed" }).await;
    let l = [("queue", "default"), ("name", "noop")];
    let m = scrape(&url).await;
    assert_eq!(sample(&m, "chronos_tasks_enqueued_total", &l), 1.0, "the API's count");
    assert_eq!(sample(&m, "chronos_tasks_completed_total", &l), 1.0, "the worker's count, on the API's /metrics");
    assert_eq!(sample(&m, "chronos_task_wait_seconds_count", &l), 1.0);
    assert!(sample(&m, "chronos_http_requests_total", &[("status", "2xx")]) >= 1.0);
    let d = scrape(&format!("http://{dash}/metrics")).await;
    assert_eq!(sample(&d, "chronos_tasks_completed_total", &l), 1.0, "the dashboard exports the same recorder");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    env.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// CloudWatch embedded metric format.

/// Validate `lines` against `tests/schemas/emf.schema.json` with Python's `jsonschema` (it comes
/// with schemathesis in the venv scripts/lib.sh builds), and check what a schema cannot say:
/// every dimension and metric a directive names is a member of the line's root.
fn assert_valid_emf(lines: &[Value]) {
    for l in lines {
        for d in l["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for set in d["Dimensions"].as_array().unwrap() {
                for dim in set.as_array().unwrap() {
                    assert!(l[dim.as_str().unwrap()].is_string(), "dimension {dim} has no string member: {l}");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                assert!(l[m["Name"].as_str().unwrap()].is_number(), "metric {} has no number member: {l}", m["Name"]);
            }
        }
    }
    let python = std::env::var("CHRONOS_TEST_PYTHON").expect("CHRONOS_TEST_PYTHON: a Python with jsonschema (scripts/lib.sh's venv)");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/emf.schema.json");
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             v = jsonschema.Draft7Validator(json.load(open(sys.argv[1])))\n\
             bad = [(n, e.message) for n, line in enumerate(sys.stdin) for e in v.iter_errors(json.loads(line))]\n\
             print(bad)\n\
             sys.exit(1 if bad else 0)",
            schema,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "EMF lines outside the specification: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_chronos_metrics_emf_writes_its_metrics_as_embedded_metric_format_lines_that_validate() {
    let env = TestEnv::new().await;
    let mut cmd = tokio::process::Command::new(chronos_bin());
    cmd.arg("worker").kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    cmd.envs(env.child_env())
        .env("CHRONOS_METRICS", "emf")
        .env("CHRONOS_METRICS_SERVICE", "svc-emf")
        .env("CHRONOS_METRICS_INTERVAL_S", "1");
    let mut child = cmd.spawn().expect("spawn chronos worker");
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            keep.lock().unwrap().push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")));
        }
    });
    for _ in 0..2 {
        env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap();
    }
    env.client.enqueue(NewTask::new("fail", json!({ "times": 1, "permanent": true }))).await.unwrap();
    let total = |name: &str, metric: &str| -> f64 {
        seen.lock().unwrap().iter().filter(|l| l["Name"] == name).filter_map(|l| l[metric].as_f64()).sum()
    };
    wait_until(Duration::from_secs(20), "EMF lines counting the tasks", || async {
        total("noop", "chronos_tasks_completed_total") == 2.0 && total("fail", "chronos_tasks_dead_total") == 1.0
    })
    .await;
    let lines = seen.lock().unwrap().clone();
    let noop = lines.iter().find(|l| l["Name"] == "noop" && l["chronos_tasks_completed_total"].as_f64() > Some(0.0)).unwrap();
    assert_eq!(noop["Service"], "svc-emf");
    assert_eq!(noop["Queue"], "default");
    let directive = &noop["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Chronos");
    assert_eq!(directive["Dimensions"], json!([["Service"], ["Service", "Queue", "Name"]]), "also under Service alone, as the alarms read");
    assert!(noop["chronos_task_wait_seconds"].is_number(), "{noop}");
    assert!(lines.iter().any(|l| l["chronos_queue_depth"].is_number() && l["Queue"] == "default"));
    assert_valid_emf(&lines);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    env.cleanup().await;
}

/// The EMF lines among a Lambda function's stdout (its JSON log lines are the rest).
fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|l| l.get("_aws").is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_tick_lambdas_write_their_metrics_as_emf_lines_after_their_invocations() {
    use chronos_tests::lambda::{LambdaProcess, http_api_event, scheduled_event};
    let env = TestEnv::new().await;
    let mut vars: Vec<(String, String)> = env.child_env();
    vars.push(("CHRONOS_ADMIN_KEY".into(), chronos_tests::ADMIN_KEY.into()));
    vars.push(("CHRONOS_METRICS_INTERVAL_S".into(), "1".into()));
    let mut api = LambdaProcess::start("chronos-api-lambda", "chronos-api", &vars).await;
    let key = Some(chronos_tests::ADMIN_KEY);
    for _ in 0..2 {
        let created = api.invoke(http_api_event("POST", "/v1/tasks", key, Some(&json!({ "name": "noop", "queue": "emf" })))).await.unwrap();
        assert_eq!(created["statusCode"], 201, "{created}");
    }
    // The first request wrote the lines of the period before it; one a period later writes the
    // second task's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.invoke(http_api_event("GET", "/healthz", None, None)).await.unwrap();
    let total =
        |lines: &[Value], metric: &str| -> f64 { lines.iter().filter(|l| l["Queue"] == "emf").filter_map(|l| l[metric].as_f64()).sum() };
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), "the API lambda's EMF lines count both tasks", || {
        lines = emf_lines(&api.stdout());
        let n = total(&lines, "chronos_tasks_enqueued_total");
        async move { n == 2.0 }
    })
    .await;
    assert!(lines.iter().all(|l| l["Service"] == "chronos-api"), "{lines:?}");
    assert!(lines.iter().any(|l| l["chronos_http_requests_total"].as_f64() > Some(0.0) && l["Status"] == "2xx"), "{lines:?}");
    assert_valid_emf(&lines);
    drop(api);

    // The tick writes after every run, with the queue gauges it reads from Redis.
    let mut tick = LambdaProcess::start("chronos-tick-lambda", "chronos-tick", &vars).await;
    tick.invoke(scheduled_event("chronos-tick")).await.unwrap();
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), "the tick lambda's EMF lines", || {
        lines = emf_lines(&tick.stdout());
        let depth = lines.iter().find(|l| l["Queue"] == "emf").and_then(|l| l["chronos_queue_depth"].as_f64());
        async move { depth == Some(2.0) }
    })
    .await;
    assert!(lines.iter().all(|l| l["Service"] == "chronos-tick"), "{lines:?}");
    assert_valid_emf(&lines);
    env.cleanup().await;
}

/// Logs a line, then works until it is stopped.
struct Stubborn;

impl Handler for Stubborn {
    fn kind(&self) -> &'static str {
        "stubborn"
    }
    async fn handle(&self, ctx: TaskContext, _task: Task) -> Result<(), HandlerError> {
        tracing::info!("stubborn: rendering page 1 of 500");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
            _ = ctx.cancelled() => Err(HandlerError::Cancelled),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_handed_back_at_shutdown_keeps_what_its_handler_logged() {
    install_capture();
    let env = TestEnv::new().await;
    let api = start_api(&env, None).await;
    let mut registry = diag_registry();
    registry.register(Stubborn).unwrap();
    let mut cfg = worker_config(&["default"]);
    cfg.shutdown_grace = Duration::from_millis(300);
    let worker = start_worker(&env, registry, cfg, None);
    let id = env.client.enqueue(NewTask::new("stubborn", json!({}))).await.unwrap().id;
    wait_until(Duration::from_secs(10), "it runs", || async { env.status(id).await == "running" }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.stop().await; // the grace runs out: the lease is handed back
    wait_until(Duration::from_secs(10), "the released attempt in Postgres", || async {
        attempts(&api, id).await.first().is_some_and(|a| a["outcome"] == "released")
    })
    .await;
    let a = attempts(&api, id).await;
    let logs = a[0]["logs"].as_str().unwrap_or_default();
    assert!(logs.contains("stubborn: rendering page 1 of 500"), "the released attempt keeps its lines: {a:?}");
    env.cleanup().await;
}
