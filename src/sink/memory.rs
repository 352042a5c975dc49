//! Tables kept in this process, with the same merge rules, positions and
//! all-or-nothing commits as PostgreSQL; for running without a database
//! (the demo) and for showing the latest windows live. Row tables keep
//! their newest rows only (`KEPT_ROWS`), and a count of all.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use super::{
    Claim, Group, SinkError, TableSpec,
    kafka::Txn,
    rows::{RowSpec, RowStore, SourcedRow},
    table::Value,
    window::{ClosedRow, Position, Row, WindowTable},
};

/// The rows a row table keeps in memory.
pub const KEPT_ROWS: usize = 1000;
use crate::{
    topology::WindowKey,
    window::{Aggregate, Combined, Window},
};

/// One row of an in-memory table, with its table's column names.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// (column, value) per key column.
    pub key: Vec<(String, String)>,
    pub window: Window,
    /// (column, value) per aggregate column, derived ones included.
    pub aggregates: Vec<(String, Value)>,
    pub is_final: bool,
}

type Rows = BTreeMap<(WindowKey, Window), (Combined, bool)>;

/// A partition's stored position, as `sluice_offsets` keeps it.
type Stored = (i64, i64, i64, i64);

#[derive(Default)]
struct Inner {
    /// table → rows, and the table's spec.
    tables: HashMap<String, (Arc<TableSpec>, Rows)>,
    /// table → its newest rows, and how many it was given in all.
    rows: HashMap<String, (Arc<RowSpec>, VecDeque<SourcedRow>, u64)>,
    /// (group, topic, partition) → (resume offset or -1, watermark, epoch,
    /// processed up to or -1)
    offsets: HashMap<(String, String, i32), Stored>,
}

impl Inner {
    fn claim(&mut self, group: &str, topic: &str, partitions: &[i32]) -> Vec<Claim> {
        partitions
            .iter()
            .map(|&p| {
                let e = self
                    .offsets
                    .entry((group.to_string(), topic.to_string(), p))
                    .or_insert((-1, i64::MIN, 0, -1));
                e.2 += 1;
                Claim {
                    partition: p,
                    next_offset: (e.0 >= 0).then_some(e.0),
                    watermark_ms: e.1,
                    epoch: e.2,
                    processed: e.3,
                }
            })
            .collect()
    }

    /// Checks every epoch first (all or nothing), then stores the positions
    /// once `write` has succeeded.
    fn commit<T>(
        &mut self,
        group: &str,
        topic: &str,
        positions: &[Position],
        write: impl FnOnce(&mut Inner) -> T,
    ) -> Result<T, SinkError> {
        let key = |p: &Position| (group.to_string(), topic.to_string(), p.partition);
        if let Some(lost) = positions
            .iter()
            .find(|p| self.offsets.get(&key(p)).map(|o| o.2) != Some(p.epoch))
        {
            return Err(SinkError::Fenced {
                partition: lost.partition,
            });
        }
        let written = write(self);
        for p in positions {
            if let Some(o) = self.offsets.get_mut(&key(p)) {
                o.0 = p.resume_offset;
                o.1 = o.1.max(p.watermark_ms);
                o.3 = o.3.max(p.next_offset);
            }
        }
        Ok(written)
    }
}

#[derive(Default)]
pub struct MemoryTables {
    inner: Mutex<Inner>,
}

impl MemoryTables {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One table as one consumer group reading one topic sees it.
    pub fn scoped(self: &Arc<Self>, spec: Arc<TableSpec>, group: &str, topic: &str) -> Scoped {
        let table = spec.table.as_str().to_string();
        let finals_only = spec.finals_only();
        self.lock()
            .tables
            .entry(table.clone())
            .or_insert_with(|| (spec, Rows::new()));
        Scoped {
            finals_only,
            windows: self.clone(),
            table,
            group: group.to_string(),
            topic: topic.to_string(),
        }
    }

