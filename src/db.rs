//! PostgreSQL connection and the migrations in `migrations/`, compiled into
//! the binary so `sluice migrate` works from any directory.

use std::time::Duration;

use sqlx::{
    Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::redact_url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is wrong (the user's to fix) or the server is down (retry helps).
    #[error("cannot connect to PostgreSQL at {url}: {cause}")]
    Connect { url: String, cause: String },
    /// A migration failed or the database has migrations this binary does not know.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub async fn connect(url: &str) -> Result<PgPool, DbError> {
    let fail = |cause: String| DbError::Connect {
        url: redact_url(url),
        cause: with_hint(cause),
    };
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| fail(e.to_string()))?;
    // One direct connection first: a pool only reports "timed out", while
    // this says "connection refused" or "password authentication failed".
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// What to check, for the refusals a user can fix.
fn with_hint(cause: String) -> String {
    let hint = if cause.contains("password authentication failed") {
        "check the user and password in DATABASE_URL"
    } else if cause.contains("certificate verify failed") {
        "check that sslrootcert names the CA that signed the server's certificate"
    } else if cause.contains("no encryption") {
        "the server takes TLS connections only: add sslmode=require (or verify-full with sslrootcert)"
    } else {
        return cause;
    };
    format!("{cause}; {hint}")
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
