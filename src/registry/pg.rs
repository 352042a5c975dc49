//! PostgreSQL storage for the registry. Every mutation takes one transaction
//! -scoped advisory lock, so several registry processes on one database
//! serialise their writes and agree on ids and version numbers.

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{
    model::{self, Level, ParsedSchema, RegisterPlan, VersionRecord, VersionSpec},
    store::{Result, Store},
};

/// Arbitrary constant naming the registry's advisory lock.
const LOCK_KEY: i64 = 0x5110_1ce0_5e67;

/// Subject under which the global config is stored (a real subject is never empty).
const GLOBAL: &str = "";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Uses a pool whose database has had `crate::db::migrate` applied.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn locked(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

async fn versions_in(conn: &mut sqlx::PgConnection, subject: &str) -> Result<Vec<VersionRecord>> {
    let rows = sqlx::query(
        "SELECT v.version, v.schema_id, s.schema_text, v.deleted
           FROM schema_registry_versions v
           JOIN schema_registry_schemas s ON s.id = v.schema_id
          WHERE v.subject = $1
          ORDER BY v.version",
    )
    .bind(subject)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| VersionRecord {
            version: r.get(0),
            id: r.get(1),
            schema: r.get(2),
            deleted: r.get(3),
        })
        .collect())
}

async fn config_in(conn: &mut sqlx::PgConnection, subject: &str) -> Result<Option<Level>> {
    let level: Option<String> =
        sqlx::query_scalar("SELECT compatibility FROM schema_registry_config WHERE subject = $1")
            .bind(subject)
            .fetch_optional(conn)
            .await?;
    level.map(|l| l.parse()).transpose()
}

#[async_trait]
impl Store for PgStore {
    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT subject FROM schema_registry_versions
              WHERE $1 OR NOT deleted GROUP BY subject ORDER BY subject",
        )
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn versions(&self, subject: &str) -> Result<Vec<VersionRecord>> {
        let mut conn = self.pool.acquire().await?;
        versions_in(&mut conn, subject).await
    }

    async fn schema_by_id(&self, id: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT schema_text FROM schema_registry_schemas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn usages(&self, id: i64, include_deleted: bool) -> Result<Vec<(String, i32)>> {
        Ok(sqlx::query_as(
            "SELECT subject, version FROM schema_registry_versions
              WHERE schema_id = $1 AND ($2 OR NOT deleted) ORDER BY subject, version",
        )
        .bind(id)
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>> {
        let mut conn = self.pool.acquire().await?;
        config_in(&mut conn, subject.unwrap_or(GLOBAL)).await
    }

    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<()> {
        sqlx::query(
            "INSERT INTO schema_registry_config (subject, compatibility) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility",
        )
        .bind(subject.unwrap_or(GLOBAL))
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_config(&self, subject: &str) -> Result<Option<Level>> {
        let old: Option<String> = sqlx::query_scalar(
            "DELETE FROM schema_registry_config WHERE subject = $1 RETURNING compatibility",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        old.map(|l| l.parse()).transpose()
    }

    async fn register(&self, subject: &str, schema: &ParsedSchema) -> Result<(i64, i32)> {
        let mut tx = self.locked().await?;
        let existing = versions_in(&mut tx, subject).await?;
        let level = match config_in(&mut tx, subject).await? {
            Some(l) => l,
            None => config_in(&mut tx, GLOBAL).await?.unwrap_or(Level::DEFAULT),
        };
        let version = match model::plan_register(subject, &existing, level, schema)? {
            RegisterPlan::Existing { id, version } => return Ok((id, version)),
            RegisterPlan::New { version } => version,
        };
        // The fingerprint carries the uniqueness: a b-tree cannot index long texts.
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM schema_registry_schemas
              WHERE fingerprint = sha256(convert_to($1, 'UTF8'))",
        )
        .bind(&schema.canonical)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match known {
            Some(id) => id,
            None => {
                sqlx::query_scalar(
                    "INSERT INTO schema_registry_schemas (id, fingerprint, schema_text)
                     SELECT COALESCE(MAX(id), 0) + 1, sha256(convert_to($1, 'UTF8')), $1
                       FROM schema_registry_schemas
                     RETURNING id",
                )
                .bind(&schema.canonical)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        sqlx::query(
            "INSERT INTO schema_registry_versions (subject, version, schema_id, deleted)
             VALUES ($1, $2, $3, false)",
        )
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((id, version))
    }

    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let mut tx = self.locked().await?;
        let existing = versions_in(&mut tx, subject).await?;
        let removed = model::plan_delete_subject(subject, &existing, permanent)?;
        if permanent {
            sqlx::query("DELETE FROM schema_registry_versions WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM schema_registry_config WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE schema_registry_versions SET deleted = true WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32> {
        let mut tx = self.locked().await?;
        let existing = versions_in(&mut tx, subject).await?;
        let version = model::plan_delete_version(subject, &existing, spec, permanent)?;
        let sql = if permanent {
            "DELETE FROM schema_registry_versions WHERE subject = $1 AND version = $2"
        } else {
            "UPDATE schema_registry_versions SET deleted = true WHERE subject = $1 AND version = $2"
        };
        sqlx::query(sql)
            .bind(subject)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }
}
