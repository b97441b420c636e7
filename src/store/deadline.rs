//! A deadline on every store call. A database that stops answering without closing the
//! connection (a frozen host, a dropped route) would otherwise hold the chat writer and every
//! handler forever; with this, each call gives up after `STORE_TIMEOUT_MS` and the caller answers
//! `UNAVAILABLE`. (The server-side `statement_timeout` / `busy_timeout` cover a slow database;
//! only a client-side deadline covers a silent one.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::events::{ChatMessage, Notification};
use crate::domain::ids::{RoomKey, TenantId, UserId};
use crate::domain::store::{MarkRead, NewMessage, NewNotification, Store, StoreError};

pub struct TimedStore {
    inner: Arc<dyn Store>,
    timeout: Duration,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // A call that timed out may still have completed on the server (a commit whose answer
        // was lost): the caller reports UNAVAILABLE, and the client may find the write stored.
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// `timed`, with the call's latency (timeouts included) in `aegisx_storage_latency_seconds`:
    /// for the calls on the chat path, whose latency users feel.
    async fn measured<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let res = self.timed(call).await;
        crate::metrics::storage_latency(op, started.elapsed(), res.is_ok());
        res
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn append_messages(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError> {
        self.measured("append_messages", self.inner.append_messages(batch))
            .await
    }

    async fn messages_after(
        &self,
        key: &RoomKey,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.measured(
            "messages_after",
            self.inner.messages_after(key, after, limit),
        )
        .await
    }

    async fn messages_before(
        &self,
        key: &RoomKey,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.timed(self.inner.messages_before(key, before, limit))
            .await
    }

    async fn insert_notification(&self, n: &NewNotification) -> Result<Notification, StoreError> {
        self.timed(self.inner.insert_notification(n)).await
    }

    async fn mark_notification_read(
        &self,
        user: &UserId,
        tenant: Option<&TenantId>,
        id: &str,
        at: &str,
    ) -> Result<MarkRead, StoreError> {
        self.timed(self.inner.mark_notification_read(user, tenant, id, at))
            .await
    }

    async fn list_notifications(
        &self,
        user: &UserId,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.timed(self.inner.list_notifications(user, unread_only, limit))
            .await
    }

    async fn grant_room(&self, key: &RoomKey, user: &UserId, at: &str) -> Result<bool, StoreError> {
        self.timed(self.inner.grant_room(key, user, at)).await
    }

    async fn revoke_room(&self, key: &RoomKey, user: &UserId) -> Result<bool, StoreError> {
        self.timed(self.inner.revoke_room(key, user)).await
    }

    async fn has_grant(&self, key: &RoomKey, user: &UserId) -> Result<bool, StoreError> {
        self.timed(self.inner.has_grant(key, user)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(self.inner.ping()).await
    }
}
