//! Scenarios 6–8: the API process restarted under load, workers with a skewed clock, Redis out
//! of memory.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// 6. Four senders `POST /v1/tasks` to a `chronos api` process, each request with an
///    idempotency key of its own, while a worker is SIGKILLed every 2 s and the API process
///    every 3 s (started again on the same port). Every request that got a 2xx must complete;
///    one that got no answer must name at most one task, and sending it again with its key must
///    answer with that task (or create it once).
pub(crate) async fn api_restart(o: &Opts) -> Result<Figures> {
    let requests: u64 = if o.quick { 600 } else { 5_000 };
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (hit_port, hits) = start_hit_server().await?;
    let api_port = free_port()?;
    let mut api_proc = env.api("api-0", api_port)?;
    let api = Api::new(api_port);
    api.wait_up(Duration::from_secs(30)).await?;
    let mut workers: Vec<_> = (0..2).map(|i| env.worker(&format!("w{i}-0"), &[])).collect::<Result<_>>()?;
    let body = move |i: u64| {
        let mut b = hit_task(hit_port, i, 20);
        b["idempotency_key"] = json!(format!("req-{i}"));
        b
    };
    let next = Arc::new(AtomicU64::new(0));
    let answers: Arc<Mutex<Vec<(u64, Instant, Answer)>>> = Default::default();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (next, answers, api) = (next.clone(), answers.clone(), Api::new(api_port));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let a = post_task(&api, &body(i)).await;
                    answers.lock().unwrap().push((i, Instant::now(), a));
                    // Paced so the run spans several API restarts.
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        })
        .collect();
    let (mut kills, mut restarts, mut api_faults) = (0usize, 0usize, Vec::new());
    let mut tick = 0u64;
    while senders.iter().any(|s| !s.is_finished()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tick += 1;
        if tick.is_multiple_of(4) {
            let w = kills % 2;
            workers[w].kill().await?;
            kills += 1;
            workers[w] = env.worker(&format!("w{w}-{kills}"), &[])?;
        }
        if tick % 6 == 3 {
            api_proc.kill().await?;
            api_faults.push(Instant::now());
            restarts += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            api_proc = env.api(&format!("api-{restarts}"), api_port)?;
        }
    }
    for s in senders {
        s.await?;
    }
    api.wait_up(Duration::from_secs(30)).await?;
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut acked: HashMap<u64, String> = HashMap::new();
    let (mut unanswered, mut unavailable, mut other) = (Vec::new(), 0u64, Vec::new());
    for (i, _, a) in &answers {
        match a {
            Answer::Created(id) => {
                acked.insert(*i, id.clone());
            }
            Answer::Unanswered(_) => unanswered.push(*i),
            Answer::Unavailable { .. } => {
                unavailable += 1;
                unanswered.push(*i);
            }
            Answer::Other(m) => other.push(format!("request {i}: {m}")),
        }
    }
    // Before any retry: a request without an answer made at most one task.
    let keys: Vec<String> = unanswered.iter().map(|i| format!("req-{i}")).collect();
    let existing: Vec<(String, String)> = sqlx::query_as("SELECT idempotency_key, id::text FROM tasks WHERE idempotency_key = ANY($1)")
        .bind(&keys)
        .fetch_all(env.store.pool())
        .await?;
    let mut before: HashMap<String, Vec<String>> = HashMap::new();
    for (k, id) in existing {
        before.entry(k).or_default().push(id);
    }
    let twice_before_retry = before.values().filter(|v| v.len() > 1).count();
    // Sent again with the same key: the same task, or a first one.
    let mut retry_other = 0u64;
    for i in &unanswered {
        let mut tries = 0;
        loop {
            tries += 1;
            match post_task(&api, &body(*i)).await {
                Answer::Created(id) => {
                    if before.get(&format!("req-{i}")).is_some_and(|ids| !ids.contains(&id)) {
                        other.push(format!("request {i}: the retry made a second task {id}"));
                    }
                    acked.insert(*i, id);
                    break;
                }
                a if tries < 5 => {
                    if let Answer::Other(m) = a {
                        other.push(format!("request {i} again: {m}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {
                    retry_other += 1;
                    break;
                }
            }
        }
    }
    let accepted = acked.len() as u64;
    let c = env.settle(accepted, settle_limit(o)).await?;
    let ids: Vec<uuid::Uuid> = acked.values().filter_map(|id| id.parse().ok()).collect();
    let completed_acked: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'completed'")
        .bind(&ids)
        .fetch_one(env.store.pool())
        .await?;
    let repeated_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT idempotency_key FROM tasks GROUP BY idempotency_key HAVING count(*) > 1) d")
            .fetch_one(env.store.pool())
            .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &[]);
    // From an API kill to the next 2xx.
    f.recover_ms = api_faults
        .iter()
        .filter_map(|k| {
            answers
                .iter()
                .filter(|(_, t, a)| t > k && matches!(a, Answer::Created(_)))
                .map(|(_, t, _)| *t)
                .min()
                .map(|t| (t - *k).as_millis() as u64)
        })
        .max()
        .unwrap_or(0);
    f.extra.insert("requests".into(), json!(requests));
    f.extra.insert("no_answer".into(), json!(unanswered.len() as u64 - unavailable));
    f.extra.insert("unavailable".into(), json!(unavailable));
    f.extra.insert("unanswered_that_existed".into(), json!(before.len()));
    f.extra.insert("unanswered_twice".into(), json!(twice_before_retry));
    f.extra.insert("retries_failed".into(), json!(retry_other));
    f.extra.insert("acked_not_completed".into(), json!(ids.len() as i64 - completed_acked));
    f.extra.insert("keys_with_two_tasks".into(), json!(repeated_keys));
    f.extra.insert("tasks_not_acked".into(), json!(total - accepted as i64));
    f.extra.insert("other_answers".into(), json!(other.len()));
    f.extra.insert("api_restarts".into(), json!(restarts));
    f.extra.insert("worker_kills".into(), json!(kills));
    for m in other.iter().take(5) {
        eprintln!("chaos: api-restart: {m}");
    }
    drop(workers);
    drop(api_proc);
    env.cleanup().await;
    Ok(f)
}

