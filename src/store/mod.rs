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

/// The driver's errors, sorted into the kinds the domain acts on (a refusal is retried message
/// by message; anything else fails the batch).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(_) => Self::Refused(Box::new(e)),
            e => Self::Failed(Box::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(Box::new(e))
    }
}

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

/// The URL without its password (in the authority or a `password`-like query parameter, e.g.
/// `?password=` or `?sslpassword=`), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &base[..s + 3], &creds[..c], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
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
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?PassWord=s&sslpassword=k"),
            "postgres://u:***@h/db?PassWord=***&sslpassword=***"
        );
        // An '@' in the query is not taken for the end of the credentials.
        assert_eq!(
            redact_url("postgres://h/db?password=a@b"),
            "postgres://h/db?password=***"
        );
    }
}
