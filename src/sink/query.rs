//! Reading a table back, by its spec: what `sluice windows query` and
//! `sluice readings query` print.

use chrono::{DateTime, Utc};
use serde::{Serialize, ser::SerializeMap};
use sqlx::{PgPool, Row as _};

use super::{
    TableSpec,
    rows::{INGESTED_AT, RowSpec, SOURCE_OFFSET, SOURCE_PARTITION, UPDATED_AT},
    table::{SqlType, Value},
};
use crate::topology::Cell;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// (key column, value): only rows with this key value.
    pub keys: Vec<(String, String)>,
    /// Windows starting at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub until: Option<DateTime<Utc>>,
    pub final_only: bool,
    pub limit: i64,
}

/// One stored window, its columns in the table's order.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRow {
    pub keys: Vec<(String, String)>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub aggregates: Vec<(String, Value)>,
    pub is_final: bool,
    pub updated_at: DateTime<Utc>,
}

impl Serialize for QueryRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.keys.len() + self.aggregates.len() + 4))?;
        for (k, v) in &self.keys {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("window_start", &self.window_start)?;
        m.serialize_entry("window_end", &self.window_end)?;
        for (k, v) in &self.aggregates {
            match v {
                Value::Int(n) => m.serialize_entry(k, n)?,
                Value::Float(x) => m.serialize_entry(k, x)?,
            }
        }
        m.serialize_entry("is_final", &self.is_final)?;
        m.serialize_entry("updated_at", &self.updated_at)?;
        m.end()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The user asked for a column the table does not have.
    #[error("table {table} has no column {column} to filter by; its columns: {known}")]
    NoSuchKey {
        table: String,
        column: String,
        known: String,
    },
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// Newest windows first.
pub async fn query(
    pool: &PgPool,
    spec: &TableSpec,
    f: &Filter,
) -> Result<Vec<QueryRow>, QueryError> {
    let mut select: Vec<String> = spec
        .keys
        .iter()
        .map(|k| format!("{}::text", k.name.quoted()))
        .collect();
    select.extend(["window_start".into(), "window_end".into()]);
    select.extend(spec.aggregates.iter().map(|a| a.name.quoted()));
    select.extend(["is_final".into(), "updated_at".into()]);
    let mut conditions = vec![
        "($1::timestamptz IS NULL OR window_start >= $1)".to_string(),
        "($2::timestamptz IS NULL OR window_start < $2)".to_string(),
        "(NOT $3 OR is_final)".to_string(),
    ];
    for (i, (column, _)) in f.keys.iter().enumerate() {
        let Some(k) = spec.keys.iter().find(|k| k.name.as_str() == column) else {
            return Err(QueryError::NoSuchKey {
                table: spec.table.as_str().to_string(),
                column: column.clone(),
                known: spec
                    .keys
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        conditions.push(format!("{}::text = ${}", k.name.quoted(), i + 5));
    }
    let mut order = vec!["window_start DESC".to_string()];
    order.extend(spec.keys.iter().map(|k| k.name.quoted()));
    let sql = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT $4",
        select.join(", "),
        spec.table.quoted(),
        conditions.join(" AND "),
        order.join(", ")
    );
    let mut q = sqlx::query(&sql)
        .bind(f.since)
        .bind(f.until)
        .bind(f.final_only)
        .bind(f.limit);
    for (_, value) in &f.keys {
        q = q.bind(value);
    }
    let rows = q.fetch_all(pool).await?;
    let n_keys = spec.keys.len();
    rows.iter()
        .map(|row| {
            let keys = spec
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| Ok((k.name.as_str().to_string(), row.try_get::<String, _>(i)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let mut aggregates = Vec::new();
            for (i, a) in spec.aggregates.iter().enumerate() {
                let at = n_keys + 2 + i;
                let v = match a.sql {
                    SqlType::BigInt => Value::Int(row.try_get::<i64, _>(at)?),
                    _ => Value::Float(row.try_get::<f64, _>(at)?),
                };
                aggregates.push((a.name.as_str().to_string(), v));
            }
            let tail = n_keys + 2 + spec.aggregates.len();
            Ok(QueryRow {
                keys,
                window_start: row.try_get(n_keys)?,
                window_end: row.try_get(n_keys + 1)?,
                aggregates,
                is_final: row.try_get(tail)?,
                updated_at: row.try_get(tail + 1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(QueryError::Database)
}

/// Which rows of a row table to read.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    /// (column, value): only rows whose column, as text, is the value.
    pub equals: Vec<(String, String)>,
    /// Rows at or after this instant, by the table's indexed time column
    /// (`ingested_at` for a table without one).
    pub since: Option<DateTime<Utc>>,
    /// Rows before this instant.
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One stored row, its columns in the table's order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRecord {
    pub columns: Vec<(String, Cell)>,
    /// -1 (with the offset) for a keyed table's row, which many records made.
    pub source_partition: i32,
    pub source_offset: i64,
    /// When it was written (`updated_at` for a keyed table's row).
    pub ingested_at: DateTime<Utc>,
}

impl RowRecord {
    /// An instant as listings show it: RFC 3339 in UTC, to the microsecond
    /// PostgreSQL keeps.
    pub fn time(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// A column's value as a listing shows it (times in RFC 3339).
    pub fn text(cell: &Cell) -> String {
        match cell {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Float(x) => x.to_string(),
            Cell::TimeMs(ms) => DateTime::<Utc>::from_timestamp_millis(*ms)
                .map(RowRecord::time)
                .unwrap_or_else(|| ms.to_string()),
            Cell::Null => String::new(),
        }
    }
}

impl Serialize for RowRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.columns.len() + 3))?;
        for (k, v) in &self.columns {
            match v {
                Cell::Int(n) => m.serialize_entry(k, n)?,
                Cell::Float(x) => m.serialize_entry(k, x)?,
                Cell::Null => m.serialize_entry(k, &())?,
                other => m.serialize_entry(k, &RowRecord::text(other))?,
            }
        }
        m.serialize_entry(SOURCE_PARTITION, &self.source_partition)?;
        m.serialize_entry(SOURCE_OFFSET, &self.source_offset)?;
        m.serialize_entry(INGESTED_AT, &RowRecord::time(self.ingested_at))?;
        m.end()
    }
}

/// Newest rows first, by the indexed time column.
pub async fn query_rows(
    pool: &PgPool,
    spec: &RowSpec,
    f: &RowFilter,
) -> Result<Vec<RowRecord>, QueryError> {
    let mut select: Vec<String> = spec
        .columns
        .iter()
        .map(|c| match c.sql {
            SqlType::Timestamp => {
                format!("(extract(epoch FROM {0}) * 1000)::bigint", c.name.quoted())
            }
            _ => c.name.quoted(),
        })
        .collect();
    // A keyed table's row is each key's latest: no source position, the
    // time it was written instead of ingested (-1: no position).
    let (sourced, stamp) = if spec.is_keyed() {
        ("-1, -1::bigint".to_string(), UPDATED_AT)
    } else {
        (format!("{SOURCE_PARTITION}, {SOURCE_OFFSET}"), INGESTED_AT)
    };
    select.extend([sourced, stamp.to_string()]);
    let time = spec
        .index
        .map(|(_, t)| spec.columns[t].name.quoted())
        .unwrap_or_else(|| stamp.to_string());
    let order = if spec.is_keyed() {
        String::new()
    } else {
        format!(", {SOURCE_PARTITION}, {SOURCE_OFFSET}")
    };
    let mut conditions = vec![
        format!("($1::timestamptz IS NULL OR {time} >= $1)"),
        format!("($2::timestamptz IS NULL OR {time} < $2)"),
    ];
    for (i, (column, _)) in f.equals.iter().enumerate() {
        let Some(c) = spec.columns.iter().find(|c| c.name.as_str() == column) else {
            return Err(QueryError::NoSuchKey {
                table: spec.table.as_str().to_string(),
                column: column.clone(),
                known: spec.names().join(", "),
            });
        };
        conditions.push(format!("{}::text = ${}", c.name.quoted(), i + 4));
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {time} DESC{order} LIMIT $3",
        select.join(", "),
        spec.table.quoted(),
        conditions.join(" AND "),
    );
    let mut q = sqlx::query(&sql).bind(f.since).bind(f.until).bind(f.limit);
    for (_, value) in &f.equals {
        q = q.bind(value);
    }
    let rows = q.fetch_all(pool).await?;
    let n = spec.columns.len();
    rows.iter()
        .map(|row| {
            let mut columns = Vec::with_capacity(n);
            for (i, c) in spec.columns.iter().enumerate() {
                let cell = match c.sql {
                    SqlType::Text => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
                    SqlType::BigInt => row.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
                    SqlType::Float8 => row.try_get::<Option<f64>, _>(i)?.map(Cell::Float),
                    SqlType::Timestamp => row.try_get::<Option<i64>, _>(i)?.map(Cell::TimeMs),
                };
                columns.push((c.name.as_str().to_string(), cell.unwrap_or(Cell::Null)));
            }
            Ok(RowRecord {
                columns,
                source_partition: row.try_get(n)?,
                source_offset: row.try_get(n + 1)?,
                ingested_at: row.try_get(n + 2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(QueryError::Database)
}
