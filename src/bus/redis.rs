//! The cluster bus over Redis 7 sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`), so one Redis and a
//! Redis Cluster work the same way: a sharded channel lives on the shard owning its slot, and
//! the client routes each subscribe and publish there.
//!
//! - **Channels** (room-aware): `aegisx:r:<tenant>/<room>` per room, `aegisx:u:<user>` per user
//!   (its deliveries, and `DisconnectUser` and `RevokeRoom`, which must reach every node with a
//!   socket of the user), `aegisx:t:<tenant>` per tenant (its deliveries and presence), and
//!   `aegisx:all` for everyone. A node subscribes to the channels of its sockets' rooms, users
//!   and tenants (`Interests`), so its Redis traffic grows with its own sockets.
//! - **Messages**: the JSON of `Envelope` (the `BusMessage` and the origin node id).
//! - **Publishing**: local fan-out first; then the message goes into a bounded queue that one
//!   task drains, in order, in pipelined batches. A full queue, or Redis away, drops the
//!   message for the other nodes and counts it (`aegisx_bus_dropped_total`): local delivery
//!   never waits and memory stays flat.
//! - **Subscriptions**: one task sends what `Interests` plans, confirms waiting joins, and on
//!   every (re)connection marks everything unsubscribed and subscribes again the node's whole
//!   current interest, by itself. A lost connection also tells the fan-out that deliveries may
//!   have been lost (`FanoutCmd::Gap`).
//! - **Ingest**: the blueprint's `websocket:events` channel is plain pub/sub (`PUBLISH`, as the
//!   blueprint sends it); its payloads go to `bus::ingest`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::{
    ClientLike, EventInterface, Expiration, KeysInterface, PubsubInterface, SetOptions, Value,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::bus::Envelope;
use crate::bus::interest::Interests;
use crate::domain::bus::{Bus, BusError, BusState, Subscription, Topic};
use crate::domain::events::BusMessage;
use crate::domain::ids::{tenant_adapter_room, user_adapter_room};
use crate::fanout::{FanoutCmd, FanoutSender};
use crate::redis::RedisConfigError;

/// The blueprint's event bus channel.
pub const INGEST_CHANNEL: &str = "websocket:events";
/// The channel of deliveries to everyone.
const ALL_CHANNEL: &str = "aegisx:all";
/// Messages published in one pipelined batch.
const MAX_BATCH: usize = 256;
/// How often the connection state is looked at (and failed subscribes retried).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pub/sub messages buffered between the Redis connection and the inbound task; past it the
/// oldest are lost (counted as `lagged`) and the fan-out is told of a gap.
const INBOUND_BUFFER: usize = 16_384;
/// Ingest payloads waiting for the ingest task; past it they are counted `failed`.
const INGEST_QUEUE: usize = 4096;

