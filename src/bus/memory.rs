//! A cluster bus inside one process: a hub shared by several in-process nodes, each with its own
//! fan-out queue. It keeps the bus contract (`domain::bus`) the way the Redis bus does — local
//! delivery first, room-aware interest, echoes dropped by origin — with no network in between,
//! so the cross-node rules are tested with several nodes in milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::bus::interest::Interests;
use crate::bus::{Envelope, accept};
use crate::domain::bus::{Bus, BusError, BusState, Subscription, Topic};
use crate::domain::events::BusMessage;
use crate::fanout::{FanoutCmd, FanoutSender};

/// The "network" between in-process nodes.
#[derive(Default)]
pub struct MemoryHub {
    nodes: Mutex<Vec<Arc<HubNode>>>,
}

struct HubNode {
    id: String,
    fanout: FanoutSender,
    interests: Interests,
    echoes: AtomicU64,
    dropped: AtomicU64,
}

impl HubNode {
    /// What a subscriber does with a message from the hub: its own are dropped; the others go
    /// to its fan-out without making the publisher wait (a full queue drops and counts).
    fn receive(&self, env: &Envelope) {
        let Some(msg) = accept(&self.id, env.clone()) else {
            self.echoes.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.fanout.try_send(FanoutCmd::Bus(msg)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::bus_dropped("queue_full", 1);
        }
    }
}

impl MemoryHub {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A node on this hub, delivering to `fanout`.
    pub fn node(self: &Arc<Self>, id: &str, fanout: FanoutSender) -> MemoryBus {
        let node = Arc::new(HubNode {
            id: id.to_owned(),
            fanout,
            interests: Interests::default(),
            echoes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        node.interests.set_reachable(true);
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node.clone());
        MemoryBus {
            hub: self.clone(),
            node,
        }
    }
}

pub struct MemoryBus {
    hub: Arc<MemoryHub>,
    node: Arc<HubNode>,
}

impl MemoryBus {
    /// Own messages that came back and were dropped.
    pub fn echoes_dropped(&self) -> u64 {
        self.node.echoes.load(Ordering::Relaxed)
    }

    /// Messages from other nodes lost because this node's fan-out queue was full.
    pub fn dropped(&self) -> u64 {
        self.node.dropped.load(Ordering::Relaxed)
    }

