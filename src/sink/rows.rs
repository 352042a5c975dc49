//! Every record as a row of a table, exactly once: each commit inserts the
//! unit's rows and stores the input positions in one transaction of the
//! table's database, so a crash before it loses nothing (the records are
//! read again from the stored positions) and one after it stores nothing
//! twice. A row is keyed by the record's source partition and offset, and
//! stamped with `ingested_at`; or, in a table `keyed_by` columns of its
//! own (a table's updates, such as a count's), each key's row is upserted:
//! the latest record's row, stamped with `updated_at`. The sink itself is
//! the database's (`postgres`, `memory`); this is its declaration.

use std::{fmt::Display, sync::Arc};

use super::{OpenSink, Sink, SinkEnv, SinkError, SqlType, TableName};
use crate::{
    operator::At,
    topology::{Cell, Domain, Ended, FailureKind, Payload, SinkDesc, Stream, ops::Ops},
};

use crate::topology::refused;

/// The columns every row table has after its own.
pub const SOURCE_PARTITION: &str = "source_partition";
pub const SOURCE_OFFSET: &str = "source_offset";
pub const INGESTED_AT: &str = "ingested_at";
/// The column a keyed table has after its own.
pub const UPDATED_AT: &str = "updated_at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: TableName,
    pub sql: SqlType,
    pub nullable: bool,
}

/// A row table's shape: its columns, in the order a topology's rows give
/// them, and the columns indexed for "this key over this time range".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    pub table: TableName,
    /// The database it lives in, by name (`DEFAULT_DATABASE` unless `in_database` says).
    pub database: String,
    pub columns: Vec<Column>,
    /// (key column, time column), by position.
    pub index: Option<(usize, usize)>,
    /// The columns that key a row, by position; none: each record's row
    /// is a row of its own (keyed by its source position).
    pub key: Vec<usize>,
}

impl RowSpec {
    pub fn new(table: &str) -> Result<RowSpec, String> {
        Ok(RowSpec {
            table: TableName::parse(table)?,
            database: super::DEFAULT_DATABASE.to_string(),
            columns: Vec::new(),
            index: None,
            key: Vec::new(),
        })
    }

    /// Keeps the table in the database run under `name`.
    pub fn in_database(mut self, name: &str) -> RowSpec {
        self.database = name.to_string();
        self
    }

    /// Adds a column that takes no nulls.
    pub fn column(self, name: &str, sql: SqlType) -> Result<RowSpec, String> {
        self.add(name, sql, false)
    }

    /// Adds a column that may be null.
    pub fn nullable(self, name: &str, sql: SqlType) -> Result<RowSpec, String> {
        self.add(name, sql, true)
    }

    fn add(mut self, name: &str, sql: SqlType, nullable: bool) -> Result<RowSpec, String> {
        let name = TableName::parse(name)?;
        let taken = self.columns.iter().any(|c| c.name == name)
            || [SOURCE_PARTITION, SOURCE_OFFSET, INGESTED_AT].contains(&name.as_str());
        if taken {
            return Err(format!(
                "column {} appears twice (or is one sluice adds: {SOURCE_PARTITION}, {SOURCE_OFFSET}, {INGESTED_AT})",
                name.as_str()
            ));
        }
        self.columns.push(Column {
            name,
            sql,
            nullable,
        });
        Ok(self)
    }

    /// Indexes (`key`, `time`) and (`time`): a key's rows over a time range,
    /// and every row in one.
    pub fn indexed(mut self, key: &str, time: &str) -> Result<RowSpec, String> {
        let at = |name: &str| {
            self.columns
                .iter()
                .position(|c| c.name.as_str() == name)
                .ok_or_else(|| format!("index column {name} is not a column of the table"))
        };
        let (k, t) = (at(key)?, at(time)?);
        if self.columns[t].sql != SqlType::Timestamp {
            return Err(format!("index column {time} is no timestamp column"));
        }
        self.index = Some((k, t));
        Ok(self)
    }

    /// Keys the table by `columns` (its primary key): a record's row
    /// replaces the row of its key (an upsert), so the table holds each
    /// key's latest row, with the time it was written (`updated_at`).
    pub fn keyed_by(mut self, columns: &[&str]) -> Result<RowSpec, String> {
        if columns.is_empty() {
            return Err("a table keyed by no columns: name at least one".into());
        }
        if self.columns.iter().any(|c| c.name.as_str() == UPDATED_AT) {
            return Err(format!(
                "column {UPDATED_AT} is one sluice adds to a keyed table"
            ));
        }
        let mut key = Vec::new();
        for name in columns {
            let at = (self.columns.iter())
                .position(|c| c.name.as_str() == *name)
                .ok_or_else(|| format!("key column {name} is not a column of the table"))?;
            if self.columns[at].nullable {
                return Err(format!(
                    "key column {name} may be null; a key takes no null"
                ));
            }
            if key.contains(&at) {
                return Err(format!("key column {name} appears twice"));
            }
            key.push(at);
        }
        self.key = key;
        Ok(self)
    }

