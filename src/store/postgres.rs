//! PostgreSQL: the store for clusters. Per-room `seq` comes from a row-locked upsert, so
//! concurrent writers on several nodes never share or skip a number.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::domain::store::StoreError;

pub struct PostgresStore {
    pool: sqlx::PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

super::rows::impl_store!(PostgresStore);
