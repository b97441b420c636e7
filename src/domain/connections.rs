//! Who is connected: this node's connections (always counted here), and, in a cluster, the
//! shared registry behind the `ConnectionRegistry` port (Redis: the blueprint's `ws:*` keys).
//!
//! `ConnectionService` is what adapters call (connect, disconnect, the reaper, `/stats`,
//! disconnect-user). Its choice when the shared registry fails (Redis down): the connect is
//! **allowed**, with the cap counted on this node only (never a crash, never a lockout of every
//! user because a dependency is away); the failure is counted (`aegisx_cluster_fallback_total`)
//! and logged once per outage; the next heartbeat that reaches the registry makes this node's
//! shared entries exactly its live connections again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::{TenantId, UserId};
use crate::domain::observe::{Observer, Outage, Port};
use crate::domain::presence::PresenceService;

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub socket_id: String,
    pub user: UserId,
    pub tenant: Option<TenantId>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("Too many connections")]
    TooManyConnections,
    /// The shared registry cannot be reached (Redis down or not answering in time).
    #[error("connection registry unavailable: {0}")]
    Unavailable(String),
}

/// One node of the cluster, as `/stats` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub id: String,
    pub connections: usize,
    /// RFC 3339.
    pub started_at: String,
}

/// Connection counts, as `GET /stats` shows them.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStats {
    pub total_connections: usize,
    pub users: BTreeMap<String, usize>,
    pub tenants: BTreeMap<String, usize>,
    pub nodes: Vec<NodeStats>,
}

/// This node, as the cluster knows it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
}

/// A node whose heartbeat stopped, whose shared entries this node removed.
#[derive(Debug, Clone)]
pub struct PurgedNode {
    pub id: String,
    pub connections: Vec<ConnectionInfo>,
}

/// The registry the nodes of a cluster share. Every call may fail with `Unavailable`; the
/// service decides what that means (see the module doc).
#[async_trait]
pub trait ConnectionRegistry: Send + Sync + 'static {
    /// Adds the connection unless the user already has `max_per_user` anywhere in the cluster.
    /// Check and add are one atomic step: two nodes racing for a user's last slot cannot both win.
    async fn register(
        &self,
        conn: &ConnectionInfo,
        max_per_user: usize,
    ) -> Result<(), RegistryError>;

    async fn unregister(&self, conn: &ConnectionInfo) -> Result<(), RegistryError>;

    /// Cluster-wide counts, with every live node.
    async fn stats(&self) -> Result<ConnectionStats, RegistryError>;

    /// Live connections of one user, on every node.
    async fn user_connections(&self, user: &UserId) -> Result<usize, RegistryError>;

    /// This node is alive. With `resync`, this node's shared entries become exactly `live`
    /// (the caller keeps registrations out meanwhile). Returns whether the registry had lost
    /// this node (it was purged, or Redis lost its data): the caller then resyncs.
    async fn heartbeat(&self, live: &[ConnectionInfo], resync: bool)
    -> Result<bool, RegistryError>;

    /// Removes the entries of nodes whose heartbeat stopped. Each dead node is claimed by one
    /// survivor, which gets it here; its id stays listed until `forget`.
    async fn purge_dead(&self) -> Result<Vec<PurgedNode>, RegistryError>;

    /// The dead node's cleanup is complete (presence included): stop listing it.
    async fn forget(&self, node: &str) -> Result<(), RegistryError>;

    /// The registry answers (readiness).
    async fn ping(&self) -> Result<(), RegistryError>;
}

/// The connections of this node (every one of them, cluster or not): the cap of a single node,
/// the fallback count while the shared registry is away, what a resync re-registers, and the
/// reaper's list.
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

