//! Every record as a row of a PostgreSQL table, exactly once: each commit
//! inserts the unit's rows and stores the input positions in one SQL
//! transaction (see `offsets`), so a crash before it loses nothing (the
//! records are read again from the stored positions) and one after it
//! stores nothing twice. A row is keyed by the record's source partition
//! and offset, and stamped with `ingested_at`. Dead letters go out before
//! the SQL commit, at least once. Without a database (`sluice demo`) the
//! newest rows are kept in memory.

use std::{
    collections::BTreeMap,
    fmt::Display,
    sync::{Arc, atomic::Ordering},
};

use serde::de::DeserializeOwned;

use super::{
    Claim, DeadLetter, Group, Rewind, Sink, SinkEnv, SinkError, SinkSpec, SqlType, Stores,
    TableName, Topology, Unit, WriteError, Written, kafka::Txn, rows_pg::PgRows, window::Position,
};
use crate::{
    stats::{Stats, Timings},
    topology::{BuildError, Cell, Emitted, Ops, Stream},
};

/// The columns every row table has after its own.
pub const SOURCE_PARTITION: &str = "source_partition";
pub const SOURCE_OFFSET: &str = "source_offset";
pub const INGESTED_AT: &str = "ingested_at";

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
    pub columns: Vec<Column>,
    /// (key column, time column), by position.
    pub index: Option<(usize, usize)>,
}

impl RowSpec {
    pub fn new(table: &str) -> Result<RowSpec, String> {
        Ok(RowSpec {
            table: TableName::parse(table)?,
            columns: Vec::new(),
            index: None,
        })
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

/// Finishes a stream with a row table.
pub trait ToTable<T> {
    /// Stores one row per record, made by `row`, in `table` (created from
    /// it if missing), exactly once, and finishes the declaration. A row
    /// that does not fit the table sends its record to the dead-letter
    /// topic with the reason.
    fn to_table<F>(self, table: RowSpec, row: F) -> Result<Topology, BuildError>
    where
        F: Fn(&T) -> Vec<Cell> + Send + Sync + 'static;
}

impl<S, T, O> ToTable<T> for Stream<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
    O: Ops<S, T>,
{
    fn to_table<F>(self, table: RowSpec, row: F) -> Result<Topology, BuildError>
    where
        F: Fn(&T) -> Vec<Cell> + Send + Sync + 'static,
    {
        let table = Arc::new(table);
        let shape = table.clone();
        let declared = self.rows_of(&table.names().join(", "), move |t| {
            let cells = row(t);
            shape.fits(&cells).map(|()| cells)
        })?;
        Ok(Topology::new(declared, Arc::new(RowsSinkSpec { table })))
    }
}

/// The declaration of a row table sink.
pub struct RowsSinkSpec {
    pub table: Arc<RowSpec>,
}

impl SinkSpec for RowsSinkSpec {
    fn describe(&self) -> String {
        format!("postgres:{}", self.table.table.as_str())
    }

    fn topics(&self) -> Vec<String> {
        Vec::new()
    }

    fn guarantee(&self) -> &'static str {
        "exactly-once (offsets in the same PostgreSQL transaction as the rows)"
    }

    fn needs_store(&self) -> bool {
        true
    }

    fn rows(&self) -> Option<Arc<RowSpec>> {
        Some(self.table.clone())
    }

    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        let letters = Txn::new(env.kafka, None, env.topology, env.stats.clone())?;
        let (stats, timings) = (env.stats.clone(), env.timings.clone());
        let spec = self.table.clone();
        Ok(match env.stores {
            Some(Stores::Postgres(pool)) => {
                let store = PgRows::new(pool.clone(), spec, env.group, env.source);
                Box::new(RowsSink::new(store, letters, env.topology, stats, timings))
            }
            Some(Stores::Memory(m)) => {
                let store = m.rows(spec, env.group, env.source);
                Box::new(RowsSink::new(store, letters, env.topology, stats, timings))
            }
            None => {
                return Err(SinkError::Config(format!(
                    "topology {} writes rows to PostgreSQL: set DATABASE_URL (or --database-url)",
                    env.topology
                )));
            }
        })
    }
}

