//! The built-in `http` and `email` handlers against real servers on 127.0.0.1: a small HTTP
//! server written here, and an SMTP server run by Python's aiosmtpd (`CHRONOS_TEST_PYTHON`,
//! provided by `scripts/test`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream as StdTcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_workers::handlers::http::{SIGNATURE_HEADER, verify_signature};
use chronos_workers::handlers::{EmailHandler, HttpHandler};
use chronos_workers::{Handler, HandlerError, Task, TaskContext};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "s3cret";

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server. Paths choose the answer:
//   /status/<code>  answers <code> with the body "body of <code>"
//   /slow/<ms>      waits <ms>, then answers 200
//   /redirect       answers 302 to /status/200
//   /busy/<code>/<retry-after>  the first request: <code> with that Retry-After; later: 200
//   anything else   answers 200
// Every request is recorded before it is answered.

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Lower-cased names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct HttpServer {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    async fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, rec.clone()));
            }
        });
        HttpServer { base, received, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn only_request(&self) -> Received {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected exactly one request, got {r:?}");
        r.into_iter().next().unwrap()
    }
}

async fn serve(mut stream: TcpStream, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    received.lock().unwrap().push(Received { method, path: path.clone(), headers, body });

    let (status, extra, body) = if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap();
        (code, String::new(), format!("body of {code}"))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        (200, String::new(), "slow ok".to_owned())
    } else if let Some(rest) = path.strip_prefix("/busy/") {
        let (code, after) = rest.split_once('/').unwrap();
        let seen = received.lock().unwrap().iter().filter(|r| r.path == path).count();
        if seen == 1 {
            (code.parse().unwrap(), format!("Retry-After: {after}\r\n"), "busy".to_owned())
        } else {
            (200, String::new(), "ok".to_owned())
        }
    } else if path == "/redirect" {
        (302, "Location: /status/200\r\n".to_owned(), String::new())
    } else if path == "/big-error" {
        (500, String::new(), "x".repeat(10_000))
    } else {
        (200, String::new(), "ok".to_owned())
    };
    let response = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn task(name: &str, payload: Value) -> Task {
    Task { name: name.into(), payload_json: payload.to_string() }
}

fn ctx() -> TaskContext {
    TaskContext::detached(uuid::Uuid::now_v7(), 1).0
}

