//! Reading a window table back, by its spec: what `sluice windows query`
//! prints.

use chrono::{DateTime, Utc};
use serde::{Serialize, ser::SerializeMap};
use sqlx::{PgPool, Row as _};

use super::{
    SinkError, TableSpec,
    table::{SqlType, Value},
};

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
    #[error("table {table} has no key column {column}; its key columns: {known}")]
    NoSuchKey {
        table: String,
        column: String,
        known: String,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
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
    let rows = q.fetch_all(pool).await.map_err(SinkError::from)?;
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
        .map_err(|e| QueryError::Sink(SinkError::from(e)))
}
