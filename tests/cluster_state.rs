//! Cluster-wide state against a real `redis-server` this test starts on a free port (never the
//! machine's 6379): the atomic connection cap and rate limit under racing nodes, dead-node purge
//! with offline announcements, Redis stopped (calls fail fast, connects counted locally) and Redis
//! back (the node re-registers), and the same scripts on a 3-master Redis Cluster. A missing
//! `redis-server` fails under `CI=true` and is skipped loudly elsewhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegisx_realtime::cluster::{
    ClusterSettings, RedisDirectory, RedisRateLimiter, RedisRegistry, client,
};
use aegisx_realtime::domain::bus::{Bus, BusError, BusState};
use aegisx_realtime::domain::connections::{
    ConnectionInfo, ConnectionRegistry, ConnectionService, NodeInfo, RegistryError,
};
use aegisx_realtime::domain::events::{BusMessage, Delivery};
use aegisx_realtime::domain::ids::{TenantId, UserId};
use aegisx_realtime::domain::observe::Quiet;
use aegisx_realtime::domain::presence::{PresenceService, PresenceSettings, Seat};
use aegisx_realtime::domain::rate_limit::RateLimiter;
use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface, SetsInterface};

#[path = "support/own_redis.rs"]
mod own_redis;
use own_redis::{OwnCluster, OwnRedis};

/// Polls `cond` until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settings() -> ClusterSettings {
    ClusterSettings {
        heartbeat: Duration::from_millis(100),
        connection_ttl: Duration::from_secs(3600),
    }
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

fn conn(sid: &str, user: &str, tenant: Option<&str>) -> ConnectionInfo {
    ConnectionInfo {
        socket_id: sid.into(),
        user: UserId::parse(user).unwrap(),
        tenant: TenantId::parse_optional(tenant).unwrap(),
    }
}

fn uid(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn tid(t: &str) -> TenantId {
    TenantId::parse_optional(Some(t)).unwrap().unwrap()
}

/// Records what presence publishes.
#[derive(Default)]
struct Recorder(Mutex<Vec<Delivery>>);

#[async_trait::async_trait]
impl Bus for Recorder {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        if let BusMessage::Deliver(d) = msg {
            self.0.lock().unwrap().push(d);
        }
        Ok(())
    }
    fn state(&self) -> BusState {
        BusState {
            kind: "local",
            connected: true,
            fanout_queue_depth: 0,
        }
    }
}

