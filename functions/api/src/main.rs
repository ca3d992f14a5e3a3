//! The API as an AWS Lambda function behind API Gateway (HTTP API, payload v2): the same
//! router as `chronos api`, served by `lambda_http`.

use chronos_api::config::ApiConfig;
use chronos_api::{AppState, app};
use chronos_core::config::ConfigError;
use chronos_core::dlq::Dlq;
use chronos_core::secrets;
use chronos_core::{Chronos, Engine, Store};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    // DATABASE_URL and the bootstrap admin key come from Secrets Manager when the template
    // names their secrets (`DATABASE_URL_SECRET_ARN`, `CHRONOS_ADMIN_KEY_SECRET_ARN`).
    let core = secrets::core_config().await?;
    let mut api = ApiConfig::from_env()?;
    if let Some(key) = secrets::from_arn_var(secrets::ADMIN_KEY_SECRET_ARN).await? {
        if key.expose().len() < 16 {
            return Err(ConfigError { var: secrets::ADMIN_KEY_SECRET_ARN, message: "the key must be at least 16 characters".into() }.into());
        }
        api.admin_key = Some(key);
    }
    // Built once per Lambda instance and reused across invocations.
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await?;
    let store = Store::connect(core.database_url.expose()).await?;
    let dlq = Dlq::connect(&core.dlq_queue)
        .await
        .map_err(|e| tracing::warn!(error = %e, "SQS unreachable; redrive will not remove messages"))
        .ok();
    let state = AppState::new(
        Chronos::new(engine, store, core.max_payload_bytes, core.idempotency_retention),
        api.admin_key,
        dlq,
        core.schedule_horizon,
    );
    let router = app(state.clone(), api.max_body_bytes);
    // Metrics as EMF lines on stdout (CloudWatch Logs makes them metrics), on by default here:
    // written after a request once a period has passed, since a Lambda instance runs nothing
    // between invocations. `CHRONOS_METRICS=prometheus` turns them off.
    match chronos_core::metrics::emf::Emitter::from_env("chronos-api", true)? {
        Some(emf) => {
            let emf = std::sync::Arc::new(emf);
            let router = router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                let (emf, state) = (emf.clone(), state.clone());
                async move {
                    let res = next.run(req).await;
                    if emf.due() {
                        chronos_api::routes::system::publish_counters(&state);
                        emf.write(None).await;
                    }
                    res
                }
            }));
            lambda_http::run(router).await
        }
        None => lambda_http::run(router).await,
    }
}
