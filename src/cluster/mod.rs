//! Cluster-wide state in Redis, behind the domain's ports: the connection registry (the
//! blueprint's `ws:*` keys, node heartbeats, dead-node purge), the per-user rate limit, and the
//! presence directory. Every check-and-change is one Lua script, so nodes racing for the same
//! slot or budget cannot both win. The keys one script touches share a hash slot, so Redis
//! Cluster runs them as well as a single Redis.
//!
//! Every call checks first that the client is connected: while Redis is away calls fail at
//! once (`Unavailable`) instead of waiting for a command timeout, and the domain services count
//! on this node meanwhile.

pub mod presence;
pub mod rate_limit;
pub mod registry;

use std::time::Duration;

use fred::prelude::{Client, ClientLike};

pub use presence::RedisDirectory;
pub use rate_limit::RedisRateLimiter;
pub use registry::RedisRegistry;

/// Why a Redis call failed: not connected, or the command failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected to Redis")]
    NotConnected,
    #[error("redis: {0}")]
    Command(#[from] fred::error::Error),
    /// A reply of a shape the scripts never produce (another program wrote our keys).
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

/// Fails at once when the client is not connected (see the module doc).
pub(crate) fn connected(client: &Client) -> Result<(), RedisError> {
    if client.is_connected() {
        Ok(())
    } else {
        Err(RedisError::NotConnected)
    }
}

/// Settings of the cluster state.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSettings {
    /// How often a node says it is alive (`NODE_HEARTBEAT_MS`); its heartbeat key lives three
    /// times as long, so a node that missed two beats is dead.
    pub heartbeat: Duration,
    /// TTL of `ws:connection:{socketId}` (`REGISTRY_TTL_SECS`), refreshed while it is alive.
    pub connection_ttl: Duration,
}

impl ClusterSettings {
    pub fn node_ttl(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// A client of `url` with the node's reconnect policy, connecting in the background: a node
/// starts while Redis is away, and counts locally until it is back.
pub async fn client(url: &str) -> anyhow::Result<Client> {
    let client = crate::redis::builder(url)?
        // The reconnect policy applies to the first connection too.
        .with_config(|c| c.fail_fast = false)
        .build()?;
    // The connection task lives as long as the client; it reconnects by itself.
    let _task = client.connect();
    if tokio::time::timeout(STARTUP_WAIT, client.wait_for_connect())
        .await
        .map_or(true, |r| r.is_err())
    {
        tracing::warn!("Redis not reachable at start; counting on this node until it is");
    }
    Ok(client)
}

/// How long a starting node waits for Redis before it serves without it.
const STARTUP_WAIT: Duration = Duration::from_secs(2);