async fn call_http(handler: &HttpHandler, payload: Value) -> Result<(), HandlerError> {
    tokio::time::timeout(Duration::from_secs(20), handler.handle(ctx(), task("http", payload))).await.expect("the http handler hung")
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn assert_retryable(r: &Result<(), HandlerError>, what: &str) {
    assert!(matches!(r, Err(HandlerError::Retryable { .. })), "{what}: expected Retryable, got {r:?}");
}

fn assert_permanent(r: &Result<(), HandlerError>, what: &str) {
    assert!(matches!(r, Err(HandlerError::Permanent { .. })), "{what}: expected Permanent, got {r:?}");
}

// ---------------------------------------------------------------------------------------------
// http

#[tokio::test]
async fn http_200_response_succeeds() {
    let server = HttpServer::start().await;
    let r = call_http(&HttpHandler::new(None), json!({"url": server.url("/status/200")})).await;
    assert_eq!(r, Ok(()));
    assert_eq!(server.only_request().method, "GET");
}

#[tokio::test]
async fn http_500_503_429_and_408_are_retryable() {
    let server = HttpServer::start().await;
    let h = HttpHandler::new(None);
    for code in [500, 503, 429, 408] {
        let r = call_http(&h, json!({"url": server.url(&format!("/status/{code}")), "body": "x"})).await;
        assert_retryable(&r, &format!("status {code}"));
    }
}

#[tokio::test]
async fn http_400_404_and_410_are_permanent() {
    let server = HttpServer::start().await;
    let h = HttpHandler::new(None);
    for code in [400, 404, 410] {
        let r = call_http(&h, json!({"url": server.url(&format!("/status/{code}"))})).await;
        assert_permanent(&r, &format!("status {code}"));
    }
}

#[tokio::test]
async fn http_error_names_the_status_and_url_and_carries_the_response_body() {
    let server = HttpServer::start().await;
    let url = server.url("/status/503");
    let Err(HandlerError::Retryable { message, detail }) = call_http(&HttpHandler::new(None), json!({"url": url})).await else {
        panic!("expected Retryable")
    };
    assert!(message.contains("503") && message.contains(&url), "message: {message}");
    assert_eq!(detail, "body of 503");
}

#[tokio::test]
async fn http_error_detail_keeps_at_most_512_bytes_of_the_body() {
    let server = HttpServer::start().await;
    let Err(HandlerError::Retryable { detail, .. }) = call_http(&HttpHandler::new(None), json!({"url": server.url("/big-error")})).await
    else {
        panic!("expected Retryable")
    };
    assert_eq!(detail, "x".repeat(512));
}

#[tokio::test]
async fn http_redirect_is_not_followed_and_is_permanent() {
    let server = HttpServer::start().await;
    let r = call_http(&HttpHandler::new(None), json!({"url": server.url("/redirect"), "body": {"a": 1}})).await;
    assert_permanent(&r, "302");
    assert!(r.unwrap_err().message().contains("302"));
    assert_eq!(server.requests().len(), 1, "the redirect must not be followed");
}

#[tokio::test]
async fn http_connection_refused_is_retryable() {
    let r = call_http(&HttpHandler::new(None), json!({"url": format!("http://127.0.0.1:{}/", closed_port())})).await;
    assert_retryable(&r, "closed port");
}

#[tokio::test]
async fn http_response_slower_than_timeout_ms_is_retryable() {
    let server = HttpServer::start().await;
    let started = Instant::now();
    let r = call_http(&HttpHandler::new(None), json!({"url": server.url("/slow/5000"), "timeout_ms": 200})).await;
    assert_retryable(&r, "timeout");
    assert!(r.unwrap_err().message().contains("timed out"));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn http_signature_verifies_with_the_secret_and_not_with_another() {
    let server = HttpServer::start().await;
    let r = call_http(&HttpHandler::new(Some(SECRET.into())), json!({"url": server.url("/hook"), "body": {"event": "paid", "amount": 42}}))
        .await;
    assert_eq!(r, Ok(()));
    let req = server.only_request();
    let sig = req.headers.get(&SIGNATURE_HEADER.to_ascii_lowercase()).expect("signature header");
    let (t, v1) = sig.split_once(',').unwrap();
    let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t) < 60, "t={t} is not now ({now})");
    assert_eq!(v1.strip_prefix("v1=").unwrap().len(), 64);

    assert!(verify_signature(SECRET, sig, &req.body));
    assert!(!verify_signature("another secret", sig, &req.body));
    assert!(!verify_signature(SECRET, sig, b"{\"event\":\"paid\",\"amount\":4200}"), "a changed body must not verify");
}

#[tokio::test]
async fn http_signature_matches_an_independent_hmac_of_t_dot_body() {
    use hmac::{Hmac, Mac};
    let server = HttpServer::start().await;
    call_http(&HttpHandler::new(Some(SECRET.into())), json!({"url": server.url("/hook"), "body": "raw text"})).await.unwrap();
    let req = server.only_request();
    let sig = &req.headers[&SIGNATURE_HEADER.to_ascii_lowercase()];
    let (t, v1) = sig.split_once(',').unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.", t.strip_prefix("t=").unwrap()).as_bytes());
    mac.update(b"raw text");
    assert_eq!(v1.strip_prefix("v1=").unwrap(), hex::encode(mac.finalize().into_bytes()));
}

