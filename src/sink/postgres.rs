//! Window aggregates into PostgreSQL, exactly once: each commit merges the
//! batch's partial aggregates into the rows (one UNNEST upsert, not row by
//! row) and stores the input offsets and watermarks in the same transaction.
//! A crash before the commit loses nothing (the batch is re-read from the
//! stored offsets); after it, nothing is counted twice (reading resumes there).

use sqlx::PgPool;

use crate::window::{Stats, Window};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configuration mistake: never spliced into SQL, never retried.
    #[error(
        "table name {0:?} is not allowed: use 1–63 lower-case letters, digits and underscores, starting with a letter or underscore"
    )]
    BadTableName(String),
    /// PostgreSQL is unreachable or refused the write; retrying may help.
    #[error("PostgreSQL write failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Another worker has claimed the partition since: this one must let go
    /// of it and re-read what it still owns.
    #[error("partition {partition} was claimed by another worker; nothing was written")]
    Fenced { partition: i32 },
}

impl SinkError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Database(_) | SinkError::Fenced { .. })
    }
}

/// A table identifier that is safe to quote into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(name: &str) -> Result<TableName, SinkError> {
        let mut chars = name.chars();
        let ok = name.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(TableName(name.to_string()))
        } else {
            Err(SinkError::BadTableName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// A window's partial aggregate since the last commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub device_id: String,
    pub sensor_type: String,
    pub window: Window,
    pub partial: Stats,
    pub is_final: bool,
}

/// Where a partition's reading continues, and its watermark, after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub next_offset: i64,
    pub watermark_ms: i64,
    /// The ownership epoch the writer claimed the partition with.
    pub epoch: i64,
}

/// A partition taken over: where to read from, the watermark so far, and the
/// epoch that commits must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub partition: i32,
    /// `None`: nothing committed yet, read from the beginning.
    pub next_offset: Option<i64>,
    pub watermark_ms: i64,
    pub epoch: i64,
}

/// A window turned final that had no new records: (device, sensor, window).
pub type ClosedRow = (String, String, Window);

pub struct WindowSink {
    pool: PgPool,
    table: TableName,
    group: String,
    topic: String,
}

impl WindowSink {
    pub fn new(pool: PgPool, table: &str, group: &str, topic: &str) -> Result<Self, SinkError> {
        Ok(Self {
            pool,
            table: TableName::parse(table)?,
            group: group.to_string(),
            topic: topic.to_string(),
        })
    }

