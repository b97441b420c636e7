//! What travels from the domain to clients: the server → client payloads of PROTOCOL.md §6 and
//! the `Delivery` envelope the bus carries from any node to the fan-out of every node.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::ids::{RoomKey, TenantId, UserId};

/// A stored chat message, in the `chat_message` wire shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    pub seq: i64,
    pub room_id: String,
    pub user_id: String,
    pub user_name: String,
    pub message: String,
    pub timestamp: String,
}

/// A stored notification (the HTTP shape; the `notification` event carries a subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    pub user_id: String,
    pub tenant_id: Option<String>,
    pub title: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub read_at: Option<String>,
}

impl Notification {
    /// The `notification` event payload: `{ id, title, message, type, timestamp }`.
    pub fn event_payload(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "title": self.title,
            "message": self.message,
            "type": self.kind,
            "timestamp": self.timestamp,
        })
    }
}

/// Who a delivery is for. Rooms are always tenant-scoped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Target {
    Room {
        key: RoomKey,
    },
    User {
        user: UserId,
    },
    Tenant {
        tenant: TenantId,
    },
    /// The sockets of `tenant` watching `user`'s presence.
    Presence {
        tenant: TenantId,
        user: UserId,
    },
    All,
}

/// One event for the clients of one target, on every node. `data` is sent as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub target: Target,
    pub event: String,
    pub data: Value,
}

/// What the bus carries between nodes: deliveries, and actions on the sockets of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum BusMessage {
    Deliver(Delivery),
    /// Close every connection of the user (server-side disconnect).
    DisconnectUser {
        user: UserId,
    },
    /// The user lost access to a private room: its sockets leave it.
    RevokeRoom {
        key: RoomKey,
        user: UserId,
    },
}

/// The `error` event payload: `{ type: "error", code, message, timestamp }`.
pub fn error_event(code: &str, message: &str) -> Value {
    serde_json::json!({
        "type": "error",
        "code": code,
        "message": message,
        "timestamp": crate::domain::time::now_rfc3339(),
    })
}