#[tokio::test]
async fn http_without_a_secret_sends_no_signature_but_still_sends_task_headers() {
    let server = HttpServer::start().await;
    let (ctx, _cancel) = TaskContext::detached(uuid::Uuid::now_v7(), 3);
    let id = ctx.id;
    let r = HttpHandler::new(None).handle(ctx, task("http", json!({"url": server.url("/hook"), "body": "x"}))).await;
    assert_eq!(r, Ok(()));
    let req = server.only_request();
    assert!(!req.headers.contains_key(&SIGNATURE_HEADER.to_ascii_lowercase()), "{:?}", req.headers);
    assert_eq!(req.headers["x-chronos-task-id"], id.to_string());
    assert_eq!(req.headers["x-chronos-attempt"], "3");
    assert_eq!(req.headers["idempotency-key"], id.to_string());
}

#[tokio::test]
async fn http_json_body_is_sent_as_application_json_with_post_by_default() {
    let server = HttpServer::start().await;
    let body = json!({"user": 7, "tags": ["a", "b"]});
    call_http(&HttpHandler::new(None), json!({"url": server.url("/hook"), "body": body, "headers": {"X-Custom": "yes"}})).await.unwrap();
    let req = server.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["x-custom"], "yes");
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap(), body);
}

#[tokio::test]
async fn http_string_body_is_sent_verbatim_with_the_requested_method() {
    let server = HttpServer::start().await;
    let payload = json!({
        "url": server.url("/hook"),
        "method": "put",
        "body": "a=1&b=2",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    });
    call_http(&HttpHandler::new(None), payload).await.unwrap();
    let req = server.only_request();
    assert_eq!(req.method, "PUT");
    assert_eq!(req.body, b"a=1&b=2");
    assert_eq!(req.headers["content-type"], "application/x-www-form-urlencoded");
}

#[tokio::test]
async fn http_invalid_url_is_permanent() {
    let h = HttpHandler::new(None);
    for url in ["not a url", "ftp://127.0.0.1/file", "file:///etc/passwd"] {
        assert_permanent(&call_http(&h, json!({"url": url})).await, url);
    }
}

#[tokio::test]
async fn http_payload_with_unknown_fields_is_permanent() {
    let r = call_http(&HttpHandler::new(None), json!({"url": "http://127.0.0.1/", "timeout": 5})).await;
    assert_permanent(&r, "unknown field");
}

#[tokio::test]
async fn http_cancellation_returns_cancelled_quickly_against_a_slow_server() {
    let server = HttpServer::start().await;
    let (ctx, cancel) = TaskContext::detached(uuid::Uuid::now_v7(), 1);
    let h = HttpHandler::new(None);
    let call = h.handle(ctx, task("http", json!({"url": server.url("/slow/10000")})));
    // Cancel once the request is in flight (the server has it and is sleeping on it).
    let received = server.received.clone();
    let canceller = tokio::spawn(async move {
        while received.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        Instant::now()
    });
    let r = tokio::time::timeout(Duration::from_secs(5), call).await.expect("cancellation was not honoured");
    let returned = Instant::now();
    assert_eq!(r, Err(HandlerError::Cancelled));
    let cancelled_at = canceller.await.unwrap();
    assert!(returned.duration_since(cancelled_at) < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// email

/// An aiosmtpd server that appends every accepted message to a JSON-lines file. Recipients
/// starting with `reject` get a 550 and those starting with `busy` a 451.
const SMTP_SERVER: &str = r#"
import json, sys
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Recorder:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "content": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 Message accepted for delivery"

controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
controller.start()
# Exit when the test process goes away, even if it could not kill us.
sys.stdin.read()
controller.stop()
"#;

struct SmtpServer {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let python = std::env::var("CHRONOS_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "CHRONOS_TEST_PYTHON is not set: it must name a Python with aiosmtpd installed. \
                 Run the tests with scripts/test, which provides it."
            )
        });
        let port = closed_port();
        let out = std::env::temp_dir().join(format!("chronos-smtp-{}.jsonl", uuid::Uuid::now_v7()));
        let child = Command::new(&python)
            .arg("-c")
            .arg(SMTP_SERVER)
            .arg(port.to_string())
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting CHRONOS_TEST_PYTHON={python}: {e}"));
        let mut server = SmtpServer { child, port, out };
        let deadline = Instant::now() + Duration::from_secs(20);
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut err);
                panic!("the aiosmtpd server exited ({status}) before listening:\n{err}");
            }
            assert!(Instant::now() < deadline, "the aiosmtpd server did not listen on {port} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.out) else {
            return Vec::new();
        };
        BufReader::new(f).lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect()
    }
}

