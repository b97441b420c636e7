//! The only place with SQL: the `Store` port for SQLite (default, one node) and PostgreSQL
//! (clusters). Each backend has its own append-only migrations under `migrations/`.

mod deadline;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::store::{Store, StoreError};

pub use deadline::TimedStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store `url` names, creating the schema on first start. Every call on the returned
/// store fails with `StoreError::Timeout` after `timeout` (`STORE_TIMEOUT_MS`).
pub async fn connect(url: &str, timeout: Duration) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url, timeout).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PostgresStore::connect(url, timeout).await?)
    } else {
        return Err(StoreError::UnsupportedUrl(redact_url(url)));
    };
    Ok(Arc::new(TimedStore::new(store, timeout)))
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
