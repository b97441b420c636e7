//! Server push from backends: events to a user, a tenant, a room or everyone, and closing a
//! user's connections. Chat does not go here: it is stored and sequenced by `chat`.

use std::sync::Arc;

use serde_json::Value;

use crate::domain::bus::Bus;
use crate::domain::error::DomainError;
use crate::domain::events::{BusMessage, Delivery, Target};
use crate::domain::ids::UserId;

/// Longest event name a backend may publish.
pub const MAX_EVENT_LEN: usize = 64;

/// Names Socket.IO reserves and names the gateway owns (clients trust them to mean what the
/// contract says, so backends may not forge them).
pub const RESERVED_EVENTS: [&str; 13] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    "connected",
    "chat_message",
    "joined_room",
    "left_room",
    "notification_read",
    "token_refreshed",
    "error",
];

pub fn validate_event(name: &str) -> Result<(), DomainError> {
    if name.is_empty() || name.chars().count() > MAX_EVENT_LEN {
        return Err(DomainError::invalid(format!(
            "event must be 1 to {MAX_EVENT_LEN} characters"
        )));
    }
    if RESERVED_EVENTS.contains(&name) {
        return Err(DomainError::invalid(format!(
            "event {name:?} is reserved; chat goes through POST /rooms/{{roomId}}/messages"
        )));
    }
    Ok(())
}

#[derive(Clone)]
pub struct PublishService {
    bus: Arc<dyn Bus>,
}

impl PublishService {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self { bus }
    }

    pub async fn publish(
        &self,
        target: Target,
        event: String,
        data: Value,
    ) -> Result<(), DomainError> {
        validate_event(&event)?;
        self.bus
            .publish(BusMessage::Deliver(Delivery {
                target,
                event,
                data,
            }))
            .await
            .map_err(|_| DomainError::Busy)
    }

    /// An event the blueprint's event bus routed (`bus::ingest`): its routing names events the
    /// gateway owns by design (`chat_message` to a tenant), so only the name's length is checked.
    pub async fn publish_routed(
        &self,
        target: Target,
        event: String,
        data: Value,
    ) -> Result<(), DomainError> {
        if event.is_empty() || event.chars().count() > MAX_EVENT_LEN {
            return Err(DomainError::invalid(format!(
                "event must be 1 to {MAX_EVENT_LEN} characters"
            )));
        }
        self.bus
            .publish(BusMessage::Deliver(Delivery {
                target,
                event,
                data,
            }))
            .await
            .map_err(|_| DomainError::Busy)
    }

    /// Closes every connection of the user, on every node.
    pub async fn disconnect_user(&self, user: UserId) -> Result<(), DomainError> {
        self.bus
            .publish(BusMessage::DisconnectUser { user })
            .await
            .map_err(|_| DomainError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_owned_events_are_refused() {
        for e in [
            "connect",
            "disconnect",
            "chat_message",
            "error",
            "connected",
            "token_refreshed",
        ] {
            assert!(validate_event(e).is_err(), "{e}");
        }
        for e in ["order_updated", "notification", "broadcast", "user_status"] {
            assert!(validate_event(e).is_ok(), "{e}");
        }
        assert!(validate_event("").is_err());
        assert!(validate_event(&"e".repeat(65)).is_err());
    }
}
