//! The connection to Redis: one node, or a Redis Cluster. `REDIS_URL` holding several
//! comma-separated seeds, or `CHRONOS_REDIS_CLUSTER=1`, picks the cluster.
//!
//! On one node everything is as before: one self-reconnecting multiplexed connection, scripts
//! and pipelines sent as they are. On a cluster every command goes to the master of its key's
//! slot (a script by its first key: all its keys carry the queue's hash tag, so one slot), the
//! connection follows failovers and topology changes, and the few places that send commands
//! over several queues at once group them per slot first ([`Engine::slot_groups`]): a pipeline,
//! a blocking wait or a stream read never spans two slots.
//!
//! [`Engine::slot_groups`]: super::Engine::slot_groups

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use crate::error::Result;

/// The environment variable that makes a single-seed `REDIS_URL` a cluster seed.
pub const CLUSTER_ENV: &str = "CHRONOS_REDIS_CLUSTER";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A cluster's blocking connections: longer than any block Chronos asks for (at most 5 s), so a
/// command whose node vanished under it (SIGKILLed mid-failover) fails and is sent again on a
/// fresh connection instead of waiting for good.
const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// The seeds of a cluster `url` names, or `None` for one node: several comma-separated URLs
/// (a seed without a scheme takes the first one's), or one with `cluster` set.
pub fn cluster_seeds(url: &str, cluster: bool) -> Option<Vec<String>> {
    if !url.contains(',') && !cluster {
        return None;
    }
    let scheme = url.split_once("://").map_or("redis", |(s, _)| s);
    Some(
        url.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| if s.contains("://") { s.to_owned() } else { format!("{scheme}://{s}") })
            .collect(),
    )
}

/// Whether `CHRONOS_REDIS_CLUSTER` asks for a cluster.
pub fn cluster_from_env() -> bool {
    std::env::var(CLUSTER_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Where connections come from.
#[derive(Clone)]
pub(super) enum Target {
    Node(redis::Client),
    Cluster {
        /// For blocking commands: a response timeout above the longest block asked for
        /// ([`BLOCKING_RESPONSE_TIMEOUT`]).
        /// Shared: an engine is cloned into every blocking wait.
        blocking: std::sync::Arc<ClusterClient>,
    },
}

impl Target {
    /// Connect to `url` (see [`cluster_seeds`]); the shared connection and the source of
    /// blocking ones.
    pub(super) async fn connect(url: &str, cluster: bool) -> Result<(Target, Connection)> {
        match cluster_seeds(url, cluster) {
            None => {
                let client = redis::Client::open(url)?;
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(3);
                let conn = ConnectionManager::new_with_config(client.clone(), cfg).await?;
                Ok((Target::Node(client), Connection::Node(conn)))
            }
            Some(seeds) => {
                let shared = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?;
                let blocking = std::sync::Arc::new(
                    ClusterClientBuilder::new(seeds)
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(BLOCKING_RESPONSE_TIMEOUT)
                        .build()?,
                );
                let conn = shared.get_async_connection().await?;
                Ok((Target::Cluster { blocking }, Connection::Cluster(conn)))
            }
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    pub(super) async fn blocking(&self) -> Result<BlockingConnection> {
        Ok(match self {
            Target::Node(client) => {
                let cfg = AsyncConnectionConfig::new().set_response_timeout(None).set_connection_timeout(Some(CONNECT_TIMEOUT));
                BlockingConnection::Node(client.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Target::Cluster { blocking } => BlockingConnection::Cluster(blocking.get_async_connection().await?),
        })
    }
}

/// The shared connection: cheap to clone, multiplexed, reconnects by itself.
#[derive(Clone)]
pub enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection of its own for blocking commands (BLPOP, XREAD BLOCK), which would stall
/// every other caller of a shared one. On a cluster one serves the keys of one slot group.
#[derive(Clone)]
pub enum BlockingConnection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

macro_rules! forward_connection_like {
    ($ty:ident, $node:ident) => {
        impl ConnectionLike for $ty {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self {
                    $ty::$node(c) => c.req_packed_command(cmd),
                    $ty::Cluster(c) => c.req_packed_command(cmd),
                }
            }

            fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    $ty::$node(c) => c.req_packed_commands(pipeline, offset, count),
                    $ty::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    $ty::$node(c) => c.get_db(),
                    $ty::Cluster(c) => c.get_db(),
                }
            }
        }
    };
}
forward_connection_like!(Connection, Node);
forward_connection_like!(BlockingConnection, Node);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_seeds_or_the_flag_make_a_cluster_and_one_url_alone_a_single_node() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379", false), None);
        assert_eq!(cluster_seeds("redis://127.0.0.1:7001", true), Some(vec!["redis://127.0.0.1:7001".to_owned()]));
        assert_eq!(
            cluster_seeds("rediss://a:7001, b:7002,redis://c:7003", false),
            Some(vec!["rediss://a:7001".to_owned(), "rediss://b:7002".to_owned(), "redis://c:7003".to_owned()])
        );
    }
}