impl Recorder {
    fn statuses(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.event == "user_status")
            .map(|d| {
                (
                    d.data["userId"].as_str().unwrap_or_default().to_owned(),
                    d.data["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// One node's cluster state: registry service and presence over Redis, announcing to a recorder.
struct Node {
    connections: ConnectionService,
    presence: PresenceService,
    bus: Arc<Recorder>,
}

async fn node_on(redis: &OwnRedis, id: &str, max_per_user: usize) -> (Node, Client) {
    let c = client(&redis.url()).await.unwrap();
    let registry = Arc::new(RedisRegistry::new(c.clone(), node(id), settings()));
    let bus = Arc::new(Recorder::default());
    let presence = PresenceService::new(
        bus.clone(),
        Arc::new(RedisDirectory::new(c.clone(), id.into())),
        PresenceSettings {
            broadcast_max: 1000,
            offline_grace: Duration::ZERO,
            tick: Duration::from_millis(10),
            list_max: 1000,
            watch_max: 500,
        },
        Arc::new(Quiet),
    );
    let connections =
        ConnectionService::new(node(id), max_per_user, Some(registry), Arc::new(Quiet));
    (
        Node {
            connections,
            presence,
            bus,
        },
        c,
    )
}

#[tokio::test]
async fn two_nodes_racing_for_a_users_last_slot_exactly_one_wins() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let a = client(&redis.url()).await.unwrap();
    let b = client(&redis.url()).await.unwrap();
    let ra = Arc::new(RedisRegistry::new(a, node("a"), settings()));
    let rb = Arc::new(RedisRegistry::new(b, node("b"), settings()));
    for round in 0..40 {
        let user = format!("u{round}");
        // The user holds 2 of 3 slots; both nodes race for the third.
        ra.register(&conn(&format!("{user}-1"), &user, None), 3)
            .await
            .unwrap();
        rb.register(&conn(&format!("{user}-2"), &user, None), 3)
            .await
            .unwrap();
        let (ca, cb) = (
            conn(&format!("{user}-a"), &user, None),
            conn(&format!("{user}-b"), &user, None),
        );
        let (x, y) = tokio::join!(ra.register(&ca, 3), rb.register(&cb, 3));
        let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {x:?} {y:?}");
        let loser = if x.is_ok() { y } else { x };
        assert_eq!(loser, Err(RegistryError::TooManyConnections));
        assert_eq!(ra.user_connections(&uid(&user)).await.unwrap(), 3);
    }
}

#[tokio::test]
async fn the_rate_limit_is_shared_and_exact_under_racing_nodes() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let a = Arc::new(RedisRateLimiter::new(
        client(&redis.url()).await.unwrap(),
        "a".into(),
    ));
    let b = Arc::new(RedisRateLimiter::new(
        client(&redis.url()).await.unwrap(),
        "b".into(),
    ));
    let u = uid("flooder");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let u = u.clone();
        tasks.push(tokio::spawn(async move { l.allow(&u, 7).await.unwrap() }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 7, "exactly the limit, across both nodes");
    assert!(
        a.allow(&uid("other"), 7).await.unwrap(),
        "users are counted apart"
    );
}

#[tokio::test]
async fn stats_and_user_counts_cover_every_node() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let (a, _) = node_on(&redis, "a", 10).await;
    let (b, _) = node_on(&redis, "b", 10).await;
    a.connections.beat(&a.presence).await;
    b.connections.beat(&b.presence).await;
    a.connections
        .register(&conn("s1", "x", Some("T")))
        .await
        .unwrap();
    b.connections
        .register(&conn("s2", "x", Some("T")))
        .await
        .unwrap();
    b.connections
        .register(&conn("s3", "y", None))
        .await
        .unwrap();
    let s = a.connections.stats().await;
    assert_eq!(s.total_connections, 3);
    assert_eq!(s.users.get("x"), Some(&2));
    assert_eq!(s.tenants.get("T"), Some(&2));
    let nodes: Vec<_> = s
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.connections))
        .collect();
    assert_eq!(nodes, [("a", 1), ("b", 2)]);
    assert_eq!(s.nodes[0].started_at, "2026-01-01T00:00:00.000Z");
    assert_eq!(b.connections.user_connections(&uid("x")).await, 2);
    a.connections.unregister(&conn("s1", "x", Some("T"))).await;
    assert_eq!(b.connections.user_connections(&uid("x")).await, 1);
}

#[tokio::test]
async fn presence_counts_a_user_across_nodes() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let (a, _) = node_on(&redis, "a", 10).await;
    let (b, _) = node_on(&redis, "b", 10).await;
    let t = tid("T");
    let (sa, sb) = (Seat::default(), Seat::default());
    a.presence.open(&sa, Some(&t), &uid("x"));
    a.presence.pass().await;
    b.presence.open(&sb, Some(&t), &uid("x"));
    b.presence.pass().await;
    assert_eq!(a.bus.statuses(), [("x".into(), "online".into())]);
    assert_eq!(b.bus.statuses(), [], "already online through node a");
    a.presence
        .set_status(&uid("x"), Some(&t), "busy")
        .await
        .unwrap();
    a.presence.pass().await;
    let seen = b
        .presence
        .lookup(Some(&t), &[uid("x"), uid("z")])
        .await
        .unwrap();
    assert_eq!(seen[0].1.status, "busy", "a status set on a is seen from b");
    assert_eq!(seen[1].1.status, "offline");
    a.presence.close(&sa, Some(&t), &uid("x"), false);
    a.presence.pass().await;
    let (online, truncated) = b.presence.online(Some(&t), 10).await.unwrap();
    assert_eq!(
        (online.len(), truncated),
        (1, false),
        "still connected on b"
    );
    b.presence.close(&sb, Some(&t), &uid("x"), false);
    b.presence.pass().await;
    assert_eq!(
        b.bus.statuses(),
        [("x".into(), "offline".into())],
        "the last connection, wherever it was, announces offline"
    );
    let (online, _) = a.presence.online(Some(&t), 10).await.unwrap();
    assert!(online.is_empty());
}

