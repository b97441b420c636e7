//! The test PostgreSQL server (`TEST_POSTGRES_URL`, default the local one) for the integration
//! tests that need it: required under `CI=true`, skipped loudly elsewhere when it does not answer.

/// An admin pool on the test server and the server's URL; `None` (after saying which test is
/// skipped) when it does not answer outside CI.
pub async fn admin(what: &str) -> Option<(sqlx::PgPool, String)> {
    let base = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match sqlx::PgPool::connect(&base).await {
        Ok(p) => Some((p, base)),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required under CI=true but {base} does not answer: {e}");
            }
            eprintln!("\n*** SKIPPED: {what} ({base} does not answer: {e}) ***\n");
            None
        }
    }
}

/// `base` with every connection's `search_path` set to `schema`.
pub fn in_schema(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
