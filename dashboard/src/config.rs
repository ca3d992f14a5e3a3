//! Dashboard settings from the environment; a bad value names its variable.

use std::net::SocketAddr;
use std::time::Duration;

use chronos_core::config::{ConfigError, Secret, parse_var, var};

pub const DEFAULT_ADDR: &str = "127.0.0.1:8081";
/// A sign-in lasts a working day plus some; signing in again is cheap, a stolen cookie is not.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// `CHRONOS_DASHBOARD_ADDR`
    pub addr: SocketAddr,
    /// `CHRONOS_DASHBOARD_SECURE_COOKIES=1`: the session cookie is sent over HTTPS only (set it
    /// behind a TLS-terminating load balancer).
    pub secure_cookies: bool,
    /// `CHRONOS_DASHBOARD_SESSION_TTL_S`: how long a sign-in lasts.
    pub session_ttl: Duration,
    /// `CHRONOS_ADMIN_KEY`: the bootstrap admin key the API accepts signs in here too.
    pub admin_key: Option<Secret>,
}

impl DashboardConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = parse_var(
            "CHRONOS_DASHBOARD_ADDR",
            DEFAULT_ADDR.parse().expect("valid default"),
            "a socket address such as 127.0.0.1:8081",
            |v| v.parse().ok(),
        )?;
        let secure_cookies = parse_var("CHRONOS_DASHBOARD_SECURE_COOKIES", false, "0 or 1", |v| match v {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        })?;
        let session_ttl = parse_var("CHRONOS_DASHBOARD_SESSION_TTL_S", DEFAULT_SESSION_TTL, "seconds between 60 and 2592000", |v| {
            v.parse().ok().filter(|s| (60..=30 * 86400).contains(s)).map(Duration::from_secs)
        })?;
        let admin_key = var("CHRONOS_ADMIN_KEY");
        if admin_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(ConfigError { var: "CHRONOS_ADMIN_KEY", message: "must be at least 16 characters".into() });
        }
        Ok(DashboardConfig { addr, secure_cookies, session_ttl, admin_key: admin_key.map(Secret::new) })
    }

    /// Defaults (tests and embedders set what they need on top).
    pub fn new(admin_key: Option<Secret>) -> Self {
        DashboardConfig {
            addr: DEFAULT_ADDR.parse().expect("valid default"),
            secure_cookies: false,
            session_ttl: DEFAULT_SESSION_TTL,
            admin_key,
        }
    }
}