    /// Merges `rows`, marks `closed` windows final and stores `positions`,
    /// all in one transaction.
    pub async fn commit(
        &self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
    ) -> Result<(), SinkError> {
        let mut tx = self.pool.begin().await?;
        if !rows.is_empty() {
            let col = |f: fn(&Row) -> String| rows.iter().map(f).collect::<Vec<_>>();
            let num = |f: fn(&Row) -> f64| rows.iter().map(f).collect::<Vec<_>>();
            let int = |f: fn(&Row) -> i64| rows.iter().map(f).collect::<Vec<_>>();
            let sql = format!(
                "INSERT INTO {t} AS t (device_id, sensor_type, window_start, window_end,
                                       count, sum, min, max, avg, is_final, updated_at)
                 SELECT d, s, 'epoch'::timestamptz + ws * interval '1 millisecond',
                        'epoch'::timestamptz + we * interval '1 millisecond',
                        c, su, mi, ma, su / c, f, now()
                   FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                               $6::float8[], $7::float8[], $8::float8[], $9::bool[])
                        AS u(d, s, ws, we, c, su, mi, ma, f)
                 ON CONFLICT (device_id, sensor_type, window_start, window_end) DO UPDATE SET
                    count = t.count + EXCLUDED.count,
                    sum = t.sum + EXCLUDED.sum,
                    min = LEAST(t.min, EXCLUDED.min),
                    max = GREATEST(t.max, EXCLUDED.max),
                    avg = (t.sum + EXCLUDED.sum) / (t.count + EXCLUDED.count),
                    is_final = t.is_final OR EXCLUDED.is_final,
                    updated_at = now()",
                t = self.table.quoted()
            );
            sqlx::query(&sql)
                .bind(col(|r| r.device_id.clone()))
                .bind(col(|r| r.sensor_type.clone()))
                .bind(int(|r| r.window.start_ms))
                .bind(int(|r| r.window.end_ms))
                .bind(int(|r| r.partial.count as i64))
                .bind(num(|r| r.partial.sum))
                .bind(num(|r| r.partial.min))
                .bind(num(|r| r.partial.max))
                .bind(rows.iter().map(|r| r.is_final).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        if !closed.is_empty() {
            let sql = format!(
                "UPDATE {t} AS t SET is_final = true, updated_at = now()
                   FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(d, s, ws, we)
                  WHERE t.device_id = u.d AND t.sensor_type = u.s
                    AND t.window_start = 'epoch'::timestamptz + u.ws * interval '1 millisecond'
                    AND t.window_end = 'epoch'::timestamptz + u.we * interval '1 millisecond'
                    AND NOT t.is_final",
                t = self.table.quoted()
            );
            sqlx::query(&sql)
                .bind(closed.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
                .bind(closed.iter().map(|c| c.1.clone()).collect::<Vec<_>>())
                .bind(closed.iter().map(|c| c.2.start_ms).collect::<Vec<_>>())
                .bind(closed.iter().map(|c| c.2.end_ms).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        if !positions.is_empty() {
            // Only while every epoch is still ours; otherwise roll back.
            let owned: Vec<i32> = sqlx::query_scalar(
                "UPDATE sluice_offsets AS t
                    SET next_offset = u.o,
                        watermark_ms = GREATEST(t.watermark_ms, u.w),
                        updated_at = now()
                   FROM UNNEST($3::int[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u(p, o, w, e)
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
            .fetch_all(&mut *tx)
            .await?;
            if let Some(lost) = positions.iter().find(|p| !owned.contains(&p.partition)) {
                tx.rollback().await?;
                return Err(SinkError::Fenced {
                    partition: lost.partition,
                });
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes over `partitions`: bumps each one's epoch (fencing the previous
    /// owner) and returns where reading continues.
    pub async fn claim(&self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
            "INSERT INTO sluice_offsets AS t (consumer_group, topic, partition, next_offset, watermark_ms, epoch)
             SELECT $1, $2, p, -1, $4, 1 FROM UNNEST($3::int[]) AS u(p)
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
                epoch = t.epoch + 1, updated_at = now()
             RETURNING partition, next_offset, watermark_ms, epoch",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partitions)
        .bind(i64::MIN)
        .fetch_all(&self.pool)
        .await?;
        let mut claims: Vec<Claim> = rows
            .into_iter()
            .map(|(partition, next, watermark_ms, epoch)| Claim {
                partition,
                next_offset: (next >= 0).then_some(next),
                watermark_ms,
                epoch,
            })
            .collect();
        claims.sort_by_key(|c| c.partition);
        Ok(claims)
    }

    /// The stored positions of these partitions (absent: never committed).
    pub async fn positions(&self, partitions: &[i32]) -> Result<Vec<Position>, SinkError> {
        let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
            "SELECT partition, next_offset, watermark_ms, epoch FROM sluice_offsets
              WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3)
                AND next_offset >= 0
              ORDER BY partition",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partitions)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(partition, next_offset, watermark_ms, epoch)| Position {
                partition,
                next_offset,
                watermark_ms,
                epoch,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_not_spliced() {
        for ok in ["sensor_window_aggregates", "_t1", "a"] {
            assert!(TableName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "t; DROP TABLE x",
            "a\"b",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(TableName::parse(bad), Err(SinkError::BadTableName(_))),
                "{bad}"
            );
        }
    }
}