    /// One row table as one consumer group reading one topic sees it.
    pub fn rows(self: &Arc<Self>, spec: Arc<RowSpec>, group: &str, topic: &str) -> ScopedRows {
        let table = spec.table.as_str().to_string();
        self.lock()
            .rows
            .entry(table.clone())
            .or_insert_with(|| (spec, VecDeque::new(), 0));
        ScopedRows {
            tables: self.clone(),
            table,
            group: group.to_string(),
            topic: topic.to_string(),
        }
    }

    /// Each row table: its name, its columns, the rows it was given, and
    /// the newest `n` rows, newest first.
    pub fn row_tables(&self, n: usize) -> Vec<(String, Vec<String>, u64, Vec<SourcedRow>)> {
        let inner = self.lock();
        let mut tables: Vec<_> = inner
            .rows
            .iter()
            .map(|(name, (spec, kept, total))| {
                let columns = spec.names().into_iter().map(str::to_string).collect();
                let newest = kept.iter().rev().take(n).cloned().collect();
                (name.clone(), columns, *total, newest)
            })
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }

    /// The `n` rows of every table with the latest windows, newest first.
    pub fn latest(&self, n: usize) -> Vec<StoredRow> {
        let inner = self.lock();
        let mut rows: Vec<StoredRow> = inner
            .tables
            .values()
            .flat_map(|(spec, rows)| {
                rows.iter().map(move |((key, w), (stats, f))| StoredRow {
                    key: spec
                        .keys
                        .iter()
                        .zip(key)
                        .map(|(c, v)| (c.name.as_str().to_string(), v.to_string()))
                        .collect(),
                    window: *w,
                    aggregates: spec.all_values(stats),
                    is_final: *f,
                })
            })
            .collect();
        rows.sort_by(|a, b| (b.window.start_ms, &a.key).cmp(&(a.window.start_ms, &b.key)));
        rows.truncate(n);
        rows
    }

    /// Rows marked final.
    pub fn finals(&self) -> usize {
        let inner = self.lock();
        inner
            .tables
            .values()
            .map(|(_, rows)| rows.values().filter(|(_, f)| *f).count())
            .sum()
    }

    pub fn len(&self) -> usize {
        self.lock()
            .tables
            .values()
            .map(|(_, rows)| rows.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Scoped {
    windows: Arc<MemoryTables>,
    finals_only: bool,
    table: String,
    group: String,
    topic: String,
}

impl WindowTable for Scoped {
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        Ok(self
            .windows
            .lock()
            .claim(&self.group, &self.topic, partitions))
    }

    fn commit(
        &mut self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
        letters: &mut Txn,
        _: &dyn Group,
    ) -> Result<(), SinkError> {
        letters.flush().map_err(SinkError::Letters)?;
        let mut inner = self.windows.lock();
        inner.commit(&self.group, &self.topic, positions, |inner| {
            let table = &mut inner
                .tables
                .get_mut(&self.table)
                .expect("scoped tables exist")
                .1;
            for r in rows {
                let e = table
                    .entry((r.key.clone(), r.window))
                    .or_insert((Combined::default(), false));
                e.0.merge(&r.partial);
                e.1 |= r.is_final;
            }
            for (k, w) in closed {
                if let Some(e) = table.get_mut(&(k.clone(), *w)) {
                    e.1 = true;
                }
            }
        })
    }

    fn finals_only(&self) -> bool {
        self.finals_only
    }
}

/// One row table as one consumer group reading one topic sees it.
pub struct ScopedRows {
    tables: Arc<MemoryTables>,
    table: String,
    group: String,
    topic: String,
}

impl RowStore for ScopedRows {
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        Ok(self
            .tables
            .lock()
            .claim(&self.group, &self.topic, partitions))
    }

    fn commit(&mut self, rows: &[SourcedRow], positions: &[Position]) -> Result<u64, SinkError> {
        let mut inner = self.tables.lock();
        inner.commit(&self.group, &self.topic, positions, |inner| {
            let (_, kept, total) = inner
                .rows
                .get_mut(&self.table)
                .expect("scoped tables exist");
            kept.extend(rows.iter().cloned());
            let over = kept.len().saturating_sub(KEPT_ROWS);
            kept.drain(..over);
            *total += rows.len() as u64;
            rows.len() as u64
        })
    }
}
