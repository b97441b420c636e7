//! PostgreSQL: the store for clusters. Per-room `seq` comes from a row-locked upsert, so
//! concurrent writers on several nodes never share or skip a number.

use std::time::Duration;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::rows;
use crate::domain::events::ChatMessage;
use crate::domain::store::{NewMessage, StoreError};

pub struct PostgresStore {
    pool: sqlx::PgPool,
}

impl PostgresStore {
    /// `timeout` bounds every statement on the server (`statement_timeout`) and the wait for a
    /// pooled connection; `TimedStore` bounds the whole call on our side.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)?
            .options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(timeout)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

const NEXT_SEQ: &str = "INSERT INTO room_seq (tenant, room, last_seq) VALUES ($1, $2, 1) \
     ON CONFLICT (tenant, room) DO UPDATE SET last_seq = room_seq.last_seq + 1 RETURNING last_seq";
const INSERT_MESSAGE: &str = "INSERT INTO chat_messages \
     (tenant, room, seq, id, user_id, user_name, message, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl PostgresStore {
    /// One upsert per message on the room's `room_seq` row: the row lock orders concurrent
    /// writers of a room (on any node) so their seqs are distinct and gap-free.
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for m in batch {
            let seq: i64 = sqlx::query_scalar(NEXT_SEQ)
                .bind(m.key.tenant_str())
                .bind(m.key.room.as_str())
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(INSERT_MESSAGE)
                .bind(m.key.tenant_str())
                .bind(m.key.room.as_str())
                .bind(seq)
                .bind(&m.id)
                .bind(m.user_id.as_str())
                .bind(&m.user_name)
                .bind(&m.message)
                .bind(&m.timestamp)
                .execute(&mut *tx)
                .await?;
            out.push(rows::stored(m, seq));
        }
        tx.commit().await?;
        Ok(out)
    }
}

super::rows::impl_store!(PostgresStore);