    /// In memory a subscription is confirmed as soon as it is planned.
    fn settle(&self) {
        let plan = self.node.interests.plan();
        for t in &plan.subscribe {
            self.node.interests.settled(t, Ok(true));
        }
        for t in &plan.unsubscribe {
            self.node.interests.settled(t, Ok(false));
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        let topic = Topic::of(&msg);
        let env = Envelope {
            origin: self.node.id.clone(),
            msg: msg.clone(),
        };
        self.node
            .fanout
            .send(FanoutCmd::Bus(msg))
            .await
            .map_err(|_| BusError::Closed)?;
        let nodes = self
            .hub
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for n in nodes.iter().filter(|n| n.interests.wants(&topic)) {
            n.receive(&env);
        }
        Ok(())
    }

    fn routes_by_interest(&self) -> bool {
        true
    }

    fn subscribe(&self, topic: &Topic) -> Subscription {
        let sub = self.node.interests.add(topic);
        self.settle();
        sub
    }

    fn unsubscribe(&self, topic: &Topic) {
        self.node.interests.remove(topic);
        self.settle();
    }

    fn state(&self) -> BusState {
        BusState {
            kind: "memory",
            connected: true,
            fanout_queue_depth: self.node.fanout.max_capacity() - self.node.fanout.capacity(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use serde_json::json;

    use super::*;
    use crate::domain::events::{Delivery, Target};
    use crate::domain::ids::{RoomId, RoomKey, TenantId, UserId};
    use crate::fanout::{FanoutReceiver, cmd::passes_mark, fanout_queue};

    fn room(r: &str) -> RoomKey {
        RoomKey::new(
            TenantId::parse_optional(Some("t")).unwrap(),
            RoomId::parse(r).unwrap(),
        )
    }

    fn chat(key: &RoomKey, seq: i64) -> BusMessage {
        BusMessage::Deliver(Delivery {
            target: Target::Room { key: key.clone() },
            event: "chat_message".into(),
            data: json!({ "seq": seq }),
        })
    }

    fn node(hub: &Arc<MemoryHub>, id: &str) -> (MemoryBus, FanoutReceiver) {
        let (tx, rx) = fanout_queue(4096);
        (hub.node(id, tx), rx)
    }

    /// The `seq`s of the chat messages and the count of other commands in the queue now.
    fn drain(rx: &mut FanoutReceiver) -> (Vec<i64>, usize) {
        let (mut seqs, mut other) = (Vec::new(), 0);
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                FanoutCmd::Bus(BusMessage::Deliver(d)) if d.event == "chat_message" => {
                    seqs.push(d.data["seq"].as_i64().unwrap());
                }
                _ => other += 1,
            }
        }
        (seqs, other)
    }

    #[tokio::test]
    async fn room_messages_reach_the_other_node_in_seq_order_and_echoes_are_dropped() {
        let hub = MemoryHub::new();
        let (a, mut a_rx) = node(&hub, "a");
        let (b, mut b_rx) = node(&hub, "b");
        let key = room("general");
        a.subscribe(&Topic::Room(key.clone())).await.unwrap();
        b.subscribe(&Topic::Room(key.clone())).await.unwrap();
        for seq in 1..=100 {
            a.publish(chat(&key, seq)).await.unwrap();
        }
        let all: Vec<i64> = (1..=100).collect();
        assert_eq!(drain(&mut b_rx).0, all, "b gets every one, in order");
        assert_eq!(
            drain(&mut a_rx).0,
            all,
            "a gets each once: its echo is dropped"
        );
        assert_eq!(a.echoes_dropped(), 100);
        assert_eq!(b.echoes_dropped(), 0);
    }

    #[tokio::test]
    async fn a_node_with_no_member_of_a_room_gets_none_of_its_traffic() {
        let hub = MemoryHub::new();
        let (a, _a_rx) = node(&hub, "a");
        let (b, mut b_rx) = node(&hub, "b");
        let (c, mut c_rx) = node(&hub, "c");
        let (key, other) = (room("busy"), room("quiet"));
        b.subscribe(&Topic::Room(key.clone())).await.unwrap();
        c.subscribe(&Topic::Room(other.clone())).await.unwrap();
        for seq in 1..=10 {
            a.publish(chat(&key, seq)).await.unwrap();
        }
        a.publish(BusMessage::Deliver(Delivery {
            target: Target::All,
            event: "broadcast".into(),
            data: json!({}),
        }))
        .await
        .unwrap();
        assert_eq!(drain(&mut b_rx), ((1..=10).collect(), 1));
        assert_eq!(
            drain(&mut c_rx),
            (vec![], 1),
            "only the broadcast reaches c"
        );
        // Its last member gone, b stops receiving the room.
        b.unsubscribe(&Topic::Room(key.clone()));
        a.publish(chat(&key, 11)).await.unwrap();
        assert_eq!(drain(&mut b_rx), (vec![], 0));
        c.unsubscribe(&Topic::Room(other));
    }

    #[tokio::test]
    async fn a_user_topic_carries_disconnects_and_revokes_to_the_nodes_of_the_user() {
        let hub = MemoryHub::new();
        let (a, _a_rx) = node(&hub, "a");
        let (b, mut b_rx) = node(&hub, "b");
        let (_c, mut c_rx) = node(&hub, "c");
        let user = UserId::parse("alice").unwrap();
        b.subscribe(&Topic::User(user.clone())).await.unwrap();
        a.publish(BusMessage::DisconnectUser { user: user.clone() })
            .await
            .unwrap();
        a.publish(BusMessage::RevokeRoom {
            key: room("private:x"),
            user,
        })
        .await
        .unwrap();
        let got: Vec<_> = std::iter::from_fn(|| b_rx.try_recv().ok()).collect();
        assert!(matches!(
            got.as_slice(),
            [
                FanoutCmd::Bus(BusMessage::DisconnectUser { .. }),
                FanoutCmd::Bus(BusMessage::RevokeRoom { .. })
            ]
        ));
        assert_eq!(drain(&mut c_rx), (vec![], 0));
    }

    /// The join window across nodes: node b subscribes (confirmed), then reads the replay from
    /// the store while node a keeps writing; what b receives live after the join, less what the
    /// high-water mark drops, continues the replay with no gap and no duplicate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_join_on_another_node_misses_nothing_and_repeats_nothing() {
        for _ in 0..20 {
            let hub = MemoryHub::new();
            let (a, _a_rx) = node(&hub, "a");
            let (b, mut b_rx) = node(&hub, "b");
            let key = room("general");
            let store = Arc::new(StdMutex::new(Vec::<i64>::new()));
            const N: i64 = 300;
            let writer = {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    for seq in 1..=N {
                        // Committed, then published: as the chat writer does.
                        store.lock().unwrap().push(seq);
                        a.publish(chat(&key, seq)).await.unwrap();
                        if seq % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            };
            while store.lock().unwrap().len() < 50 {
                tokio::task::yield_now().await;
            }
            b.subscribe(&Topic::Room(key.clone())).await.unwrap();
            let replay: Vec<i64> = store.lock().unwrap().clone();
            let mark = *replay.last().unwrap();
            writer.await.unwrap();
            let live: Vec<i64> = drain(&mut b_rx)
                .0
                .into_iter()
                .filter(|s| passes_mark(Some(*s), mark))
                .collect();
            let seen: Vec<i64> = replay.into_iter().chain(live).collect();
            assert_eq!(seen, (1..=N).collect::<Vec<_>>());
        }
    }
}
