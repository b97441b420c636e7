//! Who is connected: the connection registry (per-user connection cap, first/last connection for
//! presence, stats). In-process here; a cluster implementation keeps the same contract in Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::{TenantId, UserId};

/// One live connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub socket_id: String,
    pub user: UserId,
    pub tenant: Option<TenantId>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("Too many connections")]
    TooManyConnections,
}

/// Connection counts, as `GET /stats` shows them.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStats {
    pub total_connections: usize,
    pub users: BTreeMap<String, usize>,
    pub tenants: BTreeMap<String, usize>,
}

#[async_trait]
pub trait ConnectionRegistry: Send + Sync + 'static {
    /// Adds the connection unless the user already has `max_per_user`. Returns true when it is
    /// the user's first live connection (the user comes online).
    async fn register(
        &self,
        conn: &ConnectionInfo,
        max_per_user: usize,
    ) -> Result<bool, RegistryError>;

    /// Removes the connection. Returns true when it was the user's last (the user goes offline).
    async fn unregister(&self, conn: &ConnectionInfo) -> bool;

    async fn stats(&self) -> ConnectionStats;

    /// Live connections of one user.
    async fn user_connections(&self, user: &UserId) -> usize;

    /// Removes this node's entries (of `only`, or of every user) older than `grace` whose
    /// socket is gone (`alive` says no): connections whose transport closed while they were
    /// still connecting, which no disconnect handler will ever clean up. Returns each with
    /// whether it was the user's last.
    async fn reap(
        &self,
        only: Option<&UserId>,
        grace: Duration,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Vec<(ConnectionInfo, bool)>;
}

#[derive(Default)]
pub struct LocalRegistry {
    // A std Mutex: every critical section is a map update, never held across an await.
    inner: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    /// Socket ids of each user, with when they registered.
    users: HashMap<UserId, Vec<Registered>>,
    tenants: HashMap<TenantId, usize>,
}

struct Registered {
    socket_id: String,
    tenant: Option<TenantId>,
    at: Instant,
}

impl RegistryState {
    /// Removes one socket; `Some(true)` when it was the user's last.
    fn remove(&mut self, user: &UserId, socket_id: &str) -> Option<bool> {
        let socks = self.users.get_mut(user)?;
        let pos = socks.iter().position(|s| s.socket_id == socket_id)?;
        let gone = socks.swap_remove(pos);
        let last = socks.is_empty();
        if last {
            self.users.remove(user);
        }
        if let Some(t) = &gone.tenant
            && let Some(n) = self.tenants.get_mut(t)
        {
            *n -= 1;
            if *n == 0 {
                self.tenants.remove(t);
            }
        }
        Some(last)
    }
}

