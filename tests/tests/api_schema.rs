//! The API against its own OpenAPI document: schemathesis generates requests from
//! `/openapi.json` (valid and invalid ones) and checks every answer: no 5xx, and status code,
//! content type, headers and body all as the spec says. Runs against real Redis, Postgres and
//! the SQS emulator, with a worker, so reads hit real tasks and redrives touch a real queue.
//!
//! schemathesis lives in the test venv next to `CHRONOS_TEST_PYTHON` (scripts/test installs it;
//! its version is pinned in scripts/lib.sh).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chronos_core::model::NewTask;
use chronos_core::schedule::{DEFAULT_HORIZON, ScheduleSpec, Scheduler, TaskTemplate};
use chronos_tests::{ADMIN_KEY, TestEnv, diag_registry, random_suffix, start_api, start_worker, wait_until, worker_config};
use serde_json::json;

/// Fixed so a failure reproduces; override with `CHRONOS_SCHEMA_SEED` to explore other inputs.
const DEFAULT_SEED: u64 = 20_260_101;

/// Examples per operation and phase: enough to reach every status an operation can answer,
/// small enough that the whole test takes about half a minute on two cores.
const MAX_EXAMPLES: u32 = 30;

/// The queue the worker serves and the seeded tasks live in. Tasks the fuzzer creates land in
/// other queues and stay put: run, most would die (their names have no handler), and every death
/// adds an SQS letter that each later redrive has to scan past, so the run would slow down as it
/// goes (the emulator's receive is linear in the queue's length).
const SEED_QUEUE: &str = "seeded";

