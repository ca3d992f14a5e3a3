//! Secrets read once at start-up from AWS Secrets Manager, named by a `*_SECRET_ARN` variable,
//! so a deployment never puts a database password or the bootstrap admin key into a plain
//! environment variable of its template.
//!
//! ECS injects secrets into containers itself (the task definition's `Secrets`), so the worker
//! and dashboard see an ordinary `DATABASE_URL`. Lambda has no such feature; the Lambda binaries
//! call [`core_config`] and read the secret with the SDK at cold start. The SDK rather than the
//! Parameters and Secrets Lambda Extension (an HTTP endpoint on localhost:2773): the extension is
//! a layer whose ARN differs per region and architecture, it cannot run outside Lambda, so no
//! test here could exercise it, while the SDK call runs against any emulator. Its cost is one
//! more service crate on the shared SDK runtime (trimmed like `aws-sdk-sqs`), and one call per
//! cold start.
//!
//! A secret's `SecretString` is used as it is (surrounding whitespace trimmed).

use crate::config::{ConfigError, CoreConfig, Secret, var};

/// `DATABASE_URL_SECRET_ARN`: the secret holding `DATABASE_URL` (overrides the plain variable).
pub const DATABASE_URL_SECRET_ARN: &str = "DATABASE_URL_SECRET_ARN";
/// `CHRONOS_ADMIN_KEY_SECRET_ARN`: the secret holding the bootstrap admin key.
pub const ADMIN_KEY_SECRET_ARN: &str = "CHRONOS_ADMIN_KEY_SECRET_ARN";

/// Read the secret whose ARN (or name) is in the variable `arn_var`; `None` when it is unset.
pub async fn from_arn_var(arn_var: &'static str) -> Result<Option<Secret>, ConfigError> {
    let Some(arn) = var(arn_var) else { return Ok(None) };
    let conf = crate::dlq::aws_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&conf);
    let err = |message: String| ConfigError { var: arn_var, message };
    let out = client
        .get_secret_value()
        .secret_id(arn.trim())
        .send()
        .await
        .map_err(|e| err(format!("cannot read secret {arn:?}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e))))?;
    let value = out.secret_string().map(str::trim).filter(|s| !s.is_empty());
    let value = value.ok_or_else(|| err(format!("secret {arn:?} has no SecretString")))?;
    Ok(Some(Secret::new(value)))
}

/// [`CoreConfig::from_env`], with `DATABASE_URL` taken from the secret named by
/// `DATABASE_URL_SECRET_ARN` when that is set.
pub async fn core_config() -> Result<CoreConfig, ConfigError> {
    let mut core = CoreConfig::from_env()?;
    if let Some(url) = from_arn_var(DATABASE_URL_SECRET_ARN).await? {
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            return Err(ConfigError {
                var: DATABASE_URL_SECRET_ARN,
                message: "the secret must hold a postgres:// or postgresql:// URL".into(),
            });
        }
        core.database_url = url;
    }
    Ok(core)
}
