//! The tick as an AWS Lambda function, invoked by an EventBridge `rate(1 minute)` rule (the
//! event's content is not used: every run plans up to now + horizon).

use chronos_core::schedule::Scheduler;
use chronos_core::{Chronos, Engine, Store};
use chronos_tick::{TickOutput, tick};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    // DATABASE_URL from Secrets Manager when `DATABASE_URL_SECRET_ARN` names a secret.
    let core = chronos_core::secrets::core_config().await?;
    // Built once per Lambda instance and reused across invocations.
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await?;
    let store = Store::connect(core.database_url.expose()).await?;
    // Metrics as EMF lines on stdout after every run (on by default here; the queue gauges
    // read from Redis): a Lambda instance runs nothing between invocations.
    let emf = chronos_core::metrics::emf::Emitter::from_env("chronos-tick", true)?.map(std::sync::Arc::new);
    let metrics_engine = engine.clone();
    let chronos = Chronos::new(engine, store, core.max_payload_bytes, core.idempotency_retention);
    let scheduler = Scheduler::new(chronos, core.schedule_horizon);
    let keep = chronos_core::retention::Retention::from_env()?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (scheduler, dlq_queue) = (scheduler.clone(), core.dlq_queue.clone());
        let (emf, engine) = (emf.clone(), metrics_engine.clone());
        async move {
            let out = tick(&scheduler, &event.context.request_id, keep, Some(&dlq_queue)).await;
            if let Some(emf) = emf {
                emf.write(Some(&engine)).await;
            }
            let out: TickOutput = out?;
            tracing::info!(?out, "tick");
            Ok::<_, Error>(out)
        }
    }))
    .await
}