    /// Whether a row replaces its key's (`keyed_by`).
    pub fn is_keyed(&self) -> bool {
        !self.key.is_empty()
    }

    /// A row's key, as text (for keeping one row per key).
    pub fn key_of(&self, cells: &[Cell]) -> String {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|&i| format!("{:?}", cells[i]))
            .collect();
        key.join("\u{1f}")
    }

    /// Whether `cells` make a row of this table.
    pub fn fits(&self, cells: &[Cell]) -> Result<(), String> {
        if cells.len() != self.columns.len() {
            return Err(format!(
                "the row has {} value(s) but table {} has {} column(s)",
                cells.len(),
                self.table.as_str(),
                self.columns.len()
            ));
        }
        for (c, cell) in self.columns.iter().zip(cells) {
            let ok = match (c.sql, cell) {
                (_, Cell::Null) => c.nullable,
                (SqlType::Text, Cell::Text(_))
                | (SqlType::BigInt, Cell::Int(_))
                | (SqlType::Float8, Cell::Float(_) | Cell::Int(_))
                | (SqlType::Timestamp, Cell::TimeMs(_)) => true,
                _ => false,
            };
            if !ok {
                return Err(match cell {
                    Cell::Null => format!("column {} takes no null", c.name.as_str()),
                    _ => format!(
                        "column {} is {} but the value is {cell:?}",
                        c.name.as_str(),
                        c.sql.sql()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The column names, for listings.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Ends a stream in a row table.
pub trait ToTable<T> {
    /// Stores one row per record, made by `row`, in `table` (created from
    /// it if missing) of the database the table names, exactly once: the
    /// rows and the input positions commit in one transaction there. A row
    /// that does not fit the table sends its record to the dead-letter
    /// topic with the reason; so does a record that makes more than one row
    /// (a row is keyed by its record's partition and offset), unless the
    /// table is `keyed_by` columns of its own: then each row replaces its
    /// key's, in the same transaction.
    fn to_table<F>(self, table: RowSpec, row: F) -> Ended
    where
        F: Fn(&T) -> Vec<Cell> + Send + Sync + 'static;
}

impl<S, T, O> ToTable<T> for Stream<S, T, O>
where
    S: 'static,
    T: Send + 'static,
    O: Ops<S, T>,
{
    fn to_table<F>(self, table: RowSpec, row: F) -> Ended
    where
        F: Fn(&T) -> Vec<Cell> + Send + Sync + 'static,
    {
        let table = Arc::new(table);
        let per = if table.is_keyed() {
            "a row per key, upserted"
        } else {
            "a row per record"
        };
        let desc = SinkDesc {
            label: format!("table {} ({per})", table.table.as_str()),
            topics: Vec::new(),
            domain: Domain::Database(table.database.clone()),
            guarantee: String::new(),
        };
        let shape = table.clone();
        let operator = format!("row({})", table.names().join(", "));
        self.into_sink(Arc::new(RowsSpec { table }), desc, move |item, _| {
            let cells = row(&item.value);
            shape
                .fits(&cells)
                .map_err(|e| refused(&operator, FailureKind::Validation, e))?;
            Ok(Payload::Value(Box::new(cells)))
        })
    }
}

/// A row table's declaration.
pub struct RowsSpec {
    pub table: Arc<RowSpec>,
}

impl OpenSink for RowsSpec {
    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        env.database(self.table.table.as_str())?
            .row_table(self.table.clone())
    }

    fn one_per_record(&self) -> bool {
        !self.table.is_keyed()
    }

    fn table(&self) -> Option<super::Table> {
        Some(super::Table::Rows(self.table.clone()))
    }
}

/// A row with the input record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedRow {
    pub partition: i32,
    pub offset: i64,
    pub cells: Vec<Cell>,
}

/// Takes a row payload as a `SourcedRow`.
pub fn sourced(payload: &mut Payload, at: At) -> Option<SourcedRow> {
    Some(SourcedRow {
        partition: at.partition,
        offset: at.offset,
        cells: payload.take::<Vec<Cell>>()?,
    })
}

/// Each key's last row of `rows`, in the order of those last rows (one
/// upsert may touch a row once).
pub fn latest_per_key(spec: &RowSpec, rows: Vec<SourcedRow>) -> Vec<SourcedRow> {
    let mut last = std::collections::HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        last.insert(spec.key_of(&r.cells), i);
    }
    (rows.into_iter().enumerate())
        .filter(|(i, r)| last.get(&spec.key_of(&r.cells)) == Some(i))
        .map(|(_, r)| r)
        .collect()
}

/// A value for a row table from anything displayable (enums as text).
pub fn text(v: impl Display) -> Cell {
    Cell::Text(v.to_string())
}
