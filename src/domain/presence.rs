//! The presence service and its task: per-(tenant, user) online/offline and set statuses,
//! counted through the `PresenceDirectory` port (in-process, or Redis for the cluster) and
//! announced once per tick.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::bus::Bus;
use crate::domain::error::DomainError;
use crate::domain::events::{BusMessage, Delivery, Target};
use crate::domain::ids::{TenantId, UserId};
use crate::domain::observe::{Observer, Port};
use crate::domain::presence_directory::{
    Applied, Change, PresenceDirectory, PresenceError, UserPresence,
};

/// Statuses a client may set with the `user_status` message.
pub const STATUSES: [&str; 4] = ["online", "away", "busy", "offline"];

/// The static name of a status a directory reports (one it does not know shows as `online`).
pub fn status_name(s: &str) -> &'static str {
    STATUSES.into_iter().find(|x| *x == s).unwrap_or("online")
}

/// Grace every connection closed by a node's shutdown gets, whatever `PRESENCE_OFFLINE_GRACE_MS`
/// says: its clients reconnect elsewhere within it, so a rolling restart announces nothing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How presence is announced (PROTOCOL.md §3, "Presence at scale").
#[derive(Debug, Clone, Copy)]
pub struct PresenceSettings {
    /// Tenant-wide announcements while the tenant has at most this many users online.
    pub broadcast_max: usize,
    /// How long a user whose last connection closed stays online.
    pub offline_grace: Duration,
    /// One pass per tick: transitions within a tick are coalesced.
    pub tick: Duration,
    /// Most users `list_online` answers.
    pub list_max: usize,
    /// Users one socket may watch.
    pub watch_max: usize,
}

/// A connection's place in presence: counted once opened, uncounted once closed, whichever
/// order the two race in (a connection closed before it was opened is never counted).
#[derive(Debug, Default)]
pub struct Seat(std::sync::atomic::AtomicU8);

const SEAT_NEW: u8 = 0;
const SEAT_COUNTED: u8 = 1;
const SEAT_CLOSED: u8 = 2;

type Key = (TenantId, UserId);

/// Transitions collected since the last tick. Bounded by the users touched in a tick: every
/// transition of one user lands in that user's one entry.
#[derive(Default)]
struct Buffer {
    /// Net changes, in the order their users were first touched (announcements keep it).
    changes: Vec<(Key, Pending)>,
    index: HashMap<Key, usize>,
    /// Closes within their grace, with when each ends; a reopen cancels one instead of counting.
    held: HashMap<Key, Vec<Instant>>,
}

#[derive(Default, Clone, Copy)]
struct Pending {
    delta: i64,
    status: Option<&'static str>,
}

impl Buffer {
    fn entry(&mut self, key: &Key) -> &mut Pending {
        let i = *self.index.entry(key.clone()).or_insert_with(|| {
            self.changes.push((key.clone(), Pending::default()));
            self.changes.len() - 1
        });
        &mut self.changes[i].1
    }
}

/// Presence: counts connections per (tenant, user) through the `PresenceDirectory` port and
/// announces `user_status { userId, status, timestamp }`. The connect path only records a
/// transition; the presence task (`spawn`) does the work once per tick, one pass per tenant,
/// and publishes to the bus (the fan-out delivers: to the tenant while it is small, else to
/// the sockets watching the user).
#[derive(Clone)]
pub struct PresenceService(Arc<PresenceInner>);

struct PresenceInner {
    bus: Arc<dyn Bus>,
    directory: Arc<dyn PresenceDirectory>,
    observer: Arc<dyn Observer>,
    settings: PresenceSettings,
    // A std Mutex: a map update per transition, never held across an await.
    buffer: Mutex<Buffer>,
}

impl PresenceService {
    pub fn new(
        bus: Arc<dyn Bus>,
        directory: Arc<dyn PresenceDirectory>,
        settings: PresenceSettings,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self(Arc::new(PresenceInner {
            bus,
            directory,
            observer,
            settings,
            buffer: Mutex::new(Buffer::default()),
        }))
    }