async fn call_email(handler: &EmailHandler, ctx: TaskContext, payload: Value) -> Result<(), HandlerError> {
    tokio::time::timeout(Duration::from_secs(30), handler.handle(ctx, task("email", payload))).await.expect("the email handler hung")
}

#[tokio::test]
async fn email_with_text_and_html_reaches_both_recipients_as_multipart_alternative() {
    let server = SmtpServer::start();
    let h = EmailHandler::new(&server.url(), "Chronos <noreply@chronos.test>".into()).unwrap();
    let ctx = ctx();
    let id = ctx.id;
    let payload = json!({
        "to": ["ann@example.com", "Bob <bob@example.com>"],
        "subject": "Your report is ready",
        "text": "Plain report body",
        "html": "<p>HTML report body</p>",
        "reply_to": "support@chronos.test",
    });
    assert_eq!(call_email(&h, ctx, payload).await, Ok(()));

    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    assert_eq!(m["mail_from"], "noreply@chronos.test");
    assert_eq!(m["rcpt_tos"], json!(["ann@example.com", "bob@example.com"]));
    let content = m["content"].as_str().unwrap();
    assert!(content.contains("Subject: Your report is ready"), "{content}");
    assert!(content.contains("multipart/alternative"), "{content}");
    assert!(content.contains("text/plain") && content.contains("Plain report body"), "{content}");
    assert!(content.contains("text/html") && content.contains("<p>HTML report body</p>"), "{content}");
    assert!(content.contains("Reply-To: support@chronos.test"), "{content}");
    assert!(content.contains(&format!("Message-ID: <{id}@chronos.test>")), "{content}");
}

#[tokio::test]
async fn email_payload_from_overrides_the_default_sender() {
    let server = SmtpServer::start();
    let h = EmailHandler::new(&server.url(), "noreply@chronos.test".into()).unwrap();
    let payload = json!({
        "to": "ann@example.com", "subject": "s", "text": "t", "from": "billing@chronos.test",
    });
    assert_eq!(call_email(&h, ctx(), payload).await, Ok(()));
    let msgs = server.messages();
    assert_eq!(msgs[0]["mail_from"], "billing@chronos.test");
    assert_eq!(msgs[0]["rcpt_tos"], json!(["ann@example.com"]));
}

