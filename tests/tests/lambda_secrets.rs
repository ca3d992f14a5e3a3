//! The API and tick Lambda binaries as the template configures them: no `DATABASE_URL` or admin
//! key in their environment, only the ARNs of Secrets Manager secrets (on the emulator), read at
//! cold start. The API answers API Gateway HTTP API (v2) events; the tick EventBridge events.

use chronos_tests::lambda::{LambdaProcess, http_api_event, scheduled_event};
use chronos_tests::{TestEnv, aws_endpoint, random_suffix, redis_url};
use serde_json::{Value, json};

async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let conf = chronos_core::dlq::aws_config().await;
    let c = aws_sdk_secretsmanager::config::Builder::from(&conf)
        .endpoint_url(aws_endpoint())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new("test", "test", None, None, "chronos-tests"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(c)
}

async fn secret(sm: &aws_sdk_secretsmanager::Client, what: &str, value: &str) -> String {
    let out = sm.create_secret().name(format!("chronos-test/{what}-{}", random_suffix())).secret_string(value).send().await.unwrap();
    out.arn().unwrap().to_owned()
}

/// A function's environment: the test's Redis namespace, the emulator, the secrets' ARNs, and a
/// `DATABASE_URL` that leads nowhere, so only the secret can make Postgres work.
fn function_env(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), redis_url()),
        ("CHRONOS_NAMESPACE".into(), env.namespace.clone()),
        ("CHRONOS_DLQ_QUEUE".into(), env.dlq_name()),
        ("DATABASE_URL".into(), "postgres://nobody@127.0.0.1:1/not_this_one".into()),
        ("AWS_ENDPOINT_URL".into(), aws_endpoint()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ];
    v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn body(resp: &Value) -> Value {
    serde_json::from_str(resp["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_api_lambda_takes_its_database_and_admin_key_from_secrets_manager() {
    let env = TestEnv::new().await;
    let sm = secrets_client().await;
    let admin_key = format!("chk_{}{}", random_suffix(), random_suffix());
    let db_arn = secret(&sm, "database-url", &env.database_url).await;
    let key_arn = secret(&sm, "admin-key", &admin_key).await;
    let vars = function_env(&env, &[("DATABASE_URL_SECRET_ARN", &db_arn), ("CHRONOS_ADMIN_KEY_SECRET_ARN", &key_arn)]);
    let mut f = LambdaProcess::start("chronos-api-lambda", "chronos-api", &vars).await;

    let health = f.invoke(http_api_event("GET", "/healthz", None, None)).await.unwrap();
    assert_eq!(health["statusCode"], 200, "{health}");

    let created = f
        .invoke(http_api_event("POST", "/v1/tasks", Some(&admin_key), Some(&json!({"name": "noop", "queue": "lambda", "payload": {}}))))
        .await
        .unwrap();
    assert_eq!(created["statusCode"], 201, "{created}");
    let id: uuid::Uuid = body(&created)["id"].as_str().unwrap().parse().unwrap();
    // The row is in the database the secret names.
    assert_eq!(env.store.get_task(id).await.unwrap().map(|t| t.queue), Some("lambda".to_owned()));

    let got = f.invoke(http_api_event("GET", &format!("/v1/tasks/{id}"), Some(&admin_key), None)).await.unwrap();
    assert_eq!((got["statusCode"].as_u64(), body(&got)["status"].as_str()), (Some(200), Some("queued")), "{got}");
    let wrong = f.invoke(http_api_event("GET", "/v1/queues", Some("chk_not_the_key_0123456789"), None)).await.unwrap();
    assert_eq!(wrong["statusCode"], 401, "{wrong}");
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_lambda_refuses_to_start_when_its_secret_cannot_be_read() {
    let env = TestEnv::new().await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:chronos-test/absent-AbCdEf";
    let vars = function_env(&env, &[("DATABASE_URL_SECRET_ARN", missing)]);
    let mut f = LambdaProcess::start("chronos-api-lambda", "chronos-api", &vars).await;
    let err = f.start_error().await;
    assert!(err.to_string().contains("DATABASE_URL_SECRET_ARN"), "the error names the variable: {err}");
    env.cleanup().await;
}

#[tokio::test]
async fn the_tick_lambda_takes_its_database_from_secrets_manager() {
    let env = TestEnv::new().await;
    let sm = secrets_client().await;
    let db_arn = secret(&sm, "database-url", &env.database_url).await;
    let mut f =
        LambdaProcess::start("chronos-tick-lambda", "chronos-tick", &function_env(&env, &[("DATABASE_URL_SECRET_ARN", &db_arn)])).await;
    let out = f.invoke(scheduled_event("chronos-TickFunctionEveryMinute")).await.unwrap_or_else(|e| panic!("tick failed: {e}"));
    // It reached Postgres (the schedules table) through the secret's URL.
    assert_eq!(out["schedules"], 0, "{out}");
    assert_eq!(out["failed"], 0, "{out}");
    env.cleanup().await;
}