    pub fn settings(&self) -> &PresenceSettings {
        &self.0.settings
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.0.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection is live (its client was told so): counts it for its (tenant, user).
    /// Users without a tenant have no presence.
    pub fn open(&self, seat: &Seat, tenant: Option<&TenantId>, user: &UserId) {
        let Some(tenant) = tenant else { return };
        let mut buf = self.buffer();
        // Under the buffer lock, so an open and a close of one seat are recorded in order.
        if seat
            .0
            .compare_exchange(SEAT_NEW, SEAT_COUNTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let key = (tenant.clone(), user.clone());
        if let Some(held) = buf.held.get_mut(&key)
            && held.pop().is_some()
        {
            // Back within the grace: the close that was held is forgotten, nothing changes.
            if held.is_empty() {
                buf.held.remove(&key);
            }
            return;
        }
        buf.entry(&key).delta += 1;
    }

    /// The connection closed (`shutdown`: because this node is stopping).
    pub fn close(&self, seat: &Seat, tenant: Option<&TenantId>, user: &UserId, shutdown: bool) {
        let Some(tenant) = tenant else { return };
        let mut buf = self.buffer();
        if seat.0.swap(SEAT_CLOSED, Ordering::AcqRel) != SEAT_COUNTED {
            return;
        }
        let mut grace = self.0.settings.offline_grace;
        if shutdown {
            grace = grace.max(SHUTDOWN_GRACE);
        }
        let key = (tenant.clone(), user.clone());
        if grace.is_zero() {
            buf.entry(&key).delta -= 1;
        } else {
            buf.held
                .entry(key)
                .or_default()
                .push(Instant::now() + grace);
        }
    }

    /// A status the user set: announced with the same audience rules as online/offline (in
    /// order with them); users without a tenant tell only their own connections.
    pub async fn set_status(
        &self,
        user: &UserId,
        tenant: Option<&TenantId>,
        status: &str,
    ) -> Result<(), DomainError> {
        let Some(status) = STATUSES.into_iter().find(|s| *s == status) else {
            return Err(DomainError::invalid(
                "status must be one of online, away, busy, offline",
            ));
        };
        match tenant {
            Some(t) => {
                self.buffer().entry(&(t.clone(), user.clone())).status = Some(status);
            }
            None => {
                let data = status_event(user, status, &crate::domain::time::now_rfc3339());
                self.publish(Target::User { user: user.clone() }, data)
                    .await;
            }
        }
        Ok(())
    }

    /// The state of each user in the tenant (everyone is offline without a tenant).
    pub async fn lookup(
        &self,
        tenant: Option<&TenantId>,
        users: &[UserId],
    ) -> Result<Vec<(UserId, UserPresence)>, DomainError> {
        match tenant {
            Some(t) => Ok(self
                .0
                .directory
                .lookup(t, users)
                .await
                .map_err(unavailable)?),
            None => Ok(users
                .iter()
                .map(|u| (u.clone(), UserPresence::offline()))
                .collect()),
        }
    }

    /// Up to `limit` users online in the tenant, and whether there were more.
    pub async fn online(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<(Vec<(UserId, UserPresence)>, bool), DomainError> {
        match tenant {
            Some(t) => Ok(self
                .0
                .directory
                .online(t, limit)
                .await
                .map_err(unavailable)?),
            None => Ok((Vec::new(), false)),
        }
    }

    /// The presence task: one pass per tick.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.0.settings.tick);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.pass().await;
            }
        })
    }

    /// Takes the tick's transitions (and the closes whose grace ended), applies them tenant by
    /// tenant, and announces what changed. A user who came and went within the tick has a net
    /// change of zero and costs nothing.
    pub async fn pass(&self) {
        let changes = {
            let mut buf = self.buffer();
            let now = Instant::now();
            let mut expired: Vec<Key> = Vec::new();
            buf.held.retain(|key, ends| {
                let before = ends.len();
                ends.retain(|end| *end > now);
                expired.extend(std::iter::repeat_n(key.clone(), before - ends.len()));
                !ends.is_empty()
            });
            for key in &expired {
                buf.entry(key).delta -= 1;
            }
            buf.index.clear();
            std::mem::take(&mut buf.changes)
        };
        let mut tenants: Vec<(TenantId, Vec<Change>)> = Vec::new();
        let mut at: HashMap<TenantId, usize> = HashMap::new();
        for ((tenant, user), p) in changes {
            if p.delta == 0 && p.status.is_none() {
                continue;
            }
            let i = *at.entry(tenant.clone()).or_insert_with(|| {
                tenants.push((tenant, Vec::new()));
                tenants.len() - 1
            });
            tenants[i].1.push(Change {
                user,
                delta: p.delta,
                status: p.status,
            });
        }
        let now = crate::domain::time::now_rfc3339();
        for (tenant, changes) in tenants {
            match self.0.directory.apply(&tenant, &changes, &now).await {
                Ok(applied) => self.announce(&tenant, &changes, applied).await,
                Err(e) => {
                    self.0.observer.cluster_fallback(Port::Presence);
                    tracing::warn!(error = %e, %tenant, "presence not applied; retrying next tick");
                    let mut buf = self.buffer();
                    for c in changes {
                        let p = buf.entry(&(tenant.clone(), c.user));
                        p.delta += c.delta;
                        p.status = p.status.or(c.status);
                    }
                }
            }
        }
    }

    /// Takes a dead node's connections out of presence (see `ConnectionService::beat`) and
    /// announces offline the users whose last connection it held. Returns whether it is done
    /// (false: the directory failed; the next heartbeat tries again).
    pub async fn purge_node(&self, node: &str) -> bool {
        match self.0.directory.purge_node(node).await {
            Ok(tenants) => {
                for (tenant, applied) in tenants {
                    self.announce_outcomes(&tenant, applied).await;
                }
                true
            }
            Err(e) => {
                self.0.observer.cluster_fallback(Port::Presence);
                tracing::warn!(error = %e, node, "presence of a dead node not purged yet");
                false
            }
        }
    }

    /// States this node's counts again where the directory may not hold them (`force`: it lost
    /// them, Redis restarted empty or purged this node after a pause; else only after changes
    /// it could not take), and announces what that changed. Called by every heartbeat.
    pub async fn resync(&self, force: bool) {
        match self.0.directory.resync(force).await {
            Ok(tenants) => {
                for (tenant, applied) in tenants {
                    self.announce_outcomes(&tenant, applied).await;
                }
            }
            Err(e) => {
                self.0.observer.cluster_fallback(Port::Presence);
                tracing::warn!(error = %e, "presence not restated");
            }
        }
    }

    /// Announces outcomes the node did not cause itself (no status was set with them).
    async fn announce_outcomes(&self, tenant: &TenantId, applied: Applied) {
        let changes: Vec<Change> = applied
            .outcomes
            .iter()
            .map(|o| Change {
                user: o.user.clone(),
                delta: 0,
                status: None,
            })
            .collect();
        self.announce(tenant, &changes, applied).await;
    }

    async fn announce(&self, tenant: &TenantId, changes: &[Change], applied: Applied) {
        let tenant_wide = applied.online <= self.0.settings.broadcast_max;
        for (change, out) in changes.iter().zip(applied.outcomes) {
            let (status, since) = match &out.after {
                Some(p) => (p.status.as_str(), p.since.clone()),
                None => ("offline", None),
            };
            // A status the user set is announced even when unchanged (as the blueprint does).
            let set = change.status.is_some() && out.after.is_some();
            if status == out.before && !set {
                continue;
            }
            let target = if tenant_wide {
                Target::Tenant {
                    tenant: tenant.clone(),
                }
            } else {
                Target::Presence {
                    tenant: tenant.clone(),
                    user: out.user.clone(),
                }
            };
            self.0.observer.presence_announced(tenant_wide);
            let ts = since.unwrap_or_else(crate::domain::time::now_rfc3339);
            self.publish(target, status_event(&out.user, status, &ts))
                .await;
        }
    }

    async fn publish(&self, target: Target, data: serde_json::Value) {
        let msg = BusMessage::Deliver(Delivery {
            target,
            event: "user_status".into(),
            data,
        });
        if self.0.bus.publish(msg).await.is_err() {
            tracing::warn!("fan-out stopped; presence not delivered");
        }
    }
}