#[tokio::test]
async fn email_rejected_recipient_5xx_is_permanent_and_4xx_is_retryable() {
    let server = SmtpServer::start();
    let h = EmailHandler::new(&server.url(), "noreply@chronos.test".into()).unwrap();
    let r = call_email(&h, ctx(), json!({"to": "reject@example.com", "subject": "s", "text": "t"})).await;
    assert_permanent(&r, "550");
    assert!(r.unwrap_err().message().contains("550"));
    let r = call_email(&h, ctx(), json!({"to": "busy@example.com", "subject": "s", "text": "t"})).await;
    assert_retryable(&r, "451");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn email_to_a_closed_smtp_port_is_retryable() {
    let h = EmailHandler::new(&format!("smtp://127.0.0.1:{}", closed_port()), "noreply@chronos.test".into()).unwrap();
    let r = call_email(&h, ctx(), json!({"to": "ann@example.com", "subject": "s", "text": "t"})).await;
    assert_retryable(&r, "closed port");
}

#[tokio::test]
async fn email_without_text_or_html_is_permanent() {
    let h = EmailHandler::new(&format!("smtp://127.0.0.1:{}", closed_port()), "noreply@chronos.test".into()).unwrap();
    let r = call_email(&h, ctx(), json!({"to": "ann@example.com", "subject": "s"})).await;
    assert_permanent(&r, "no body");
}

#[tokio::test]
async fn email_with_an_invalid_address_is_permanent() {
    let h = EmailHandler::new(&format!("smtp://127.0.0.1:{}", closed_port()), "noreply@chronos.test".into()).unwrap();
    for payload in [
        json!({"to": "not an address", "subject": "s", "text": "t"}),
        json!({"to": ["ann@example.com", "@nope"], "subject": "s", "text": "t"}),
        json!({"to": [], "subject": "s", "text": "t"}),
        json!({"to": "ann@example.com", "subject": "s", "text": "t", "reply_to": "x@"}),
        json!({"to": "ann@example.com", "subject": "s", "text": "t", "cc": "b@example.com"}),
    ] {
        assert_permanent(&call_email(&h, ctx(), payload.clone()).await, &payload.to_string());
    }
}

#[test]
fn email_handler_rejects_a_bad_smtp_url_naming_chronos_smtp_url() {
    for url in ["not a url", "http://mail.example.com", "smtp://"] {
        let err = EmailHandler::new(url, "noreply@chronos.test".into()).err().unwrap_or_else(|| panic!("{url} accepted"));
        assert!(err.contains("CHRONOS_SMTP_URL"), "{err}");
    }
    assert!(EmailHandler::new("smtps://mail.example.com:465", "noreply@chronos.test".into()).is_ok());
    assert!(EmailHandler::new("smtp://mail.example.com:587?tls=required", "noreply@chronos.test".into()).is_ok());
    assert!(EmailHandler::new("smtp://127.0.0.1:2525", "not an address".into()).is_err());
}

/// The first attempt's error and when each attempt started.
async fn attempts_of(env: &chronos_tests::TestEnv, id: uuid::Uuid) -> Vec<(Option<String>, chrono::DateTime<chrono::Utc>)> {
    env.store.attempts(id).await.unwrap().into_iter().map(|a| (a.error, a.started_at.unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_503_or_429_retry_after_is_the_next_delay_within_the_backoff_cap_and_the_attempt_says_why() {
    use chronos_core::model::{Backoff, BackoffKind, Jitter, NewTask};
    let env = chronos_tests::TestEnv::new().await;
    let server = HttpServer::start().await;
    let mut registry = chronos_workers::Registry::new();
    registry.register(HttpHandler::new(None)).unwrap();
    let worker = chronos_tests::start_worker(&env, registry, chronos_tests::worker_config(&["default"]), None);
    // Without the Retry-After, the next attempt would wait the 60 s backoff.
    let slow = Backoff { kind: BackoffKind::Fixed, base_ms: 60_000, cap_ms: 3_600_000, jitter: Jitter::None };
    let asked = env.client.enqueue(NewTask::new("http", json!({ "url": server.url("/busy/503/1") })).backoff(slow)).await.unwrap().id;
    // Asks for an hour; the task's cap is 1 s.
    let capped = Backoff { kind: BackoffKind::Fixed, base_ms: 1_000, cap_ms: 1_000, jitter: Jitter::None };
    let cut = env.client.enqueue(NewTask::new("http", json!({ "url": server.url("/busy/429/3600") })).backoff(capped)).await.unwrap().id;
    for id in [asked, cut] {
        chronos_tests::wait_until(Duration::from_secs(15), "the task completed on its second attempt", || async {
            env.status(id).await == "completed"
        })
        .await;
    }
    let a = attempts_of(&env, asked).await;
    let first = a[0].0.clone().unwrap();
    assert!(first.ends_with("(Retry-After: 1); next attempt in 1 s, as its Retry-After asked"), "{first}");
    let gap = (a[1].1 - a[0].1).num_milliseconds();
    assert!((900..5_000).contains(&gap), "the second attempt began {gap} ms after the first");
    let c = attempts_of(&env, cut).await;
    let first = c[0].0.clone().unwrap();
    assert!(first.ends_with("its Retry-After asked for 3600 s: next attempt in 1 s, the task's backoff cap"), "{first}");
    worker.stop().await;
    env.cleanup().await;
}