/// The channel of a topic.
pub fn channel(topic: &Topic) -> String {
    match topic {
        Topic::Room(key) => format!("aegisx:{}", key.adapter_room()),
        Topic::User(user) => format!("aegisx:{}", user_adapter_room(user)),
        Topic::Tenant(tenant) => format!("aegisx:{}", tenant_adapter_room(tenant)),
        Topic::All => ALL_CHANNEL.to_owned(),
    }
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    origin: &'a str,
    msg: &'a BusMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    #[error(transparent)]
    Config(#[from] RedisConfigError),
    #[error("cannot create the Redis clients: {0}")]
    Client(String),
}

/// The background tasks of the bus, for the supervisor.
pub struct RedisBusTasks {
    pub outbound: JoinHandle<()>,
    pub inbound: JoinHandle<()>,
    pub subscriptions: JoinHandle<()>,
}

pub struct RedisBus {
    node_id: String,
    fanout: FanoutSender,
    outbound: mpsc::Sender<(String, String)>,
    interests: Arc<Interests>,
    /// Connected, and the current interest subscribed (or being subscribed).
    up: Arc<AtomicBool>,
    client: fred::prelude::Client,
}

impl RedisBus {
    /// Connects (in the background: a Redis that is not there yet makes the node start
    /// degraded, not fail) and starts the tasks. Payloads of `websocket:events` come out of the
    /// returned receiver.
    pub async fn start(
        url: &str,
        node_id: String,
        fanout: FanoutSender,
        queue: usize,
    ) -> Result<(Self, RedisBusTasks, mpsc::Receiver<Vec<u8>>), RedisBusError> {
        let client = crate::redis::builder(url)?
            .build()
            .map_err(|e| RedisBusError::Client(e.to_string()))?;
        let mut sub_builder = crate::redis::builder(url)?;
        sub_builder.with_performance_config(|p| p.broadcast_channel_capacity = INBOUND_BUFFER);
        let subscriber = sub_builder
            .build_subscriber_client()
            .map_err(|e| RedisBusError::Client(e.to_string()))?;
        // Taken before connecting, so the first connection's event is seen too.
        let reconnects = subscriber.reconnect_rx();
        let messages = subscriber.message_rx();
        client.connect();
        subscriber.connect();
        // A Redis that is there makes the node ready at once; one that is not is waited for
        // in the background.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = tokio::join!(client.wait_for_connect(), subscriber.wait_for_connect());
        })
        .await;
        let interests = Arc::new(Interests::default());
        let up = Arc::new(AtomicBool::new(false));
        let (outbound, outbound_rx) = mpsc::channel(queue.max(1));
        let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE);
        let tasks = RedisBusTasks {
            outbound: tokio::spawn(drain_outbound(client.clone(), outbound_rx)),
            inbound: tokio::spawn(inbound(
                node_id.clone(),
                messages,
                fanout.clone(),
                ingest_tx,
            )),
            subscriptions: tokio::spawn(
                Subscriptions {
                    client: client.clone(),
                    subscriber,
                    interests: interests.clone(),
                    up: up.clone(),
                    fanout: fanout.clone(),
                }
                .run(reconnects),
            ),
        };
        Ok((
            Self {
                node_id,
                fanout,
                outbound,
                interests,
                up,
                client,
            },
            tasks,
            ingest_rx,
        ))
    }

    /// Claims for the ingest (`SET NX`), on this bus's connection.
    pub fn claims(&self) -> RedisClaims {
        RedisClaims {
            client: self.client.clone(),
        }
    }

    /// Topics with local members, and topics subscribed (tests, diagnostics).
    pub fn interest_counts(&self) -> (usize, usize) {
        self.interests.counts()
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        let payload = serde_json::to_string(&EnvelopeRef {
            origin: &self.node_id,
            msg: &msg,
        });
        let channel = channel(&Topic::of(&msg));
        self.fanout
            .send(FanoutCmd::Bus(msg))
            .await
            .map_err(|_| BusError::Closed)?;
        let Ok(payload) = payload else {
            crate::metrics::bus_dropped("undecodable", 1);
            return Ok(());
        };
        if !self.up.load(Ordering::Acquire) {
            // Queued, it would only wait to fail: drop it now and keep the queue for when
            // Redis is back.
            crate::metrics::bus_dropped("disconnected", 1);
            return Ok(());
        }
        if self.outbound.try_send((channel, payload)).is_err() {
            crate::metrics::bus_dropped("queue_full", 1);
        }
        Ok(())
    }

    fn routes_by_interest(&self) -> bool {
        true
    }

    fn subscribe(&self, topic: &Topic) -> Subscription {
        self.interests.add(topic)
    }

    fn unsubscribe(&self, topic: &Topic) {
        self.interests.remove(topic);
    }

    fn state(&self) -> BusState {
        BusState {
            kind: "redis",
            connected: self.up.load(Ordering::Acquire),
            fanout_queue_depth: self.fanout.max_capacity() - self.fanout.capacity(),
        }
    }
}

/// Publishes the queue in order, in pipelined batches (one round trip per batch and shard).
async fn drain_outbound(client: fred::prelude::Client, mut rx: mpsc::Receiver<(String, String)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !client.is_connected() {
            crate::metrics::bus_dropped("disconnected", batch.len() as u64);
            batch.clear();
            continue;
        }
        let pipeline = client.pipeline();
        for (channel, payload) in batch.drain(..) {
            // Queued in memory here; sent by `try_all`.
            let _: Result<(), _> = pipeline.spublish(channel, payload).await;
        }
        let mut failed = 0;
        for r in pipeline.try_all::<Value>().await {
            match r {
                Ok(_) => crate::metrics::bus_message("out"),
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            tracing::debug!(failed, "bus publishes failed");
            crate::metrics::bus_dropped("redis_error", failed);
        }
    }
}