fn status_event(user: &UserId, status: &str, timestamp: &str) -> serde_json::Value {
    serde_json::json!({ "userId": user, "status": status, "timestamp": timestamp })
}

fn unavailable(e: PresenceError) -> DomainError {
    DomainError::Unavailable(e.to_string())
}

#[cfg(test)]
mod service_tests {
    use super::*;
    use crate::domain::bus::{BusError, BusState};
    use crate::domain::presence_directory::LocalDirectory;
    use async_trait::async_trait;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Delivery>>);

    #[async_trait]
    impl Bus for Recorder {
        async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
            if let BusMessage::Deliver(d) = msg {
                self.0.lock().unwrap().push(d);
            }
            Ok(())
        }
        fn state(&self) -> BusState {
            BusState {
                kind: "test",
                connected: true,
                fanout_queue_depth: 0,
            }
        }
    }

    impl Recorder {
        /// (target kind, user, status) of every announcement since the last call.
        fn take(&self) -> Vec<(&'static str, String, String)> {
            std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .map(|d| {
                    let kind = match d.target {
                        Target::Tenant { .. } => "tenant",
                        Target::Presence { .. } => "watchers",
                        Target::User { .. } => "user",
                        _ => "other",
                    };
                    let user = d.data["userId"].as_str().unwrap().to_owned();
                    let status = d.data["status"].as_str().unwrap().to_owned();
                    (kind, user, status)
                })
                .collect()
        }
    }

    fn service(broadcast_max: usize, grace_ms: u64) -> (PresenceService, Arc<Recorder>) {
        let bus = Arc::new(Recorder::default());
        let settings = PresenceSettings {
            broadcast_max,
            offline_grace: Duration::from_millis(grace_ms),
            tick: Duration::from_millis(50),
            list_max: 1000,
            watch_max: 500,
        };
        let svc = PresenceService::new(
            bus.clone(),
            Arc::new(LocalDirectory::default()),
            settings,
            Arc::new(crate::domain::observe::Quiet),
        );
        (svc, bus)
    }

    fn t(s: &str) -> TenantId {
        TenantId::parse_optional(Some(s)).unwrap().unwrap()
    }
    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }
    fn ann(kind: &'static str, user: &str, status: &str) -> (&'static str, String, String) {
        (kind, user.into(), status.into())
    }

    #[tokio::test]
    async fn first_and_last_connection_per_tenant_and_user() {
        let (svc, bus) = service(10, 0);
        let (a1, a2, b1) = (Seat::default(), Seat::default(), Seat::default());
        svc.open(&a1, Some(&t("A")), &u("x"));
        svc.open(&a2, Some(&t("A")), &u("x"));
        svc.open(&b1, Some(&t("B")), &u("x"));
        svc.pass().await;
        assert_eq!(
            bus.take(),
            [ann("tenant", "x", "online"), ann("tenant", "x", "online")]
        );
        svc.close(&a1, Some(&t("A")), &u("x"), false);
        svc.pass().await;
        assert_eq!(bus.take(), []);
        svc.close(&a2, Some(&t("A")), &u("x"), false);
        svc.close(&a2, Some(&t("A")), &u("x"), false);
        svc.pass().await;
        assert_eq!(bus.take(), [ann("tenant", "x", "offline")], "once");
        let (list, _) = svc.online(Some(&t("B")), 10).await.unwrap();
        assert_eq!(list.len(), 1, "still online in B");
    }

    #[tokio::test]
    async fn a_flap_within_a_tick_costs_nothing() {
        let (svc, bus) = service(10, 0);
        let seat = Seat::default();
        svc.open(&seat, Some(&t("A")), &u("x"));
        svc.close(&seat, Some(&t("A")), &u("x"), false);
        svc.pass().await;
        assert_eq!(bus.take(), []);
        assert!(svc.buffer().changes.is_empty());
    }

    #[tokio::test]
    async fn a_seat_closed_before_it_opened_is_never_counted() {
        let (svc, bus) = service(10, 0);
        let seat = Seat::default();
        svc.close(&seat, Some(&t("A")), &u("x"), false);
        svc.open(&seat, Some(&t("A")), &u("x"));
        svc.pass().await;
        assert_eq!(bus.take(), []);
        assert_eq!(svc.online(Some(&t("A")), 10).await.unwrap().0.len(), 0);
    }

    #[tokio::test]
    async fn above_the_threshold_only_watchers_hear() {
        let (svc, bus) = service(2, 0);
        for name in ["a", "b", "c"] {
            svc.open(&Seat::default(), Some(&t("A")), &u(name));
        }
        svc.pass().await;
        let got = bus.take();
        assert!(
            got.iter().all(|(kind, _, _)| *kind == "watchers"),
            "{got:?}"
        );
        svc.set_status(&u("a"), Some(&t("A")), "busy")
            .await
            .unwrap();
        svc.pass().await;
        assert_eq!(bus.take(), [ann("watchers", "a", "busy")]);
    }

    #[tokio::test]
    async fn the_grace_holds_the_offline_and_a_reconnect_cancels_it() {
        let (svc, bus) = service(10, 60_000);
        let (s1, s2) = (Seat::default(), Seat::default());
        svc.open(&s1, Some(&t("A")), &u("x"));
        svc.pass().await;
        bus.take();
        svc.close(&s1, Some(&t("A")), &u("x"), false);
        svc.pass().await;
        assert_eq!(bus.take(), [], "held");
        svc.open(&s2, Some(&t("A")), &u("x"));
        svc.pass().await;
        assert_eq!(bus.take(), [], "back within the grace");
        assert!(svc.buffer().held.is_empty());
    }

    #[tokio::test]
    async fn a_shutdown_close_gets_at_least_ten_seconds() {
        let (svc, bus) = service(10, 0);
        let seat = Seat::default();
        svc.open(&seat, Some(&t("A")), &u("x"));
        svc.pass().await;
        bus.take();
        svc.close(&seat, Some(&t("A")), &u("x"), true);
        svc.pass().await;
        assert_eq!(bus.take(), []);
        let ends = svc
            .buffer()
            .held
            .values()
            .flatten()
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(ends.len(), 1);
        assert!(ends[0] >= Instant::now() + SHUTDOWN_GRACE - Duration::from_secs(1));
    }

    #[tokio::test]
    async fn without_a_tenant_a_status_goes_to_the_user_only() {
        let (svc, bus) = service(10, 0);
        svc.open(&Seat::default(), None, &u("x"));
        svc.set_status(&u("x"), None, "away").await.unwrap();
        svc.pass().await;
        assert_eq!(bus.take(), [ann("user", "x", "away")]);
        assert!(svc.set_status(&u("x"), None, "asleep").await.is_err());
    }
}
