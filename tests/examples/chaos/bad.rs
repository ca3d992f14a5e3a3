//! The `bad-input` scenario: malformed requests of every kind against a real `chronos api`
//! process while a worker runs tasks that were accepted before.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the requests of one kind got.
#[derive(Default)]
struct Tally {
    sent: u64,
    by_status: BTreeMap<u16, u64>,
    /// 5xx answers, no answer within the client's deadline, malformed input accepted, 4xx
    /// that do not say what is wrong, 422s naming another field: a few examples of each.
    five_xx: Vec<String>,
    hangs: Vec<String>,
    accepted: Vec<String>,
    unnamed: Vec<String>,
    wrong_field: Vec<String>,
    worst_ms: u64,
    /// Over-limit bodies answered by closing before the client finished sending.
    closed_early: u64,
}

#[derive(Default)]
struct Tallies(BTreeMap<&'static str, Tally>);

/// What a malformed request must get.
enum Expect {
    /// A 422 whose `field` is this one.
    Field(String),
    /// This 4xx status, with a problem document that says what is wrong.
    Status(u16),
    /// Any of these statuses (concurrent edits: 200, 204, 404, 409 …), never a 5xx.
    AnyOf(&'static [u16]),
}

impl Tallies {
    fn record(&mut self, kind: &'static str, what: &str, r: Result<(u16, Value), String>, took: Duration, expect: &Expect) {
        let t = self.0.entry(kind).or_default();
        t.sent += 1;
        t.worst_ms = t.worst_ms.max(took.as_millis() as u64);
        let (status, body) = match r {
            Ok(x) => x,
            // A server may answer 413 and close before reading a body it will not take; the
            // client, still sending, then sees the close instead of the answer (RFC 9112 §9.6).
            Err(e) if e.starts_with("closed") && matches!(expect, Expect::Status(413)) => {
                t.closed_early += 1;
                return;
            }
            Err(e) => {
                t.hangs.push(format!("{what}: {e}"));
                return;
            }
        };
        *t.by_status.entry(status).or_default() += 1;
        let example = || format!("{what} → {status} {body}");
        if status >= 500 {
            t.five_xx.push(example());
            return;
        }
        match expect {
            Expect::AnyOf(ok) => {
                if !ok.contains(&status) {
                    t.unnamed.push(example());
                }
                return;
            }
            _ if status < 400 => {
                t.accepted.push(example());
                return;
            }
            _ => {}
        }
        let detail = body["detail"].as_str().unwrap_or_default();
        if detail.len() < 10 || body["type"].as_str().is_none_or(|k| !k.starts_with("urn:chronos:problem:")) {
            t.unnamed.push(example());
            return;
        }
        match expect {
            Expect::Field(f) if status != 422 || body["field"].as_str() != Some(f) => {
                t.wrong_field.push(format!("want 422 {f}: {}", example()))
            }
            Expect::Status(s) if status != *s => t.wrong_field.push(format!("want {s}: {}", example())),
            _ => {}
        }
    }
}

/// Send and read the answer as JSON (a problem document, or anything).
async fn send(rb: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let r = rb.send().await.map_err(|e| if e.is_timeout() { format!("no answer in time: {e}") } else { format!("closed: {e}") })?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| format!("no body: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text.chars().take(200).collect()))))
}

/// Values of the wrong type for a field of each kind.
fn wrong_values(kind: &str) -> Vec<Value> {
    let base = vec![json!(true), json!([]), json!([1]), json!({}), json!({"a": 1})];
    let numbers = vec![json!(1.5), json!(-7), json!(1e300), serde_json::from_str("99999999999999999999").unwrap()];
    match kind {
        "string" => [base, numbers].concat(),
        "number" => [base, numbers, vec![json!("12"), json!("")]].concat(),
        "enum" => [base, numbers, vec![json!("zz"), json!("")]].concat(),
        "object" => [numbers, vec![json!(true), json!("zz"), json!([])]].concat(),
        // A number 0–100 or a priority name.
        "priority" => [base, vec![json!(1.5), json!(-7), json!(101), json!(1e300), json!("zz")]].concat(),
        _ => unreachable!(),
    }
}

/// Fields of a task and their kinds (the body path of each).
const TASK_FIELDS: &[(&str, &str)] = &[
    ("name", "string"),
    ("queue", "string"),
    ("priority", "priority"),
    ("max_attempts", "number"),
    ("backoff", "object"),
    ("backoff.kind", "enum"),
    ("backoff.base_ms", "number"),
    ("backoff.cap_ms", "number"),
    ("backoff.jitter", "enum"),
    ("timeout_ms", "number"),
    ("run_at", "string"),
    ("delay_ms", "number"),
    ("idempotency_key", "string"),
];

const SCHEDULE_FIELDS: &[(&str, &str)] = &[
    ("name", "string"),
    ("cron", "string"),
    ("timezone", "string"),
    ("task", "object"),
    ("task.name", "string"),
    ("task.priority", "priority"),
    ("task.backoff.jitter", "enum"),
    ("overlap", "enum"),
    ("misfire", "enum"),
];

fn set_path(v: &mut Value, path: &str, x: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if !cur[*p].is_object() {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = x;
}

/// Every wrong-type request: (path, body, field expected at fault).
fn wrong_type_requests() -> Vec<(&'static str, Value, String)> {
    let task = json!({"name": "noop", "queue": "bad-input", "delay_ms": 3_600_000});
    let schedule = json!({"name": "bad-input", "cron": "0 0 1 1 *", "task": {"name": "noop"}, "paused": true});
    let mut out = Vec::new();
    for (field, kind) in TASK_FIELDS {
        for x in wrong_values(kind) {
            let mut b = task.clone();
            set_path(&mut b, field, x.clone());
            out.push(("/v1/tasks", b.clone(), field.to_string()));
            let mut batch = json!({"tasks": [task.clone(), task.clone()]});
            set_path(&mut batch["tasks"][1], field, x);
            out.push(("/v1/tasks/batch", batch, format!("tasks[1].{field}")));
        }
    }
    for (field, kind) in SCHEDULE_FIELDS {
        for x in wrong_values(kind) {
            let mut b = schedule.clone();
            set_path(&mut b, field, x);
            out.push(("/v1/schedules", b, field.to_string()));
        }
    }
    out
}

/// Headers and half a body, then silence: the answer (or the close) must come.
async fn slow_loris(port: u16) -> Result<(u16, Value), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let body = br#"{"name": "noop", "payload": {"x": "#;
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    for b in body {
        s.write_all(&[*b]).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut buf)).await {
        Err(_) => Err("still open after 40 s".into()),
        Ok(_) => {
            let text = String::from_utf8_lossy(&buf);
            let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            Ok((status, serde_json::from_str(body).unwrap_or(Value::String(body.chars().take(200).collect()))))
        }
    }
}

pub(crate) async fn bad_input(o: &Opts) -> Result<Figures> {
    let per_kind: usize = if o.quick { 100 } else { 1_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (hit_port, hits) = start_hit_server().await?;
    let api_port = free_port()?;
    let mut api_proc = env.api("api", api_port)?;
    let api = Api::new(api_port);
    api.wait_up(Duration::from_secs(30)).await?;
    let worker = env.worker("w0", &[])?;
    // Accepted before the barrage: tasks due in an hour (they must come out unchanged) and
    // tasks running through it (they must complete).
    let mut kept = Vec::new();
    for i in 0..50 {
        let body = json!({"name": "noop", "queue": QUEUE, "delay_ms": 3_600_000, "payload": {"kept": i}});
        match post_task(&api, &body).await {
            Answer::Created(id) => kept.push(id),
            _ => bail!("could not create a task before the barrage"),
        }
    }
    let running = env.enqueue_hits(hit_port, 0, if o.quick { 300 } else { 2_000 }, 20).await?;
    let mut t = Tallies::default();
    let admin = |m: reqwest::Method, p: &str| api.req(ADMIN_KEY, m, p);
    let json_post = |p: &str, body: Vec<u8>| admin(reqwest::Method::POST, p).header("content-type", "application/json").body(body);

    // Wrong types in every field, cycled to `per_kind` requests.
    let wrong = wrong_type_requests();
    for (path, body, field) in wrong.iter().cycle().take(per_kind.max(wrong.len())) {
        let at = Instant::now();
        let r = send(admin(reqwest::Method::POST, path).json(body)).await;
        t.record("wrong-type", &format!("POST {path} {body}"), r, at.elapsed(), &Expect::Field(field.clone()));
    }
    // Truncated bodies: every prefix of a valid one.
    let valid = serde_json::to_vec(
        &json!({"name": "noop", "queue": "bad-input", "delay_ms": 3_600_000, "payload": {"a": [1, 2, {"b": "ç"}], "s": "x y"}, "backoff": {"jitter": "none"}}),
    )?;
    for k in 0..per_kind {
        let cut = 1 + k % (valid.len() - 1);
        let at = Instant::now();
        let r = send(json_post("/v1/tasks", valid[..cut].to_vec())).await;
        t.record("truncated", &format!("{} bytes of {}", cut, valid.len()), r, at.elapsed(), &Expect::Status(400));
    }
    // Invalid UTF-8 inside a string, at every position of it.
    for k in 0..per_kind {
        let bad: &[&[u8]] = &[b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"];
        let mut b = br#"{"name": "noop", "payload": {"s": "abcdefghij"}}"#.to_vec();
        let pos = 29 + k % 10;
        b.splice(pos..pos, bad[k % bad.len()].iter().copied());
        let at = Instant::now();
        let r = send(json_post("/v1/tasks", b)).await;
        t.record("invalid-utf8", &format!("bytes {:?} at {pos}", bad[k % bad.len()]), r, at.elapsed(), &Expect::Status(400));
    }
    // 10 MB bodies and 10,000-deep JSON (fewer: each is large).
    let heavy = (per_kind / 10).max(5);
    let big = format!(r#"{{"name": "noop", "payload": {{"s": "{}"}}}}"#, "y".repeat(10 << 20));
    for _ in 0..heavy {
        let at = Instant::now();
        let r = send(json_post("/v1/tasks", big.clone().into_bytes())).await;
        t.record("10mb-body", "10 MB body", r, at.elapsed(), &Expect::Status(413));
    }
    let deep = format!(r#"{{"name": "noop", "payload": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    for _ in 0..heavy {
        let at = Instant::now();
        let r = send(json_post("/v1/tasks", deep.clone().into_bytes())).await;
        t.record("deep-json", "10,000-deep payload", r, at.elapsed(), &Expect::Status(400));
    }
    // Huge headers: one 64 KiB header, and many headers.
    for k in 0..heavy {
        let rb = if k % 2 == 0 {
            admin(reqwest::Method::GET, "/v1/queues").header("x-filler", "a".repeat(64 << 10))
        } else {
            (0..2_000).fold(admin(reqwest::Method::GET, "/v1/queues"), |rb, i| rb.header(format!("x-h{i}"), "b".repeat(20)))
        };
        let at = Instant::now();
        let r = send(rb).await;
        t.record("huge-headers", if k % 2 == 0 { "one 64 KiB header" } else { "2,000 headers" }, r, at.elapsed(), &Expect::Status(431));
    }
    // Slow-loris bodies, all at once, while the API must keep answering others.
    let loris: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let at = Instant::now();
                (slow_loris(api_port).await, at.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst_other_ms = 0u64;
    while loris.iter().any(|l| !l.is_finished()) {
        let at = Instant::now();
        let r = send(admin(reqwest::Method::GET, "/v1/queues")).await;
        worst_other_ms = worst_other_ms.max(at.elapsed().as_millis() as u64);
        t.record("beside-slow-loris", "GET /v1/queues", r, at.elapsed(), &Expect::AnyOf(&[200]));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for l in loris {
        let (r, took) = l.await?;
        t.record("slow-loris", "half a body, then silence", r, took, &Expect::Status(408));
    }
    // Concurrent conflicting edits: one schedule patched, paused, resumed, triggered and deleted
    // at once; tasks cancelled and retried at once.
    let (s, sched) = send(
        admin(reqwest::Method::POST, "/v1/schedules").json(&json!({"name": "contested", "cron": "0 0 1 1 *", "task": {"name": "noop"}})),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if s != 201 {
        bail!("create the contested schedule: {s} {sched}");
    }
    let sid = sched["id"].as_str().context("schedule id")?.to_owned();
    let mut targets = Vec::new();
    for i in 0..10 {
        if let Answer::Created(id) =
            post_task(&api, &json!({"name": "noop", "queue": "contested", "delay_ms": 3_600_000, "payload": {"c": i}})).await
        {
            targets.push(id);
        }
    }
    let edits: Vec<(reqwest::Method, String, Option<Value>)> = (0..per_kind)
        .map(|k| match k % 8 {
            0 => (reqwest::Method::PATCH, format!("/v1/schedules/{sid}"), Some(json!({"cron": format!("{} 0 1 1 *", k % 60)}))),
            1 => (reqwest::Method::PATCH, format!("/v1/schedules/{sid}"), Some(json!({"task": {"name": "noop", "priority": k % 100}}))),
            2 => (reqwest::Method::POST, format!("/v1/schedules/{sid}/pause"), None),
            3 => (reqwest::Method::POST, format!("/v1/schedules/{sid}/resume"), None),
            4 => (reqwest::Method::POST, format!("/v1/schedules/{sid}/trigger"), None),
            5 | 6 => (reqwest::Method::POST, format!("/v1/tasks/{}/cancel", targets[k % targets.len()]), None),
            _ => (reqwest::Method::POST, format!("/v1/tasks/{}/retry", targets[k % targets.len()]), None),
        })
        .chain(std::iter::once((reqwest::Method::DELETE, format!("/v1/schedules/{sid}"), None)))
        .collect();
    for chunk in edits.chunks(16) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|(m, p, b)| {
                let rb = admin(m.clone(), p);
                let rb = match b {
                    Some(b) => rb.json(b),
                    None => rb,
                };
                tokio::spawn(async move {
                    let at = Instant::now();
                    (send(rb).await, at.elapsed())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await?);
        }
        for ((m, p, _), (r, took)) in chunk.iter().zip(answers) {
            t.record("conflicting-edits", &format!("{m} {p}"), r, took, &Expect::AnyOf(&[200, 201, 202, 204, 404, 409]));
        }
    }
    // Afterwards: the schedule is gone, the service healthy, the process alive, the accepted
    // tasks as they were.
    let (gone, _) = send(admin(reqwest::Method::GET, &format!("/v1/schedules/{sid}"))).await.map_err(anyhow::Error::msg)?;
    let (health, _) = send(api.http.get(format!("{}/healthz", api.base))).await.map_err(anyhow::Error::msg)?;
    let alive = api_proc.try_wait()?.is_none();
    let mut disturbed = Vec::new();
    for (i, id) in kept.iter().enumerate() {
        let (s, v) = send(admin(reqwest::Method::GET, &format!("/v1/tasks/{id}"))).await.map_err(anyhow::Error::msg)?;
        if s != 200 || v["status"] != "scheduled" || v["payload"] != json!({"kept": i}) || v["attempts"] != 0 {
            disturbed.push(format!("{id}: {s} {v}"));
        }
    }
    for id in &kept {
        send(admin(reqwest::Method::POST, &format!("/v1/tasks/{id}/cancel"))).await.map_err(anyhow::Error::msg)?;
    }
    // The contested tasks end cancelled or queued again; cancel what a retry put back.
    for id in &targets {
        let _ = send(admin(reqwest::Method::POST, &format!("/v1/tasks/{id}/cancel"))).await;
    }
    let accepted = running + kept.len() as u64 + targets.len() as u64;
    // The triggered occurrences of the schedule count as well.
    let triggered: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE schedule_id IS NOT NULL").fetch_one(env.store.pool()).await?;
    let c = env.settle(accepted + triggered as u64, settle_limit(o)).await?;
    let mut f = Figures::from_counts(accepted + triggered as u64, &c, &hits, &[]);
    let sum = |g: fn(&Tally) -> usize| t.0.values().map(g).sum::<usize>();
    f.extra.insert("requests".into(), json!(t.0.values().map(|x| x.sent).sum::<u64>()));
    f.extra.insert("five_xx".into(), json!(sum(|x| x.five_xx.len())));
    f.extra.insert("hangs".into(), json!(sum(|x| x.hangs.len())));
    f.extra.insert("malformed_accepted".into(), json!(sum(|x| x.accepted.len())));
    f.extra.insert("unnamed_4xx".into(), json!(sum(|x| x.unnamed.len())));
    f.extra.insert("wrong_field_or_status".into(), json!(sum(|x| x.wrong_field.len())));
    f.extra.insert("worst_ms".into(), json!(t.0.iter().filter(|(k, _)| **k != "slow-loris").map(|(_, x)| x.worst_ms).max()));
    f.extra.insert("slow_loris_worst_ms".into(), json!(t.0.get("slow-loris").map(|x| x.worst_ms)));
    f.extra.insert("beside_slow_loris_worst_ms".into(), json!(worst_other_ms));
    f.extra.insert("closed_before_413_read".into(), json!(t.0.values().map(|x| x.closed_early).sum::<u64>()));
    f.extra.insert("kept_disturbed".into(), json!(disturbed.len()));
    f.extra.insert("healthy_after".into(), json!(health == 200 && alive && gone == 404));
    f.extra.insert(
        "statuses".into(),
        json!(
            t.0.iter()
                .map(|(k, x)| (
                    k.to_string(),
                    json!(x.by_status.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>())
                ))
                .collect::<serde_json::Map<_, _>>()
        ),
    );
    for (kind, x) in &t.0 {
        for m in x.five_xx.iter().chain(&x.hangs).chain(&x.accepted).chain(&x.unnamed).chain(&x.wrong_field).take(3) {
            eprintln!("chaos: bad-input: {kind}: {}", m.chars().take(400).collect::<String>());
        }
    }
    for m in disturbed.iter().take(3) {
        eprintln!("chaos: bad-input: disturbed {m}");
    }
    drop(worker);
    env.cleanup().await;
    Ok(f)
}

pub(crate) fn bad_input_failures(f: &Figures) -> Vec<String> {
    let n = |k: &str| f.extra[k].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    for (k, what) in [
        ("five_xx", "5xx answers"),
        ("hangs", "requests without an answer"),
        ("malformed_accepted", "malformed requests accepted"),
        ("unnamed_4xx", "4xx answers that do not say what is wrong (or unexpected statuses)"),
        ("wrong_field_or_status", "answers naming another field or with another status"),
        ("kept_disturbed", "accepted tasks disturbed"),
    ] {
        if n(k) != 0 {
            out.push(format!("bad-input: {} {what}", n(k)));
        }
    }
    if f.extra["healthy_after"] != json!(true) {
        out.push("bad-input: the service is not healthy afterwards".into());
    }
    out
}
