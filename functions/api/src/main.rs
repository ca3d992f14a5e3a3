//! The API as an AWS Lambda function behind API Gateway (HTTP API, payload v2): the same
//! router as `chronos api`, served by `lambda_http`.

use chronos_api::config::ApiConfig;
use chronos_api::{AppState, app};
use chronos_core::config::CoreConfig;
use chronos_core::dlq::Dlq;
use chronos_core::{Chronos, Engine, Store};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let core = CoreConfig::from_env()?;
    let api = ApiConfig::from_env()?;
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
    lambda_http::run(app(state, api.max_body_bytes)).await
}
