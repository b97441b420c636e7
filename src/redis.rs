//! Connections to Redis or Redis Cluster, shared by the cluster bus and the cluster state.
//!
//! `REDIS_URL` is handed to fred as it is: `redis://[user:pass@]host:port[/db]`
//! for one server, `redis-cluster://host:port?node=host:port&node=…` for a cluster. Every client
//! built here reconnects by itself, forever, with capped backoff, and bounds every command, so a
//! Redis that goes away makes calls fail fast instead of piling up.

use std::time::Duration;

use fred::prelude::{Builder, Config, ReconnectPolicy};

/// How long one command may take before it fails (a Redis that stopped answering).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands queued while disconnected are refused past this, instead of buffering without end.
const MAX_BUFFERED_COMMANDS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("REDIS_URL is not a Redis URL fred understands: {0}")]
    Url(String),
}

/// A builder for clients of `url`, with the node's reconnect and timeout policy.
pub fn builder(url: &str) -> Result<Builder, RedisConfigError> {
    // fred reads any other scheme as a single server; a typo must not pass for one.
    if !(url.starts_with("redis://") || url.starts_with("redis-cluster://")) {
        return Err(RedisConfigError::Url(
            "expected redis://… or redis-cluster://…".into(),
        ));
    }
    let config =
        Config::from_url(url).map_err(|e| RedisConfigError::Url(e.details().to_string()))?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
            c.max_command_buffer_len = MAX_BUFFERED_COMMANDS;
            c.tcp.nodelay = Some(true);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        });
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_one_server_and_for_a_cluster_are_understood() {
        assert!(builder("redis://127.0.0.1:6379").is_ok());
        assert!(builder("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001").is_ok());
        assert!(matches!(builder("http://x"), Err(RedisConfigError::Url(_))));
    }
}
