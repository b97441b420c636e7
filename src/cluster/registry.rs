//! The connection registry in Redis, with the blueprint's keys:
//!
//! - `ws:connection:{socketId}`: JSON `{ userId, tenantId, nodeId, connectedAt }`, with a TTL
//!   (`REGISTRY_TTL_SECS`) refreshed while the connection lives;
//! - `ws:user:{userId}:connections`, `ws:tenant:{tenantId}:connections`: sets of socket ids;
//!
//! and the node's own:
//!
//! - `aegisx:node:{nodeId}`: the heartbeat, JSON `{ id, startedAt }`, expiring after three
//!   missed beats; `aegisx:nodes`: every node that has not been purged;
//! - `aegisx:node:{nodeId}:connections`: hash socket id → `{ userId, tenantId }`, what a
//!   survivor needs to purge the node's entries once its heartbeat has expired, and what
//!   `/stats` counts;
//! - `aegisx:purge:{nodeId}`: the survivor that claimed a dead node's purge.
//!
//! The braces above stand for the ids, not Redis hash tags: the keys are the blueprint's.
//! Only the cap check needs atomicity, and it touches one key (the user's set).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use fred::prelude::{
    Client, ClientLike, Expiration, HashesInterface, KeysInterface, LuaInterface, SetOptions,
    SetsInterface,
};
use fred::types::Value;
use serde::{Deserialize, Serialize};

use super::{ClusterSettings, RedisError, connected};
use crate::domain::connections::{
    ConnectionInfo, ConnectionRegistry, ConnectionStats, NodeInfo, NodeStats, PurgedNode,
    RegistryError,
};
use crate::domain::ids::{TenantId, UserId};

const NODES: &str = "aegisx:nodes";

/// Adds the socket to the user's set unless the set already has `max` members: check and add in
/// one step, so nodes racing for a user's last slot cannot both get it. 1: added (or already
/// there), 0: refused.
const REGISTER: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

fn conn_key(sid: &str) -> String {
    format!("ws:connection:{sid}")
}
fn user_key(user: &UserId) -> String {
    format!("ws:user:{user}:connections")
}
fn user_key_str(user: &str) -> String {
    format!("ws:user:{user}:connections")
}
fn tenant_key(tenant: &str) -> String {
    format!("ws:tenant:{tenant}:connections")
}
fn node_key(node: &str) -> String {
    format!("aegisx:node:{node}")
}
fn node_conns_key(node: &str) -> String {
    format!("aegisx:node:{node}:connections")
}
fn purge_key(node: &str) -> String {
    format!("aegisx:purge:{node}")
}

/// `ws:connection:{socketId}`, as the blueprint stores it (plus the node that holds it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionEntry<'a> {
    user_id: &'a str,
    tenant_id: Option<&'a str>,
    node_id: &'a str,
    connected_at: &'a str,
}

/// A value of `aegisx:node:{nodeId}:connections`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeEntry {
    user_id: String,
    tenant_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Heartbeat {
    id: String,
    started_at: String,
}

pub struct RedisRegistry {
    client: Client,
    node: NodeInfo,
    settings: ClusterSettings,
    // A std Mutex: read and set between awaits, never held across one.
    last_refresh: Mutex<Option<Instant>>,
}

impl RedisRegistry {
    pub fn new(client: Client, node: NodeInfo, settings: ClusterSettings) -> Self {
        Self {
            client,
            node,
            settings,
            last_refresh: Mutex::new(None),
        }
    }

    fn ttl_secs(&self) -> i64 {
        self.settings.connection_ttl.as_secs().max(1) as i64
    }

    /// Every key of one connection but the user's set (which the cap script writes).
    async fn add_entries(&self, conn: &ConnectionInfo) -> Result<(), RedisError> {
        let now = crate::domain::time::now_rfc3339();
        let entry = serde_json::to_string(&ConnectionEntry {
            user_id: conn.user.as_str(),
            tenant_id: conn.tenant.as_ref().map(TenantId::as_str),
            node_id: &self.node.id,
            connected_at: &now,
        })
        .map_err(|e| RedisError::Reply(e.to_string()))?;
        let mine = serde_json::to_string(&NodeEntry {
            user_id: conn.user.to_string(),
            tenant_id: conn.tenant.as_ref().map(ToString::to_string),
        })
        .map_err(|e| RedisError::Reply(e.to_string()))?;
        let p = self.client.pipeline();
        let _: () = p
            .set(
                conn_key(&conn.socket_id),
                entry,
                Some(Expiration::EX(self.ttl_secs())),
                None,
                false,
            )
            .await?;
        if let Some(t) = &conn.tenant {
            let _: () = p.sadd(tenant_key(t.as_str()), &conn.socket_id).await?;
        }
        let _: () = p
            .hset(node_conns_key(&self.node.id), (&conn.socket_id, mine))
            .await?;
        let _: Vec<Value> = p.all().await?;
        Ok(())
    }

