//! The window stage: a sink that folds each partition's readings into its
//! event-time windows, and at every commit merges the partial aggregates,
//! the windows turned final and each partition's position and watermark
//! into a window table (PostgreSQL, or memory) in one transaction. Records
//! too late for their windows, and dead letters, go out beforehand at least
//! once (a crash between the two repeats them).
//!
//! The table keeps the positions: partitions are claimed on assignment
//! (fencing their previous owner), and a failed commit drops everything
//! uncommitted and claims them again, so the table's offsets and rows
//! always agree.
//!
//! A store may instead take windows only once final, whole (a topic:
//! `window_topic`): then the stage keeps each window's aggregate until it
//! closes, and tracks per partition the first offset still in an open
//! window, from which a restarted worker rebuilds them by reading again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
};

use super::{
    Claim, DeadLetter, Group, Rewind, Sink, SinkError, Source, Unit, WriteError, Written,
    kafka::Txn, letters,
};
use crate::{
    stats::{Stats, Timings},
    topology::MakeAggregate,
    topology::{Emitted, WindowKey},
    window::{Aggregate, Combined as Agg, Watermarks, Window, WindowSpec, WindowState},
};

/// A window's partial aggregate since the last commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: WindowKey,
    pub window: Window,
    pub partial: Agg,
    pub is_final: bool,
}

/// A window turned final that had no new records.
pub type ClosedRow = (WindowKey, Window);

/// Where a partition's reading continues, and its watermark, after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub next_offset: i64,
    /// The first offset still in an open window (`next_offset` when none,
    /// or when the store takes partial aggregates).
    pub resume_offset: i64,
    pub watermark_ms: i64,
    /// The ownership epoch the writer claimed the partition with.
    pub epoch: i64,
}

/// Where a window stage merges its aggregates and keeps its positions.
/// `commit` is all or nothing: rows, finality and positions together.
pub trait WindowTable: Send {
    /// Takes over `partitions`, fencing their previous owner.
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError>;

    /// Commits the rows with the unit's letters (late and dead records): a
    /// store outside Kafka delivers them first, so they are at least once;
    /// a topic commits them in its transaction with `group`'s offsets.
    fn commit(
        &mut self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
        letters: &mut Txn,
        group: &dyn Group,
    ) -> Result<(), SinkError>;

    /// Whether it takes each window once, whole, when final (else the
    /// partial aggregates of every commit, to merge).
    fn finals_only(&self) -> bool {
        false
    }

    /// Whether the group's committed offsets are the store's own (so the
    /// runtime must not overwrite them to show lag).
    fn owns_group_offsets(&self) -> bool {
        false
    }
}

/// A claimed partition.
struct Part {
    epoch: i64,
    /// The next offset to process; -1 until the first record when nothing
    /// was ever committed.
    next: i64,
    /// The watermark this partition's windows were last flushed with (and
    /// stored): windows closed here stay closed.
    floor: i64,
    state: WindowState<WindowKey, f64, Agg>,
    /// Records below this offset were processed before a restart.
    processed: i64,
}

pub struct WindowStage<T> {
    table: T,
    spec: WindowSpec,
    parts: BTreeMap<i32, Part>,
    marks: Watermarks,
    letters: Txn,
    make: MakeAggregate,
    topology: String,
    late: Arc<str>,
    stats: Arc<Stats>,
    timings: Timings,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T: WindowTable> WindowStage<T> {
    pub fn new(
        table: T,
        spec: WindowSpec,
        letters: Txn,
        (topology, late): (&str, &str),
        stats: Arc<Stats>,
        timings: Timings,
    ) -> Self {
        Self {
            table,
            spec,
            parts: BTreeMap::new(),
            marks: Watermarks::new(ms(spec.out_of_order), ms(spec.idle_timeout)),
            letters,
            make: Arc::new(Agg::default),
            topology: topology.to_string(),
            late: late.into(),
            stats,
            timings,
        }
    }

    /// Each partition's changes since the last commit, merged across
    /// partitions, the windows turned final, and every position.
    fn flush(&mut self) -> (Vec<Row>, Vec<ClosedRow>, Vec<Position>) {
        let wall = now_ms();
        let mut merged: HashMap<(WindowKey, Window), (Agg, bool)> = HashMap::new();
        let mut closed: Vec<ClosedRow> = Vec::new();
        let mut positions = Vec::new();
        let finals_only = self.finals_only();
        for (p, part) in self.parts.iter_mut() {
            part.floor = part.floor.max(self.marks.watermark(*p, wall));
            let (updates, done) = if finals_only {
                (part.state.take_final(part.floor), Vec::new())
            } else {
                part.state.flush(part.floor)
            };
            for u in updates {
                let e = merged
                    .entry((u.key, u.window))
                    .or_insert((Agg::default(), false));
                <Agg as Aggregate<f64>>::merge(&mut e.0, &u.partial);
                e.1 |= u.is_final;
            }
            closed.extend(done.into_iter().map(|c| (c.key, c.window)));
            positions.push(Position {
                partition: *p,
                // Re-reading must not lower it.
                next_offset: part.next.max(part.processed),
                // Only stores of final windows re-read to rebuild open ones.
                resume_offset: match finals_only {
                    true => part
                        .state
                        .first_open_offset()
                        .map_or(part.next, |first| first.min(part.next)),
                    false => part.next,
                },
                watermark_ms: part.floor,
                epoch: part.epoch,
            });
        }
        let rows: Vec<Row> = merged
            .into_iter()
            .map(|((key, window), (partial, is_final))| Row {
                key,
                window,
                partial,
                is_final,
            })
            .collect();
        closed.retain(|c| !rows.iter().any(|r| (&r.key, r.window) == (&c.0, c.1)));
        closed.sort();
        closed.dedup();
        let open: usize = self.parts.values().map(|p| p.state.open_windows()).sum();
        self.stats
            .open_windows
            .store(open as u64, Ordering::Relaxed);
        (rows, closed, positions)
    }

    /// Windows start from `make()`: the declaration's aggregate.
    pub fn with_aggregate(mut self, make: MakeAggregate) -> Self {
        self.make = make;
        self
    }

    /// Whether windows are kept whole until final and written once: for a
    /// store that wants it, and always for sessions, whose bounds move with
    /// every record (a stored partial row would have to move with them).
    fn finals_only(&self) -> bool {
        self.table.finals_only() || self.spec.is_session()
    }

    fn send_letter(&mut self, letter: &DeadLetter) {
        if let Err(e) = self.letters.send_letter(letter) {
            // Not flushed, so the commit fails and the record is read again.
            tracing::warn!(topology = %self.topology, error = %e, "cannot queue a late or dead-letter record");
            self.letters.poison(e);
        }
    }
}

impl<T: WindowTable> Sink for WindowStage<T> {
    fn keeps_positions(&self) -> bool {
        true
    }