/// The failures of [`api_restart`]'s figures.
pub(crate) fn api_restart_failures(f: &Figures) -> Vec<String> {
    let n = |k: &str| f.extra[k].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    for (k, what) in [
        ("unanswered_twice", "requests without an answer made two tasks"),
        ("retries_failed", "requests sent again got no task"),
        ("acked_not_completed", "tasks that got a 2xx did not complete"),
        ("keys_with_two_tasks", "idempotency keys name two tasks"),
        ("tasks_not_acked", "tasks exist that no answer named"),
        ("other_answers", "answers were neither 2xx nor 503"),
    ] {
        if n(k) != 0 {
            out.push(format!("api-restart: {} {what}", n(k)));
        }
    }
    if n("api_restarts") == 0 {
        out.push("api-restart: the API was never restarted".into());
    }
    out
}

/// libfaketime, which the `faketime` package installs.
fn libfaketime() -> Result<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .context("libfaketime not found (apt install faketime)")
}

/// 7. Two workers whose wall clocks are 30 s ahead and 30 s behind (libfaketime): delayed tasks
///    must start at their due time (not 30 s early or late), tasks running longer than the lease
///    must keep it through heartbeats (no second run), and a schedule's occurrences must run at
///    their fire times. Redis's clock decides, never the worker's.
pub(crate) async fn clock_skew(o: &Opts) -> Result<Figures> {
    let lib = libfaketime()?;
    let window = Duration::from_secs(if o.quick { 5 } else { 30 });
    let env = Env::new(&o.chronos_bin, RedisProc::start(&["--save", "", "--appendonly", "no"])?).await?;
    let (port, hits) = start_hit_server().await?;
    let skewed = |offset: &str| {
        vec![
            ("LD_PRELOAD", lib.display().to_string()),
            ("FAKETIME", offset.to_owned()),
            // Timers run on the monotonic clock, which a skewed host keeps; only the wall clock is off.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    };
    // The offsets take: the same library on `date`.
    let probe = std::process::Command::new("date").arg("+%s").envs(skewed("+30s")).output()?;
    let seen: i64 = String::from_utf8_lossy(&probe.stdout).trim().parse().context("date under libfaketime")?;
    let offset_s = seen - chrono::Utc::now().timestamp();
    let ahead = skewed("+30s");
    let behind = skewed("-30s");
    let ahead: Vec<(&str, String)> = ahead.iter().map(|(k, v)| (*k, v.clone())).collect();
    let behind: Vec<(&str, String)> = behind.iter().map(|(k, v)| (*k, v.clone())).collect();
    let workers = [env.worker("ahead", &ahead)?, env.worker("behind", &behind)?];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = chrono::Utc::now();
    // Delayed tasks due across the window.
    let n_delayed: u64 = if o.quick { 200 } else { 1_000 };
    let delayed: Vec<NewTask> = (0..n_delayed)
        .map(|i| {
            let due = start + chrono::Duration::milliseconds(1_000 + (i * window.as_millis() as u64 / n_delayed) as i64);
            NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": i, "ms": 0}}))
                .queue(QUEUE)
                .run_at(due)
                .max_attempts(25)
                .backoff(Backoff::fixed(Duration::from_millis(200)))
        })
        .collect();
    let mut accepted = env.client.enqueue_batch(delayed).await?.len() as u64;
    // Tasks that run 2.5 leases (2 s each), kept by heartbeats.
    accepted += env.enqueue_hits(port, 1_000_000, 6, 5_000).await?;
    // A schedule firing every 2 s.
    let scheduler = chronos_core::schedule::Scheduler::new(env.client.clone(), Duration::from_secs(120));
    let template: chronos_core::schedule::TaskTemplate =
        NewTask::new("http", json!({"url": format!("http://127.0.0.1:{port}/hit"), "body": {"i": "schedule", "ms": 0}}))
            .queue(QUEUE)
            .into();
    let schedule = scheduler
        .create(&chronos_core::schedule::ScheduleSpec::new("chaos-skew", "*/2 * * * * *", template), None)
        .await
        .map_err(|e| anyhow::anyhow!("create the schedule: {e:?}"))?;
    tokio::time::sleep(window + Duration::from_secs(2)).await;
    let end = chrono::Utc::now();
    // Occurrences due before the end of the window count; later ones are dropped with the schedule.
    let occurrences: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE schedule_id = $1 AND run_at <= $2")
        .bind(schedule.id)
        .bind(end)
        .fetch_one(env.store.pool())
        .await?;
    accepted += occurrences as u64;
    let deadline = Instant::now() + settle_limit(o);
    let c = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM tasks WHERE run_at <= $1 GROUP BY status")
            .bind(end)
            .fetch_all(env.store.pool())
            .await?;
        let c: HashMap<String, i64> = rows.into_iter().collect();
        let terminal: i64 = ["completed", "cancelled", "dead"].iter().map(|s| c.get(*s).copied().unwrap_or(0)).sum();
        if terminal as u64 >= accepted || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = scheduler.delete(schedule.id).await;
    // Start time (this host's clock, which is Redis's) minus due time, per task's first run.
    let due: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id::text, run_at FROM tasks WHERE run_at > created_at AND run_at <= $1")
            .bind(end)
            .fetch_all(env.store.pool())
            .await?;
    let (mut early, mut worst_early_ms, mut worst_late_ms, mut timed) = (0u64, 0i64, 0i64, 0u64);
    {
        let h = hits.lock().unwrap();
        for (id, at) in &due {
            let Some(started) = h.wall.get(id) else { continue };
            timed += 1;
            let late = started - at.timestamp_millis();
            // Redis's TIME and this host's clock are one clock; a millisecond of rounding either way.
            if late < -2 {
                early += 1;
                worst_early_ms = worst_early_ms.max(-late);
            }
            worst_late_ms = worst_late_ms.max(late);
        }
    }
    let mut f = Figures::from_counts(accepted, &c, &hits, &[]);
    f.extra.insert("clock_offsets_s".into(), json!([30, -30]));
    f.extra.insert("libfaketime_offset_seen_s".into(), json!(offset_s));
    f.extra.insert("timed_starts".into(), json!(timed));
    f.extra.insert("started_early".into(), json!(early));
    f.extra.insert("worst_early_ms".into(), json!(worst_early_ms));
    f.extra.insert("worst_late_ms".into(), json!(worst_late_ms));
    f.extra.insert("schedule_occurrences".into(), json!(occurrences));
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

pub(crate) fn clock_skew_failures(f: &Figures) -> Vec<String> {
    let n = |k: &str| f.extra[k].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    if (n("libfaketime_offset_seen_s") - 30).abs() > 2 {
        out.push(format!("clock-skew: libfaketime moved the clock by {} s, not 30", n("libfaketime_offset_seen_s")));
    }
    if n("started_early") != 0 {
        out.push(format!("clock-skew: {} tasks started before their due time (worst {} ms)", n("started_early"), n("worst_early_ms")));
    }
    if n("worst_late_ms") > 5_000 {
        out.push(format!("clock-skew: a task started {} ms after its due time", n("worst_late_ms")));
    }
    if f.duplicates != 0 {
        out.push(format!("clock-skew: {} runs beyond the first (a lease was lost)", f.duplicates));
    }
    if n("schedule_occurrences") < 2 || n("timed_starts") == 0 {
        out.push("clock-skew: too few timed runs to judge".into());
    }
    out
}

/// 8. A Redis with `maxmemory` and `noeviction`, filled through the API with tasks (8 KiB
///    payloads) before any worker runs: enqueue must answer 503 saying Redis is out of memory,
///    with `Retry-After`. Then workers start; what they cannot drain at the limit is drained once
///    the limit is raised; every accepted task must complete, and enqueue must work again.
pub(crate) async fn redis_oom(o: &Opts) -> Result<Figures> {
    let maxmemory = if o.quick { "16mb" } else { "64mb" };
    let env = Env::new(
        &o.chronos_bin,
        RedisProc::start(&["--save", "", "--appendonly", "no", "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"])?,
    )
    .await?;
    let (hit_port, hits) = start_hit_server().await?;
    let api_port = free_port()?;
    let _api_proc = env.api("api", api_port)?;
    let api = Api::new(api_port);
    api.wait_up(Duration::from_secs(30)).await?;
    let pad = "x".repeat(8 * 1024);
    let task = |i: u64| {
        let mut t = hit_task(hit_port, i, 5);
        t["payload"]["body"]["pad"] = json!(pad);
        t
    };
    let mut ids: Vec<String> = Vec::new();
    let (mut full_detail, mut retry_after, mut other) = (None, false, Vec::new());
    let mut i = 0u64;
    while full_detail.is_none() && i < 100_000 {
        let batch: Vec<Value> = (i..i + 50).map(task).collect();
        i += 50;
        let r = api.req(ADMIN_KEY, reqwest::Method::POST, "/v1/tasks/batch").json(&json!({"tasks": batch})).send().await?;
        let status = r.status();
        let has_retry_after = r.headers().contains_key("retry-after");
        let v: Value = r.json().await.unwrap_or_default();
        if status.is_success() {
            ids.extend(v["tasks"].as_array().into_iter().flatten().filter_map(|t| t["task"]["id"].as_str().map(str::to_owned)));
        } else if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            full_detail = Some(v["detail"].as_str().unwrap_or_default().to_owned());
            retry_after = has_retry_after;
        } else {
            other.push(format!("{status}: {v}"));
            break;
        }
    }
    // Then one task at a time until one alone is refused the same way (a batch of 50 no longer
    // fit; a few single tasks may).
    let mut single_refused = false;
    for _ in 0..200 {
        i += 1;
        match post_task(&api, &task(i)).await {
            Answer::Created(id) => ids.push(id),
            Answer::Unavailable { retry_after } => {
                single_refused = retry_after;
                break;
            }
            Answer::Other(m) | Answer::Unanswered(m) => {
                other.push(m);
                break;
            }
        }
    }
    let filled = ids.len() as u64;
    let mut conn = redis::Client::open(env.redis.url().as_str())?.get_multiplexed_async_connection().await?;
    let used_at_full: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let used_at_full = used_at_full.lines().find_map(|l| l.strip_prefix("used_memory_human:")).unwrap_or("?").trim().to_owned();
    // Workers at the limit: whatever they can finish frees memory.
    let workers_start = Instant::now();
    let workers: Vec<_> = (0..2).map(|i| env.worker(&format!("w{i}"), &[])).collect::<Result<_>>()?;
    let mut last = (0usize, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = hits.lock().unwrap().runs.len();
        if done as u64 >= filled {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let ran_at_limit = hits.lock().unwrap().runs.len() as u64;
    let raised = if ran_at_limit < filled {
        // Stuck at the limit: the operator gives Redis more memory.
        let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query_async(&mut conn).await?;
        Some(Instant::now())
    } else {
        None
    };
    let freed = raised.unwrap_or(workers_start);
    // Enqueue works again once memory is free.
    let mut again = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while again.is_none() && Instant::now() < deadline {
        match post_task(&api, &task(i + 1)).await {
            Answer::Created(id) => again = Some(id),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let accepted = filled + u64::from(again.is_some());
    let c = env.settle(accepted, settle_limit(o)).await?;
    let mut f = Figures::from_counts(accepted, &c, &hits, &[freed]);
    f.extra.insert("maxmemory".into(), json!(maxmemory));
    f.extra.insert("used_memory_at_full".into(), json!(used_at_full));
    f.extra.insert("oom_503_detail".into(), json!(full_detail));
    f.extra.insert("oom_503_retry_after".into(), json!(retry_after));
    f.extra.insert("single_enqueue_refused".into(), json!(single_refused));
    f.extra.insert("ran_at_limit".into(), json!(ran_at_limit));
    f.extra.insert("limit_raised".into(), json!(raised.is_some()));
    f.extra.insert("enqueue_after".into(), json!(again.is_some()));
    f.extra.insert("other_answers".into(), json!(other));
    drop(workers);
    env.cleanup().await;
    Ok(f)
}

pub(crate) fn redis_oom_failures(f: &Figures) -> Vec<String> {
    let mut out = Vec::new();
    let detail = f.extra["oom_503_detail"].as_str().unwrap_or_default();
    if !detail.contains("out of memory") {
        out.push(format!("redis-oom: the 503 does not say Redis is out of memory: {detail:?}"));
    }
    for (k, what) in [
        ("oom_503_retry_after", "the 503 has no Retry-After"),
        ("single_enqueue_refused", "one task alone was not refused with a retryable 503"),
        ("enqueue_after", "enqueue did not work again after memory was freed"),
    ] {
        if f.extra[k] != json!(true) {
            out.push(format!("redis-oom: {what}"));
        }
    }
    if f.extra["other_answers"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push(format!("redis-oom: other answers {}", f.extra["other_answers"]));
    }
    out
}
