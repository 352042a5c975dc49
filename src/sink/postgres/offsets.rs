//! Input positions kept in PostgreSQL (`sluice_offsets`), for topologies
//! that commit there: a partition is claimed on assignment by bumping its epoch,
//! which fences its previous owner, and every commit stores the positions
//! in the table's own transaction, only while each epoch is still the one
//! it claimed. So the rows and the offsets they came from always agree.

use sqlx::{PgPool, Postgres, Transaction};

use super::PgError;
use crate::commit::{Claim, Position};

/// The positions of one consumer group reading one topic.
#[derive(Debug, Clone)]
pub struct PgOffsets {
    pool: PgPool,
    group: String,
    topic: String,
}

impl PgOffsets {
    pub fn new(pool: PgPool, group: &str, topic: &str) -> Self {
        Self {
            pool,
            group: group.to_string(),
            topic: topic.to_string(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes over `partitions`: bumps each one's epoch (fencing the previous
    /// owner) and returns where reading continues.
    pub async fn claim(&self, partitions: &[i32]) -> Result<Vec<Claim>, PgError> {
        let rows: Vec<(i32, i64, i64, i64, i64)> = sqlx::query_as(
            "INSERT INTO sluice_offsets AS t (consumer_group, topic, partition, next_offset, watermark_ms, epoch)
             SELECT $1, $2, p, -1, $4, 1 FROM UNNEST($3::int[]) AS u(p)
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
                epoch = t.epoch + 1, updated_at = now()
             RETURNING partition, next_offset, watermark_ms, epoch, processed_offset",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partitions)
        .bind(i64::MIN)
        .fetch_all(&self.pool)
        .await?;
        let mut claims: Vec<Claim> = rows
            .into_iter()
            .map(|(partition, next, watermark_ms, epoch, processed)| Claim {
                partition,
                next_offset: (next >= 0).then_some(next),
                watermark_ms,
                epoch,
                processed,
            })
            .collect();
        claims.sort_by_key(|c| c.partition);
        Ok(claims)
    }

    /// Stores `positions` in `tx` (reading resumes at their resume offset);
    /// `Fenced` (and `tx` rolled back) if
    /// another worker has claimed one of the partitions since.
    pub async fn store(
        &self,
        mut tx: Transaction<'static, Postgres>,
        positions: &[Position],
    ) -> Result<Transaction<'static, Postgres>, PgError> {
        if positions.is_empty() {
            return Ok(tx);
        }
        let owned: Vec<i32> = sqlx::query_scalar(
            "UPDATE sluice_offsets AS t
                SET next_offset = u.r,
                    processed_offset = GREATEST(t.processed_offset, u.o),
                    watermark_ms = GREATEST(t.watermark_ms, u.w),
                    updated_at = now()
               FROM UNNEST($3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
                    AS u(p, o, w, e, r)
              WHERE t.consumer_group = $1 AND t.topic = $2
                AND t.partition = u.p AND t.epoch = u.e
              RETURNING t.partition",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(positions.iter().map(|p| p.partition).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.next_offset).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.watermark_ms).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.epoch).collect::<Vec<_>>())
        .bind(
            positions
                .iter()
                .map(|p| p.resume_offset)
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        if let Some(lost) = positions.iter().find(|p| !owned.contains(&p.partition)) {
            tx.rollback().await?;
            return Err(PgError::Fenced {
                partition: lost.partition,
            });
        }
        Ok(tx)
    }
}

/// Runs `statements` (a CREATE TABLE and its indexes) unless `table`
/// exists; one worker at a time, since concurrent CREATE TABLE IF NOT
/// EXISTS can still collide. Whether it created the table.
pub async fn ensure_table(
    pool: &PgPool,
    table: &str,
    statements: &[String],
) -> Result<bool, PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sluice:create:' || $1))")
        .bind(table)
        .execute(&mut *tx)
        .await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *tx)
        .await?;
    if exists.is_none() {
        for statement in statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(exists.is_none())
}