/// Hands what other nodes published to the fan-out (dropping own echoes), and ingest payloads
/// to the ingest task.
async fn inbound(
    me: String,
    mut messages: broadcast::Receiver<fred::types::Message>,
    fanout: FanoutSender,
    ingest: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let m = match messages.recv().await {
            Ok(m) => m,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "bus fell behind Redis; messages lost");
                crate::metrics::bus_dropped("lagged", n);
                if fanout.send(FanoutCmd::Gap).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(bytes) = m.value.as_bytes() else {
            crate::metrics::bus_dropped("undecodable", 1);
            continue;
        };
        if &*m.channel == INGEST_CHANNEL {
            if ingest.try_send(bytes.to_vec()).is_err() {
                crate::metrics::ingest_event("failed");
            }
            continue;
        }
        let env: Envelope = match serde_json::from_slice(bytes) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(channel = %crate::telemetry::untrusted(&m.channel), error = %e, "undecodable bus message");
                crate::metrics::bus_dropped("undecodable", 1);
                continue;
            }
        };
        if let Some(msg) = crate::bus::accept(&me, env)
            && fanout.send(FanoutCmd::Bus(msg)).await.is_err()
        {
            return;
        }
    }
}

struct Subscriptions {
    client: fred::prelude::Client,
    subscriber: SubscriberClient,
    interests: Arc<Interests>,
    up: Arc<AtomicBool>,
    fanout: FanoutSender,
}

