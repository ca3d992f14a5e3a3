//! The `chronos` command as a user runs it: enqueue, a worker runs the task, `task` shows it;
//! a bad setting stops the process with a message naming the variable.

use std::process::Stdio;
use std::time::Duration;

use chronos_tests::{TestEnv, chronos_bin, spawn_worker_process, wait_until};

fn chronos(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(chronos_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("run chronos")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_with_the_cli_is_run_by_a_worker_and_shown_with_its_attempts() {
    let env = TestEnv::new().await;
    let out = chronos(
        &env,
        &["enqueue", "--name", "fail", "--payload", r#"{"times":1}"#, "--priority", "high", "--backoff-base-ms", "50", "--jitter", "none"],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["created"], true);
    let id = created["id"].as_str().unwrap().to_owned();

    let mut w = spawn_worker_process(&env, &[]);
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    wait_until(Duration::from_secs(15), "task completed", || async { env.status(uuid).await == "completed" }).await;
    let out = chronos(&env, &["task", &id, "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["task"]["status"], "completed");
    assert_eq!(shown["task"]["priority"], 75);
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(shown["attempts"][0]["outcome"], "failed");
    w.start_kill().unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn an_idempotency_key_given_twice_on_the_cli_creates_one_task() {
    let env = TestEnv::new().await;
    let args = ["enqueue", "--name", "noop", "--idempotency-key", "invoice-7"];
    let a: serde_json::Value = serde_json::from_slice(&chronos(&env, &args, &[]).stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&chronos(&env, &args, &[]).stdout).unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!((a["created"].as_bool(), b["created"].as_bool()), (Some(true), Some(false)));
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_and_bad_settings_are_refused_with_a_message_that_says_what_to_fix() {
    let env = TestEnv::new().await;
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["worker"], &[("CHRONOS_CONCURRENCY", "lots")], "CHRONOS_CONCURRENCY"),
        (&["worker"], &[("CHRONOS_LEASE_MS", "10")], "CHRONOS_LEASE_MS"),
        (&["worker"], &[("CHRONOS_QUEUES", "a{b}")], "CHRONOS_QUEUES"),
        (&["worker"], &[("REDIS_URL", "http://nope")], "REDIS_URL"),
        (&["worker"], &[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (&["worker"], &[("CHRONOS_SMTP_URL", "mail.example.com")], "CHRONOS_SMTP_URL"),
        (&["worker"], &[("CHRONOS_DIAGNOSTIC_HANDLERS", "maybe")], "CHRONOS_DIAGNOSTIC_HANDLERS"),
        (&["enqueue", "--name", "noop", "--priority", "101"], &[], "priority"),
        (&["enqueue", "--name", "noop", "--payload", "{not json"], &[], "--payload"),
        (&["enqueue", "--name", "noop", "--queue", "bad queue"], &[], "queue"),
        (&["enqueue", "--name", "noop", "--run-at", "tomorrow"], &[], "--run-at"),
    ];
    for (args, vars, needle) in cases {
        let out = chronos(&env, args, vars);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {vars:?} should exit 2; stderr: {err}");
        assert!(err.contains(needle), "{args:?} {vars:?}: message should name {needle}: {err}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_sentences_on_stderr_with_a_documented_exit_code_by_kind() {
    let env = TestEnv::new().await;
    let id = env.client.enqueue(chronos_core::NewTask::new("noop", serde_json::json!({}))).await.unwrap().id.to_string();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: &[Case] = &[
        (&["retry", &id], &[], 4, "chronos: refused: the task is queued; only scheduled, retrying or dead tasks can be retried now"),
        (&["task", "01a23bfb-0000-7000-8000-000000000000"], &[], 3, "chronos: not found: no task 01a23bfb-0000-7000-8000-000000000000"),
        (&["dlq", "redrive", &id], &[], 4, "chronos: refused: the task is queued; only dead tasks can be redriven"),
        (&["tasks", "--status", "finished"], &[], 2, "chronos: --status: \"finished\" is not a status"),
        (&["keys", "create", "--name", "x", "--role", "boss"], &[], 2, "chronos: --role: \"boss\" is not a role"),
        (&["schedules", "pause", "01a23bfb-0000-7000-8000-000000000000"], &[], 3, "chronos: not found: no schedule"),
        (
            &["tasks"],
            &[("REDIS_URL", "redis://:pw@127.0.0.1:1"), ("CHRONOS_CONNECT_TIMEOUT_S", "0")],
            5,
            "REDIS_URL: gave up on Redis at 127.0.0.1:1",
        ),
    ];
    for (args, vars, code, needle) in cases {
        let out = chronos(&env, args, vars);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?} should exit {code}; stderr: {err}");
        assert!(err.contains(needle), "{args:?}: stderr should say {needle:?}: {err}");
        assert!(!err.contains("Refused {") && !err.contains("Conflict("), "no debug text: {err}");
        assert!(out.stdout.is_empty(), "a refusal prints nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    }
    let help = chronos(&env, &["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for code in ["0 done", "2 bad input", "3 not found", "4 refused", "5 a store"] {
        assert!(help.contains(code), "chronos --help documents exit code {code:?}: {help}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_print_with_json_exactly_what_the_api_answers() {
    let env = TestEnv::new().await;
    for q in ["mail", "reports"] {
        env.client.enqueue(chronos_core::NewTask::new("noop", serde_json::json!({ "q": q })).queue(q)).await.unwrap();
    }
    let api = chronos_tests::start_api(&env, None).await;
    let get = |path: &'static str| {
        let req = api.admin(reqwest::Method::GET, path);
        async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let strip_age = |mut v: serde_json::Value| {
        for q in v["queues"].as_array_mut().unwrap() {
            q.as_object_mut().unwrap().remove("oldest_waiting_age_s");
        }
        v
    };
    let cli = |args: &[&str]| {
        let out = chronos(&env, args, &[]);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(strip_age(cli(&["queues", "--json"])), strip_age(get("/v1/queues").await), "chronos queues is GET /v1/queues");
    assert_eq!(cli(&["tasks", "--queue", "mail", "--json"]), get("/v1/tasks?queue=mail").await, "chronos tasks is GET /v1/tasks");
    assert_eq!(cli(&["dlq", "list", "--json"]), get("/v1/dlq").await);
    assert_eq!(cli(&["keys", "list", "--json"]), get("/v1/keys").await);
    // Without --json, a table whose columns are the view's field names.
    let out = chronos(&env, &["queues"], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "name",
            "waiting",
            "scheduled",
            "running",
            "retrying",
            "completed",
            "dead",
            "cancelled",
            "paused",
            "oldest_waiting_age_s",
            "workers",
            "unserved",
            "limits"
        ]
    );
    assert!(table.lines().any(|l| l.starts_with("mail ")), "{table}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_redrive_dead_tasks_pause_schedules_and_manage_keys_and_are_audited() {
    let env = TestEnv::new().await;
    let dead =
        env.client.enqueue(chronos_core::NewTask::new("fail", serde_json::json!({ "times": 1, "permanent": true }))).await.unwrap().id;
    let mut w = spawn_worker_process(&env, &[]);
    wait_until(Duration::from_secs(15), "the task is dead", || async { env.status(dead).await == "dead" }).await;
    let list = chronos(&env, &["dlq", "list"], &[]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&dead.to_string()), "{}", String::from_utf8_lossy(&list.stdout));
    let out = chronos(&env, &["dlq", "redrive", "--all"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("job ") && said.contains(" completed: 1 of 1 tasks processed, 1 redriven, 0 skipped"), "{said}");
    // `fail` fails only its first attempt: the redriven one completes.
    wait_until(Duration::from_secs(15), "the redriven task ran again and completed", || async {
        env.store.attempts(dead).await.unwrap().len() == 2 && env.status(dead).await == "completed"
    })
    .await;

    let create =
        ["schedules", "create", "--name", "hourly", "--cron", "0 * * * *", "--tz", "Europe/Berlin", "--task-name", "noop", "--json"];
    let out = chronos(&env, &create, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["timezone"].as_str(), s["task"]["name"].as_str()), (Some("Europe/Berlin"), Some("noop")));
    let again = chronos(&env, &create, &[]);
    assert_eq!(again.status.code(), Some(4), "a taken name is refused: {}", String::from_utf8_lossy(&again.stderr));
    let bad = chronos(&env, &["schedules", "create", "--name", "x", "--cron", "0 25 * * *", "--task-name", "noop"], &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("--cron") && err.contains("hour"), "the message names the flag and the cron field: {err}");
    let sid = s["id"].as_str().unwrap().to_owned();
    let out = chronos(&env, &["schedules", "pause", &sid, "--json"], &[]);
    let paused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused["paused"], true);
    let shown: serde_json::Value = serde_json::from_slice(&chronos(&env, &["schedules", "show", &sid, "--json"], &[]).stdout).unwrap();
    assert_eq!((shown["name"].as_str(), shown["paused"].as_bool()), (Some("hourly"), Some(true)));
    let listed = String::from_utf8_lossy(&chronos(&env, &["schedules", "list"], &[]).stdout).into_owned();
    assert!(listed.contains("hourly") && listed.contains("0 * * * *"), "{listed}");
    // update takes PATCH's fields and refuses what PATCH refuses
    let out = chronos(
        &env,
        &["schedules", "update", &sid, "--cron", "30 * * * *", "--task-name", "sleep", "--payload", r#"{"ms":5}"#, "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let changed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((changed["cron"].as_str(), changed["task"]["name"].as_str()), (Some("30 * * * *"), Some("sleep")), "{changed}");
    let bad = chronos(&env, &["schedules", "update", &sid, "--tz", "Mars/Olympus"], &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = chronos(&env, &["schedules", "update", &sid, "--queue", "other"], &[]);
    assert_eq!(bad.status.code(), Some(2), "the task is replaced whole: --queue needs --task-name");

    let created: serde_json::Value =
        serde_json::from_slice(&chronos(&env, &["keys", "create", "--name", "billing", "--role", "viewer", "--json"], &[]).stdout).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("chk_"), "{created}");
    let kid = created["id"].as_str().unwrap();
    assert!(chronos(&env, &["keys", "revoke", kid], &[]).status.success());
    assert_eq!(chronos(&env, &["keys", "revoke", kid], &[]).status.code(), Some(3), "a revoked key is not found again");

    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log ORDER BY at").fetch_all(env.store.pool()).await.unwrap();
    for action in ["retry_now", "job_start", "schedule_create", "schedule_pause", "schedule_update", "create_key", "revoke_key"] {
        assert!(actions.iter().any(|(who, a)| who == "cli" && a.starts_with(action)), "{action} audited as cli: {actions:?}");
    }
    w.start_kill().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_the_pipe_early_ends_the_command_quietly() {
    let env = TestEnv::new().await;
    let tasks: Vec<_> = (0..500).map(|i| chronos_core::NewTask::new("noop", serde_json::json!({ "i": i }))).collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    for args in [&["tasks", "--limit", "500"][..], &["tasks", "--limit", "500", "--json"][..]] {
        let mut cmd = tokio::process::Command::new(chronos_bin());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env.child_env() {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first).await.unwrap();
        drop(stdout); // `| head -c 16`
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: exit quietly with 0, got {:?}: {err}", out.status);
        assert!(err.is_empty(), "{args:?}: nothing on stderr (no panic, no backtrace): {err}");
    }
    env.cleanup().await;
}

#[test]
fn the_help_of_worker_api_and_dev_lists_the_environment_variables_each_reads() {
    let help = |cmd: &str| {
        let out = std::process::Command::new(chronos_bin()).args([cmd, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (worker, api, dev) = (help("worker"), help("api"), help("dev"));
    for v in ["REDIS_URL", "DATABASE_URL", "CHRONOS_CONNECT_TIMEOUT_S", "CHRONOS_DLQ_QUEUE", "CHRONOS_QUEUES", "CHRONOS_CONCURRENCY"] {
        assert!(worker.contains(v), "worker --help names {v}: {worker}");
    }
    for v in ["REDIS_URL", "DATABASE_URL", "CHRONOS_API_ADDR", "CHRONOS_ADMIN_KEY"] {
        assert!(api.contains(v), "api --help names {v}: {api}");
    }
    for v in ["CHRONOS_API_ADDR", "CHRONOS_QUEUES", "CHRONOS_DASHBOARD_ADDR"] {
        assert!(dev.contains(v), "dev --help names {v}: {dev}");
    }
}
