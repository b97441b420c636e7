//! Row shapes and the one SQL text both backends run (`$N` parameters work in SQLite too), so
//! the two stores cannot drift apart. `impl_store!` writes the `Store` impl for a pool type.

use crate::domain::events::{ChatMessage, Notification};

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    pub room: String,
    pub seq: i64,
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub message: String,
    pub created_at: String,
}

impl From<MessageRow> for ChatMessage {
    fn from(r: MessageRow) -> Self {
        ChatMessage {
            id: r.id,
            seq: r.seq,
            room_id: r.room,
            user_id: r.user_id,
            user_name: r.user_name,
            message: r.message,
            timestamp: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct NotificationRow {
    pub id: String,
    pub user_id: String,
    pub tenant: Option<String>,
    pub title: String,
    pub message: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub created_at: String,
    pub read_at: Option<String>,
}

impl From<NotificationRow> for Notification {
    fn from(r: NotificationRow) -> Self {
        Notification {
            id: r.id,
            user_id: r.user_id,
            tenant_id: r.tenant,
            title: r.title,
            message: r.message,
            kind: r.kind,
            timestamp: r.created_at,
            read_at: r.read_at,
        }
    }
}

const MESSAGE_COLS: &str = "room, seq, id, user_id, user_name, message, created_at";
pub(super) fn messages_after_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLS} FROM chat_messages WHERE tenant = $1 AND room = $2 AND seq > $3 \
         ORDER BY seq ASC LIMIT $4"
    )
}
pub(super) fn messages_before_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLS} FROM chat_messages WHERE tenant = $1 AND room = $2 AND seq < $3 \
         ORDER BY seq DESC LIMIT $4"
    )
}
pub(super) const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (id, user_id, tenant, title, message, type, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(super) const MARK_READ: &str = "UPDATE notifications SET read_at = $1 \
     WHERE id = $2 AND user_id = $3 AND (tenant IS NULL OR tenant = $4) AND read_at IS NULL \
     RETURNING tenant";
pub(super) const NOTIFICATION_EXISTS: &str = "SELECT tenant FROM notifications \
     WHERE id = $1 AND user_id = $2 AND (tenant IS NULL OR tenant = $3)";
const NOTIFICATION_COLS: &str = "id, user_id, tenant, title, message, type, created_at, read_at";
pub(super) fn list_notifications_sql(unread_only: bool) -> String {
    let unread = if unread_only {
        " AND read_at IS NULL"
    } else {
        ""
    };
    format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications WHERE user_id = $1{unread} \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}
pub(super) const GRANT: &str = "INSERT INTO room_grants (tenant, room, user_id, granted_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, room, user_id) DO NOTHING";
pub(super) const REVOKE: &str =
    "DELETE FROM room_grants WHERE tenant = $1 AND room = $2 AND user_id = $3";
pub(super) const HAS_GRANT: &str =
    "SELECT COUNT(*) FROM room_grants WHERE tenant = $1 AND room = $2 AND user_id = $3";

/// The stored form of a new message once it has its `seq`.
pub(super) fn stored(m: &crate::domain::store::NewMessage, seq: i64) -> ChatMessage {
    ChatMessage {
        id: m.id.clone(),
        seq,
        room_id: m.key.room.to_string(),
        user_id: m.user_id.to_string(),
        user_name: m.user_name.clone(),
        message: m.message.clone(),
        timestamp: m.timestamp.clone(),
    }
}

/// Implements `Store` for a struct with a `pool: sqlx::Pool<DB>` field and an inherent
/// `append` (the one operation whose best SQL differs between the backends).
macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::domain::store::Store for $store {
            async fn append_messages(
                &self,
                batch: &[crate::domain::store::NewMessage],
            ) -> Result<Vec<crate::domain::events::ChatMessage>, crate::domain::store::StoreError>
            {
                self.append(batch).await
            }

            async fn messages_after(
                &self,
                key: &crate::domain::ids::RoomKey,
                after: i64,
                limit: u32,
            ) -> Result<Vec<crate::domain::events::ChatMessage>, crate::domain::store::StoreError>
            {
                let rows: Vec<crate::store::rows::MessageRow> =
                    sqlx::query_as(&crate::store::rows::messages_after_sql())
                        .bind(key.tenant_str())
                        .bind(key.room.as_str())
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn messages_before(
                &self,
                key: &crate::domain::ids::RoomKey,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<crate::domain::events::ChatMessage>, crate::domain::store::StoreError>
            {
                let rows: Vec<crate::store::rows::MessageRow> =
                    sqlx::query_as(&crate::store::rows::messages_before_sql())
                        .bind(key.tenant_str())
                        .bind(key.room.as_str())
                        .bind(before.unwrap_or(i64::MAX))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().rev().map(Into::into).collect())
            }

            async fn insert_notification(
                &self,
                n: &crate::domain::store::NewNotification,
            ) -> Result<crate::domain::events::Notification, crate::domain::store::StoreError> {
                sqlx::query(crate::store::rows::INSERT_NOTIFICATION)
                    .bind(&n.id)
                    .bind(n.user_id.as_str())
                    .bind(n.tenant.as_ref().map(|t| t.as_str()))
                    .bind(&n.title)
                    .bind(&n.message)
                    .bind(&n.kind)
                    .bind(&n.timestamp)
                    .execute(&self.pool)
                    .await?;
                Ok(crate::domain::events::Notification {
                    id: n.id.clone(),
                    user_id: n.user_id.to_string(),
                    tenant_id: n.tenant.as_ref().map(|t| t.to_string()),
                    title: n.title.clone(),
                    message: n.message.clone(),
                    kind: n.kind.clone(),
                    timestamp: n.timestamp.clone(),
                    read_at: None,
                })
            }

            async fn mark_notification_read(
                &self,
                user: &crate::domain::ids::UserId,
                tenant: Option<&crate::domain::ids::TenantId>,
                id: &str,
                at: &str,
            ) -> Result<crate::domain::store::MarkRead, crate::domain::store::StoreError> {
                use crate::domain::store::MarkRead;
                let tenant = tenant.map(|t| t.as_str());
                let marked: Option<Option<String>> =
                    sqlx::query_scalar(crate::store::rows::MARK_READ)
                        .bind(at)
                        .bind(id)
                        .bind(user.as_str())
                        .bind(tenant)
                        .fetch_optional(&self.pool)
                        .await?;
                if let Some(t) = marked {
                    return Ok(MarkRead::Marked {
                        scoped: t.is_some(),
                    });
                }
                let found: Option<Option<String>> =
                    sqlx::query_scalar(crate::store::rows::NOTIFICATION_EXISTS)
                        .bind(id)
                        .bind(user.as_str())
                        .bind(tenant)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(match found {
                    Some(t) => MarkRead::AlreadyRead {
                        scoped: t.is_some(),
                    },
                    None => MarkRead::NotFound,
                })
            }

            async fn list_notifications(
                &self,
                user: &crate::domain::ids::UserId,
                unread_only: bool,
                limit: u32,
            ) -> Result<Vec<crate::domain::events::Notification>, crate::domain::store::StoreError>
            {
                let rows: Vec<crate::store::rows::NotificationRow> =
                    sqlx::query_as(&crate::store::rows::list_notifications_sql(unread_only))
                        .bind(user.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn grant_room(
                &self,
                key: &crate::domain::ids::RoomKey,
                user: &crate::domain::ids::UserId,
                at: &str,
            ) -> Result<bool, crate::domain::store::StoreError> {
                let done = sqlx::query(crate::store::rows::GRANT)
                    .bind(key.tenant_str())
                    .bind(key.room.as_str())
                    .bind(user.as_str())
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn revoke_room(
                &self,
                key: &crate::domain::ids::RoomKey,
                user: &crate::domain::ids::UserId,
            ) -> Result<bool, crate::domain::store::StoreError> {
                let done = sqlx::query(crate::store::rows::REVOKE)
                    .bind(key.tenant_str())
                    .bind(key.room.as_str())
                    .bind(user.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn has_grant(
                &self,
                key: &crate::domain::ids::RoomKey,
                user: &crate::domain::ids::UserId,
            ) -> Result<bool, crate::domain::store::StoreError> {
                let n: i64 = sqlx::query_scalar(crate::store::rows::HAS_GRANT)
                    .bind(key.tenant_str())
                    .bind(key.room.as_str())
                    .bind(user.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn ping(&self) -> Result<(), crate::domain::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}
pub(super) use impl_store;