    /// Removes the shared entries of connections (of any node), by socket id and what they were.
    async fn remove_entries(
        &self,
        node: &str,
        entries: &[(String, String, Option<String>)],
    ) -> Result<(), RedisError> {
        if entries.is_empty() {
            return Ok(());
        }
        let p = self.client.pipeline();
        for (sid, user, tenant) in entries {
            let _: () = p.srem(user_key_str(user), sid).await?;
            if let Some(t) = tenant {
                let _: () = p.srem(tenant_key(t), sid).await?;
            }
            let _: () = p.del(conn_key(sid)).await?;
            let _: () = p.hdel(node_conns_key(node), sid).await?;
        }
        let _: Vec<Value> = p.all().await?;
        Ok(())
    }

    /// The connections a node's hash lists: socket id, user, tenant.
    async fn node_entries(
        &self,
        node: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, RedisError> {
        let all: HashMap<String, String> = self.client.hgetall(node_conns_key(node)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(sid, v)| match serde_json::from_str::<NodeEntry>(&v) {
                Ok(e) => Some((sid, e.user_id, e.tenant_id)),
                Err(e) => {
                    tracing::warn!(node, sid, error = %e, "unreadable registry entry skipped");
                    None
                }
            })
            .collect())
    }

    /// Makes this node's shared entries exactly `live`.
    async fn resync(&self, live: &[ConnectionInfo]) -> Result<(), RedisError> {
        let held = self.node_entries(&self.node.id).await?;
        let live_ids: std::collections::HashSet<&str> =
            live.iter().map(|c| c.socket_id.as_str()).collect();
        let stale: Vec<_> = held
            .into_iter()
            .filter(|(sid, _, _)| !live_ids.contains(sid.as_str()))
            .collect();
        self.remove_entries(&self.node.id, &stale).await?;
        for conn in live {
            // Already connected: re-added whatever the cap says now.
            let _: () = self
                .client
                .sadd(user_key(&conn.user), &conn.socket_id)
                .await?;
            self.add_entries(conn).await?;
        }
        Ok(())
    }

