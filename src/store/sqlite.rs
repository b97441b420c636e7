//! SQLite: the default store for one node. WAL with `synchronous=FULL`, so a commit is on disk
//! when it returns; the chat writer groups messages so a burst costs one fsync.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};

use super::rows;
use crate::domain::events::ChatMessage;
use crate::domain::store::{NewMessage, StoreError};

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    /// The chat writer's own connection, outside the pool: replay reads may hold every pooled
    /// connection for a while (up to `MAX_CONCURRENT_REPLAYS` of them wait for one), and a
    /// commit waiting behind them would hold up every sender's ack. `None` after a failure
    /// the connection may not survive; the next batch opens a new one.
    writer: tokio::sync::Mutex<Option<SqliteConnection>>,
    opts: SqliteConnectOptions,
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
            // Rows pass from sqlx's SQLite thread to the caller through a bounded channel; at
            // the default 50 a replay of 1,000 messages switched threads 20 times, on a core
            // the whole node shares.
            .row_buffer_size(ROW_CHANNEL)
            .busy_timeout(timeout);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed(Box::new(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // SQLite is in-process: nothing between two uses can break a connection, and the
            // ping before each use would be one more round trip to its thread for every call.
            .test_before_acquire(false)
            .acquire_timeout(timeout)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = opts.connect().await?;
        Ok(Self {
            pool,
            writer: tokio::sync::Mutex::new(Some(writer)),
            opts,
        })
    }
}

/// Rows in flight from the SQLite thread: a whole replay at the default `MAX_REPLAY` (1,000,
/// plus the one that says there are more). Each slot is a few pointers.
const ROW_CHANNEL: usize = 1024;

/// Rows per multi-row INSERT: 8 parameters each stays far below SQLite's 32,766.
const ROWS_PER_INSERT: usize = 1000;

impl SqliteStore {
    /// The batch on the writer's connection; one that failed (rather than refused) is closed
    /// and the next batch opens a new one.
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<ChatMessage>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.writer.lock().await;
        let conn = match &mut *writer {
            Some(conn) => conn,
            none => none.insert(self.opts.connect().await?),
        };
        let res = Self::append_on(conn, batch).await;
        if matches!(res, Err(StoreError::Failed(_))) {
            *writer = None;
        }
        res
    }

    /// A whole batch in four statements, whatever its size: `BEGIN IMMEDIATE` takes the write
    /// lock first (so the seqs read and written cannot interleave with another writer), one
    /// upsert moves every room's `last_seq` on by its count in the batch and returns the new
    /// values, from which each message's seq follows; then multi-row inserts and `COMMIT`.
    /// Statement count matters here: each is a round trip to sqlx's SQLite thread, and on a
    /// busy node each wakes the writer from another thread, which waits for its turn.
    async fn append_on(
        conn: &mut SqliteConnection,
        batch: &[NewMessage],
    ) -> Result<Vec<ChatMessage>, StoreError> {
        // Keyed by the stored strings, so rows read back match without re-parsing ids. First
        // each room's count in the batch, then (from the upsert) its new last seq. Counted from
        // the end, so each message also gets how many later ones its room has in the batch: the
        // last one's seq is the room's new last_seq, the one before it that minus one, and so on.
        let mut last: HashMap<(&str, &str), i64> = HashMap::new();
        let mut behind = vec![0i64; batch.len()];
        for (m, behind) in batch.iter().zip(behind.iter_mut()).rev() {
            let n = last
                .entry((m.key.tenant_str(), m.key.room.as_str()))
                .or_default();
            *behind = *n;
            *n += 1;
        }
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        // Declared before the loop so `last`'s keys (borrowed from the batch) can be probed
        // with borrows of these rows.
        let mut moved: Vec<(String, String, i64)> = Vec::with_capacity(last.len());
        let counts: Vec<((&str, &str), i64)> = last.iter().map(|(k, n)| (*k, *n)).collect();
        for chunk in counts.chunks(ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO room_seq (tenant, room, last_seq) ");
            q.push_values(chunk, |mut row, ((tenant, room), n)| {
                row.push_bind(*tenant).push_bind(*room).push_bind(*n);
            });
            q.push(
                " ON CONFLICT (tenant, room) DO UPDATE SET last_seq = room_seq.last_seq + \
                 excluded.last_seq RETURNING tenant, room, last_seq",
            );
            moved.extend(q.build_query_as().fetch_all(&mut *tx).await?);
        }
        if moved.len() != last.len() {
            return Err(StoreError::Failed(
                format!(
                    "room_seq upsert returned {} rows for {} rooms",
                    moved.len(),
                    last.len()
                )
                .into(),
            ));
        }
        for (tenant, room, seq) in &moved {
            if let Some(v) = last.get_mut(&(tenant.as_str(), room.as_str())) {
                *v = *seq;
            }
        }
        let out: Vec<ChatMessage> = batch
            .iter()
            .zip(&behind)
            .map(|(m, behind)| {
                let top = last
                    .get(&(m.key.tenant_str(), m.key.room.as_str()))
                    .copied()
                    .unwrap_or_default();
                rows::stored(m, top - behind)
            })
            .collect();
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
        tx.commit().await?;
        Ok(out)
    }
}

super::rows::impl_store!(SqliteStore);
