//! A database in this process: window and row tables with the same merge
//! rules, positions, claims and all-or-nothing commits as PostgreSQL; for
//! running without one (the demo, the test driver) and for showing the
//! latest windows live. Row tables keep their newest rows only
//! (`KEPT_ROWS`), and a count of all; a keyed table keeps each key's
//! latest row. Key-value stores of units that commit here keep their
//! changes here, with the positions.

use std::{
    any::Any,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use super::{
    Database, RowSpec, Sink, SinkError, TableSpec, UnitWriter,
    rows::{SourcedRow, latest_per_key, sourced},
    table::Value,
    window_table::{Batch, WindowRow},
};
use crate::{
    commit::{Claim, CommitError, Group, Keeper, Outbox, Position},
    operator::At,
    state::{Change, ChangeWriter, Changelogs, ReadError, StoreLog},
    topology::{Payload, WindowKey},
    window::Window,
};

/// The rows a row table keeps in memory.
pub const KEPT_ROWS: usize = 1000;

/// One row of an in-memory window table, with its table's column names.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// (column, value) per key column.
    pub key: Vec<(String, String)>,
    pub window: Window,
    /// (column, value) per aggregate column, derived ones included.
    pub aggregates: Vec<(String, Value)>,
    pub is_final: bool,
}

/// A window table's rows: stored columns, and whether final.
type Rows = BTreeMap<(WindowKey, Window), (Vec<Value>, bool)>;

/// A partition's stored position: (resume offset or -1, watermark, epoch,
/// processed up to or -1), as `sluice_offsets` keeps it.
type Stored = (i64, i64, i64, i64);

#[derive(Default)]
struct Inner {
    tables: HashMap<String, (Arc<TableSpec>, Rows)>,
    /// table → its newest rows, and how many it was given in all.
    rows: HashMap<String, (Arc<RowSpec>, VecDeque<SourcedRow>, u64)>,
    /// (group, topic, partition) → position
    offsets: HashMap<(String, String, i32), Stored>,
    /// (changelog, partition) → each key's latest value.
    stores: HashMap<(String, i32), BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// A unit's writes, staged by the sinks, applied at commit.
#[derive(Default)]
pub struct MemoryUnit {
    windows: Vec<(String, Vec<WindowRow>)>,
    rows: Vec<(String, Vec<SourcedRow>)>,
    /// (changelog, partition, changes)
    changes: Vec<(String, i32, Vec<Change>)>,
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

    /// Checks every epoch first, then applies the unit and the positions.
    fn commit(
        &mut self,
        group: &str,
        topic: &str,
        positions: &[Position],
        unit: MemoryUnit,
    ) -> Result<(), CommitError> {
        let key = |p: &Position| (group.to_string(), topic.to_string(), p.partition);
        if let Some(lost) = positions
            .iter()
            .find(|p| self.offsets.get(&key(p)).map(|o| o.2) != Some(p.epoch))
        {
            return Err(CommitError::Fenced {
                partition: lost.partition,
            });
        }
        for (table, rows) in unit.windows {
            let Some((spec, stored)) = self.tables.get_mut(&table) else {
                continue;
            };
            for r in rows {
                match r {
                    WindowRow::Changed {
                        key,
                        window,
                        values,
                        is_final,
                    } => match stored.get_mut(&(key.clone(), window)) {
                        Some(e) => {
                            spec.merge_into(&mut e.0, &values);
                            e.1 |= is_final;
                        }
                        None => {
                            stored.insert((key, window), (values, is_final));
                        }
                    },
                    WindowRow::Closed { key, window } => {
                        if let Some(e) = stored.get_mut(&(key, window)) {
                            e.1 = true;
                        }
                    }
                }
            }
        }
        for (table, rows) in unit.rows {
            if let Some((spec, kept, total)) = self.rows.get_mut(&table) {
                *total += rows.len() as u64;
                if spec.is_keyed() {
                    let rows = latest_per_key(spec, rows);
                    let keys: HashSet<String> =
                        rows.iter().map(|r| spec.key_of(&r.cells)).collect();
                    kept.retain(|r| !keys.contains(&spec.key_of(&r.cells)));
                    kept.extend(rows);
                    continue;
                }
                kept.extend(rows);
                let over = kept.len().saturating_sub(KEPT_ROWS);
                kept.drain(..over);
            }
        }
        for (changelog, partition, changes) in unit.changes {
            let store = self.stores.entry((changelog, partition)).or_default();
            for c in changes {
                match c.value {
                    Some(v) => store.insert(c.key, v),
                    None => store.remove(&c.key),
                };
            }
        }
        for p in positions {
            if let Some(o) = self.offsets.get_mut(&key(p)) {
                o.0 = p.resume_offset;
                o.1 = o.1.max(p.watermark_ms);
                o.3 = o.3.max(p.next_offset);
            }
        }
        Ok(())
    }
}

/// Tables and positions in this process's memory.
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

