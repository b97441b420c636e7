//! The delivery port between nodes. Domain services publish `BusMessage`s; the bus brings each
//! one to this node's local sockets and to every other node that has sockets it concerns. The
//! domain sees only this trait: how a node delivers to its own sockets (the fan-out queue) and
//! how nodes reach each other (Redis, an in-process hub) are the implementations' business.
//!
//! # Contract (every implementation keeps it)
//!
//! - **Delivery: local first, never waiting on other nodes.** `publish` returns once the
//!   message is in this node's local delivery order. Handing it to other nodes happens after
//!   that and never blocks the caller: when the way to the other nodes is slow or gone, their
//!   copies are dropped and counted (`aegisx_bus_dropped_total`), and local delivery goes on.
//!   Only the local queue may make `publish` wait (it is bounded, so pressure reaches the
//!   senders instead of growing memory).
//! - **Ordering: per topic, in publish order, per publisher.** A node's messages of one topic
//!   reach every other node in the order it published them. The chat writer publishes a room's
//!   messages in commit (= `seq`) order, so every node sees one writer's room messages in
//!   `seq` order. Messages of several nodes to one room are not ordered with each other in
//!   transit; the receiving fan-out puts a room's chat back in `seq` order (a message ahead of
//!   a missing `seq` waits for it, at most `fanout::REORDER_WAIT`). What a joining socket must
//!   not miss is guaranteed by the join window below, not by transit order.
//! - **Echo handling.** Every message travels with the id of the node that published it; a
//!   node drops the copies of its own messages that come back (it delivered them locally
//!   already), so each local socket gets a message once.
//! - **Interest.** A node receives only the topics its sockets need. `subscribe` counts one
//!   more local member of a topic and `unsubscribe` one less; the node is subscribed while the
//!   count is above zero, so the network sees only the node's first member joining and its last
//!   leaving. The count changes when the call is made (not when the returned future runs), so a
//!   leave that follows a join can never be applied before it. Broadcasts to everyone (`All`)
//!   need no interest: every node always receives them.
//! - **The join window.** The future `subscribe` returns resolves once the subscription is
//!   confirmed: every message published anywhere after that reaches this node. A join with
//!   replay awaits it *before* its replay read starts, so a message committed after the read
//!   began is delivered live, and the per-join high-water mark (the last replayed `seq`) drops
//!   what the replay already gave.
//! - **Degraded.** When the other nodes cannot be reached, `subscribe` resolves at once with
//!   `BusError::Unavailable` but the interest is kept: the bus subscribes again, by itself, to
//!   every topic of the node's current interest once the connection is back. What other nodes
//!   published meanwhile is not redelivered (clients recover it with `join_room { since }`).

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::domain::events::{BusMessage, Target};
use crate::domain::ids::{RoomKey, TenantId, UserId};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The local fan-out has stopped (the node is shutting down).
    #[error("the fan-out has stopped")]
    Closed,
    /// Other nodes cannot be reached now (Redis is away); local delivery is unaffected.
    #[error("the other nodes cannot be reached: {0}")]
    Unavailable(String),
}

/// Resolves once the node's interest in a topic is confirmed (see the join window above).
pub type Subscription = Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>;

/// What a node can be interested in: the unit of room-aware routing. A node with sockets in a
/// room subscribes to the room; every connection makes its node subscribe to its user (so
/// notifications, disconnects and revokes of the user reach it) and its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Room(RoomKey),
    User(UserId),
    Tenant(TenantId),
    /// Everyone; every node is always subscribed.
    All,
}

impl Topic {
    /// The topic a message travels on: the one every node that may have a recipient has.
    /// A user's connections of one tenant are among the user's; presence watchers of a tenant
    /// are members of that tenant (only tenant members watch), so their node has the tenant
    /// topic and no topic per watched user is needed.
    pub fn of(msg: &BusMessage) -> Topic {
        match msg {
            BusMessage::Deliver(d) => match &d.target {
                Target::Room { key } => Topic::Room(key.clone()),
                Target::User { user } | Target::UserInTenant { user, .. } => {
                    Topic::User(user.clone())
                }
                Target::Tenant { tenant } | Target::Presence { tenant, .. } => {
                    Topic::Tenant(tenant.clone())
                }
                Target::All => Topic::All,
            },
            BusMessage::DisconnectUser { user } | BusMessage::RevokeRoom { user, .. } => {
                Topic::User(user.clone())
            }
        }
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Delivers to this node's sockets, then to the other nodes interested in the message's
    /// topic. See the contract above.
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError>;

    /// Whether the bus routes by interest (a cluster bus). When not, callers need not keep
    /// track of what they subscribed (a single node has nothing to subscribe to).
    fn routes_by_interest(&self) -> bool {
        false
    }

    /// One more local member of `topic`; counted at once, confirmed when the future resolves.
    /// A bus that reaches no other node has nothing to subscribe to.
    fn subscribe(&self, _topic: &Topic) -> Subscription {
        Box::pin(std::future::ready(Ok(())))
    }

    /// One local member of `topic` fewer; the last one's call unsubscribes the node (in the
    /// background: nothing waits for it).
    fn unsubscribe(&self, _topic: &Topic) {}

    /// What operators see of the bus (`aegisx_bus_*` metrics, `/readyz`).
    fn state(&self) -> BusState;
}

#[derive(Debug, Clone, Copy)]
pub struct BusState {
    /// `local`, `memory` or `redis`.
    pub kind: &'static str,
    /// Whether deliveries reach the other nodes (always true for the local bus).
    pub connected: bool,
    /// Deliveries waiting for this node's fan-out.
    pub fanout_queue_depth: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::Delivery;
    use crate::domain::ids::RoomId;

    fn deliver(target: Target) -> BusMessage {
        BusMessage::Deliver(Delivery {
            target,
            event: "e".into(),
            data: serde_json::Value::Null,
        })
    }

    #[test]
    fn every_message_travels_on_the_topic_of_the_nodes_that_may_have_a_recipient() {
        let user = UserId::parse("u").unwrap();
        let tenant = TenantId::parse_optional(Some("t")).unwrap().unwrap();
        let key = RoomKey::new(Some(tenant.clone()), RoomId::parse("r").unwrap());
        let cases = [
            (
                deliver(Target::Room { key: key.clone() }),
                Topic::Room(key.clone()),
            ),
            (
                deliver(Target::UserInTenant {
                    user: user.clone(),
                    tenant: tenant.clone(),
                }),
                Topic::User(user.clone()),
            ),
            (
                deliver(Target::Presence {
                    tenant: tenant.clone(),
                    user: user.clone(),
                }),
                Topic::Tenant(tenant.clone()),
            ),
            (deliver(Target::All), Topic::All),
            (
                BusMessage::RevokeRoom {
                    key,
                    user: user.clone(),
                },
                Topic::User(user.clone()),
            ),
            (
                BusMessage::DisconnectUser { user: user.clone() },
                Topic::User(user),
            ),
        ];
        for (msg, topic) in cases {
            assert_eq!(Topic::of(&msg), topic, "{msg:?}");
        }
    }
}
