//! PostgreSQL connection and the migrations in `migrations/`, compiled into
//! the binary so `sluice migrate` works from any directory.

use std::time::Duration;

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::redact_url;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is wrong (the user's to fix) or the server is down (retry helps).
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed or the database has migrations this binary does not know.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub async fn connect(url: &str) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|source| DbError::Connect {
            url: redact_url(url),
            source,
        })
}

/// Applies pending migrations; safe to run from several processes at once
/// (sqlx serialises them with an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<Vec<i64>, DbError> {
    let before: std::collections::HashSet<i64> = applied(pool).await;
    MIGRATOR.run(pool).await?;
    let after = applied(pool).await;
    let mut new: Vec<i64> = after.difference(&before).copied().collect();
    new.sort_unstable();
    Ok(new)
}

async fn applied(pool: &PgPool) -> std::collections::HashSet<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}