#[async_trait]
impl ConnectionRegistry for LocalRegistry {
    async fn register(
        &self,
        conn: &ConnectionInfo,
        max_per_user: usize,
    ) -> Result<bool, RegistryError> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let socks = st.users.entry(conn.user.clone()).or_default();
        if socks.len() >= max_per_user {
            if socks.is_empty() {
                st.users.remove(&conn.user);
            }
            return Err(RegistryError::TooManyConnections);
        }
        let first = socks.is_empty();
        socks.push(Registered {
            socket_id: conn.socket_id.clone(),
            tenant: conn.tenant.clone(),
            at: Instant::now(),
        });
        if let Some(t) = &conn.tenant {
            *st.tenants.entry(t.clone()).or_default() += 1;
        }
        Ok(first)
    }

    async fn unregister(&self, conn: &ConnectionInfo) -> bool {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.remove(&conn.user, &conn.socket_id).unwrap_or(false)
    }

    async fn reap(
        &self,
        only: Option<&UserId>,
        grace: Duration,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Vec<(ConnectionInfo, bool)> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut dead = Vec::new();
        let mut collect = |user: &UserId, socks: &[Registered]| {
            for sock in socks {
                if now.duration_since(sock.at) >= grace && !alive(sock.socket_id.as_str()) {
                    dead.push(ConnectionInfo {
                        socket_id: sock.socket_id.clone(),
                        user: user.clone(),
                        tenant: sock.tenant.clone(),
                    });
                }
            }
        };
        match only {
            // One user: a lookup, not a scan (this runs on every connect).
            Some(user) => {
                if let Some(socks) = st.users.get(user) {
                    collect(user, socks);
                }
            }
            None => {
                for (user, socks) in &st.users {
                    collect(user, socks);
                }
            }
        }
        dead.into_iter()
            .filter_map(|c| {
                let last = st.remove(&c.user, &c.socket_id)?;
                Some((c, last))
            })
            .collect()
    }

    async fn user_connections(&self, user: &UserId) -> usize {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.users.get(user).map_or(0, Vec::len)
    }

    async fn stats(&self) -> ConnectionStats {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ConnectionStats {
            total_connections: st.users.values().map(Vec::len).sum(),
            users: st
                .users
                .iter()
                .map(|(u, s)| (u.to_string(), s.len()))
                .collect(),
            tenants: st
                .tenants
                .iter()
                .map(|(t, n)| (t.to_string(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(sid: &str, user: &str) -> ConnectionInfo {
        ConnectionInfo {
            socket_id: sid.into(),
            user: UserId::parse(user).unwrap(),
            tenant: TenantId::parse_optional(Some("t")).unwrap(),
        }
    }

    #[tokio::test]
    async fn first_and_last_connection_and_cap() {
        let r = LocalRegistry::default();
        assert_eq!(r.register(&conn("a", "u"), 2).await, Ok(true));
        assert_eq!(r.register(&conn("b", "u"), 2).await, Ok(false));
        assert_eq!(
            r.register(&conn("c", "u"), 2).await,
            Err(RegistryError::TooManyConnections)
        );
        assert_eq!(r.stats().await.total_connections, 2);
        assert!(!r.unregister(&conn("a", "u")).await);
        assert!(r.unregister(&conn("b", "u")).await);
        assert!(
            !r.unregister(&conn("b", "u")).await,
            "unknown sockets are ignored"
        );
        let s = r.stats().await;
        assert_eq!(s.total_connections, 0);
        assert!(s.tenants.is_empty() && s.users.is_empty());
    }

    #[tokio::test]
    async fn reaping_removes_only_old_entries_whose_socket_is_gone() {
        let r = LocalRegistry::default();
        r.register(&conn("live", "u"), 5).await.unwrap();
        r.register(&conn("dead", "u"), 5).await.unwrap();
        r.register(&conn("lone", "v"), 5).await.unwrap();
        let alive = |sid: &str| sid == "live";
        assert!(
            r.reap(None, Duration::from_secs(60), &alive)
                .await
                .is_empty(),
            "within the grace"
        );
        let v = UserId::parse("v").unwrap();
        assert_eq!(
            r.reap(Some(&v), Duration::ZERO, &alive).await.len(),
            1,
            "only v's"
        );
        r.register(&conn("lone", "v"), 5).await.unwrap();
        let mut got: Vec<(String, bool)> = r
            .reap(None, Duration::ZERO, &alive)
            .await
            .into_iter()
            .map(|(c, last)| (c.socket_id, last))
            .collect();
        got.sort();
        assert_eq!(got, vec![("dead".into(), false), ("lone".into(), true)]);
        assert_eq!(r.user_connections(&UserId::parse("u").unwrap()).await, 1);
        assert_eq!(r.stats().await.tenants.get("t"), Some(&1));
    }
}

/// Statuses a client may set with the `user_status` message.
pub const STATUSES: [&str; 4] = ["online", "away", "busy", "offline"];

/// Presence announcements: `user_status { userId, status, timestamp }`.
#[derive(Clone)]
pub struct PresenceService {
    bus: std::sync::Arc<dyn crate::domain::bus::Bus>,
}

impl PresenceService {
    pub fn new(bus: std::sync::Arc<dyn crate::domain::bus::Bus>) -> Self {
        Self { bus }
    }

    /// Online/offline on first/last connection: to the tenant; users without a tenant have no
    /// presence broadcast.
    pub async fn announce(&self, user: &UserId, tenant: Option<&TenantId>, status: &str) {
        if let Some(t) = tenant {
            self.publish(
                crate::domain::events::Target::Tenant { tenant: t.clone() },
                user,
                status,
            )
            .await;
        }
    }

    /// A status the user set: to the tenant, or to the user's own connections without one.
    pub async fn set_status(
        &self,
        user: &UserId,
        tenant: Option<&TenantId>,
        status: &str,
    ) -> Result<(), crate::domain::error::DomainError> {
        if !STATUSES.contains(&status) {
            return Err(crate::domain::error::DomainError::invalid(
                "status must be one of online, away, busy, offline",
            ));
        }
        let target = match tenant {
            Some(t) => crate::domain::events::Target::Tenant { tenant: t.clone() },
            None => crate::domain::events::Target::User { user: user.clone() },
        };
        self.publish(target, user, status).await;
        Ok(())
    }

    async fn publish(&self, target: crate::domain::events::Target, user: &UserId, status: &str) {
        let msg = crate::domain::events::BusMessage::Deliver(crate::domain::events::Delivery {
            target,
            event: "user_status".into(),
            data: serde_json::json!({
                "userId": user,
                "status": status,
                "timestamp": crate::domain::time::now_rfc3339(),
            }),
        });
        if self.bus.publish(msg).await.is_err() {
            tracing::warn!("fan-out stopped; presence not delivered");
        }
    }
}