#[tokio::test]
async fn a_dead_nodes_entries_are_purged_and_its_users_announced_offline() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let (a, _) = node_on(&redis, "a", 10).await;
    let (b, rc) = node_on(&redis, "b", 10).await;
    let t = tid("T");
    a.connections.beat(&a.presence).await;
    b.connections.beat(&b.presence).await;
    a.connections
        .register(&conn("sa", "x", Some("T")))
        .await
        .unwrap();
    a.connections
        .register(&conn("sa2", "y", Some("T")))
        .await
        .unwrap();
    b.connections
        .register(&conn("sb", "y", Some("T")))
        .await
        .unwrap();
    let (s1, s2, s3) = (Seat::default(), Seat::default(), Seat::default());
    a.presence.open(&s1, Some(&t), &uid("x"));
    a.presence.open(&s2, Some(&t), &uid("y"));
    a.presence.pass().await;
    b.presence.open(&s3, Some(&t), &uid("y"));
    b.presence.pass().await;
    // Node a stops beating (as if killed); b keeps beating and purges it once its heartbeat
    // has expired (three beats).
    eventually(Duration::from_secs(5), "node a purged", || async {
        b.connections.beat(&b.presence).await;
        let left: i64 = rc.scard("ws:user:x:connections").await.unwrap();
        left == 0
    })
    .await;
    let key: i64 = rc.exists("ws:connection:sa").await.unwrap();
    assert_eq!(key, 0, "its connection keys are gone");
    let y: Vec<String> = rc.smembers("ws:user:y:connections").await.unwrap();
    assert_eq!(
        y,
        ["sb"],
        "another node's connection of the same user stays"
    );
    assert_eq!(
        b.bus.statuses(),
        [("x".into(), "offline".into())],
        "x had its last connection on a"
    );
    let nodes: Vec<String> = rc.smembers("aegisx:nodes").await.unwrap();
    assert_eq!(nodes, ["b"]);
    let s = b.connections.stats().await;
    assert_eq!(s.total_connections, 1);
}

#[tokio::test]
async fn redis_stopped_fails_fast_and_connects_count_locally_then_back_re_registers() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let (a, rc) = node_on(&redis, "a", 2).await;
    a.connections.beat(&a.presence).await;
    a.connections
        .register(&conn("s1", "x", None))
        .await
        .unwrap();
    let (t, seat) = (tid("T"), Seat::default());
    a.presence.open(&seat, Some(&t), &uid("p"));
    a.presence.pass().await;
    redis.stop();
    eventually(
        Duration::from_secs(5),
        "the client sees Redis gone",
        || async { !rc.is_connected() },
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        a.connections.register(&conn("s2", "x", None)).await,
        Ok(()),
        "allowed, counted here"
    );
    assert_eq!(
        a.connections.register(&conn("s3", "x", None)).await,
        Err(RegistryError::TooManyConnections),
        "the cap holds on this node meanwhile"
    );
    a.connections.unregister(&conn("s1", "x", None)).await;
    a.connections
        .register(&conn("s4", "x", None))
        .await
        .unwrap();
    assert!(
        started.elapsed() < aegisx_realtime::redis::COMMAND_TIMEOUT,
        "no call waited for a command timeout"
    );
    assert_eq!(a.connections.stats().await.total_connections, 2);
    // Presence is counted on this node meanwhile: announced and answered from here.
    let seat_q = Seat::default();
    a.presence.open(&seat_q, Some(&t), &uid("q"));
    a.presence.pass().await;
    assert!(
        a.bus.statuses().contains(&("q".into(), "online".into())),
        "announced while Redis is away"
    );
    let q = a.presence.lookup(Some(&t), &[uid("q")]).await.unwrap();
    assert_eq!(q[0].1.status, "online", "answered from this node meanwhile");
    // Back, empty (it kept nothing): the next heartbeat registers what is live here.
    redis.spawn().expect("redis-server restarts");
    eventually(Duration::from_secs(10), "the client reconnects", || async {
        rc.is_connected()
    })
    .await;
    a.connections.beat(&a.presence).await;
    let mut live: Vec<String> = rc.smembers("ws:user:x:connections").await.unwrap();
    live.sort();
    assert_eq!(live, ["s2", "s4"], "exactly this node's live connections");
    let key: i64 = rc.exists("ws:connection:s4").await.unwrap();
    assert_eq!(key, 1);
    assert_eq!(a.connections.stats().await.nodes.len(), 1);
    let p = a.presence.lookup(Some(&t), &[uid("p")]).await.unwrap();
    assert_eq!(
        p[0].1.status, "online",
        "this node's presence is stated again"
    );
    let q: Option<String> = rc.hget("aegisx:presence:{T}:conns", "q").await.unwrap();
    assert_eq!(
        q.as_deref(),
        Some("1"),
        "what was counted here meanwhile is in Redis now"
    );
    assert_eq!(
        a.connections.register(&conn("s5", "x", None)).await,
        Err(RegistryError::TooManyConnections),
        "counted in Redis again"
    );
}