    /// How many keys keyed table `table` holds (`None`: not a keyed table).
    pub fn keys_in(&self, table: &str) -> Option<usize> {
        let inner = self.lock();
        let (spec, kept, _) = inner.rows.get(table)?;
        spec.is_keyed().then_some(kept.len())
    }

    /// The `n` rows of every window table with the latest windows, newest first.
    pub fn latest(&self, n: usize) -> Vec<StoredRow> {
        let mut rows = self.windows();
        rows.sort_by(|a, b| (b.window.start_ms, &a.key).cmp(&(a.window.start_ms, &b.key)));
        rows.truncate(n);
        rows
    }

    /// Every row of every window table.
    pub fn windows(&self) -> Vec<StoredRow> {
        self.windows_where(|_| true)
    }

    /// Every row of window table `table`.
    pub fn windows_in(&self, table: &str) -> Vec<StoredRow> {
        self.windows_where(|t| t == table)
    }

    fn windows_where(&self, table: impl Fn(&str) -> bool) -> Vec<StoredRow> {
        let inner = self.lock();
        inner
            .tables
            .iter()
            .filter(|(name, _)| table(name))
            .flat_map(|(_, (spec, rows))| {
                rows.iter().map(move |((key, w), (values, f))| StoredRow {
                    key: spec
                        .keys
                        .iter()
                        .zip(key)
                        .map(|(c, v)| (c.name.as_str().to_string(), v.to_string()))
                        .collect(),
                    window: *w,
                    aggregates: spec.all_values(values),
                    is_final: *f,
                })
            })
            .collect()
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

/// The in-memory database handed to the runtime: its keepers and sinks
/// share the tables.
#[derive(Clone)]
pub struct InMemory(pub Arc<MemoryTables>);

impl InMemory {
    pub fn new() -> Self {
        InMemory(MemoryTables::new())
    }
}

impl Default for InMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Database for InMemory {
    fn keeper(&self, group: &str, topic: &str) -> Box<dyn Keeper> {
        Box::new(MemoryKeeper {
            tables: self.0.clone(),
            group: group.to_string(),
            topic: topic.to_string(),
            unit: MemoryUnit::default(),
        })
    }

    fn window_table(&self, spec: Arc<TableSpec>) -> Result<Box<dyn Sink>, SinkError> {
        let name = spec.table.as_str().to_string();
        self.0
            .lock()
            .tables
            .entry(name.clone())
            .or_insert_with(|| (spec.clone(), Rows::new()));
        Ok(Box::new(MemoryWindowSink {
            spec,
            name,
            batch: Batch::default(),
        }))
    }

    fn row_table(&self, spec: Arc<RowSpec>) -> Result<Box<dyn Sink>, SinkError> {
        let name = spec.table.as_str().to_string();
        self.0
            .lock()
            .rows
            .entry(name.clone())
            .or_insert_with(|| (spec, VecDeque::new(), 0));
        Ok(Box::new(MemoryRowSink {
            name,
            rows: Vec::new(),
        }))
    }

    fn describe(&self) -> String {
        "this process's memory".into()
    }

    fn peek(&self) -> Option<&dyn super::peek::Peek> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct MemoryKeeper {
    tables: Arc<MemoryTables>,
    group: String,
    topic: String,
    unit: MemoryUnit,
}

impl Keeper for MemoryKeeper {
    fn claims(&self) -> bool {
        true
    }

    fn claim(&mut self, partitions: &[i32], _: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        Ok(self
            .tables
            .lock()
            .claim(&self.group, &self.topic, partitions))
    }

    fn staged(&mut self) -> Option<&mut dyn Any> {
        Some(&mut self.unit)
    }

    fn stores(&mut self) -> Option<&mut dyn StoreLog> {
        Some(self)
    }

    fn commit(
        &mut self,
        positions: &[Position],
        out: &mut dyn Outbox,
        _: &dyn Group,
    ) -> Result<(), CommitError> {
        out.flush().map_err(CommitError::Letters)?;
        let unit = std::mem::take(&mut self.unit);
        self.tables
            .lock()
            .commit(&self.group, &self.topic, positions, unit)
    }

    fn abort(&mut self, out: &mut dyn Outbox) {
        self.unit = MemoryUnit::default();
        out.abort();
    }

    fn owns_group_offsets(&self) -> bool {
        false
    }

    fn domain(&self) -> &'static str {
        "memory"
    }
}

impl Changelogs for MemoryKeeper {
    fn read(&mut self, changelog: &str, partition: i32) -> Result<Vec<Change>, ReadError> {
        let inner = self.tables.lock();
        let store = inner.stores.get(&(changelog.to_string(), partition));
        Ok((store.into_iter().flatten())
            .map(|(k, v)| Change {
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect())
    }
}

impl ChangeWriter for MemoryKeeper {
    fn write(
        &mut self,
        changelog: &str,
        partition: i32,
        changes: &[Change],
    ) -> Result<(), rdkafka::error::KafkaError> {
        let changes = changes.to_vec();
        (self.unit.changes).push((changelog.to_string(), partition, changes));
        Ok(())
    }
}

struct MemoryWindowSink {
    spec: Arc<TableSpec>,
    name: String,
    batch: Batch,
}

impl Sink for MemoryWindowSink {
    fn write(
        &mut self,
        payload: &mut Payload,
        _: At,
        _: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError> {
        if let Some(row) = payload.take::<WindowRow>() {
            self.batch.add(&self.spec, row);
        }
        Ok(())
    }

    fn flush(&mut self, unit: &mut UnitWriter<'_>) -> Result<u64, SinkError> {
        let rows = self.batch.take();
        let n = rows
            .iter()
            .filter(|r| matches!(r, WindowRow::Changed { .. }))
            .count() as u64;
        if rows.is_empty() {
            return Ok(0);
        }
        let staged = unit.staged::<MemoryUnit>().ok_or_else(|| {
            SinkError::config(&self.name, "the unit does not commit in memory".into())
        })?;
        staged.windows.push((self.name.clone(), rows));
        Ok(n)
    }

    fn abort(&mut self) {
        self.batch.clear();
    }
}

struct MemoryRowSink {
    name: String,
    rows: Vec<SourcedRow>,
}

impl Sink for MemoryRowSink {
    fn write(
        &mut self,
        payload: &mut Payload,
        at: At,
        _: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError> {
        if let Some(row) = sourced(payload, at) {
            self.rows.push(row);
        }
        Ok(())
    }

    fn flush(&mut self, unit: &mut UnitWriter<'_>) -> Result<u64, SinkError> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        let staged = unit.staged::<MemoryUnit>().ok_or_else(|| {
            SinkError::config(&self.name, "the unit does not commit in memory".into())
        })?;
        let rows = std::mem::take(&mut self.rows);
        let n = rows.len() as u64;
        staged.rows.push((self.name.clone(), rows));
        Ok(n)
    }

    fn abort(&mut self) {
        self.rows.clear();
    }

    fn release(&mut self, partitions: &[i32]) {
        self.rows.retain(|r| !partitions.contains(&r.partition));
    }
}
