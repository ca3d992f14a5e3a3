//! The dashboard's handlers against real Redis and Postgres: every page and action, role
//! refusals (a viewer sees no buttons and its POSTs get a 403 page), CSRF and cross-site
//! refusals, expired and revoked sessions, unknown tasks, escaping of hostile payloads, and
//! the live event stream. The browser-level checks are in `dashboard/e2e/` (scripts/test).

use std::time::Duration;

use chronos_core::access::Role;
use chronos_core::config::Secret;
use chronos_core::model::NewTask;
use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_dashboard::DashState;
use chronos_dashboard::config::DashboardConfig;
use chronos_tests::{ADMIN_KEY, TestEnv, diag_registry, start_worker, wait_until, worker_config};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

/// The dashboard served in-process on a free port.
struct Dash {
    base: String,
    http: reqwest::Client,
    state: DashState,
    _stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dash {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_dashboard(env: &TestEnv, cfg: DashboardConfig) -> Dash {
    let (tx, rx) = watch::channel(false);
    let scheduler = Scheduler::new(env.client.clone(), DEFAULT_HORIZON);
    let state = DashState::start(env.client.clone(), scheduler, cfg, rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = chronos_dashboard::app(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Dash { base, http, state, _stop: tx, task }
}

async fn dashboard(env: &TestEnv) -> Dash {
    start_dashboard(env, DashboardConfig::new(Some(Secret::new(ADMIN_KEY)))).await
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.body.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

/// A browser: a cookie jar (session and flash cookies) against one dashboard.
struct Browser<'a> {
    dash: &'a Dash,
    jar: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl<'a> Browser<'a> {
    fn new(dash: &'a Dash) -> Self {
        Browser { dash, jar: Default::default() }
    }

    fn with_session(dash: &'a Dash, token: &str) -> Self {
        let b = Browser::new(dash);
        b.jar.lock().unwrap().insert("chronos_session".into(), token.into());
        b
    }

    fn session(&self) -> Option<String> {
        self.jar.lock().unwrap().get("chronos_session").cloned()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let cookies: Vec<String> = self.jar.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let req = if cookies.is_empty() { req } else { req.header(COOKIE, cookies.join("; ")) };
        let r = req.send().await.unwrap();
        for v in r.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').unwrap();
            let mut jar = self.jar.lock().unwrap();
            if attrs.contains("Max-Age=0") {
                jar.remove(k)
            } else {
                jar.insert(k.to_owned(), val.to_owned())
            };
        }
        Page { status: r.status(), headers: r.headers().clone(), body: r.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.dash.http.get(format!("{}{path}", self.dash.base))).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.dash.http.post(format!("{}{path}", self.dash.base)).form(form)).await
    }

    async fn login(&mut self, key: &str) -> Page {
        self.post("/login", &[("key", key)]).await
    }

    /// The CSRF token of the forms on `path`.
    async fn csrf(&self, path: &str) -> String {
        self.get(path).await.csrf()
    }
}

async fn key(env: &TestEnv, role: Role) -> String {
    env.store.create_key(&format!("{role} key"), role, "test").await.unwrap().1
}

const PAGES: [&str; 4] = ["/", "/tasks", "/dlq", "/schedules"];

#[tokio::test]
async fn signed_out_pages_send_the_browser_to_the_sign_in_form() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let b = Browser::new(&dash);
    for path in PAGES.iter().chain(&["/tasks/0190a3b4-0000-7000-8000-000000000000"]) {
        let p = b.get(path).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert!(p.location().starts_with("/login"), "{path} → {}", p.location());
    }
    assert_eq!(b.get("/tasks?status=dead").await.location(), "/login?next=%2Ftasks%3Fstatus%3Ddead");
    let login = b.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains(r#"name="key""#) && login.body.contains(r#"action="/login""#));
    // The event stream and every action refuse too.
    assert_eq!(b.get("/events").await.status, StatusCode::SEE_OTHER);
    assert_eq!(b.post("/queues/default/pause", &[("csrf", "x")]).await.location(), "/login");
    assert_eq!(b.get("/healthz").await.status, StatusCode::OK);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_and_a_bad_key_is_refused() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let mut b = Browser::new(&dash);
    let bad = b.login("chk_not_a_key_at_all").await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("not valid") && b.session().is_none());
    let ok = b.login(ADMIN_KEY).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/");
    let cookie = ok.headers.get(SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"), "{cookie}");
    // Only a hash of the session id is stored.
    let token = b.session().unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id_hash FROM dashboard_sessions").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(stored, vec![chronos_core::access::hash_secret(&token)]);
    // `next` brings the browser back where it was, and only to this site.
    let mut c = Browser::new(&dash);
    assert_eq!(c.post("/login", &[("key", ADMIN_KEY), ("next", "/dlq")]).await.location(), "/dlq");
    assert_eq!(c.post("/login", &[("key", ADMIN_KEY), ("next", "//evil.example/")]).await.location(), "/");
    c.login(ADMIN_KEY).await;
    assert_eq!(c.get("/login").await.location(), "/");

    let mut cfg = DashboardConfig::new(Some(Secret::new(ADMIN_KEY)));
    cfg.secure_cookies = true;
    let secure = start_dashboard(&env, cfg).await;
    let p = Browser::new(&secure).login(ADMIN_KEY).await;
    assert!(p.headers.get(SET_COOKIE).unwrap().to_str().unwrap().contains("; Secure"));
    drop((dash, secure));
    env.cleanup().await;
}

#[tokio::test]
async fn every_page_renders_for_an_admin_under_a_strict_content_security_policy() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let t = env.client.enqueue(NewTask::new("noop", json!({"order": 42})).queue("mail")).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    for path in PAGES.iter().copied().chain([format!("/tasks/{}", t.id).as_str()]) {
        let p = b.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
        let csp = p.headers.get(CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(p.headers.get("cache-control").unwrap(), "no-store");
        assert!(!p.body.contains("<script>") && !p.body.contains(" style="), "{path} has inline script or style");
        assert!(p.body.contains("Sign out"), "{path}");
    }
    let overview = b.get("/").await;
    assert!(overview.body.contains(r#"data-queue="mail""#) && overview.body.contains("Throughput"));
    let detail = b.get(&format!("/tasks/{}", t.id)).await;
    assert!(detail.body.contains("&quot;order&quot;: 42"), "pretty-printed payload");
    // The assets the pages link to are served, cacheable for a year; an old name is not.
    let css = detail.body.split("href=\"/assets/app.").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let r = dash.http.get(format!("{}/assets/app.{css}", dash.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("cache-control").unwrap().to_str().unwrap().contains("immutable"));
    assert_eq!(dash.http.get(format!("{}/assets/app.0000000000.css", dash.base)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(b.get("/no/such/page").await.status, StatusCode::NOT_FOUND);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn a_script_payload_and_error_are_rendered_as_text() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let evil = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    let t =
        env.client.enqueue(NewTask::new("fail", json!({"times": 5, "permanent": true, "message": evil})).max_attempts(1)).await.unwrap();
    let held = env.client.enqueue(NewTask::new("noop", json!({"note": evil})).delay(Duration::from_secs(3600))).await.unwrap();
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    wait_until(Duration::from_secs(10), "the task is dead", || async { env.status(t.id).await == "dead" }).await;
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    for path in [format!("/tasks/{}", t.id), format!("/tasks/{}", held.id), "/tasks?status=dead".into(), "/dlq".into()] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert!(!p.body.contains("<script>alert") && !p.body.contains("<img src=x"), "{path} rendered markup from data");
        assert!(p.body.contains("&lt;script&gt;alert"), "{path} shows the text");
    }
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn an_unknown_task_is_a_404_page() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    for path in [format!("/tasks/{}", Uuid::now_v7()), "/tasks/not-a-uuid".into()] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
        assert!(p.body.contains("Not found") && p.body.contains("<html"), "{path}: an HTML page");
    }
    let csrf = b.csrf("/tasks").await;
    assert_eq!(b.post(&format!("/tasks/{}/retry", Uuid::now_v7()), &[("csrf", &csrf)]).await.status, StatusCode::NOT_FOUND);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn a_viewer_sees_no_buttons_and_its_forged_posts_are_refused() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let scheduled = env.client.enqueue(NewTask::new("noop", json!({})).delay(Duration::from_secs(3600))).await.unwrap();
    let sched = Scheduler::new(env.client.clone(), DEFAULT_HORIZON);
    let s = sched.create(&ScheduleSpec::new("nightly", "0 3 * * *", TaskTemplate::new("noop", json!({}))), None).await.unwrap();
    let viewer = key(&env, Role::Viewer).await;
    let mut b = Browser::new(&dash);
    b.login(&viewer).await;
    for path in PAGES.iter().copied().chain([format!("/tasks/{}", scheduled.id).as_str()]) {
        let p = b.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        for button in ["Retry now", ">Cancel<", ">Redrive", ">Pause<", ">Resume<", ">Trigger<"] {
            assert!(!p.body.contains(button), "{path} shows {button} to a viewer");
        }
    }
    // The token is the viewer's own, so only the role stops these.
    let csrf = b.csrf("/").await;
    let id = scheduled.id;
    for path in [
        format!("/tasks/{id}/retry"),
        format!("/tasks/{id}/cancel"),
        format!("/tasks/{id}/redrive"),
        "/queues/default/pause".into(),
        "/queues/default/resume".into(),
        "/dlq/redrive".into(),
        format!("/schedules/{}/pause", s.id),
        format!("/schedules/{}/trigger", s.id),
    ] {
        let p = b.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
        assert!(p.body.contains("viewer role may not"), "{path}: a 403 page");
    }
    assert_eq!(env.status(id).await, "scheduled");
    assert!(!env.engine.counts("default").await.unwrap().paused);
    assert!(!sched.get(s.id).await.unwrap().unwrap().paused);
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(env.store.pool()).await.unwrap();
    assert_eq!(actions, 0);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn a_post_without_the_session_csrf_token_or_from_another_site_is_refused() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let t = env.client.enqueue(NewTask::new("noop", json!({})).delay(Duration::from_secs(3600))).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let path = format!("/tasks/{}/cancel", t.id);
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = b.post(&path, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        assert!(p.body.contains("expired or did not come from this dashboard"));
    }
    // Another session's token is not this one's.
    let mut other = Browser::new(&dash);
    other.login(ADMIN_KEY).await;
    let theirs = other.csrf("/").await;
    assert_eq!(b.post(&path, &[("csrf", &theirs)]).await.status, StatusCode::FORBIDDEN);
    // The right token from another origin.
    let mine = b.csrf("/").await;
    let cross = b
        .send(dash.http.post(format!("{}{path}", dash.base)).header("origin", "https://evil.example").form(&[("csrf", mine.as_str())]))
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(env.status(t.id).await, "scheduled", "nothing was cancelled");
    // The same form, done properly.
    let ok = b.post(&path, &[("csrf", &mine)]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(b.get(ok.location()).await.body.contains("Cancelled."));
    assert_eq!(env.engine.counts("default").await.unwrap().delayed, 0, "no longer scheduled in Redis");
    drop(dash);
    env.cleanup().await;
}

fn admin() -> chronos_core::access::Caller {
    chronos_core::access::Caller { key_id: "test".into(), role: Role::Admin }
}

#[tokio::test]
async fn an_expired_or_revoked_session_goes_back_to_sign_in() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    sqlx::query("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'").execute(env.store.pool()).await.unwrap();
    let p = b.get("/tasks").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/login?next=%2Ftasks");

    let (k, secret) = env.store.create_key("ops", Role::Operator, "test").await.unwrap();
    let mut op = Browser::new(&dash);
    op.login(&secret).await;
    assert_eq!(op.get("/").await.status, StatusCode::OK);
    assert!(env.store.revoke_key(k.id).await.unwrap());
    assert_eq!(op.get("/").await.status, StatusCode::SEE_OTHER, "a revoked key's session ends at once");

    // Signing out ends the session: the old cookie no longer works.
    let mut c = Browser::new(&dash);
    c.login(ADMIN_KEY).await;
    let csrf = c.csrf("/").await;
    let out = c.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.location(), "/login");
    assert!(out.headers.get(SET_COOKIE).unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(c.get("/").await.status, StatusCode::SEE_OTHER);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn a_session_survives_a_dashboard_restart() {
    let env = TestEnv::new().await;
    let first = dashboard(&env).await;
    let mut b = Browser::new(&first);
    b.login(ADMIN_KEY).await;
    let token = b.session().unwrap();
    drop(b);
    drop(first);
    let second = dashboard(&env).await;
    let b = Browser::with_session(&second, &token);
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    drop(second);
    env.cleanup().await;
}

#[tokio::test]
async fn retry_now_cancel_and_redrive_change_the_task_and_are_audited() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let dead = |msg: &str| NewTask::new("fail", json!({"times": 1, "message": msg})).max_attempts(1);
    let a = env.client.enqueue(dead("first")).await.unwrap();
    let r = env.client.enqueue(dead("second")).await.unwrap();
    let c = env.client.enqueue(NewTask::new("noop", json!({})).delay(Duration::from_secs(3600))).await.unwrap();
    wait_until(Duration::from_secs(10), "both are dead", || async { env.status(a.id).await == "dead" && env.status(r.id).await == "dead" })
        .await;
    let (k, secret) = env.store.create_key("ops", Role::Operator, "test").await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(&secret).await;
    let page = b.get(&format!("/tasks/{}", a.id)).await;
    assert!(page.body.contains("Retry now") && page.body.contains("Stack trace"));
    assert!(page.body.contains("chronos_workers::handlers::diag::Fail::handle"), "the stack trace is shown");
    let csrf = page.csrf();

    let p = b.post(&format!("/tasks/{}/retry", a.id), &[("csrf", &csrf)]).await;
    assert_eq!(p.location(), format!("/tasks/{}", a.id));
    let p = b.post(&format!("/tasks/{}/redrive", r.id), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let p = b.post(&format!("/tasks/{}/cancel", c.id), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    wait_until(Duration::from_secs(10), "retried and redriven tasks complete", || async {
        env.status(a.id).await == "completed" && env.status(r.id).await == "completed"
    })
    .await;
    wait_until(Duration::from_secs(10), "the cancel is recorded", || async {
        env.client.task(&admin(), c.id).await.unwrap().status == "cancelled"
    })
    .await;

    // The next page says what happened, once.
    let p = b.get(&format!("/tasks/{}", c.id)).await;
    assert!(p.body.contains("Cancelled."), "flash message");
    assert!(!b.get("/").await.body.contains("Cancelled."), "shown once");

    // A refusal is a message on the page, not an error page: a completed task cannot be retried.
    let p = b.post(&format!("/tasks/{}/retry", a.id), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let flash = p.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(flash.starts_with("chronos_flash=err."), "{flash}");
    let shown = b.get(&format!("/tasks/{}", a.id)).await;
    assert!(shown.body.contains("only scheduled, retrying or dead tasks can be retried now"));
    assert!(shown.body.contains("retry now") && shown.body.contains(&k.id.to_string()), "manual action with who did it");

    let actors: Vec<String> = sqlx::query_scalar("SELECT DISTINCT actor FROM audit_log").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(actors, vec![k.id.to_string()]);
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn queues_pause_and_resume_and_a_dot_queue_is_refused() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    env.client.enqueue(NewTask::new("noop", json!({})).queue("reports").delay(Duration::from_secs(60))).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let overview = b.get("/").await;
    assert!(overview.body.contains(r#"action="/queues/reports/pause""#));
    let csrf = overview.csrf();
    assert_eq!(b.post("/queues/reports/pause", &[("csrf", &csrf)]).await.location(), "/");
    assert!(env.engine.counts("reports").await.unwrap().paused);
    let overview = b.get("/").await;
    assert!(overview.body.contains("paused") && overview.body.contains(r#"action="/queues/reports/resume""#));
    b.post("/queues/reports/resume", &[("csrf", &csrf)]).await;
    assert!(!env.engine.counts("reports").await.unwrap().paused);
    // Browsers and reqwest resolve `%2E%2E` as `..` before sending; a hand-written request does not.
    for q in ["%2E%2E", "%2E"] {
        let status = raw_post(&dash, &format!("/queues/{q}/pause"), &b.session().unwrap(), &csrf).await;
        assert_eq!(status, 422, "{q}");
    }
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(actions, ["pause_queue", "resume_queue"]);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn the_overview_badges_a_queue_with_work_and_no_live_worker_until_one_serves_it() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    env.client.enqueue(NewTask::new("noop", json!({})).queue("reports").delay(Duration::from_secs(3600))).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let overview = b.get("/").await;
    assert!(overview.body.contains("data-unserved") && overview.body.contains("no worker"), "badged: {}", overview.body);
    let worker = start_worker(&env, diag_registry(), worker_config(&["reports"]), None);
    wait_until(Duration::from_secs(10), "the worker announced itself", || async { !env.engine.live_workers().await.unwrap().is_empty() })
        .await;
    let overview = b.get("/").await;
    assert!(!overview.body.contains("data-unserved"), "no badge once a worker serves reports");
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}

/// A POST written by hand on a socket, with the path exactly as given; returns the status.
async fn raw_post(dash: &Dash, path: &str, session: &str, csrf: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = dash.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = format!("csrf={csrf}");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: chronos_session={session}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn search_and_filters_find_tasks_and_page_newest_first() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let dead = env
        .client
        .enqueue(NewTask::new("fail", json!({"times": 1, "message": "upstream zanzibar refused the connection"})).max_attempts(1))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..55 {
        ids.push(env.client.enqueue(NewTask::new("noop", json!({"n": i})).queue("bulk").delay(Duration::from_secs(600))).await.unwrap().id);
    }
    wait_until(Duration::from_secs(10), "dead", || async { env.status(dead.id).await == "dead" }).await;
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let found = b.get("/tasks?q=zanzibar").await;
    assert!(found.body.contains(&dead.id.to_string()));
    assert_eq!(found.body.matches("data-task=").count(), 1);
    let page1 = b.get("/tasks?queue=bulk").await;
    assert_eq!(page1.body.matches("data-task=").count(), 50);
    assert!(page1.body.contains(&ids[54].to_string()) && !page1.body.contains(&ids[0].to_string()), "newest first");
    let older = page1.body.split("cursor=").nth(1).unwrap().split('"').next().unwrap();
    let page2 = b.get(&format!("/tasks?queue=bulk&cursor={older}")).await;
    assert_eq!(page2.body.matches("data-task=").count(), 5);
    assert!(page2.body.contains(&ids[0].to_string()));
    assert!(b.get("/tasks?status=dead&queue=default").await.body.contains(&dead.id.to_string()));
    assert_eq!(b.get("/tasks?status=dead&queue=bulk").await.body.matches("data-task=").count(), 0);
    let future = b.get("/tasks?from=2999-01-01T00:00").await;
    assert_eq!(future.body.matches("data-task=").count(), 0);
    let bad = b.get("/tasks?status=sleeping").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("unknown status"));
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn a_producer_sees_only_its_own_tasks() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let (pk, secret) = env.store.create_key("producer", Role::Producer, "test").await.unwrap();
    let mut mine = NewTask::new("noop", json!({"mine": true})).delay(Duration::from_secs(60));
    mine.created_by = Some(pk.id.to_string());
    let mine = env.client.enqueue(mine).await.unwrap();
    let theirs = env.client.enqueue(NewTask::new("noop", json!({})).delay(Duration::from_secs(60))).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(&secret).await;
    assert_eq!(b.get("/").await.location(), "/tasks");
    let list = b.get("/tasks").await;
    assert!(list.body.contains(&mine.id.to_string()) && !list.body.contains(&theirs.id.to_string()));
    assert_eq!(b.get(&format!("/tasks/{}", theirs.id)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(b.get("/dlq").await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/schedules").await.status, StatusCode::FORBIDDEN);
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn the_dlq_groups_dead_tasks_by_error_and_redrives_a_group() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let mut smtp = Vec::new();
    for _ in 0..3 {
        smtp.push(
            env.client
                .enqueue(NewTask::new("fail", json!({"times": 1, "message": "smtp: 421 try later"})).max_attempts(1))
                .await
                .unwrap()
                .id,
        );
    }
    let other = env.client.enqueue(NewTask::new("fail", json!({"times": 1, "message": "disk full"})).max_attempts(1)).await.unwrap().id;
    wait_until(Duration::from_secs(10), "all dead", || async {
        let mut all = true;
        for id in smtp.iter().chain([&other]) {
            all &= env.status(*id).await == "dead";
        }
        all
    })
    .await;
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let page = b.get("/dlq").await;
    assert!(page.body.contains("4 dead tasks in 2 error groups"), "{}", page.body);
    let smtp_at = page.body.find("smtp: 421 try later").unwrap();
    assert!(smtp_at < page.body.find("disk full").unwrap(), "largest group first");
    let p = b.post("/dlq/redrive", &[("csrf", &page.csrf()), ("error", "smtp: 421 try later")]).await;
    assert_eq!(p.location(), "/dlq");
    // The redrive is a job: worked by whichever process runs the job runner.
    let runner = chronos_core::services::Services::new(env.engine.clone()).job_runner(env.store.clone(), None, "dash-runner").start();
    wait_until(Duration::from_secs(15), "the group completes", || async {
        let mut all = true;
        for id in &smtp {
            all &= env.status(*id).await == "completed";
        }
        all
    })
    .await;
    assert_eq!(env.status(other).await, "dead", "the other group stays");
    let admin = chronos_core::access::Caller { key_id: "t".into(), role: chronos_core::access::Role::Admin };
    wait_until(Duration::from_secs(15), "the job completed", || async {
        env.client.jobs(&admin, None, 1).await.unwrap()[0].state == "completed"
    })
    .await;
    let job = env.client.jobs(&admin, None, 1).await.unwrap().remove(0);
    assert_eq!((job.total, job.succeeded, job.skipped), (3, 3, 0), "{job:?}");
    runner.stop().await;
    let page = b.get("/dlq").await;
    assert!(page.body.contains("1 dead task in 1 error group") && page.body.contains("<progress"), "{}", page.body);
    assert!(page.body.contains("Redrive dead tasks failing with “smtp: 421 try later”"), "the finished job is shown: {}", page.body);
    let jobs = b.get("/jobs").await;
    assert_eq!(jobs.status, StatusCode::OK);
    assert!(jobs.body.contains(&format!(r#"data-job="{}""#, job.id)) && jobs.body.contains("completed"), "{}", jobs.body);
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}

#[tokio::test]
async fn the_schedules_page_shows_cron_in_words_next_fires_and_acts() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    let sched = Scheduler::new(env.client.clone(), DEFAULT_HORIZON);
    let mut spec = ScheduleSpec::new("nightly-report", "30 2 * * *", TaskTemplate::new("noop", json!({})));
    spec.timezone = "Europe/Berlin".into();
    let s = sched.create(&spec, None).await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let page = b.get("/schedules").await;
    assert!(page.body.contains("nightly-report") && page.body.contains("At 02:30, every day") && page.body.contains("Europe/Berlin"));
    assert_eq!(page.body.matches("<li title=").count(), 5, "five next fires");
    assert!(page.body.contains("+01:00") || page.body.contains("+02:00"), "fires in the zone's offset");
    let csrf = page.csrf();
    assert_eq!(b.post(&format!("/schedules/{}/pause", s.id), &[("csrf", &csrf)]).await.location(), "/schedules");
    assert!(sched.get(s.id).await.unwrap().unwrap().paused);
    b.post(&format!("/schedules/{}/resume", s.id), &[("csrf", &csrf)]).await;
    assert!(!sched.get(s.id).await.unwrap().unwrap().paused);
    b.post(&format!("/schedules/{}/trigger", s.id), &[("csrf", &csrf)]).await;
    let runs = sched.runs(s.id, 5).await.unwrap();
    assert_eq!(runs.len(), 1, "the triggered run");
    assert!(b.get("/schedules").await.body.contains(&format!("/tasks/{}", runs[0].id)), "last runs link to their tasks");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(actions, ["schedule_pause", "schedule_resume", "schedule_trigger"]);
    assert_eq!(b.post(&format!("/schedules/{}/trigger", Uuid::now_v7()), &[("csrf", &csrf)]).await.status, StatusCode::NOT_FOUND);
    drop(dash);
    env.cleanup().await;
}

/// Read SSE frames from `r` until one of `event` whose data contains `needle`.
async fn next_event(r: &mut reqwest::Response, buf: &mut String, event: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let kind = frame.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
            let data: String = frame.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if kind == event && data.contains(needle) {
                return frame;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, r.chunk()).await.unwrap_or_else(|_| panic!("no {event} event with {needle}"));
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("stream open")));
    }
}

#[tokio::test]
async fn the_event_stream_sends_a_snapshot_then_each_transition_and_resyncs_after_a_restart() {
    let env = TestEnv::new().await;
    let dash = dashboard(&env).await;
    env.engine.register_queue("default").await.unwrap();
    let mut b = Browser::new(&dash);
    b.login(ADMIN_KEY).await;
    let cookie = format!("chronos_session={}", b.session().unwrap());
    let mut r = dash.http.get(format!("{}/events", dash.base)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/event-stream"));
    let mut buf = String::new();
    next_event(&mut r, &mut buf, "counts", r#""name":"default""#).await;
    // Give the outbox reader a moment to list the queue before the task runs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let worker = start_worker(&env, diag_registry(), worker_config(&["default"]), None);
    let t = env.client.enqueue(NewTask::new("noop", json!({}))).await.unwrap();
    let done = next_event(&mut r, &mut buf, "tasks", &format!(r#""id":"{}","k":"completed""#, t.id)).await;
    assert!(done.contains(r#""s":"completed""#), "{done}");
    let id = done.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_owned();
    assert!(id.starts_with(&dash.state.live.boot));
    drop(r);
    // Reconnecting to this process: the missed frames are replayed from the ring.
    let mut again =
        dash.http.get(format!("{}/events", dash.base)).header(COOKIE, &cookie).header("last-event-id", "0-0").send().await.unwrap();
    next_event(&mut again, &mut String::new(), "resync", "").await;
    let prev = format!("{}-0", dash.state.live.boot);
    let mut replay =
        dash.http.get(format!("{}/events", dash.base)).header(COOKIE, &cookie).header("last-event-id", prev).send().await.unwrap();
    next_event(&mut replay, &mut String::new(), "tasks", &t.id.to_string()).await;
    worker.stop().await;
    drop(dash);
    env.cleanup().await;
}
