//! Notifications: created by backends (stored, then delivered live to the user's connections),
//! listed, and marked read by their recipient.

use std::sync::Arc;

use serde_json::json;

use crate::domain::bus::Bus;
use crate::domain::error::DomainError;
use crate::domain::events::{BusMessage, Delivery, Notification, Target};
use crate::domain::ids::{TenantId, UserId};
use crate::domain::store::{MarkRead, NewNotification, Store};
use crate::domain::time::now_rfc3339;

/// Longest title, message and type accepted.
pub const MAX_TITLE_LEN: usize = 256;
pub const MAX_TEXT_LEN: usize = 4000;
pub const MAX_TYPE_LEN: usize = 64;

#[derive(Clone)]
pub struct NotificationService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
}

impl NotificationService {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        Self { store, bus }
    }

    pub async fn create(
        &self,
        user: UserId,
        tenant: Option<TenantId>,
        title: String,
        message: String,
        kind: String,
    ) -> Result<Notification, DomainError> {
        for (name, value, max) in [
            ("title", &title, MAX_TITLE_LEN),
            ("message", &message, MAX_TEXT_LEN),
            ("type", &kind, MAX_TYPE_LEN),
        ] {
            let n = value.chars().count();
            if n == 0 || n > max {
                return Err(DomainError::invalid(format!(
                    "{name} must be 1 to {max} characters"
                )));
            }
            // PostgreSQL text cannot hold NUL: refused here rather than failing in the store.
            if value.contains('\0') {
                return Err(DomainError::invalid(format!(
                    "{name} must not contain NUL characters"
                )));
            }
        }
        let target = for_user(&user, tenant.as_ref());
        let stored = self
            .store
            .insert_notification(&NewNotification {
                id: uuid::Uuid::now_v7().to_string(),
                user_id: user.clone(),
                tenant,
                title,
                message,
                kind,
                timestamp: now_rfc3339(),
            })
            .await?;
        self.deliver(target, "notification", stored.event_payload())
            .await;
        Ok(stored)
    }

    /// Marks the user's own notification read, from a connection of `tenant`: one stored with a
    /// tenant only from that tenant (else `NOT_FOUND`). Tells the connections that got it.
    pub async fn mark_read(
        &self,
        user: &UserId,
        tenant: Option<&TenantId>,
        id: &str,
    ) -> Result<(), DomainError> {
        match self
            .store
            .mark_notification_read(user, tenant, id, &now_rfc3339())
            .await?
        {
            MarkRead::NotFound => Err(DomainError::NotFound("Notification not found".into())),
            MarkRead::Marked { scoped } | MarkRead::AlreadyRead { scoped } => {
                // Scoped: its tenant is the caller's (the store checked).
                let target = for_user(user, tenant.filter(|_| scoped));
                self.deliver(target, "notification_read", json!({ "notificationId": id }))
                    .await;
                Ok(())
            }
        }
    }

    pub async fn list(
        &self,
        user: &UserId,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>, DomainError> {
        Ok(self
            .store
            .list_notifications(user, unread_only, limit)
            .await?)
    }

    async fn deliver(&self, target: Target, event: &str, data: serde_json::Value) {
        let msg = BusMessage::Deliver(Delivery {
            target,
            event: event.into(),
            data,
        });
        if self.bus.publish(msg).await.is_err() {
            tracing::warn!(
                event,
                "fan-out stopped; stored notification not delivered live"
            );
        }
    }
}

/// A notification with a tenant goes to the user's connections of that tenant; one without, to
/// all of them.
fn for_user(user: &UserId, tenant: Option<&TenantId>) -> Target {
    match tenant {
        Some(t) => Target::UserInTenant {
            user: user.clone(),
            tenant: t.clone(),
        },
        None => Target::User { user: user.clone() },
    }
}
