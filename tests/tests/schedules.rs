//! Schedules and the tick against real Redis, Postgres and `chronos tick` processes: every
//! occurrence planned exactly once by racing ticks, misfire policies after a tick outage,
//! overlap policies with a slow task, and a two-second schedule calling a local HTTP server.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SubsecRound, Utc};
use chronos_core::cron::{CronExpr, parse_timezone};
use chronos_core::model::Overlap;
use chronos_core::schedule::{DEFAULT_HORIZON, Misfire, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_tests::{TestEnv, chronos_bin, diag_registry, start_worker, wait_until, worker_config};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

fn scheduler(env: &TestEnv) -> Scheduler {
    Scheduler::new(env.client.clone(), DEFAULT_HORIZON)
}

fn spec(name: &str, cron: &str, task: TaskTemplate) -> ScheduleSpec {
    ScheduleSpec::new(name, cron, task)
}

/// Make a created (paused) schedule live as if its last tick had planned up to `planned_until`,
/// without planning anything now.
async fn arm(env: &TestEnv, id: Uuid, planned_until: DateTime<Utc>) {
    sqlx::query("UPDATE schedules SET enabled = true, planned_until = $2 WHERE id = $1")
        .bind(id)
        .bind(planned_until)
        .execute(env.store.pool())
        .await
        .unwrap();
}

/// (fire_at, task id) of every task Postgres holds for a schedule.
async fn occurrences(env: &TestEnv, id: Uuid) -> Vec<(DateTime<Utc>, Uuid)> {
    sqlx::query("SELECT fire_at, id FROM tasks WHERE schedule_id = $1 ORDER BY fire_at")
        .bind(id)
        .fetch_all(env.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn zcard(env: &TestEnv, key: &str) -> u64 {
    let mut c = env.engine.connection();
    redis::cmd("ZCARD").arg(key).query_async(&mut c).await.unwrap()
}

#[tokio::test]
async fn two_tick_processes_racing_through_simulated_minutes_plan_every_occurrence_exactly_once() {
    let env = TestEnv::new().await;
    let s = scheduler(&env);
    let t0 = Utc::now().trunc_subsecs(0);
    let exprs = [
        ("every-second", "* * * * * *", "UTC"),
        ("every-2s", "*/2 * * * * *", "UTC"),
        ("every-7s", "*/7 * * * * *", "Europe/Berlin"),
        ("every-minute", "* * * * *", "America/New_York"),
        ("every-3-min", "*/3 * * * *", "Australia/Lord_Howe"),
        ("daily", "@daily", "UTC"),
    ];
    let mut ids = Vec::new();
    for (name, cron, tz) in exprs {
        let mut sp = spec(name, cron, TaskTemplate::new("noop", json!({ "s": name })));
        sp.timezone = tz.into();
        sp.paused = true;
        let rec = s.create(&sp, Some("test")).await.unwrap();
        arm(&env, rec.id, t0).await;
        ids.push((rec.id, cron, tz));
    }

    // Eight simulated minutes; each minute two `chronos tick --once` processes start together.
    let steps = 8;
    let mut planned_total = 0u64;
    for k in 0..steps {
        let at = (t0 + chrono::Duration::minutes(k)).to_rfc3339();
        let mut children = Vec::new();
        for _ in 0..2 {
            let mut cmd = tokio::process::Command::new(chronos_bin());
            cmd.args(["tick", "--once", "--at", &at]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            for (k, v) in env.child_env() {
                cmd.env(k, v);
            }
            children.push(cmd.spawn().expect("spawn chronos tick"));
        }
        for c in children {
            let out = c.wait_with_output().await.unwrap();
            assert!(out.status.success(), "tick failed: {}", String::from_utf8_lossy(&out.stderr));
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            planned_total += report["planned"].as_u64().unwrap();
        }
    }

    let until = t0 + chrono::Duration::minutes(steps - 1) + chrono::Duration::from_std(DEFAULT_HORIZON).unwrap();
    let mut expected_total = 0;
    for (id, cron, tz) in &ids {
        let expected = CronExpr::parse(cron).unwrap().occurrences(parse_timezone(tz).unwrap(), t0, until, 100_000);
        let got = occurrences(&env, *id).await;
        let fires: Vec<DateTime<Utc>> = got.iter().map(|(f, _)| *f).collect();
        assert_eq!(fires, expected, "{cron} in {tz}: planned occurrences differ from the expression's");
        let distinct: BTreeSet<_> = fires.iter().collect();
        assert_eq!(distinct.len(), fires.len(), "{cron}: an occurrence was planned twice");
        expected_total += expected.len();
    }
    assert_eq!(planned_total as usize, expected_total, "the ticks together enqueued each occurrence once");
    // Redis holds each planned task once: as a delayed task, or, for the first seconds' ones
    // that were already due when a slow tick (a loaded machine) enqueued them, as a ready one.
    let k = env.engine.keys("default");
    assert_eq!((zcard(&env, &k.delayed).await + zcard(&env, &k.ready).await) as usize, expected_total);
    println!("planned {expected_total} occurrences of {} schedules over {steps} simulated minutes", ids.len());
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_ticks_in_one_process_share_many_schedules_without_duplicates() {
    let env = TestEnv::new().await;
    let s = scheduler(&env);
    let t0 = Utc::now().trunc_subsecs(0);
    let mut ids = Vec::new();
    for i in 0..120 {
        let mut sp = spec(&format!("s{i:03}"), "*/5 * * * * *", TaskTemplate::new("noop", json!({})));
        sp.paused = true;
        let id = s.create(&sp, None).await.unwrap().id;
        arm(&env, id, t0).await;
        ids.push(id);
    }
    // Four schedulers with their own connections, all at once, twice.
    let mut total = 0;
    for round in 0..2 {
        let now = t0 + chrono::Duration::seconds(30 * round);
        let mut handles = Vec::new();
        for _ in 0..4 {
            let c = chronos_core::Chronos::new(
                chronos_core::Engine::connect(&chronos_tests::redis_url(), &env.namespace).await.unwrap(),
                chronos_core::Store::connect(&env.database_url).await.unwrap(),
                256 * 1024,
                Duration::from_secs(3600),
            );
            let sched = Scheduler::new(c, DEFAULT_HORIZON);
            handles.push(tokio::spawn(async move { sched.tick_at(now).await.unwrap() }));
        }
        for h in handles {
            total += h.await.unwrap().planned;
        }
    }
    let until = t0 + chrono::Duration::seconds(30) + chrono::Duration::from_std(DEFAULT_HORIZON).unwrap();
    let per = CronExpr::parse("*/5 * * * * *").unwrap().occurrences(chronos_core::cron::Tz::UTC, t0, until, 10_000).len();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(rows as usize, per * ids.len());
    assert_eq!(total, per * ids.len());
    env.cleanup().await;
}

#[tokio::test]
async fn misfire_policies_after_a_ten_minute_tick_outage() {
    let env = TestEnv::new().await;
    let s = scheduler(&env);
    let cron = "*/30 * * * * *";
    let mut ids = HashMap::new();
    for m in [Misfire::RunAll, Misfire::RunOnce, Misfire::Skip] {
        let mut sp = spec(m.as_str(), cron, TaskTemplate::new("noop", json!({})));
        sp.misfire = m;
        sp.paused = true;
        ids.insert(m, s.create(&sp, None).await.unwrap().id);
    }
    // Keep clear of a :00/:30 boundary so the tick and this test agree on what was missed.
    while Utc::now().timestamp() % 30 > 27 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The last tick ran ten minutes ago; none since.
    let outage_from = Utc::now() - chrono::Duration::minutes(10);
    for id in ids.values() {
        arm(&env, *id, outage_from).await;
    }
    let w = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let report = s.tick().await.unwrap();
    let now = Utc::now();
    let missed = CronExpr::parse(cron).unwrap().occurrences(chronos_core::cron::Tz::UTC, outage_from, now, 1000);
    assert!(missed.len() >= 19, "ten minutes of a 30-second schedule: {missed:?}");

    let past = |occ: &[(DateTime<Utc>, Uuid)]| occ.iter().filter(|(f, _)| *f <= now).map(|(f, _)| *f).collect::<Vec<_>>();
    let all = occurrences(&env, ids[&Misfire::RunAll]).await;
    assert_eq!(past(&all), missed, "run_all runs every missed occurrence");
    let once = occurrences(&env, ids[&Misfire::RunOnce]).await;
    assert_eq!(past(&once), vec![*missed.last().unwrap()], "run_once runs the latest missed occurrence once");
    let skip = occurrences(&env, ids[&Misfire::Skip]).await;
    assert!(past(&skip).is_empty(), "skip runs none");
    // Each plans the horizon ahead the same way.
    let future = |occ: &[(DateTime<Utc>, Uuid)]| occ.iter().filter(|(f, _)| *f > now).count();
    assert_eq!(future(&all), future(&skip));
    assert_eq!(future(&once), future(&skip));
    assert!(future(&skip) >= 5);
    assert_eq!(report.misfires_skipped as usize, (missed.len() - 1) + missed.len());

    // The missed ones run now.
    let run_all = ids[&Misfire::RunAll];
    let expect = missed.len() + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(String, DateTime<Utc>, Uuid)> = sqlx::query_as(
            "SELECT status, fire_at, schedule_id FROM tasks WHERE fire_at <= $1 AND schedule_id IN ($2, $3) ORDER BY fire_at",
        )
        .bind(now)
        .bind(run_all)
        .bind(ids[&Misfire::RunOnce])
        .fetch_all(env.store.pool())
        .await
        .unwrap();
        if rows.len() == expect && rows.iter().all(|r| r.0 == "completed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missed occurrences did not all run (expected {expect}): {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
    env.cleanup().await;
}

/// Attempts of a schedule's runs: (task id, started, finished).
async fn attempts(env: &TestEnv, id: Uuid) -> Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> {
    sqlx::query(
        "SELECT a.task_id, a.started_at, a.finished_at FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.schedule_id = $1 AND a.started_at IS NOT NULL AND a.finished_at IS NOT NULL ORDER BY a.started_at",
    )
    .bind(id)
    .fetch_all(env.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn overlap_policies_with_a_task_slower_than_its_schedule() {
    let env = TestEnv::new().await;
    let s = scheduler(&env);
    let mut cfg = worker_config(&["default"]);
    cfg.concurrency = 16;
    let w = start_worker(&env, diag_registry(), cfg, None);
    let mut ids = HashMap::new();
    for o in [Overlap::Allow, Overlap::Skip, Overlap::QueueOne] {
        // Every second, each run takes 2.5 s.
        let mut sp = spec(o.as_str(), "* * * * * *", TaskTemplate::new("sleep", json!({ "ms": 2500 })));
        sp.overlap = o;
        ids.insert(o, s.create(&sp, None).await.unwrap().id);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    for id in ids.values() {
        s.set_paused(*id, true).await.unwrap();
    }
    // Everything left is running or finished; wait for Postgres to hold every outcome.
    wait_until(Duration::from_secs(20), "runs finished", || async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'cancelled')")
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        open == 0
    })
    .await;
    let overlapping = |a: &[(Uuid, DateTime<Utc>, DateTime<Utc>)]| a.windows(2).filter(|p| p[1].1 < p[0].2).count();
    let pool = env.store.pool().clone();
    let skipped = |id: Uuid| {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE schedule_id = $1 AND status = 'cancelled' AND last_error LIKE 'skipped: the previous run%'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
            n
        }
    };

    let allow = attempts(&env, ids[&Overlap::Allow]).await;
    assert!(allow.len() >= 6, "allow: {allow:?}");
    assert!(overlapping(&allow) >= 4, "allow lets runs overlap");
    assert_eq!(skipped(ids[&Overlap::Allow]).await, 0);

    let skip = attempts(&env, ids[&Overlap::Skip]).await;
    assert!((2..=4).contains(&skip.len()), "skip: one run per ~3 s: {skip:?}");
    assert_eq!(overlapping(&skip), 0, "skip never overlaps: {skip:?}");
    assert!(skipped(ids[&Overlap::Skip]).await >= 3);

    let q1 = attempts(&env, ids[&Overlap::QueueOne]).await;
    assert!((3..=4).contains(&q1.len()), "queue_one: runs back to back: {q1:?}");
    assert_eq!(overlapping(&q1), 0, "queue_one never overlaps: {q1:?}");
    // The parked run starts as soon as the one before it ends.
    let gaps: Vec<i64> = q1.windows(2).map(|p| (p[1].1 - p[0].2).num_milliseconds()).collect();
    assert!(gaps.iter().all(|g| (0..300).contains(g)), "queue_one gaps (ms) {gaps:?}");
    assert!(skipped(ids[&Overlap::QueueOne]).await >= 2);
    println!("overlap: allow {} runs, skip {} runs, queue_one {} runs (gaps {gaps:?} ms)", allow.len(), skip.len(), q1.len());
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_two_second_schedule_calls_a_local_server_on_the_second_and_stops_when_paused() {
    use axum::routing::post;
    let env = TestEnv::new().await;
    let hits: Arc<Mutex<Vec<SystemTime>>> = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/tick",
        post(move || {
            let h = h.clone();
            async move {
                h.lock().unwrap().push(SystemTime::now());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tick", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut reg = diag_registry();
    reg.register(chronos_workers::handlers::HttpHandler::new(None)).unwrap();
    let w = start_worker(&env, reg, worker_config(&["default"]), None);
    let s = scheduler(&env);
    let rec = s.create(&spec("ping", "*/2 * * * * *", TaskTemplate::new("http", json!({ "url": url, "body": {} }))), None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    s.set_paused(rec.id, true).await.unwrap();
    let paused_at = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let hits = hits.lock().unwrap().clone();
    assert!(hits.len() >= 4, "a run every 2 s for 9 s: {} hits", hits.len());
    let mut late_ms: Vec<f64> = hits
        .iter()
        .map(|t| {
            let ms = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
            (ms % 2000) as f64 // fire instants are the even seconds
        })
        .collect();
    let mut seconds: Vec<u64> = hits.iter().map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() / 2).collect();
    seconds.dedup();
    assert_eq!(seconds.len(), hits.len(), "one call per occurrence");
    late_ms.sort_by(f64::total_cmp);
    let max = *late_ms.last().unwrap();
    println!("2-second schedule: {} calls, lateness p50 {:.1} ms, max {max:.1} ms", hits.len(), late_ms[late_ms.len() / 2]);
    assert!(max < 250.0, "each call within 250 ms of its fire instant: {late_ms:?}");
    let after_pause = hits.iter().filter(|t| **t > paused_at + Duration::from_millis(300)).count();
    assert_eq!(after_pause, 0, "nothing runs once paused");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE schedule_id = $1 AND status IN ('scheduled', 'queued')")
        .bind(rec.id)
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "pausing dropped the planned occurrences");
    assert_eq!(zcard(&env, &env.engine.keys("default").delayed).await, 0);
    server.abort();
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_tick_that_died_between_writing_rows_and_enqueueing_is_completed_by_the_next_without_a_second_run() {
    let env = TestEnv::new().await;
    let s = scheduler(&env);
    let template = TaskTemplate::new("noop", json!({}));
    let mut sp = spec("five", "*/5 * * * * *", template.clone());
    sp.paused = true;
    let id = s.create(&sp, None).await.unwrap().id;
    let t0 = Utc::now().trunc_subsecs(0);
    arm(&env, id, t0).await;
    let expr = CronExpr::parse("*/5 * * * * *").unwrap();
    let until = t0 + chrono::Duration::from_std(DEFAULT_HORIZON).unwrap();
    let all = expr.occurrences(chronos_core::cron::Tz::UTC, t0, until, 1000);

    // A previous tick wrote the first minute's rows, then died before Redis heard of them —
    // except the first, which it had enqueued and which has already run (its tombstone says so;
    // Postgres has not caught up and still shows it queued).
    let written: Vec<_> = all
        .iter()
        .take(12)
        .map(|f| {
            let mut t = template.task().run_at(*f);
            t.origin = Some(chronos_core::model::Origin { schedule_id: id, fire_at: *f, overlap: Overlap::Allow });
            t.prepare(1 << 20).unwrap()
        })
        .collect();
    env.store.insert_tasks(&written, Duration::from_secs(60)).await.unwrap();
    let keys = env.engine.keys("default");
    let mut c = env.engine.connection();
    let _: () = redis::cmd("SET").arg(format!("{}done:{}", keys.prefix, written[0].id)).arg(1).query_async(&mut c).await.unwrap();

    let report = s.tick_at(t0).await.unwrap();
    assert_eq!(report.planned, all.len() - 1, "every occurrence enqueued once, the one that ran not again");
    let delayed: Vec<String> = redis::cmd("ZRANGE").arg(&keys.delayed).arg(0).arg(-1).query_async(&mut c).await.unwrap();
    assert_eq!(delayed.len(), all.len() - 1);
    assert!(!delayed.contains(&written[0].id.to_string()));
    assert_eq!(occurrences(&env, id).await.len(), all.len());

    // A row Redis never received is dropped on pause like a planned one; the one that ran stays.
    let late = {
        let mut t = template.task().run_at(until + chrono::Duration::seconds(5));
        t.origin =
            Some(chronos_core::model::Origin { schedule_id: id, fire_at: until + chrono::Duration::seconds(5), overlap: Overlap::Allow });
        t.prepare(1 << 20).unwrap()
    };
    env.store.insert_tasks(std::slice::from_ref(&late), Duration::from_secs(60)).await.unwrap();
    s.set_paused(id, true).await.unwrap();
    let left = occurrences(&env, id).await;
    assert_eq!(left.iter().map(|(_, t)| *t).collect::<Vec<_>>(), vec![written[0].id]);
    assert_eq!(zcard(&env, &keys.delayed).await, 0);
    env.cleanup().await;
}