impl LocalRegistry {
    fn state(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the connection unless the user already has `max_per_user` here. Returns true when
    /// it is the user's first on this node.
    pub fn register(
        &self,
        conn: &ConnectionInfo,
        max_per_user: usize,
    ) -> Result<bool, RegistryError> {
        let mut st = self.state();
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

    /// Removes the connection. Returns true when it was the user's last here.
    pub fn unregister(&self, conn: &ConnectionInfo) -> bool {
        self.state()
            .remove(&conn.user, &conn.socket_id)
            .unwrap_or(false)
    }

    /// Removes the entries (of `only`, or of every user) older than `grace` whose socket is
    /// gone (`alive` says no): connections whose transport closed while they were still
    /// connecting, which no disconnect handler will ever clean up. Returns each with whether it
    /// was the user's last.
    pub fn reap(
        &self,
        only: Option<&UserId>,
        grace: Duration,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Vec<(ConnectionInfo, bool)> {
        let mut st = self.state();
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

    pub fn user_connections(&self, user: &UserId) -> usize {
        self.state().users.get(user).map_or(0, Vec::len)
    }

    /// Every connection of this node.
    pub fn all(&self) -> Vec<ConnectionInfo> {
        let st = self.state();
        st.users
            .iter()
            .flat_map(|(user, socks)| {
                socks.iter().map(|s| ConnectionInfo {
                    socket_id: s.socket_id.clone(),
                    user: user.clone(),
                    tenant: s.tenant.clone(),
                })
            })
            .collect()
    }

    /// This node's counts; `nodes` is left empty.
    pub fn stats(&self) -> ConnectionStats {
        let st = self.state();
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
            nodes: Vec::new(),
        }
    }
}

/// Connections of this node and, in a cluster, of all nodes. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionService(Arc<ServiceInner>);

struct ServiceInner {
    node: NodeInfo,
    max_per_user: usize,
    local: LocalRegistry,
    cluster: Option<Arc<dyn ConnectionRegistry>>,
    observer: Arc<dyn Observer>,
    outage: Outage,
    /// A call on the shared registry failed, so this node's shared entries may be wrong: the
    /// next heartbeat resyncs them. Starts set, so a node restarted under the same id replaces
    /// the entries its previous life left.
    dirty: AtomicBool,
    /// Held shared by every change of this node's entries, exclusively by a resync: a resync
    /// states a snapshot of the live connections, and a connection added or removed while it
    /// runs would be undone by it.
    gate: tokio::sync::RwLock<()>,
}

impl ConnectionService {
    /// `cluster`: the shared registry (`None`: a single node, counted here only).
    pub fn new(
        node: NodeInfo,
        max_per_user: usize,
        cluster: Option<Arc<dyn ConnectionRegistry>>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self(Arc::new(ServiceInner {
            node,
            max_per_user,
            local: LocalRegistry::default(),
            cluster,
            observer,
            outage: Outage::default(),
            dirty: AtomicBool::new(true),
            gate: tokio::sync::RwLock::new(()),
        }))
    }

    pub fn node(&self) -> &NodeInfo {
        &self.0.node
    }

    fn fell_back(&self, e: &RegistryError) {
        self.0.observer.cluster_fallback(Port::Registry);
        self.0.outage.failed(Port::Registry, e);
        self.0.dirty.store(true, Ordering::Release);
    }

    /// Adds a connection, or refuses it when the user is at `MAX_CONNECTIONS_PER_USER` (in the
    /// cluster; on this node while the shared registry is away).
    pub async fn register(&self, conn: &ConnectionInfo) -> Result<(), RegistryError> {
        let max = self.0.max_per_user;
        let _changing = self.0.gate.read().await;
        if let Some(cluster) = &self.0.cluster {
            match cluster.register(conn, max).await {
                Ok(()) => {
                    self.0.outage.succeeded(Port::Registry);
                    // The cluster counted it; here it is only remembered.
                    self.0.local.register(conn, usize::MAX)?;
                    return Ok(());
                }
                Err(RegistryError::TooManyConnections) => {
                    return Err(RegistryError::TooManyConnections);
                }
                Err(e) => self.fell_back(&e),
            }
        }
        self.0.local.register(conn, max).map(drop)
    }

    pub async fn unregister(&self, conn: &ConnectionInfo) {
        let _changing = self.0.gate.read().await;
        self.0.local.unregister(conn);
        self.unregister_shared(conn).await;
    }

    async fn unregister_shared(&self, conn: &ConnectionInfo) {
        if let Some(cluster) = &self.0.cluster {
            match cluster.unregister(conn).await {
                Ok(()) => {
                    self.0.outage.succeeded(Port::Registry);
                }
                Err(e) => self.fell_back(&e),
            }
        }
    }

    /// Removes this node's entries (of `only`, or all) older than `grace` whose socket is gone
    /// (see `LocalRegistry::reap`), here and in the shared registry.
    pub async fn reap(
        &self,
        only: Option<&UserId>,
        grace: Duration,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Vec<ConnectionInfo> {
        let _changing = self.0.gate.read().await;
        let reaped: Vec<_> = self
            .0
            .local
            .reap(only, grace, alive)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        for conn in &reaped {
            self.unregister_shared(conn).await;
        }
        reaped
    }

    /// Cluster-wide counts; while the shared registry is away, this node's alone.
    pub async fn stats(&self) -> ConnectionStats {
        if let Some(cluster) = &self.0.cluster {
            match cluster.stats().await {
                Ok(s) => return s,
                Err(e) => self.fell_back(&e),
            }
        }
        let mut s = self.0.local.stats();
        s.nodes = vec![NodeStats {
            id: self.0.node.id.clone(),
            connections: s.total_connections,
            started_at: self.0.node.started_at.clone(),
        }];
        s
    }

    /// Whether the shared registry answers; `None` for a single node (nothing to ask).
    pub async fn shared_ready(&self) -> Option<Result<(), RegistryError>> {
        let cluster = self.0.cluster.as_ref()?;
        Some(cluster.ping().await)
    }

    /// The user's connections on every node; while the shared registry is away, on this one.
    pub async fn user_connections(&self, user: &UserId) -> usize {
        if let Some(cluster) = &self.0.cluster {
            match cluster.user_connections(user).await {
                Ok(n) => return n,
                Err(e) => self.fell_back(&e),
            }
        }
        self.0.local.user_connections(user)
    }

    /// One heartbeat: keeps this node alive in the shared registry (resyncing its entries when
    /// they may be wrong), then purges the nodes whose heartbeat stopped and takes their users
    /// out of presence (announcing offline those whose last connection was there).
    pub async fn beat(&self, presence: &PresenceService) {
        let Some(cluster) = &self.0.cluster else {
            return;
        };
        let resync = self.0.dirty.swap(false, Ordering::AcqRel);
        let beat = if resync {
            self.resync(cluster.as_ref()).await
        } else {
            cluster.heartbeat(&self.0.local.all(), false).await
        };
        let lost = match beat {
            Ok(lost) => lost,
            Err(e) => return self.fell_back(&e),
        };
        self.0.outage.succeeded(Port::Registry);
        if lost {
            tracing::warn!("the shared registry had lost this node (purged, or Redis emptied)");
            if !resync && let Err(e) = self.resync(cluster.as_ref()).await {
                return self.fell_back(&e);
            }
        }
        presence.resync(lost).await;
        let dead = match cluster.purge_dead().await {
            Ok(dead) => dead,
            Err(e) => return self.fell_back(&e),
        };
        for node in dead {
            tracing::warn!(node = %node.id, connections = node.connections.len(), "purged a node whose heartbeat stopped");
            if presence.purge_node(&node.id).await
                && let Err(e) = cluster.forget(&node.id).await
            {
                self.fell_back(&e);
            }
        }
    }

    /// States this node's live connections in the shared registry, with changes kept out.
    /// Returns whether the registry had lost this node.
    async fn resync(&self, cluster: &dyn ConnectionRegistry) -> Result<bool, RegistryError> {
        let _all = self.0.gate.write().await;
        let live = self.0.local.all();
        let lost = cluster.heartbeat(&live, true).await?;
        tracing::info!(
            connections = live.len(),
            "registered this node's live connections"
        );
        Ok(lost)
    }

    /// The heartbeat task (a cluster only): `beat` every `every`.
    pub fn spawn(&self, every: Duration, presence: PresenceService) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.beat(&presence).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::observe::Quiet;

    fn conn(sid: &str, user: &str) -> ConnectionInfo {
        ConnectionInfo {
            socket_id: sid.into(),
            user: UserId::parse(user).unwrap(),
            tenant: TenantId::parse_optional(Some("t")).unwrap(),
        }
    }

    #[test]
    fn first_and_last_connection_and_cap() {
        let r = LocalRegistry::default();
        assert_eq!(r.register(&conn("a", "u"), 2), Ok(true));
        assert_eq!(r.register(&conn("b", "u"), 2), Ok(false));
        assert_eq!(
            r.register(&conn("c", "u"), 2),
            Err(RegistryError::TooManyConnections)
        );
        assert_eq!(r.stats().total_connections, 2);
        assert!(!r.unregister(&conn("a", "u")));
        assert!(r.unregister(&conn("b", "u")));
        assert!(
            !r.unregister(&conn("b", "u")),
            "unknown sockets are ignored"
        );
        let s = r.stats();
        assert_eq!(s.total_connections, 0);
        assert!(s.tenants.is_empty() && s.users.is_empty());
    }

    #[test]
    fn reaping_removes_only_old_entries_whose_socket_is_gone() {
        let r = LocalRegistry::default();
        r.register(&conn("live", "u"), 5).unwrap();
        r.register(&conn("dead", "u"), 5).unwrap();
        r.register(&conn("lone", "v"), 5).unwrap();
        let alive = |sid: &str| sid == "live";
        assert!(
            r.reap(None, Duration::from_secs(60), &alive).is_empty(),
            "within the grace"
        );
        let v = UserId::parse("v").unwrap();
        assert_eq!(
            r.reap(Some(&v), Duration::ZERO, &alive).len(),
            1,
            "only v's"
        );
        r.register(&conn("lone", "v"), 5).unwrap();
        let mut got: Vec<(String, bool)> = r
            .reap(None, Duration::ZERO, &alive)
            .into_iter()
            .map(|(c, last)| (c.socket_id, last))
            .collect();
        got.sort();
        assert_eq!(got, vec![("dead".into(), false), ("lone".into(), true)]);
        assert_eq!(r.user_connections(&UserId::parse("u").unwrap()), 1);
        assert_eq!(r.stats().tenants.get("t"), Some(&1));
    }

    /// A shared registry that is down: every call fails.
    struct Down;

    #[async_trait]
    impl ConnectionRegistry for Down {
        async fn register(&self, _: &ConnectionInfo, _: usize) -> Result<(), RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn unregister(&self, _: &ConnectionInfo) -> Result<(), RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn stats(&self) -> Result<ConnectionStats, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn user_connections(&self, _: &UserId) -> Result<usize, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn heartbeat(&self, _: &[ConnectionInfo], _: bool) -> Result<bool, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn purge_dead(&self) -> Result<Vec<PurgedNode>, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn forget(&self, _: &str) -> Result<(), RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn ping(&self) -> Result<(), RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
    }

    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Observer for Counting {
        fn presence_announced(&self, _: bool) {}
        fn cluster_fallback(&self, port: Port) {
            assert_eq!(port, Port::Registry);
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            id: "n1".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn with_the_shared_registry_down_connects_are_capped_on_this_node_and_counted() {
        let observer = Arc::new(Counting::default());
        let svc = ConnectionService::new(node(), 2, Some(Arc::new(Down)), observer.clone());
        assert_eq!(svc.register(&conn("a", "u")).await, Ok(()));
        assert_eq!(svc.register(&conn("b", "u")).await, Ok(()));
        assert_eq!(
            svc.register(&conn("c", "u")).await,
            Err(RegistryError::TooManyConnections),
            "the cap still holds, counted here"
        );
        let s = svc.stats().await;
        assert_eq!(s.total_connections, 2);
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.nodes[0].id, "n1");
        assert_eq!(svc.user_connections(&UserId::parse("u").unwrap()).await, 2);
        svc.unregister(&conn("a", "u")).await;
        assert_eq!(svc.user_connections(&UserId::parse("u").unwrap()).await, 1);
        assert_eq!(observer.0.load(Ordering::Relaxed), 7);
    }

    /// A shared registry whose resync waits until released, recording what it is asked.
    #[derive(Default)]
    struct Slow {
        release: tokio::sync::Notify,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl ConnectionRegistry for Slow {
        async fn register(&self, c: &ConnectionInfo, _: usize) -> Result<(), RegistryError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("register {}", c.socket_id));
            Ok(())
        }
        async fn unregister(&self, _: &ConnectionInfo) -> Result<(), RegistryError> {
            Ok(())
        }
        async fn stats(&self) -> Result<ConnectionStats, RegistryError> {
            Ok(ConnectionStats::default())
        }
        async fn user_connections(&self, _: &UserId) -> Result<usize, RegistryError> {
            Ok(0)
        }
        async fn heartbeat(
            &self,
            live: &[ConnectionInfo],
            resync: bool,
        ) -> Result<bool, RegistryError> {
            if resync {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("resync of {}", live.len()));
                self.release.notified().await;
                self.calls.lock().unwrap().push("resynced".into());
            }
            Ok(false)
        }
        async fn purge_dead(&self) -> Result<Vec<PurgedNode>, RegistryError> {
            Ok(Vec::new())
        }
        async fn forget(&self, _: &str) -> Result<(), RegistryError> {
            Ok(())
        }
        async fn ping(&self) -> Result<(), RegistryError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_connect_waits_for_a_resync_in_progress_so_the_snapshot_cannot_undo_it() {
        let slow = Arc::new(Slow::default());
        let svc = ConnectionService::new(node(), 5, Some(slow.clone()), Arc::new(Quiet));
        let presence = crate::domain::presence::PresenceService::new(
            Arc::new(NoBus),
            Arc::new(crate::domain::presence_directory::LocalDirectory::default()),
            crate::domain::presence::PresenceSettings {
                broadcast_max: 10,
                offline_grace: Duration::ZERO,
                tick: Duration::from_millis(10),
                list_max: 10,
                watch_max: 10,
            },
            Arc::new(Quiet),
        );
        // The first beat resyncs (a node starts dirty); a connect arrives meanwhile.
        let beat = tokio::spawn({
            let svc = svc.clone();
            async move { svc.beat(&presence).await }
        });
        while slow.calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let connect = tokio::spawn({
            let svc = svc.clone();
            async move { svc.register(&conn("late", "u")).await }
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *slow.calls.lock().unwrap(),
            ["resync of 0"],
            "the connect waits"
        );
        slow.release.notify_one();
        beat.await.unwrap();
        connect.await.unwrap().unwrap();
        assert_eq!(
            *slow.calls.lock().unwrap(),
            ["resync of 0", "resynced", "register late"]
        );
    }

    struct NoBus;

    #[async_trait]
    impl crate::domain::bus::Bus for NoBus {
        async fn publish(
            &self,
            _: crate::domain::events::BusMessage,
        ) -> Result<(), crate::domain::bus::BusError> {
            Ok(())
        }
        fn state(&self) -> crate::domain::bus::BusState {
            crate::domain::bus::BusState {
                kind: "local",
                connected: true,
                fanout_queue_depth: 0,
            }
        }
    }

    #[tokio::test]
    async fn a_single_node_lists_itself_in_stats() {
        let svc = ConnectionService::new(node(), 5, None, Arc::new(Quiet));
        svc.register(&conn("a", "u")).await.unwrap();
        let s = svc.stats().await;
        assert_eq!(
            s.nodes,
            vec![NodeStats {
                id: "n1".into(),
                connections: 1,
                started_at: "2026-01-01T00:00:00.000Z".into()
            }]
        );
        let alive = |_: &str| false;
        assert_eq!(svc.reap(None, Duration::ZERO, &alive).await.len(), 1);
        assert_eq!(svc.stats().await.total_connections, 0);
    }
}
