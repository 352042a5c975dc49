//! A look at what a table holds, for the console: its newest windows or
//! rows as JSON-ready values, whichever database keeps it.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value as Json;

use super::{
    RowSpec, TableSpec,
    query::{self, Filter, QueryError, RowFilter},
};
use crate::{record::Cell, window::Value};

/// One stored window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub keys: BTreeMap<String, String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub values: BTreeMap<String, f64>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// One stored row and where its record was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowView {
    pub columns: serde_json::Map<String, Json>,
    pub partition: i32,
    pub offset: i64,
}

/// What a database shows of its tables.
pub trait Peek: Send + Sync {
    /// The newest `limit` windows of `spec`'s table, newest first.
    fn newest_windows<'a>(
        &'a self,
        spec: &'a TableSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WindowView>, QueryError>>;

    /// The newest `limit` rows of `spec`'s table, newest first.
    fn newest_rows<'a>(
        &'a self,
        spec: &'a RowSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RowView>, QueryError>>;
}

pub fn cell_json(c: &Cell) -> Json {
    match c {
        Cell::Text(s) => Json::String(s.clone()),
        Cell::Int(n) | Cell::TimeMs(n) => Json::from(*n),
        Cell::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Cell::Null => Json::Null,
    }
}

pub fn values(aggregates: &[(String, Value)]) -> BTreeMap<String, f64> {
    aggregates
        .iter()
        .map(|(n, v)| (n.clone(), v.as_f64()))
        .collect()
}

/// PostgreSQL's tables, through the queries `sluice windows query` and
/// `sluice readings query` run.
impl Peek for super::postgres::Postgres {
    fn newest_windows<'a>(
        &'a self,
        spec: &'a TableSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WindowView>, QueryError>> {
        Box::pin(async move {
            let f = Filter {
                limit: limit as i64,
                ..Filter::default()
            };
            Ok(query::query(self.pool(), spec, &f)
                .await?
                .into_iter()
                .map(|r| WindowView {
                    keys: r.keys.into_iter().collect(),
                    start_ms: r.window_start.timestamp_millis(),
                    end_ms: r.window_end.timestamp_millis(),
                    values: values(&r.aggregates),
                    is_final: r.is_final,
                })
                .collect())
        })
    }

    fn newest_rows<'a>(
        &'a self,
        spec: &'a RowSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RowView>, QueryError>> {
        Box::pin(async move {
            let f = RowFilter {
                limit: limit as i64,
                ..RowFilter::default()
            };
            Ok(query::query_rows(self.pool(), spec, &f)
                .await?
                .into_iter()
                .map(|r| RowView {
                    columns: r
                        .columns
                        .iter()
                        .map(|(n, c)| (n.clone(), cell_json(c)))
                        .collect(),
                    partition: r.source_partition,
                    offset: r.source_offset,
                })
                .collect())
        })
    }
}

/// This process's memory: what the in-memory tables keep.
impl Peek for super::memory::InMemory {
    fn newest_windows<'a>(
        &'a self,
        spec: &'a TableSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WindowView>, QueryError>> {
        let mut rows = self.0.windows_in(spec.table.as_str());
        rows.sort_by(|a, b| (b.window.start_ms, &a.key).cmp(&(a.window.start_ms, &b.key)));
        rows.truncate(limit);
        let views = rows
            .into_iter()
            .map(|r| WindowView {
                keys: r.key.into_iter().collect(),
                start_ms: r.window.start_ms,
                end_ms: r.window.end_ms,
                values: values(&r.aggregates),
                is_final: r.is_final,
            })
            .collect();
        Box::pin(async move { Ok(views) })
    }

    fn newest_rows<'a>(
        &'a self,
        spec: &'a RowSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RowView>, QueryError>> {
        let names = spec.names();
        let views = self
            .0
            .row_tables(limit)
            .into_iter()
            .find(|(name, ..)| name == spec.table.as_str())
            .map(|(_, _, _, rows)| {
                rows.into_iter()
                    .map(|r| RowView {
                        columns: names
                            .iter()
                            .zip(&r.cells)
                            .map(|(n, c)| (n.to_string(), cell_json(c)))
                            .collect(),
                        partition: r.partition,
                        offset: r.offset,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(views) })
    }
}
