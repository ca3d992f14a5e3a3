//! The scaler as an AWS Lambda function, invoked by an EventBridge `rate(1 minute)` rule (the
//! event's content is not used). With `CHRONOS_SCALER_PASSES` = n > 1 one invocation runs n
//! times, 60/n seconds apart: EventBridge schedules have a one-minute granularity, and a burst
//! that arrives just after a run would otherwise wait a minute for workers. The function's
//! timeout in the template leaves room for that.

use std::sync::Arc;
use std::time::Duration;

use chronos_core::Engine;
use chronos_scaler::config::ScalerConfig;
use chronos_scaler::{Report, Scaler, ecs_client};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let core = chronos_core::secrets::core_config().await?;
    let config = ScalerConfig::from_env()?;
    // Built once per Lambda instance and reused across invocations.
    let engine = Engine::connect(core.redis_url.expose(), &core.namespace).await?;
    let passes = config.passes;
    // Embedded-metric-format lines must be lines of their own on stdout for CloudWatch Logs.
    let scaler = Scaler::new(engine, ecs_client().await, config).with_metrics(Arc::new(|line| println!("{line}")));
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| {
        let scaler = scaler.clone();
        async move {
            let mut last: Option<Report> = None;
            for pass in 0..passes {
                if pass > 0 {
                    tokio::time::sleep(Duration::from_secs(60 / u64::from(passes))).await;
                }
                last = Some(scaler.run_once().await?);
            }
            Ok::<_, Error>(last)
        }
    }))
    .await
}