#[tokio::test]
async fn the_cluster_state_runs_on_a_redis_cluster() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let url = cluster.url();
    let a = client(&url).await.unwrap();
    let b = client(&url).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "both clients connected",
        || async { a.is_connected() && b.is_connected() },
    )
    .await;
    // The cap: users spread over the slots, two nodes racing for each last slot.
    let ra = Arc::new(RedisRegistry::new(a.clone(), node("a"), settings()));
    let rb = Arc::new(RedisRegistry::new(b.clone(), node("b"), settings()));
    ra.heartbeat(&[], true).await.unwrap();
    rb.heartbeat(&[], true).await.unwrap();
    for round in 0..10 {
        let user = format!("cu{round}");
        ra.register(&conn(&format!("{user}-1"), &user, Some("T")), 2)
            .await
            .unwrap();
        let (ca, cb) = (
            conn(&format!("{user}-a"), &user, Some("T")),
            conn(&format!("{user}-b"), &user, Some("T")),
        );
        let (x, y) = tokio::join!(ra.register(&ca, 2), rb.register(&cb, 2));
        assert_eq!(
            [&x, &y].iter().filter(|r| r.is_ok()).count(),
            1,
            "{x:?} {y:?}"
        );
    }
    let stats = ra.stats().await.unwrap();
    assert_eq!(stats.total_connections, 20);
    assert_eq!(stats.nodes.len(), 2);
    // The rate limit.
    let la = RedisRateLimiter::new(a.clone(), "a".into());
    let lb = RedisRateLimiter::new(b.clone(), "b".into());
    let mut allowed = 0;
    for i in 0..10 {
        let l = if i % 2 == 0 { &la } else { &lb };
        allowed += usize::from(l.allow(&uid("cflood"), 3).await.unwrap());
    }
    assert_eq!(allowed, 3);
    // Presence, per-tenant scripts in their hash slot.
    let da = RedisDirectory::new(a.clone(), "a".into());
    let db = RedisDirectory::new(b.clone(), "b".into());
    use aegisx_realtime::domain::presence_directory::{Change, PresenceDirectory};
    for t in ["T1", "T2", "T3", "{odd}", "a}b"] {
        let change = |delta| Change {
            user: uid("x"),
            delta,
            status: None,
        };
        let first = da.apply(&tid(t), &[change(1)], "t1").await.unwrap();
        assert_eq!(first.outcomes[0].before, "offline", "{t}");
        db.apply(&tid(t), &[change(1)], "t1").await.unwrap();
        da.apply(&tid(t), &[change(-1)], "t2").await.unwrap();
        // In Redis itself, not a node's fallback: the scripts ran in the tenant's slot.
        let total: Option<String> = a
            .hget(format!("aegisx:presence:{{{t}}}:conns"), "x")
            .await
            .unwrap();
        assert_eq!(total.as_deref(), Some("1"), "{t}");
        let seen = db.lookup(&tid(t), &[uid("x")]).await.unwrap();
        assert_eq!(seen[0].1.status, "online", "{t}: still on b");
        let (online, _) = da.online(&tid(t), 10).await.unwrap();
        assert_eq!(online.len(), 1, "{t}");
        let gone = db.apply(&tid(t), &[change(-1)], "t3").await.unwrap();
        assert_eq!(gone.outcomes[0].after, None, "{t}");
    }
}
