//! API settings from the environment; a bad value names its variable.

use std::net::SocketAddr;

use chronos_core::config::{ConfigError, Secret, parse_var, var};

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Bounds a whole request (a batch of up to 1,000 tasks); each payload has its own limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `CHRONOS_API_ADDR`
    pub addr: SocketAddr,
    /// `CHRONOS_ADMIN_KEY`: bootstrap admin key (at least 16 characters).
    pub admin_key: Option<Secret>,
    /// `CHRONOS_MAX_BODY_BYTES`
    pub max_body_bytes: usize,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr =
            parse_var("CHRONOS_API_ADDR", DEFAULT_ADDR.parse().expect("valid default"), "a socket address such as 127.0.0.1:8080", |v| {
                v.parse().ok()
            })?;
        let admin_key = var("CHRONOS_ADMIN_KEY");
        if let Some(k) = &admin_key
            && k.len() < 16
        {
            return Err(ConfigError { var: "CHRONOS_ADMIN_KEY", message: "must be at least 16 characters".into() });
        }
        let max_body_bytes = parse_var("CHRONOS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, "a byte count between 1024 and 268435456", |v| {
            v.parse().ok().filter(|n| (1024..=256 << 20).contains(n))
        })?;
        Ok(ApiConfig { addr, admin_key: admin_key.map(Secret::new), max_body_bytes })
    }
}
