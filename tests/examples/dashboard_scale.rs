//! How fast the dashboard renders at scale: 100,000 tasks in Postgres (90,000 finished or dead
//! written directly, with errors to search) and 10,000 waiting in Redis (enqueued through
//! `Chronos`), then the overview, a search and the other pages, each fetched 7 times (after a
//! warm-up); prints the median and the slowest. Run against the services scripts/test starts:
//!
//!   cargo run --release -p chronos-tests --example dashboard_scale

use std::time::{Duration, Instant};

use chronos_core::config::Secret;
use chronos_core::model::NewTask;
use chronos_core::schedule::{DEFAULT_HORIZON, Scheduler};
use chronos_dashboard::DashState;
use chronos_dashboard::config::DashboardConfig;
use chronos_tests::{ADMIN_KEY, TestEnv};
use serde_json::json;

#[tokio::main]
async fn main() {
    let env = TestEnv::new().await;
    let t0 = Instant::now();
    sqlx::query(
        "INSERT INTO tasks (id, queue, name, payload, priority, status, run_at, attempts, max_attempts, backoff, timeout_ms, last_error, created_at, finished_at)
         SELECT gen_random_uuid(), (ARRAY['default','mail','reports','webhooks'])[1 + i % 4], (ARRAY['email','http','report'])[1 + i % 3],
                jsonb_build_object('n', i, 'to', 'user' || i || '@example.com'), 50,
                CASE WHEN i % 10 = 0 THEN 'dead' WHEN i % 37 = 0 THEN 'cancelled' ELSE 'completed' END,
                now() - make_interval(secs => i), 1, 5, '{}'::jsonb, 30000,
                CASE WHEN i % 10 = 0 THEN (ARRAY['connection timeout after 30 s','smtp: 421 try again later','HTTP 503 from upstream'])[1 + i % 3] END,
                now() - make_interval(secs => i), now() - make_interval(secs => i)
         FROM generate_series(1, 90000) i",
    )
    .execute(env.store.pool())
    .await
    .unwrap();
    for chunk in 0..10 {
        let batch: Vec<NewTask> =
            (0..1000).map(|i| NewTask::new("noop", json!({"chunk": chunk, "i": i})).queue(["default", "mail"][i % 2])).collect();
        env.client.enqueue_batch(batch).await.unwrap();
    }
    sqlx::query("ANALYZE tasks").execute(env.store.pool()).await.unwrap();
    println!("seeded 100,000 tasks (10,000 waiting in Redis) in {:.1} s", t0.elapsed().as_secs_f64());

    let (_stop, rx) = tokio::sync::watch::channel(false);
    let state = DashState::start(
        env.client.clone(),
        Scheduler::new(env.client.clone(), DEFAULT_HORIZON),
        DashboardConfig::new(Some(Secret::new(ADMIN_KEY))),
        rx,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, chronos_dashboard::app(state)).await.unwrap() });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = http.post(format!("{base}/login")).form(&[("key", ADMIN_KEY)]).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    for path in ["/", "/tasks?q=timeout", "/tasks?q=timeout&status=dead&queue=mail", "/tasks", "/dlq", "/schedules"] {
        let mut times = Vec::new();
        for i in 0..8 {
            let t = Instant::now();
            let r = http.get(format!("{base}{path}")).header("cookie", &cookie).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            let body = r.text().await.unwrap();
            if i > 0 {
                times.push(t.elapsed());
            }
            assert!(!body.is_empty());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{path:45} median {:6.1} ms   slowest {:6.1} ms", ms(times[times.len() / 2]), ms(times[times.len() - 1]));
    }
    env.cleanup().await;
}
