//! The scaler against the ECS worker service of a stack deployed to a private emulator: a burst
//! raises desiredCount to what the policy computes, a drained queue lowers it only after the
//! cool-down, min and max hold, an ECS error changes nothing and the next run applies it. And
//! the real `chronos-scaler-lambda` binary on the Lambda Runtime API, for EventBridge events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_core::NewTask;
use chronos_scaler::config::ScalerConfig;
use chronos_scaler::policy::{Action, Policy};
use chronos_scaler::{Scaler, ScalerError};
use chronos_tests::aws::{PrivateMoto, TempDir, deploy};
use chronos_tests::lambda::{LambdaProcess, scheduled_event};
use chronos_tests::{TcpProxy, TestEnv, diag_registry, start_worker, wait_until, worker_config};
use serde_json::{Value, json};

const STACK: &str = "chronos-scale";
const CLUSTER: &str = "chronos-scale";
const SERVICE: &str = "chronos-scale-workers";

async fn ecs_at(endpoint: &str) -> aws_sdk_ecs::Client {
    let conf = chronos_core::dlq::aws_config().await;
    let c = aws_sdk_ecs::config::Builder::from(&conf)
        .endpoint_url(endpoint)
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "chronos-tests"))
        .build();
    aws_sdk_ecs::Client::from_conf(c)
}

async fn desired(ecs: &aws_sdk_ecs::Client, service: &str) -> i32 {
    let out = ecs.describe_services().cluster(CLUSTER).services(service).send().await.unwrap();
    out.services()[0].desired_count()
}

async fn burst(env: &TestEnv, queue: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let tasks = chunk.iter().map(|_| NewTask::new("noop", json!({})).queue(queue)).collect();
        env.client.enqueue_batch(tasks).await.unwrap();
    }
}

fn config(queue: &str, policy: Policy) -> ScalerConfig {
    ScalerConfig { cluster: CLUSTER.into(), service: SERVICE.into(), queues: Some(vec![queue.into()]), policy, passes: 1 }
}