/// A row with the input record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedRow {
    pub partition: i32,
    pub offset: i64,
    pub cells: Vec<Cell>,
}

/// Where a row sink stores its rows and keeps its positions. `commit` is
/// all or nothing; it gives the rows it inserted (fewer than given when
/// some were stored before, under positions since lost).
pub trait RowStore: Send {
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError>;
    fn commit(&mut self, rows: &[SourcedRow], positions: &[Position]) -> Result<u64, SinkError>;
}

/// A claimed partition: its epoch, and the next offset to process (-1
/// until the first record when nothing was ever committed).
struct Part {
    epoch: i64,
    next: i64,
}

pub struct RowsSink<R> {
    store: R,
    parts: BTreeMap<i32, Part>,
    rows: Vec<SourcedRow>,
    letters: Txn,
    topology: String,
    stats: Arc<Stats>,
    timings: Timings,
}

impl<R: RowStore> RowsSink<R> {
    pub fn new(
        store: R,
        letters: Txn,
        topology: &str,
        stats: Arc<Stats>,
        timings: Timings,
    ) -> Self {
        Self {
            store,
            parts: BTreeMap::new(),
            rows: Vec::new(),
            letters,
            topology: topology.to_string(),
            stats,
            timings,
        }
    }

    fn positions(&self) -> Vec<Position> {
        self.parts
            .iter()
            .map(|(&partition, p)| Position {
                partition,
                next_offset: p.next,
                resume_offset: p.next,
                watermark_ms: i64::MIN,
                epoch: p.epoch,
            })
            .collect()
    }
}

impl<R: RowStore> Sink for RowsSink<R> {
    fn keeps_positions(&self) -> bool {
        true
    }

    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        let claims = self.store.claim(partitions)?;
        for c in &claims {
            let part = Part {
                epoch: c.epoch,
                next: c.next_offset.unwrap_or(-1),
            };
            self.parts.insert(c.partition, part);
        }
        Ok(claims)
    }

    fn write(
        &mut self,
        source: &super::Source<'_>,
        emitted: &[Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError> {
        // Not ours (yet, or any more): its owner reads it.
        let Some(part) = self.parts.get_mut(&source.partition) else {
            return Ok(Written::default());
        };
        part.next = source.offset + 1;
        let mut outputs = 0;
        for e in emitted {
            if let Emitted::Row(cells) = e {
                self.rows.push(SourcedRow {
                    partition: source.partition,
                    offset: source.offset,
                    cells: cells.clone(),
                });
                outputs += 1;
            }
        }
        if let Some(d) = dead
            && let Err(e) = self.letters.send_letter(d)
        {
            // Not flushed, so the commit fails and the record is read again.
            tracing::warn!(topology = %self.topology, error = %e, "cannot queue a dead letter");
            self.letters.poison(e);
        }
        Ok(Written {
            outputs,
            late: false,
        })
    }

    fn commit(&mut self, unit: &Unit, _: &dyn Group) -> Result<Option<u64>, SinkError> {
        if unit.is_empty() {
            return Ok(None);
        }
        crate::failpoint::hit("before-store-commit");
        self.letters.flush().map_err(SinkError::Letters)?;
        let write = std::time::Instant::now();
        let committed = self.store.commit(&self.rows, &self.positions());
        self.timings.postgres(write.elapsed());
        let inserted = committed?;
        crate::failpoint::hit("after-store-commit");
        let given = self.rows.len() as u64;
        if inserted < given {
            tracing::warn!(topology = %self.topology, rows = given - inserted, "rows were stored already (their positions were reset or lost); kept the stored ones");
        }
        self.stats
            .window_rows
            .fetch_add(inserted, Ordering::Relaxed);
        self.rows.clear();
        Ok(Some(0))
    }

    fn abort(&mut self, _: &Unit) -> Rewind {
        self.rows.clear();
        self.letters.abort();
        let parts = std::mem::take(&mut self.parts);
        Rewind::Claim(parts.into_keys().collect())
    }

    fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
        }
        self.rows.retain(|r| !partitions.contains(&r.partition));
    }
}

/// A value for a row table from anything displayable (enums as text).
pub fn text(v: impl Display) -> Cell {
    Cell::Text(v.to_string())
}
