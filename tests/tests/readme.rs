//! The README's examples, run as written against the stack `scripts/dev` starts, so the README
//! cannot drift from what Chronos does.
//!
//! An example is a ```` ```sh ```` block right after a marker line
//! `<!-- example: NAME expect=completed [mails=N] [webhooks=N] -->`. The test starts
//! `scripts/dev` (with the `chronos` binary of this build, a fresh database and key namespace, and
//! free ports), runs each block with bash, and checks what the marker promises: every task the
//! block created and that is due (a schedule's occurrences planned for later are not) reaches
//! `completed`, and the dev catcher received that many more mails and webhook requests. The
//! README's addresses (`localhost:8080` for the API, `127.0.0.1:8082` for the catcher) are replaced
//! by the free ports, nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chronos_tests::{TestEnv, chronos_bin, random_suffix};

struct Example {
    name: String,
    expect: HashMap<String, String>,
    script: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every marked example of the README, in order.
fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line.trim().strip_prefix("<!-- example:").and_then(|m| m.strip_suffix("-->")) else { continue };
        let mut words = marker.split_whitespace();
        let name = words.next().expect("an example marker names the example").to_owned();
        let expect = words
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("example {name}: `{w}` is not key=value"));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "example {name}: the marker is followed by a ```sh block");
        let script: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push(Example { name, expect, script: script.join("\n") });
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter(|e| !e.file_name().to_string_lossy().ends_with(".part")).count())
        .unwrap_or(0)
}

/// `scripts/dev`; SIGTERM to it stops what it started (its trap's cleanup), as Ctrl-C does.
struct DevStack {
    child: tokio::process::Child,
    log: PathBuf,
}

impl DevStack {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_works_as_written_against_scripts_dev() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = examples(&readme);
    let names: Vec<&str> = examples.iter().map(|e| e.name.as_str()).collect();
    assert!(examples.len() >= 4, "the README marks its runnable examples (webhook, email, schedule, cli): found {names:?}");

    let env = TestEnv::new().await;
    let dev_dir = std::env::temp_dir().join(format!("chronos-readme-{}", random_suffix()));
    std::fs::create_dir_all(&dev_dir).unwrap();
    let (api, dashboard, smtp, hook) = (free_port(), free_port(), free_port(), free_port());
    let api_addr = format!("127.0.0.1:{api}");
    let hook_addr = format!("127.0.0.1:{hook}");
    let admin_key = format!("chk_readme_{}", random_suffix());
    let bin = chronos_bin();
    let log = dev_dir.join("dev.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(root.join("scripts/dev"))
        .current_dir(&root)
        .envs(env.child_env())
        .env("CHRONOS_BIN", &bin)
        .env("CHRONOS_API_ADDR", &api_addr)
        .env("CHRONOS_DASHBOARD_ADDR", format!("127.0.0.1:{dashboard}"))
        .env("CHRONOS_DEV_SMTP_PORT", smtp.to_string())
        .env("CHRONOS_DEV_HOOK_PORT", hook.to_string())
        .env("CHRONOS_DEV_DIR", &dev_dir)
        .env("CHRONOS_ADMIN_KEY", &admin_key)
        // the scaler's ECS service on the emulator, apart from a developer's
        .env("CHRONOS_ECS_CLUSTER", format!("readme-{}", env.namespace))
        .env("CHRONOS_ECS_SERVICE", format!("readme-{}-workers", env.namespace))
        .env_remove("CHRONOS_QUEUES")
        .env_remove("CHRONOS_SMTP_URL")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true);
    let dev = DevStack { child: cmd.spawn().expect("start scripts/dev"), log };
    let http = reqwest::Client::new();
    let healthy = async {
        loop {
            if let Ok(r) = http.get(format!("http://{api_addr}/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), healthy).await.is_err() {
        let log = dev.log();
        dev.stop().await;
        panic!("scripts/dev did not serve the API within 120 s:\n{log}");
    }
    assert!(dev.log().contains(&format!("{}", dev_dir.join("mail").display())), "the banner says where mail goes:\n{}", dev.log());

    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let mut failures = Vec::new();
    for ex in &examples {
        let script = ex.script.replace("localhost:8080", &api_addr).replace("127.0.0.1:8082", &hook_addr);
        let since: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(env.store.pool()).await.unwrap();
        let (mails, hooks) = (files_in(&dev_dir.join("mail")), files_in(&dev_dir.join("webhooks")));
        let out = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .envs(env.child_env())
            .env("CHRONOS_ADMIN_KEY", &admin_key)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("example {}:\n{printed}", ex.name);
        if !out.status.success() {
            failures.push(format!("example {}: bash exited {:?}:\n{printed}", ex.name, out.status));
            continue;
        }
        let want = |k: &str| ex.expect.get(k).map(|v| v.parse::<usize>().unwrap()).unwrap_or(0);
        let expect = ex.expect.get("expect").map(String::as_str);
        assert_eq!(expect, Some("completed"), "example {}: expect=completed is the outcome this test checks", ex.name);
        let checked = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                // Due tasks only: a schedule also plans occurrences ahead, which run later.
                let statuses: Vec<String> =
                    sqlx::query_scalar("SELECT status FROM tasks WHERE created_at >= $1 AND run_at <= now() + interval '60 seconds'")
                        .bind(since)
                        .fetch_all(env.store.pool())
                        .await
                        .unwrap();
                let done = !statuses.is_empty() && statuses.iter().all(|s| s == "completed");
                let mails_in = files_in(&dev_dir.join("mail")) - mails;
                let hooks_in = files_in(&dev_dir.join("webhooks")) - hooks;
                if done && mails_in >= want("mails") && hooks_in >= want("webhooks") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if checked.is_err() {
            let rows: Vec<(String, String, String, Option<String>)> =
                sqlx::query_as("SELECT name, queue, status, last_error FROM tasks WHERE created_at >= $1")
                    .bind(since)
                    .fetch_all(env.store.pool())
                    .await
                    .unwrap();
            failures.push(format!(
                "example {}: not every task completed with {} mails and {} webhooks within 30 s; tasks {rows:?}, mails {}, webhooks {}\n{printed}",
                ex.name,
                want("mails"),
                want("webhooks"),
                files_in(&dev_dir.join("mail")) - mails,
                files_in(&dev_dir.join("webhooks")) - hooks,
            ));
        }
    }
    // What the catcher kept is readable as the banner says: a mail with the example's subject,
    // a webhook with the example's body and the signature headers Chronos sends.
    let mail_dir = dev_dir.join("mail");
    let mails: Vec<String> = std::fs::read_dir(&mail_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    if examples.iter().any(|e| e.expect.contains_key("mails")) {
        assert!(mails.iter().any(|m| m.contains("Subject: Hi") && m.contains("a@example.com")), "the mail of the email example: {mails:?}");
    }
    let log = dev.log();
    dev.stop().await;
    let _ = std::fs::remove_dir_all(&dev_dir);
    env.cleanup().await;
    assert!(failures.is_empty(), "{}\n\nscripts/dev's log:\n{log}", failures.join("\n\n"));
}
