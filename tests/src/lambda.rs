//! A Lambda Runtime API served by the test (the documented protocol: long-polled
//! `invocation/next`, then `response` or `error`), so the real Lambda binaries run as AWS runs
//! them, one invocation at a time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

#[derive(Clone)]
struct Rt {
    events: Arc<Mutex<mpsc::Receiver<(String, Value)>>>,
    results: mpsc::Sender<(String, Result<Value, Value>)>,
    function: String,
}

async fn next(State(rt): State<Rt>) -> (HeaderMap, String) {
    let (id, event) = rt.events.lock().await.recv().await.expect("test ended");
    let mut h = HeaderMap::new();
    h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(60)).timestamp_millis();
    h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
    let arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{}", rt.function);
    h.insert("lambda-runtime-invoked-function-arn", arn.parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    (h, event.to_string())
}

async fn response(State(rt): State<Rt>, Path(id): Path<String>, body: String) -> StatusCode {
    rt.results.send((id, Ok(serde_json::from_str(&body).unwrap_or(Value::String(body))))).await.unwrap();
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Rt>, Path(id): Path<String>, body: String) -> StatusCode {
    rt.results.send((id, Err(serde_json::from_str(&body).unwrap_or(Value::String(body))))).await.unwrap();
    StatusCode::ACCEPTED
}

async fn init_error(State(rt): State<Rt>, body: String) -> StatusCode {
    rt.results.send(("init".into(), Err(serde_json::from_str(&body).unwrap_or(Value::String(body))))).await.unwrap();
    StatusCode::ACCEPTED
}

/// One Lambda binary running against a Runtime API of the test's own.
pub struct LambdaProcess {
    events: mpsc::Sender<(String, Value)>,
    results: mpsc::Receiver<(String, Result<Value, Value>)>,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    seq: u32,
    /// What the process wrote to stderr (also echoed with CHRONOS_TEST_LOGS).
    stderr: Arc<std::sync::Mutex<String>>,
    /// What it wrote to stdout (its JSON logs and EMF metric lines).
    stdout: Arc<std::sync::Mutex<String>>,
}

/// Keep every line `pipe` gives in `buf` (and echo them with CHRONOS_TEST_LOGS).
fn collect(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static, buf: Arc<std::sync::Mutex<String>>) {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        let echo = std::env::var("CHRONOS_TEST_LOGS").is_ok();
        while let Ok(Some(l)) = lines.next_line().await {
            if echo {
                eprintln!("{l}");
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&l);
            b.push('\n');
        }
    });
}

impl LambdaProcess {
    /// Start the binary `bin` (built next to `chronos`) as function `function` with `env`.
    pub async fn start(bin: &str, function: &str, env: &[(String, String)]) -> LambdaProcess {
        let (ev_tx, ev_rx) = mpsc::channel(4);
        let (res_tx, res_rx) = mpsc::channel(4);
        let rt = Rt { events: Arc::new(Mutex::new(ev_rx)), results: res_tx, function: function.to_owned() };
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(rt);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let path = crate::chronos_bin().with_file_name(bin);
        let mut cmd = tokio::process::Command::new(&path);
        cmd.kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins)", path.display()));
        let (stderr, stdout) = (Arc::default(), Arc::default());
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout));
        LambdaProcess { events: ev_tx, results: res_rx, child, server, seq: 0, stderr, stdout }
    }

    /// For a function that must fail at cold start: waits for the process to exit (within 30 s)
    /// and returns what it wrote to stderr.
    pub async fn start_error(&mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("the function kept running").unwrap();
        assert!(!status.success(), "the function exited successfully");
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stderr.lock().unwrap().clone()
    }

    /// Every line the function wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Invoke with `event`; the function's answer (`Ok`) or its error report (`Err`).
    pub async fn invoke(&mut self, event: Value) -> Result<Value, Value> {
        self.seq += 1;
        let id = format!("req-{}", self.seq);
        self.events.send((id.clone(), event)).await.unwrap();
        let (rid, out) = tokio::time::timeout(Duration::from_secs(60), self.results.recv())
            .await
            .unwrap_or_else(|_| panic!("invocation {id} not answered within 60 s"))
            .expect("runtime API stopped");
        if rid == "init" {
            panic!("the function failed to start: {out:?}");
        }
        assert_eq!(rid, id);
        out
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.server.abort();
    }
}

/// An EventBridge scheduled event, as a `rate(1 minute)` rule sends it.
pub fn scheduled_event(rule: &str) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::now_v7().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:123456789012:rule/{rule}")],
        "detail": {}
    })
}

/// An API Gateway HTTP API (payload format 2.0) event for the `$default` route and stage.
pub fn http_api_event(method: &str, path: &str, bearer: Option<&str>, body: Option<&Value>) -> Value {
    let mut headers = json!({"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "chronos-tests/1.0"});
    if let Some(k) = bearer {
        headers["authorization"] = Value::String(format!("Bearer {k}"));
    }
    if body.is_some() {
        headers["content-type"] = Value::String("application/json".into());
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "chronos-tests/1.0"},
            "requestId": uuid::Uuid::now_v7().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "03/Dec/2026:12:00:00 +0000",
            "timeEpoch": chrono::Utc::now().timestamp_millis()
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
}
