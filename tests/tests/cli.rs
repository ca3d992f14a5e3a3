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
    let out = chronos(&env, &["task", &id], &[]);
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