const POLICY: Policy =
    Policy { min: 1, max: 40, target_backlog_per_worker: 200, worker_concurrency: 32, cooldown: Duration::from_millis(1500) };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaler_follows_the_backlog_on_the_deployed_worker_service() {
    let moto = PrivateMoto::start();
    let dir = TempDir::new("scaler");
    let stack = tokio::task::block_in_place(|| deploy(&moto, &dir.0, STACK, &["ImageTag=t1"]));
    assert_eq!(stack.output("WorkerServiceName"), SERVICE);
    let env = TestEnv::new().await;
    let ecs = ecs_at(&moto.endpoint()).await;
    // A new service starts with one task (the template names no desired count).
    assert_eq!(desired(&ecs, SERVICE).await, 1);

    let metrics: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = metrics.clone();
    let scaler = |policy: Policy| {
        let sink = sink.clone();
        Scaler::new(env.engine.clone(), ecs.clone(), config("jobs", policy))
            .with_metrics(Arc::new(move |l| sink.lock().unwrap().push(l.clone())))
    };

    // A burst of 5,000: 5000 / 200 per worker = 25, at once.
    burst(&env, "jobs", 5000).await;
    let r = scaler(POLICY).run_once().await.unwrap();
    assert_eq!((r.inputs.backlog, r.inputs.current), (5000, 1), "{r:?}");
    assert_eq!((r.decision.desired, r.decision.action, r.updated), (25, Action::ScaleOut, true), "{r:?}");
    assert_eq!(desired(&ecs, SERVICE).await, 25);
    let lines = metrics.lock().unwrap().clone();
    let queue_line = lines.iter().find(|l| l["Queue"] == "jobs").expect("a per-queue metric line");
    assert_eq!((queue_line["QueueDepth"].as_u64(), queue_line["BacklogPerWorker"].as_f64()), (Some(5000), Some(5000.0)));
    assert!(queue_line["OldestTaskAgeSeconds"].as_f64().unwrap() >= 0.0);
    let total = lines.iter().find(|l| l.get("Queue").is_none()).expect("the service line");
    assert_eq!((total["Service"].as_str(), total["QueueDepth"].as_u64()), (Some(SERVICE), Some(5000)));

    // Nothing changed: no UpdateService.
    let r = scaler(POLICY).run_once().await.unwrap();
    assert_eq!((r.decision.action, r.updated), (Action::Hold, false), "{r:?}");

    // Max holds: the same burst under max 10 comes down to 10 at once.
    let r = scaler(Policy { max: 10, ..POLICY }).run_once().await.unwrap();
    assert_eq!((r.decision.desired, r.decision.target), (10, 10), "{r:?}");
    assert_eq!(desired(&ecs, SERVICE).await, 10);
    scaler(POLICY).run_once().await.unwrap();
    assert_eq!(desired(&ecs, SERVICE).await, 25);

    // Drain the queue with a real worker; the count stays until the cool-down has passed.
    let worker = start_worker(&env, diag_registry(), worker_config(&["jobs"]), None);
    wait_until(Duration::from_secs(60), "the burst drained", || async {
        let c = env.engine.counts("jobs").await.unwrap();
        c.waiting + c.running == 0
    })
    .await;
    worker.stop().await;
    let r = scaler(POLICY).run_once().await.unwrap();
    assert!(matches!(r.decision.action, Action::CoolingDown { .. }), "{r:?}");
    assert_eq!((r.decision.desired, r.decision.target, r.updated), (25, 1, false), "{r:?}");
    assert_eq!(desired(&ecs, SERVICE).await, 25);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = scaler(POLICY).run_once().await.unwrap();
    assert_eq!((r.decision.desired, r.decision.action, r.updated), (1, Action::ScaleIn, true), "{r:?}");
    assert_eq!(desired(&ecs, SERVICE).await, 1);

    // Min holds: raising it scales out at once, with an empty queue.
    scaler(Policy { min: 3, ..POLICY }).run_once().await.unwrap();
    assert_eq!(desired(&ecs, SERVICE).await, 3);

    // ECS unreachable (a proxy the test cuts): the run fails, the count stays, and the next run
    // applies the decision.
    let proxy = TcpProxy::start(([127, 0, 0, 1], moto.port).into()).await;
    let through_proxy = Scaler::new(env.engine.clone(), ecs_at(&proxy.url()).await, config("jobs", Policy { min: 3, ..POLICY }));
    burst(&env, "jobs", 1000).await;
    proxy.cut();
    match through_proxy.run_once().await {
        Err(ScalerError::Ecs { call, .. }) => assert_eq!(call, "DescribeServices"),
        other => panic!("expected an ECS error, got {other:?}"),
    }
    assert_eq!(desired(&ecs, SERVICE).await, 3, "an ECS error must not change the count");
    proxy.restore();
    let r = through_proxy.run_once().await.unwrap();
    assert_eq!((r.decision.desired, r.updated), (5, true), "{r:?}");
    assert_eq!(desired(&ecs, SERVICE).await, 5);

    // A service ECS does not know (a wrong name): an error, and the real service is untouched.
    let wrong = ScalerConfig { service: "no-such-service".into(), ..config("jobs", POLICY) };
    assert!(matches!(Scaler::new(env.engine.clone(), ecs.clone(), wrong).run_once().await, Err(ScalerError::Ecs { .. })));
    assert_eq!(desired(&ecs, SERVICE).await, 5);

    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaler_lambda_reads_its_secret_and_scales_on_each_eventbridge_invocation() {
    let moto = PrivateMoto::start();
    let dir = TempDir::new("scaler-lambda");
    let stack = tokio::task::block_in_place(|| deploy(&moto, &dir.0, STACK, &["ImageTag=t1"]));
    let env = TestEnv::new().await;
    let ecs = ecs_at(&moto.endpoint()).await;
    burst(&env, "default", 450).await;

    // The function's environment as the template gives it (the deployed function's own), with
    // Redis and the emulator of this test.
    let deployed: Value = moto.query(
        "print(json.dumps(c('lambda').get_function(FunctionName='chronos-scale-scaler')['Configuration']['Environment']['Variables']))",
    );
    let mut vars: Vec<(String, String)> = deployed
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .filter(|(k, _)| k != "REDIS_URL" && k != "CHRONOS_NAMESPACE")
        .collect();
    assert!(vars.iter().any(|(k, v)| k == "DATABASE_URL_SECRET_ARN" && v == &stack.output("DatabaseUrlSecretArn")), "{vars:?}");
    vars.push(("REDIS_URL".into(), chronos_tests::redis_url()));
    vars.push(("CHRONOS_NAMESPACE".into(), env.namespace.clone()));
    vars.push(("CHRONOS_SCALER_COOLDOWN_S".into(), "0".into()));
    vars.push(("CHRONOS_SCALER_MIN".into(), "1".into()));
    for (k, v) in moto.env() {
        vars.push((k.into(), v));
    }
    let mut f = LambdaProcess::start("chronos-scaler-lambda", "chronos-scale-scaler", &vars).await;

    // 450 waiting / 100 per worker (the template's default target) → 5.
    let out = f.invoke(scheduled_event("chronos-scale-ScalerFunctionEveryMinute")).await.unwrap_or_else(|e| panic!("scaler failed: {e}"));
    assert_eq!(
        (out["inputs"]["backlog"].as_u64(), out["decision"]["desired"].as_u64(), out["updated"].as_bool()),
        (Some(450), Some(5), Some(true)),
        "{out}"
    );
    assert_eq!(desired(&ecs, SERVICE).await, 5);

    // Drained (deleted here): the next invocation scales in (cool-down 0).
    let mut conn = env.engine.connection();
    let _: () = redis::cmd("DEL").arg(env.engine.keys("default").ready).query_async(&mut conn).await.unwrap();
    let out = f.invoke(scheduled_event("chronos-scale-ScalerFunctionEveryMinute")).await.unwrap();
    assert_eq!((out["decision"]["desired"].as_u64(), out["decision"]["action"]["kind"].as_str()), (Some(1), Some("scale_in")), "{out}");
    assert_eq!(desired(&ecs, SERVICE).await, 1);

    // ECS gone: the invocation reports an error (Lambda's Errors metric, the alarm), count kept.
    drop(moto);
    let err = f.invoke(scheduled_event("chronos-scale-ScalerFunctionEveryMinute")).await.expect_err("ECS is down");
    assert!(err.to_string().contains("ECS DescribeServices failed"), "{err}");
    env.cleanup().await;
}