/// schemathesis settings the command line cannot express.
///
/// - `positive_data_acceptance` sends schema-valid requests and expects them accepted. Creating
///   tasks and keys has rules JSON Schema cannot state: `backoff.cap_ms` at least `base_ms`,
///   `run_at` and `delay_ms` not both, lengths in UTF-8 bytes (`idempotency_key` 1–256, key
///   `name` 1–100, the payload 256 KiB) where a schema counts characters, a key name that is not
///   only whitespace. Schedules add a cron expression and a zone name (a grammar and a list no
///   schema holds), a unique name (409) and a change that must change something. A job's
///   filter must name some tasks, and a redrive's status can only be `dead`. A queue's limits
///   are whole numbers, which JSON Schema also lets a fuzzer write as `3.0`. A flow (`POST
///   /v1/flows`) shares the task body, whose `depends_on` only `POST /v1/tasks` takes and whose
///   `on_child_failure` needs children, and holds at most 1,000 tasks. So a
///   schema-valid body may still earn a 422 there, and only there; any other refusal of a valid
///   body (400, 415, ...) still fails.
/// - Half the `{id}` path parameters are seeded task and schedule ids, so reads, cancel, retry,
///   redrive and the schedule actions reach real resources rather than 404s.
fn config(seeded: &[uuid::Uuid]) -> String {
    let ids = seeded.iter().map(|id| format!("\"{id}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[dictionaries.seeded-ids]
values = [{ids}]

[parameters]
"path.id" = {{ dictionary = "seeded-ids", probability = 0.5 }}

[[operations]]
include-name-regex = "^(POST /v1/(tasks|tasks/batch|flows|keys|schedules|jobs)|PATCH /v1/schedules/\\{{id\\}}|PATCH /v1/queues/\\{{queue\\}}|GET /v1/schedules/preview)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"#
    )
}

/// `schemathesis` in the same bin directory as `CHRONOS_TEST_PYTHON` (the test venv).
fn schemathesis() -> PathBuf {
    let python = std::env::var("CHRONOS_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CHRONOS_TEST_PYTHON is not set: it must name the test venv's Python, which has schemathesis installed. \
             Run the tests with scripts/test, which provides it."
        )
    });
    let bin = PathBuf::from(&python).parent().map(PathBuf::from).unwrap_or_default();
    ["schemathesis", "st"].iter().map(|n| bin.join(n)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "schemathesis not found next to CHRONOS_TEST_PYTHON={python} (looked for schemathesis and st in {}). \
             Run scripts/test (or `scripts/lib.sh ensure_moto`), which installs the pinned version into the venv.",
            bin.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openapi_driven_fuzz_run_finds_no_server_error_and_no_response_outside_the_spec() {
    let st = schemathesis();
    let env = TestEnv::new().await;
    let dlq = env.dlq().await;
    let api = start_api(&env, Some(dlq.clone())).await;
    let w = start_worker(&env, diag_registry(), worker_config(&[SEED_QUEUE]), Some(dlq));

    // Real data: completed tasks (with attempts), a dead one (in the DLQ and in SQS), and one
    // scheduled far ahead (cancel and retry-now have something to act on).
    let seed_task = |name: &str, payload| NewTask::new(name, payload).queue(SEED_QUEUE);
    let mut done = Vec::new();
    for i in 0..3 {
        done.push(env.client.enqueue(seed_task("noop", json!({ "n": i }))).await.unwrap().id);
    }
    let dead = env.client.enqueue(seed_task("fail", json!({ "times": 9, "permanent": true }))).await.unwrap().id;
    let later = env.client.enqueue(seed_task("noop", json!({})).delay(Duration::from_secs(3600))).await.unwrap().id;
    wait_until(Duration::from_secs(20), "seeded tasks completed, one dead and its letter in SQS", || async {
        let mut ok = env.status(dead).await == "dead" && env.engine.counts(SEED_QUEUE).await.unwrap().dlq_pending == 0;
        for id in &done {
            ok &= env.status(*id).await == "completed";
        }
        ok
    })
    .await;
    // A schedule (yearly, its task on a queue no worker serves) for the schedule actions.
    let schedule = Scheduler::new(env.client.clone(), DEFAULT_HORIZON)
        .create(
            &ScheduleSpec::new(
                "seeded",
                "0 0 1 1 *",
                TaskTemplate { queue: "fuzz-scheduled".into(), ..TaskTemplate::new("noop", json!({})) },
            ),
            None,
        )
        .await
        .map_err(|e| format!("{e:?}"))
        .unwrap()
        .id;
    let seeded: Vec<uuid::Uuid> = done.iter().copied().chain([dead, later, schedule]).collect();

    let seed: u64 = std::env::var("CHRONOS_SCHEMA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let workdir = std::env::temp_dir().join(format!("chronos-schemathesis-{}", random_suffix()));
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(workdir.join("schemathesis.toml"), config(&seeded)).unwrap();
    let auth = format!("Authorization: Bearer {ADMIN_KEY}");
    let args: Vec<String> = vec![
        "--config-file".into(),
        "schemathesis.toml".into(),
        "run".into(),
        format!("{}/openapi.json", api.base),
        "--header".into(),
        auth,
        // Every check, none excluded, as each one applies here:
        // - not_a_server_error: no input may cause a 5xx (a healthy store is a given in this test);
        // - status_code_conformance, content_type_conformance, response_headers_conformance,
        //   response_schema_conformance: the spec is generated from the handlers, so any answer
        //   outside it is drift;
        // - negative_data_rejection, positive_data_acceptance: parsing is strict (unknown fields,
        //   wrong types and shapes refused), so invalid input must get a 4xx and valid input must
        //   not (the one allowance is in `config`);
        // - missing_required_header, ignored_auth: every /v1 route requires the bearer key;
        // - unsupported_method, allow_header_conformance: other methods get a 405, and an Allow
        //   header, where sent, names the documented methods;
        // - use_after_free, ensure_resource_availability: stateful sequences over the links
        //   schemathesis infers (create a task, then read, cancel, retry it);
        // - object_level_authorization: compares identities; with the one admin key it has nothing
        //   to compare (tests/tests/api_roles.rs covers roles).
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.to_string(),
        "--seed".into(),
        seed.to_string(),
        // One worker: with two, CPython 3.11 intermittently raises "SystemError: AST constructor
        // recursion depth mismatch" inside hypothesis (ast.parse from two threads), reported as a
        // schemathesis runtime error that has nothing to do with the API.
        "--workers".into(),
        "1".into(),
        // Every request here is answered in milliseconds; a slow one is a finding, not noise.
        "--request-timeout".into(),
        "10".into(),
        // No example database: nothing written to disk, and a run depends only on the seed.
        "--generation-database".into(),
        "none".into(),
        "--output-truncate".into(),
        "false".into(),
        "--no-color".into(),
    ];
    let shown = args.iter().map(|a| if a.contains(' ') { format!("{a:?}") } else { a.clone() }).collect::<Vec<_>>().join(" ");
    println!("running: {} {shown}", st.display());

    let started = Instant::now();
    let child = tokio::process::Command::new(&st)
        .args(&args)
        .current_dir(&workdir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", st.display()));
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&workdir);
    let out = out
        .unwrap_or_else(|_| panic!("schemathesis did not finish within 240 s (seed {seed}): {} {shown}", st.display()))
        .expect("schemathesis output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("schemathesis took {:.1} s (seed {seed})", started.elapsed().as_secs_f64());

    w.stop().await;
    drop(api);
    env.cleanup().await;

    if out.status.success() {
        println!("{report}");
    }
    assert!(
        out.status.success(),
        "schemathesis found problems ({}; seed {seed}, rerun with CHRONOS_SCHEMA_SEED={seed}).\ncommand: {} {shown}\n{report}",
        out.status,
        st.display()
    );
}

#[test]
fn the_spec_publishes_each_built_in_kinds_payload_as_the_submit_check_reads_it() {
    let spec = serde_json::to_value(chronos_api::openapi::spec()).unwrap();
    let schemas = &spec["components"]["schemas"];
    for (name, required, example) in [
        ("SleepPayload", vec!["ms"], json!({ "ms": 5 })),
        ("FailPayload", vec!["times"], json!({ "times": 1, "permanent": true })),
        ("HttpPayload", vec!["url"], json!({ "url": "https://example.com", "body": { "any": [1] } })),
        ("EmailPayload", vec!["subject", "to"], json!({ "to": ["a@example.com"], "subject": "Hi" })),
    ] {
        let s = &schemas[name];
        let mut req: Vec<&str> = s["required"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        req.sort();
        assert_eq!(req, required, "{name}: {s}");
        assert_eq!(s["additionalProperties"], json!(false), "{name} refuses unknown fields, as the check does: {s}");
        let kind = name.trim_end_matches("Payload").to_lowercase();
        chronos_core::builtin::check_payload(&kind, &example).unwrap();
        let mut extra = example.clone();
        extra["unexpected"] = json!(1);
        assert!(chronos_core::builtin::check_payload(&kind, &extra).is_err(), "{kind}");
    }
    assert!(schemas["Recipients"]["oneOf"].as_array().is_some_and(|a| a.len() == 2), "one address or a list: {}", schemas["Recipients"]);
}