    fn owns_group_offsets(&self) -> bool {
        self.table.owns_group_offsets()
    }

    fn needs_input(&self) -> bool {
        true
    }

    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        let claims = self.table.claim(partitions)?;
        let wall = now_ms();
        for c in &claims {
            self.marks.restore(c.partition, c.watermark_ms, wall);
            self.parts.insert(
                c.partition,
                Part {
                    epoch: c.epoch,
                    next: c.next_offset.unwrap_or(-1),
                    floor: c.watermark_ms,
                    state: WindowState::with_factory(self.spec, self.make.clone()),
                    processed: c.processed,
                },
            );
        }
        Ok(claims)
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        emitted: &[Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError> {
        let p = source.partition;
        let mut missed = Vec::new();
        let mut event_ms = source.timestamp_ms;
        {
            // Not ours (yet, or any more): its owner reads it.
            let Some(part) = self.parts.get_mut(&p) else {
                return Ok(Written::default());
            };
            let wall = now_ms();
            for e in emitted {
                if let Emitted::Reading(r) = e {
                    self.marks.observe(p, r.event_ms, wall);
                    let watermark = self.marks.watermark(p, wall).max(part.floor);
                    missed.extend(part.state.add_at(
                        &r.key,
                        r.event_ms,
                        &r.value,
                        watermark,
                        source.offset,
                    ));
                    event_ms = r.event_ms;
                }
            }
            part.next = source.offset + 1;
            // Its letters went out before the restart, in a committed unit.
            if source.offset < part.processed {
                return Ok(Written::default());
            }
        }
        if let Some(d) = dead {
            self.send_letter(d);
        }
        let late = !missed.is_empty();
        if late {
            let letter =
                letters::late_record(&self.late, &self.topology, source, event_ms, &missed);
            self.send_letter(&letter);
        }
        Ok(Written { outputs: 0, late })
    }

    fn commit(&mut self, unit: &Unit, group: &dyn Group) -> Result<Option<u64>, SinkError> {
        let (rows, closed, positions) = self.flush();
        if unit.is_empty() && rows.is_empty() && closed.is_empty() {
            return Ok(None);
        }
        // The store failpoints are the SQL commit's; a topic has its own.
        let store = !self.table.owns_group_offsets();
        if store {
            crate::failpoint::hit("before-store-commit");
        }
        let write = std::time::Instant::now();
        let committed = self
            .table
            .commit(&rows, &closed, &positions, &mut self.letters, group);
        if store {
            self.timings.postgres(write.elapsed());
        }
        committed?;
        if store {
            crate::failpoint::hit("after-store-commit");
            self.stats
                .window_rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
        }
        tracing::debug!(topology = %self.topology, rows = rows.len(), closed = closed.len(), "windows committed");
        Ok(Some(rows.len() as u64))
    }

    fn abort(&mut self, _: &Unit) -> Rewind {
        let parts = std::mem::take(&mut self.parts);
        for p in parts.keys() {
            self.marks.forget(*p);
        }
        self.letters.abort();
        Rewind::Claim(parts.into_keys().collect())
    }

    fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
            self.marks.forget(*p);
        }
    }

    fn wants_commit(&mut self) -> bool {
        !self.parts.is_empty()
    }
}