impl Subscriptions {
    async fn run(self, mut reconnects: broadcast::Receiver<fred::prelude::Server>) {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut reconnected = false;
            tokio::select! {
                () = self.interests.changed() => {}
                r = reconnects.recv() => {
                    match r {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => reconnected = true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
                _ = check.tick() => {}
            }
            if self.fanout.is_closed() {
                return;
            }
            let connected = self.subscriber.is_connected() && self.client.is_connected();
            let was_up = self.up.load(Ordering::Acquire);
            if was_up && (reconnected || !connected) {
                // The old connection's subscriptions are gone with it.
                self.up.store(false, Ordering::Release);
                self.interests.lost();
                tracing::warn!("Redis bus disconnected; local delivery goes on");
                if self.fanout.send(FanoutCmd::Gap).await.is_err() {
                    return;
                }
            }
            if !self.up.load(Ordering::Acquire) && connected {
                if let Err(e) = self.fixed_channels().await {
                    tracing::debug!(error = %e, "bus subscribe failed; retrying");
                    continue;
                }
                self.up.store(true, Ordering::Release);
                self.interests.set_reachable(true);
                let (wanted, _) = self.interests.counts();
                tracing::info!(topics = wanted, "Redis bus connected; subscribing");
            }
            if self.up.load(Ordering::Acquire) {
                self.apply().await;
            }
        }
    }

    /// What every node receives: deliveries to everyone, and the ingest channel.
    async fn fixed_channels(&self) -> Result<(), fred::error::Error> {
        self.subscriber.ssubscribe(ALL_CHANNEL).await?;
        self.subscriber.subscribe(INGEST_CHANNEL).await
    }

    /// Sends what the interest counts ask for, concurrently across topics, until nothing is left.
    async fn apply(&self) {
        loop {
            let plan = self.interests.plan();
            if plan.is_empty() {
                return;
            }
            let subs = plan.subscribe.iter().map(|t| async move {
                let r = self.subscriber.ssubscribe(channel(t)).await;
                (t, r.map(|()| true))
            });
            let unsubs = plan.unsubscribe.iter().map(|t| async move {
                let r = self.subscriber.sunsubscribe(channel(t)).await;
                (t, r.map(|()| false))
            });
            let (subs, unsubs) = tokio::join!(
                futures::future::join_all(subs),
                futures::future::join_all(unsubs)
            );
            let mut failed = false;
            for (t, r) in subs.into_iter().chain(unsubs) {
                failed |= r.is_err();
                self.interests.settled(
                    t,
                    r.map_err(|e| BusError::Unavailable(e.details().to_string())),
                );
            }
            if failed {
                // Tried again at the next check, not in a tight loop.
                return;
            }
        }
    }
}

/// `SET NX` claims on this node's Redis connection (see `bus::ingest`).
#[derive(Clone)]
pub struct RedisClaims {
    client: fred::prelude::Client,
}

#[async_trait]
impl crate::bus::ingest::Claims for RedisClaims {
    async fn claim(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, crate::bus::ingest::ClaimError> {
        let won: Option<String> = self
            .client
            .set(
                key,
                "1",
                Some(Expiration::EX(ttl.as_secs().max(1) as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| crate::bus::ingest::ClaimError(e.details().to_string()))?;
        Ok(won.is_some())
    }
}

#[cfg(test)]
#[path = "../../tests/support/own_redis.rs"]
mod own_redis;

#[cfg(test)]
pub(crate) mod tests {
    use std::process::Command;
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::domain::events::{Delivery, Target};
    use crate::domain::ids::{RoomId, RoomKey, TenantId};
    use crate::fanout::{FanoutReceiver, fanout_queue};

    pub(crate) use super::own_redis::{OwnCluster, OwnRedis};

    #[tokio::test]
    async fn on_a_redis_cluster_rooms_on_every_shard_and_the_ingest_channel_reach_the_other_node() {
        let Some(cluster) = OwnCluster::start() else {
            return;
        };
        let (a, _a_rx) = node(&cluster.url(), "a").await;
        let (tx, mut b_rx) = fanout_queue(4096);
        let (b, _tasks, mut b_ingest) = RedisBus::start(&cluster.url(), "b".into(), tx, 4096)
            .await
            .unwrap();
        until("both connected", || {
            a.state().connected && b.state().connected
        })
        .await;
        // Enough rooms that their channels land on all three shards.
        let rooms: Vec<RoomKey> = (0..30)
            .map(|i| RoomKey::new(None, RoomId::parse(&format!("room-{i}")).unwrap()))
            .collect();
        for k in &rooms {
            b.subscribe(&Topic::Room(k.clone())).await.unwrap();
        }
        for (i, k) in rooms.iter().enumerate() {
            a.publish(BusMessage::Deliver(Delivery {
                target: Target::Room { key: k.clone() },
                event: "chat_message".into(),
                data: json!({ "seq": i }),
            }))
            .await
            .unwrap();
        }
        let mut got = std::collections::BTreeSet::new();
        while got.len() < rooms.len() {
            if let FanoutCmd::Bus(BusMessage::Deliver(d)) = next(&mut b_rx).await {
                got.insert(d.data["seq"].as_i64().unwrap());
            }
        }
        assert_eq!(got, (0..30).collect());
        // The blueprint's plain PUBLISH, sent to any node of the cluster, reaches the ingest.
        let last = cluster.nodes[2].port.to_string();
        let published = Command::new("redis-cli")
            .args([
                "-p",
                &last,
                "PUBLISH",
                INGEST_CHANNEL,
                "{\"type\":\"broadcast\"}",
            ])
            .status()
            .unwrap();
        assert!(published.success());
        let raw = tokio::time::timeout(Duration::from_secs(20), b_ingest.recv())
            .await
            .expect("the ingest payload in time")
            .unwrap();
        assert_eq!(raw, br#"{"type":"broadcast"}"#);
    }

    async fn node(url: &str, id: &str) -> (RedisBus, FanoutReceiver) {
        let (tx, rx) = fanout_queue(4096);
        let (bus, _tasks, _ingest) = RedisBus::start(url, id.into(), tx, 4096).await.unwrap();
        (bus, rx)
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn key() -> RoomKey {
        RoomKey::new(
            TenantId::parse_optional(Some("t")).unwrap(),
            RoomId::parse("general").unwrap(),
        )
    }

    fn chat(seq: i64) -> BusMessage {
        BusMessage::Deliver(Delivery {
            target: Target::Room { key: key() },
            event: "chat_message".into(),
            data: json!({ "seq": seq }),
        })
    }

    fn marker(n: i64) -> BusMessage {
        BusMessage::Deliver(Delivery {
            target: Target::All,
            event: "marker".into(),
            data: json!(n),
        })
    }

    /// The next command, within a deadline (the test fails instead of hanging).
    async fn next(rx: &mut FanoutReceiver) -> FanoutCmd {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a delivery in time")
            .expect("the queue is open")
    }

    /// Chat `seq`s and marker numbers, until marker `upto` arrives.
    async fn until_marker(rx: &mut FanoutReceiver, upto: i64) -> (Vec<i64>, Vec<i64>) {
        let (mut seqs, mut markers) = (Vec::new(), Vec::new());
        loop {
            match next(rx).await {
                FanoutCmd::Bus(BusMessage::Deliver(d)) if d.event == "chat_message" => {
                    seqs.push(d.data["seq"].as_i64().unwrap())
                }
                FanoutCmd::Bus(BusMessage::Deliver(d)) if d.event == "marker" => {
                    let n = d.data.as_i64().unwrap();
                    markers.push(n);
                    if n == upto {
                        return (seqs, markers);
                    }
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn rooms_reach_only_the_nodes_with_members_in_order_and_echoes_are_dropped() {
        let Some(redis) = OwnRedis::start() else {
            return;
        };
        let (a, mut a_rx) = node(&redis.url(), "a").await;
        let (b, mut b_rx) = node(&redis.url(), "b").await;
        let (c, mut c_rx) = node(&redis.url(), "c").await;
        until("three connected buses", || {
            a.state().connected && b.state().connected && c.state().connected
        })
        .await;
        let room = Topic::Room(key());
        a.subscribe(&room).await.unwrap();
        b.subscribe(&room).await.unwrap();
        for seq in 1..=50 {
            a.publish(chat(seq)).await.unwrap();
        }
        let all: Vec<i64> = (1..=50).collect();
        let mut got = Vec::new();
        while got.len() < 50 {
            if let FanoutCmd::Bus(BusMessage::Deliver(d)) = next(&mut b_rx).await {
                got.push(d.data["seq"].as_i64().unwrap());
            }
        }
        assert_eq!(got, all, "b gets a's room messages in order");
        // Published after Redis handed out a's messages: when a marker arrives, every earlier
        // message to that node (echoes included) has arrived too.
        c.publish(marker(1)).await.unwrap();
        b.publish(marker(2)).await.unwrap();
        assert_eq!(
            until_marker(&mut a_rx, 2).await,
            (all, vec![1, 2]),
            "a has each of its messages once: its echoes are dropped"
        );
        assert_eq!(
            until_marker(&mut c_rx, 2).await,
            (vec![], vec![1, 2]),
            "c, with no member of the room, got none of its traffic"
        );
        // The last member leaving unsubscribes b.
        b.unsubscribe(&room);
        until("b unsubscribed", || b.interest_counts() == (0, 0)).await;
        a.publish(chat(51)).await.unwrap();
        a.publish(marker(3)).await.unwrap();
        // a's marker went out after its chat 51, on the same connection: had b still been
        // subscribed, 51 would have come first.
        assert_eq!(until_marker(&mut b_rx, 3).await.0, Vec::<i64>::new());
    }

    #[tokio::test]
    async fn redis_stopped_mid_traffic_keeps_local_delivery_and_the_bus_resubscribes_by_itself() {
        let Some(mut redis) = OwnRedis::start() else {
            return;
        };
        let (a, mut a_rx) = node(&redis.url(), "a").await;
        let (b, mut b_rx) = node(&redis.url(), "b").await;
        until("connected", || a.state().connected && b.state().connected).await;
        let room = Topic::Room(key());
        b.subscribe(&room).await.unwrap();
        a.publish(chat(1)).await.unwrap();
        assert!(matches!(next(&mut b_rx).await, FanoutCmd::Bus(_)));

        redis.stop();
        // Local delivery goes on while Redis is away, and no publish waits for it.
        for seq in 2..=200 {
            tokio::time::timeout(Duration::from_secs(5), a.publish(chat(seq)))
                .await
                .expect("a publish never waits on Redis")
                .unwrap();
        }
        let mut local = Vec::new();
        while let Ok(cmd) = a_rx.try_recv() {
            if let FanoutCmd::Bus(BusMessage::Deliver(d)) = cmd {
                local.push(d.data["seq"].as_i64().unwrap());
            }
        }
        assert_eq!(local, (1..=200).collect::<Vec<_>>());
        until("both see Redis gone", || {
            !a.state().connected && !b.state().connected
        })
        .await;
        // b was told that deliveries may have been lost.
        loop {
            if matches!(next(&mut b_rx).await, FanoutCmd::Gap) {
                break;
            }
        }
        // A join while Redis is away is answered at once, and kept.
        let other = Topic::Room(RoomKey::new(None, RoomId::parse("other").unwrap()));
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), b.subscribe(&other))
                .await
                .unwrap(),
            Err(BusError::Unavailable(_))
        ));

        redis.spawn().unwrap();
        until("both reconnected", || {
            a.state().connected && b.state().connected
        })
        .await;
        until("b resubscribed", || b.interest_counts() == (2, 2)).await;
        // Nobody subscribed again by hand: the probe reaches b through the resubscription.
        a.publish(chat(201)).await.unwrap();
        let mut got = Vec::new();
        while got.last() != Some(&201) {
            if let FanoutCmd::Bus(BusMessage::Deliver(d)) = next(&mut b_rx).await {
                got.push(d.data["seq"].as_i64().unwrap());
            }
        }
        // What a's client still held when Redis came back may arrive late; never twice, never
        // out of order.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }
}
