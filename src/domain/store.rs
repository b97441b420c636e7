//! The storage port. The domain states what it needs; `crate::store` implements it for SQLite
//! and PostgreSQL. Every method either completes durably or returns an error: nothing is
//! acknowledged before the store says so.

use async_trait::async_trait;

use crate::domain::events::{ChatMessage, Notification};
use crate::domain::ids::{RoomKey, TenantId, UserId};

/// The driver's own error, kept for its message; the domain only needs to know which kind.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered and refused the statement (bad data, a constraint, a conflict).
    #[error("database error: {0}")]
    Refused(DriverError),
    /// The database could not be reached or the call failed on the way (I/O, pool, protocol).
    #[error("database error: {0}")]
    Failed(DriverError),
    #[error("migration failed: {0}")]
    Migrate(DriverError),
    #[error("unsupported DATABASE_URL scheme (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
    /// The database did not answer within `STORE_TIMEOUT_MS`.
    #[error("database did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl StoreError {
    /// The database answered and refused this statement (bad data, a constraint, a conflict),
    /// as opposed to being unreachable or slow: the same call with other data may succeed.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// A chat message to append; the store assigns `seq` (and the row is durable on return).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub key: RoomKey,
    pub user_id: UserId,
    pub user_name: String,
    pub message: String,
    pub timestamp: String,
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: String,
    pub user_id: UserId,
    pub tenant: Option<TenantId>,
    pub title: String,
    pub message: String,
    pub kind: String,
    pub timestamp: String,
}

/// What `mark_notification_read` found. `scoped`: the notification carries a tenant (so its
/// `notification_read` goes only to that tenant's connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkRead {
    Marked { scoped: bool },
    AlreadyRead { scoped: bool },
    NotFound,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends the messages in one transaction, in order, giving each the next `seq` of its
    /// room. Returns them in the same order. Durable when it returns `Ok`.
    async fn append_messages(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError>;

    /// Up to `limit` messages of the room with `seq > after`, ascending.
    async fn messages_after(
        &self,
        key: &RoomKey,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError>;

    /// The `limit` most recent messages with `seq < before` (all when `None`), ascending.
    async fn messages_before(
        &self,
        key: &RoomKey,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError>;

    async fn insert_notification(&self, n: &NewNotification) -> Result<Notification, StoreError>;

    /// Marks the user's notification read when it is visible from `tenant`: one without a
    /// tenant from anywhere, one with tenant T only from T (else `NotFound`).
    async fn mark_notification_read(
        &self,
        user: &UserId,
        tenant: Option<&TenantId>,
        id: &str,
        at: &str,
    ) -> Result<MarkRead, StoreError>;

    /// Newest first.
    async fn list_notifications(
        &self,
        user: &UserId,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;

    /// Grants a private room; returns false when the grant already existed.
    async fn grant_room(&self, key: &RoomKey, user: &UserId, at: &str) -> Result<bool, StoreError>;

    /// Revokes a grant; returns false when there was none.
    async fn revoke_room(&self, key: &RoomKey, user: &UserId) -> Result<bool, StoreError>;

    async fn has_grant(&self, key: &RoomKey, user: &UserId) -> Result<bool, StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}
