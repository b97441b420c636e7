//! The per-user `message` rate limit across nodes: a sliding log per user in a sorted set
//! (`ws:rate_limit:{userId}`, scored by Redis's own clock in microseconds, so the nodes' clocks
//! do not matter), checked and counted in one script.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use fred::prelude::{Client, LuaInterface};

use super::connected;
use crate::domain::ids::UserId;
use crate::domain::rate_limit::{RateLimitError, RateLimiter};

/// 1: counted, 0: over the limit (nothing counted). Refused events do not count, as on one node.
const ALLOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 60000)
return 1
";

pub struct RedisRateLimiter {
    client: Client,
    node: String,
    /// Makes each counted event a distinct member of the log, across nodes.
    seq: AtomicU64,
}

impl RedisRateLimiter {
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            seq: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn allow(&self, user: &UserId, limit: u32) -> Result<bool, RateLimitError> {
        let unavailable = |e: &dyn std::fmt::Display| RateLimitError::Unavailable(e.to_string());
        connected(&self.client).map_err(|e| unavailable(&e))?;
        let member = format!("{}:{}", self.node, self.seq.fetch_add(1, Ordering::Relaxed));
        let counted: i64 = self
            .client
            .eval(
                ALLOW,
                vec![format!("ws:rate_limit:{user}")],
                vec![limit.to_string(), member],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(counted == 1)
    }
}
