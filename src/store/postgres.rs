//! PostgreSQL: the store for clusters. Per-room `seq` comes from a row-locked upsert, so
//! concurrent writers on several nodes never share or skip a number.

use std::str::FromStr;
use std::time::Duration;

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

/// Reserves `$3` consecutive seqs in a room and returns the last. The upsert takes the room's
/// row lock until the transaction ends.
const RESERVE_SEQS: &str = "INSERT INTO room_seq (tenant, room, last_seq) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant, room) DO UPDATE SET last_seq = room_seq.last_seq + EXCLUDED.last_seq \
     RETURNING last_seq";
const INSERT_MESSAGE: &str = "INSERT INTO chat_messages \
     (tenant, room, seq, id, user_id, user_name, message, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl PostgresStore {
    /// The batch's rooms are locked in one stable order (sorted by tenant, then room), one
    /// upsert per room reserving as many seqs as the batch has messages there. Every node sorts
    /// the same way, so two batches sharing rooms wait for each other instead of deadlocking
    /// (locking in message order, a batch of rooms a,b and one of b,a each held the lock the
    /// other wanted, and PostgreSQL aborted one). The row lock orders writers of a room on any
    /// node, so their seqs are distinct and gap-free; within the batch a room's messages take
    /// their reserved seqs in batch order.
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError> {
        let room = |i: &usize| (batch[*i].key.tenant_str(), batch[*i].key.room.as_str());
        // A stable sort: within a room, indices stay in batch order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(room);
        let mut seqs = vec![0_i64; batch.len()];
        let mut tx = self.pool.begin().await?;
        for group in order.chunk_by(|a, b| room(a) == room(b)) {
            let (tenant, name) = room(&group[0]);
            let count = i64::try_from(group.len()).unwrap_or(i64::MAX);
            let last: i64 = sqlx::query_scalar(RESERVE_SEQS)
                .bind(tenant)
                .bind(name)
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
            for (seq, &i) in (last - count + 1..).zip(group) {
                seqs[i] = seq;
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for (m, &seq) in batch.iter().zip(&seqs) {
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
