//! What one socket makes its node subscribe to on the bus: its user and tenant from the
//! connect on, and each room while it is in it. Kept per socket (in its extensions), so every
//! `subscribe` the socket caused is undone by exactly one `unsubscribe`, however the socket
//! leaves (leave, revoke, refresh, refused join, disconnect).

use std::sync::{Arc, Mutex};

use socketioxide::extract::SocketRef;

use crate::domain::bus::{Bus, Topic};

pub struct SocketInterest {
    bus: Arc<dyn Bus>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// A socket has a few topics (its user, tenant and rooms): a list is smallest.
    topics: Vec<Topic>,
    closed: bool,
}

impl SocketInterest {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self {
            bus,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the node subscribe to `topic` for this socket and waits for the confirmation, so
    /// what any node publishes afterwards reaches this node. With Redis away it returns at once
    /// (the node subscribes when Redis is back): local delivery does not wait for Redis.
    pub async fn enter(&self, topic: Topic) {
        let sub = {
            let mut held = self.held();
            if held.closed || held.topics.contains(&topic) {
                return;
            }
            // Counted under the lock, so a `close` racing with this join undoes it.
            let sub = self.bus.subscribe(&topic);
            held.topics.push(topic);
            sub
        };
        if let Err(e) = sub.await {
            tracing::debug!(error = %e, "bus subscription not confirmed; local delivery only");
        }
    }

    pub fn leave(&self, topic: &Topic) {
        let removed = {
            let mut held = self.held();
            let at = held.topics.iter().position(|t| t == topic);
            at.map(|i| held.topics.swap_remove(i))
        };
        if removed.is_some() {
            self.bus.unsubscribe(topic);
        }
    }

    /// The socket is gone: undo everything, and take no more.
    pub fn close(&self) {
        let topics = {
            let mut held = self.held();
            held.closed = true;
            std::mem::take(&mut held.topics)
        };
        for t in &topics {
            self.bus.unsubscribe(t);
        }
    }
}

/// The socket's interest (set at connect).
pub fn of(s: &SocketRef) -> Option<Arc<SocketInterest>> {
    s.extensions.get::<Arc<SocketInterest>>()
}
