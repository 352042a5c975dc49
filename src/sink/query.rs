//! Reading window aggregates back: what `sluice windows query` prints.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::postgres::{SinkError, TableName};

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub device: Option<String>,
    pub sensor_type: Option<String>,
    /// Windows starting at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub until: Option<DateTime<Utc>>,
    pub final_only: bool,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AggregateRow {
    pub device_id: String,
    pub sensor_type: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub is_final: bool,
    pub updated_at: DateTime<Utc>,
}

/// Newest windows first.
pub async fn query(pool: &PgPool, table: &str, f: &Filter) -> Result<Vec<AggregateRow>, SinkError> {
    let table = TableName::parse(table)?;
    let sql = format!(
        "SELECT device_id, sensor_type, window_start, window_end, count, sum, min, max, avg,
                is_final, updated_at
           FROM \"{}\"
          WHERE ($1::text IS NULL OR device_id = $1)
            AND ($2::text IS NULL OR sensor_type = $2)
            AND ($3::timestamptz IS NULL OR window_start >= $3)
            AND ($4::timestamptz IS NULL OR window_start < $4)
            AND (NOT $5 OR is_final)
          ORDER BY window_start DESC, device_id, sensor_type
          LIMIT $6",
        table.as_str()
    );
    Ok(sqlx::query_as(&sql)
        .bind(&f.device)
        .bind(&f.sensor_type)
        .bind(f.since)
        .bind(f.until)
        .bind(f.final_only)
        .bind(f.limit)
        .fetch_all(pool)
        .await?)
}