    /// Pushes back the TTL of this node's `ws:connection:*` keys, a few times per TTL.
    async fn refresh(&self, live: &[ConnectionInfo]) -> Result<(), RedisError> {
        let due = {
            let last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            last.is_none_or(|t| t.elapsed() >= self.settings.connection_ttl / 4)
        };
        if !due || live.is_empty() {
            return Ok(());
        }
        let p = self.client.pipeline();
        for conn in live {
            let _: () = p
                .expire(conn_key(&conn.socket_id), self.ttl_secs(), None)
                .await?;
        }
        let _: Vec<Value> = p.all().await?;
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    async fn register_inner(&self, conn: &ConnectionInfo, max: usize) -> Result<bool, RedisError> {
        connected(&self.client)?;
        let added: i64 = self
            .client
            .eval(
                REGISTER,
                vec![user_key(&conn.user)],
                vec![conn.socket_id.clone(), max.to_string()],
            )
            .await?;
        if added == 0 {
            return Ok(false);
        }
        self.add_entries(conn).await?;
        Ok(true)
    }

    async fn stats_inner(&self) -> Result<ConnectionStats, RedisError> {
        connected(&self.client)?;
        let ids: Vec<String> = self.client.smembers(NODES).await?;
        let mut stats = ConnectionStats::default();
        let mut users: BTreeMap<String, usize> = BTreeMap::new();
        let mut tenants: BTreeMap<String, usize> = BTreeMap::new();
        for id in ids {
            // A node whose heartbeat expired is not listed, though its entries may wait for
            // their purge.
            let Some(beat): Option<String> = self.client.get(node_key(&id)).await? else {
                continue;
            };
            let started_at = serde_json::from_str::<Heartbeat>(&beat)
                .map(|h| h.started_at)
                .unwrap_or_default();
            let entries = self.node_entries(&id).await?;
            for (_, user, tenant) in &entries {
                *users.entry(user.clone()).or_default() += 1;
                if let Some(t) = tenant {
                    *tenants.entry(t.clone()).or_default() += 1;
                }
            }
            stats.total_connections += entries.len();
            stats.nodes.push(NodeStats {
                id,
                connections: entries.len(),
                started_at,
            });
        }
        stats.nodes.sort_by(|a, b| a.id.cmp(&b.id));
        stats.users = users;
        stats.tenants = tenants;
        Ok(stats)
    }

    async fn heartbeat_inner(
        &self,
        live: &[ConnectionInfo],
        resync: bool,
    ) -> Result<bool, RedisError> {
        connected(&self.client)?;
        let beat = serde_json::to_string(&Heartbeat {
            id: self.node.id.clone(),
            started_at: self.node.started_at.clone(),
        })
        .map_err(|e| RedisError::Reply(e.to_string()))?;
        let ttl = self.settings.node_ttl().as_millis().max(1) as i64;
        let before: Option<String> = self
            .client
            .set(
                node_key(&self.node.id),
                beat,
                Some(Expiration::PX(ttl)),
                None,
                true,
            )
            .await?;
        let _: () = self.client.sadd(NODES, &self.node.id).await?;
        let was_known = self
            .last_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        // Lost: this node beat before, yet its heartbeat was gone (purged, or Redis lost it).
        let lost = before.is_none() && was_known;
        if resync {
            self.resync(live).await?;
            *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        } else if !lost {
            self.refresh(live).await?;
        }
        Ok(lost)
    }

    async fn purge_inner(&self) -> Result<Vec<PurgedNode>, RedisError> {
        connected(&self.client)?;
        let ids: Vec<String> = self.client.smembers(NODES).await?;
        let mut purged = Vec::new();
        for id in ids {
            if id == self.node.id {
                continue;
            }
            let alive: i64 = self.client.exists(node_key(&id)).await?;
            if alive == 1 {
                continue;
            }
            // One survivor purges; the claim expires, so a survivor that dies midway is
            // replaced by another one.
            let ttl = (self.settings.node_ttl().as_millis() as i64).max(1_000);
            let claimed: Option<String> = self
                .client
                .set(
                    purge_key(&id),
                    &self.node.id,
                    Some(Expiration::PX(ttl)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if claimed.is_none() {
                continue;
            }
            let entries = self.node_entries(&id).await?;
            self.remove_entries(&id, &entries).await?;
            let _: () = self.client.del(node_conns_key(&id)).await?;
            let connections = entries
                .into_iter()
                .filter_map(|(socket_id, user, tenant)| {
                    Some(ConnectionInfo {
                        socket_id,
                        user: UserId::parse(&user)?,
                        tenant: TenantId::parse_optional(tenant.as_deref()).ok()?,
                    })
                })
                .collect();
            purged.push(PurgedNode { id, connections });
        }
        Ok(purged)
    }
}

fn unavailable(e: RedisError) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

#[async_trait]
impl ConnectionRegistry for RedisRegistry {
    async fn register(
        &self,
        conn: &ConnectionInfo,
        max_per_user: usize,
    ) -> Result<(), RegistryError> {
        match self.register_inner(conn, max_per_user).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::TooManyConnections),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn unregister(&self, conn: &ConnectionInfo) -> Result<(), RegistryError> {
        connected(&self.client).map_err(unavailable)?;
        let entry = (
            conn.socket_id.clone(),
            conn.user.to_string(),
            conn.tenant.as_ref().map(ToString::to_string),
        );
        self.remove_entries(&self.node.id, &[entry])
            .await
            .map_err(unavailable)
    }

    async fn stats(&self) -> Result<ConnectionStats, RegistryError> {
        self.stats_inner().await.map_err(unavailable)
    }

    async fn user_connections(&self, user: &UserId) -> Result<usize, RegistryError> {
        connected(&self.client).map_err(unavailable)?;
        let n: usize = self
            .client
            .scard(user_key(user))
            .await
            .map_err(|e| unavailable(e.into()))?;
        Ok(n)
    }

    async fn heartbeat(
        &self,
        live: &[ConnectionInfo],
        resync: bool,
    ) -> Result<bool, RegistryError> {
        self.heartbeat_inner(live, resync)
            .await
            .map_err(unavailable)
    }

    async fn purge_dead(&self) -> Result<Vec<PurgedNode>, RegistryError> {
        self.purge_inner().await.map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        connected(&self.client).map_err(unavailable)?;
        let _: String = self
            .client
            .ping(None)
            .await
            .map_err(|e| unavailable(e.into()))?;
        Ok(())
    }

    async fn forget(&self, node: &str) -> Result<(), RegistryError> {
        connected(&self.client).map_err(unavailable)?;
        let p = self.client.pipeline();
        let _: () = p
            .srem(NODES, node)
            .await
            .map_err(|e| unavailable(e.into()))?;
        let _: () = p
            .del(purge_key(node))
            .await
            .map_err(|e| unavailable(e.into()))?;
        let _: Vec<Value> = p.all().await.map_err(|e| unavailable(e.into()))?;
        Ok(())
    }
}
