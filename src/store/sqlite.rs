//! SQLite: the default store for one node. WAL with `synchronous=FULL`, so a commit is on disk
//! when it returns; the chat writer groups messages so a burst costs one fsync.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

use super::rows;
use crate::domain::events::ChatMessage;
use crate::domain::store::{NewMessage, StoreError};

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    /// `timeout` is how long a statement waits for a lock (`busy_timeout`) and for a pooled
    /// connection; `TimedStore` bounds the whole call.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(timeout);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed(Box::new(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Rows per multi-row INSERT: 8 parameters each stays far below SQLite's 32,766.
const ROWS_PER_INSERT: usize = 1000;

impl SqliteStore {
    /// A whole batch in four statements, whatever its size: `BEGIN IMMEDIATE` takes the write
    /// lock first (so reading the rooms' last seqs and writing the next ones cannot interleave
    /// with another writer), one read of those seqs, multi-row inserts, one multi-row upsert.
    /// Statement count matters here: each is a round trip to sqlx's SQLite thread.
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Declared before `last` so `last` can be probed with borrows of these rows.
        let mut found: Vec<(String, String, i64)> = Vec::new();
        // Keyed by the stored strings, so rows read back match without re-parsing ids.
        let mut last: HashMap<(&str, &str), i64> = batch
            .iter()
            .map(|m| ((m.key.tenant_str(), m.key.room.as_str()), 0))
            .collect();
        let keys: Vec<(&str, &str)> = last.keys().copied().collect();
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT tenant, room, last_seq FROM room_seq WHERE (tenant, room) IN (VALUES ",
            );
            let mut list = q.separated(", ");
            for (tenant, room) in chunk {
                list.push("(");
                list.push_bind_unseparated(*tenant);
                list.push_unseparated(", ");
                list.push_bind_unseparated(*room);
                list.push_unseparated(")");
            }
            q.push(")");
            found.extend(q.build_query_as().fetch_all(&mut *tx).await?);
        }
        for (tenant, room, seq) in &found {
            if let Some(v) = last.get_mut(&(tenant.as_str(), room.as_str())) {
                *v = *seq;
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for m in batch {
            // Every batch key was inserted into `last` above.
            let seq = last
                .get_mut(&(m.key.tenant_str(), m.key.room.as_str()))
                .map_or(1, |s| {
                    *s += 1;
                    *s
                });
            out.push(rows::stored(m, seq));
        }
        for (chunk, stored) in batch
            .chunks(ROWS_PER_INSERT)
            .zip(out.chunks(ROWS_PER_INSERT))
        {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO chat_messages \
                 (tenant, room, seq, id, user_id, user_name, message, created_at) ",
            );
            q.push_values(chunk.iter().zip(stored), |mut row, (m, s)| {
                row.push_bind(m.key.tenant_str())
                    .push_bind(m.key.room.as_str())
                    .push_bind(s.seq)
                    .push_bind(&m.id)
                    .push_bind(m.user_id.as_str())
                    .push_bind(&m.user_name)
                    .push_bind(&m.message)
                    .push_bind(&m.timestamp);
            });
            q.build().execute(&mut *tx).await?;
        }
        let rooms: Vec<((&str, &str), i64)> = last.into_iter().collect();
        for chunk in rooms.chunks(ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO room_seq (tenant, room, last_seq) ");
            q.push_values(chunk, |mut row, ((tenant, room), seq)| {
                row.push_bind(*tenant).push_bind(*room).push_bind(*seq);
            });
            q.push(" ON CONFLICT (tenant, room) DO UPDATE SET last_seq = excluded.last_seq");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}

super::rows::impl_store!(SqliteStore);
