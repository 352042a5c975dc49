//! One group member's unit of work, where it commits: the topology's
//! sinks and stateful operators, its producer (`Outbox`) and the keeper of
//! its input positions. Records come in read order with what the consuming
//! side made of them; results addressed to a stateful operator run through
//! it (and whatever follows it) here; results for sinks are written; dead
//! letters and late records are sent here, once. At commit the operators
//! emit what is due, their stores write their changes, the sinks hand
//! what they kept to the unit, and the keeper commits it all with the
//! input positions. This is the one place that commits.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use super::{
    Claim, CommitError, Group, Keeper, Outbox, Position,
    changes::{Counted, ToTopics},
    letters::{self, DeadLetter, Source},
    participant::{Participant, Rewind, WriteError, Written},
    unit::Unit,
};
use crate::{
    avro::AvroCodec,
    operator::{Assigned, At, EventClock, OpCtx, Operator},
    sink::{Sink, SinkError, UnitWriter},
    state::Changelogs,
    stats::{Stats, Timings},
    topology::{Emitted, Failure, FailureKind, OpError, Payload, Target},
    window::Late,
};

/// A sink of the task, and what the runtime must know of it.
pub struct TaskSink {
    pub sink: Box<dyn Sink>,
    /// At most one result per input record.
    pub one_per_record: bool,
    /// Writes to the unit's database (its flushes count as rows).
    pub database: bool,
}

/// An operator of the task.
pub struct TaskOperator {
    pub op: Box<dyn Operator>,
    /// Fed the records that are read again only to rebuild state.
    pub rebuilds: bool,
}

/// A claimed partition.
struct Part {
    epoch: i64,
    /// The next offset to process; -1 until the first record when nothing
    /// was ever committed.
    next: i64,
    /// Records below this were processed before a restart.
    processed: i64,
}

/// Everything the task is made of, as the worker opened it.
pub struct Parts {
    pub topology: String,
    pub source: String,
    pub dead_letter: Arc<str>,
    pub late: Option<Arc<str>>,
    pub codec: Arc<AvroCodec>,
    pub keeper: Box<dyn Keeper>,
    pub out: Box<dyn Outbox>,
    pub sinks: Vec<TaskSink>,
    pub operators: Vec<TaskOperator>,
    /// The partitions' event time, if the operators read one.
    pub clock: Option<EventClock>,
    pub changelogs: Box<dyn Changelogs + Send>,
    /// Wall-clock time, ms since the epoch (injected in tests).
    pub wall_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    pub stats: Arc<Stats>,
    pub timings: Timings,
}

pub struct Task {
    p: Parts,
    parts: BTreeMap<i32, Part>,
    /// Results made here, waiting to be routed.
    queue: Vec<Emitted>,
    /// Sink results of the current record, written once it is whole.
    pending: Vec<(u32, Payload)>,
    late: Vec<Late>,
    /// Whether punctuation or records gave the sinks anything since the
    /// last commit.
    written: bool,
    /// Records the unit sent to each topic, counted once it commits: a
    /// list, as a unit sends to a few topics, looked up per record.
    sent: Vec<(Arc<str>, u64)>,
    /// Of them, records sent at punctuation (not counted per input record).
    punctuated: u64,
    /// Records each sink and each stateful operator took in this unit.
    sink_counts: Vec<u64>,
    op_counts: Vec<u64>,
    /// The records being written were fetched no later than this.
    fetched: Instant,
    /// Wall-clock time read once per chunk, for its records (a few hundred
    /// microseconds apart); punctuation reads its own. `None` before any
    /// chunk (the test driver writes records one by one).
    chunk_wall_ms: Option<i64>,
    /// An operator's results, before they join `queue` (kept for its room).
    made: Vec<Emitted>,
}

/// What routing one record's (or a punctuation's) results came to.
enum Routed {
    Done,
    Failed(Failure),
}

impl Task {
    pub fn new(parts: Parts) -> Task {
        Task {
            sink_counts: vec![0; parts.sinks.len()],
            op_counts: vec![0; parts.operators.len()],
            p: parts,
            parts: BTreeMap::new(),
            queue: Vec::new(),
            pending: Vec::new(),
            late: Vec::new(),
            written: false,
            sent: Vec::new(),
            punctuated: 0,
            fetched: Instant::now(),
            chunk_wall_ms: None,
            made: Vec::new(),
        }
    }

    fn claims(&self) -> bool {
        self.p.keeper.claims()
    }

    /// A stateful operator's store, by name (for the test driver and queries).
    pub fn store(&self, name: &str) -> Option<&dyn std::any::Any> {
        self.p.operators.iter().find_map(|o| o.op.store(name))
    }

    /// Runs queued results through the operators until only sink results
    /// are left, in `pending`. `replay`: the record is read again only to
    /// rebuild state: operators that do not rebuild skip it. `wall_ms`:
    /// the wall-clock time the operators see.
    fn route(&mut self, at: At, replay: bool, wall_ms: i64) -> Routed {
        let mut i = 0;
        while i < self.queue.len() {
            let to = self.queue[i].to;
            match to {
                Target::Sink(s) => {
                    let payload =
                        std::mem::replace(&mut self.queue[i].payload, Payload::Value(Box::new(())));
                    self.pending.push((s, payload));
                }
                Target::Operator(o) => {
                    let Some(item) = self.queue[i].payload.take_any() else {
                        i += 1;
                        continue;
                    };
                    let Some(op) = self.p.operators.get_mut(o as usize) else {
                        i += 1;
                        continue;
                    };
                    if replay && !op.rebuilds {
                        i += 1;
                        continue;
                    }
                    if !replay && let Some(n) = self.op_counts.get_mut(o as usize) {
                        *n += 1;
                    }
                    let mut made = std::mem::take(&mut self.made);
                    let mut none = EventClock::new(0, i64::MAX);
                    let mut ctx = OpCtx {
                        codec: &self.p.codec,
                        out: &mut made,
                        clock: self.p.clock.as_mut().unwrap_or(&mut none),
                        wall_ms,
                        late: &mut self.late,
                        fetched: self.fetched,
                    };
                    let processed = op.op.process(at, item, &mut ctx);
                    self.queue.append(&mut made);
                    self.made = made;
                    if let Err(f) = processed {
                        self.queue.clear();
                        return Routed::Failed(f);
                    }
                }
            }
            i += 1;
        }
        self.queue.clear();
        Routed::Done
    }

    /// Writes the pending sink results.
    fn write_pending(&mut self, at: At) -> Result<u64, WriteError> {
        let mut records = 0;
        // Taken and given back emptied: its room serves the next record.
        let mut pending = std::mem::take(&mut self.pending);
        for (s, mut payload) in pending.drain(..) {
            let Some(sink) = self.p.sinks.get_mut(s as usize) else {
                continue;
            };
            let mut unit = UnitWriter {
                kafka: &mut *self.p.out,
                staged: self.p.keeper.staged(),
            };
            let slot = match &payload {
                Payload::Record(o) => Some(sent_slot(&mut self.sent, &o.topic)),
                Payload::Value(_) => None,
            };
            let sent = &self.sent;
            sink.sink
                .write(&mut payload, at, &mut unit)
                .map_err(|error| WriteError {
                    topic: slot.map_or_else(|| error.sink.as_str().into(), |i| sent[i].0.clone()),
                    error,
                    of_dead_letter: false,
                })?;
            if !sink.database {
                records += 1;
            }
            if let Some(n) = self.sink_counts.get_mut(s as usize) {
                *n += 1;
            }
            if let Some(i) = slot {
                self.sent[i].1 += 1;
            }
            self.written = true;
        }
        self.pending = pending;
        Ok(records)
    }

    fn send_letter(&mut self, letter: &DeadLetter) -> Result<(), WriteError> {
        self.p.out.send_letter(letter).map_err(|e| WriteError {
            topic: letter.topic.clone(),
            error: SinkError::new(&*letter.topic, true, e),
            of_dead_letter: true,
        })?;
        self.written = true;
        Ok(())
    }

    /// A record's results, checked against the sinks that take at most one.
    fn too_many(&self, emitted: &[Emitted]) -> Option<Failure> {
        for (i, s) in self.p.sinks.iter().enumerate() {
            if !s.one_per_record {
                continue;
            }
            let n = emitted
                .iter()
                .filter(|e| e.to == Target::Sink(i as u32))
                .count();
            if n > 1 {
                return Some(Failure::Operator(OpError {
                    operator: "row".into(),
                    kind: FailureKind::Operator,
                    message: format!(
                        "made {n} rows from one record; a row table takes at most one per input record (its key is the record's partition and offset)"
                    ),
                }));
            }
        }
        None
    }

    /// Runs every operator's punctuation and writes what it emits.
    fn punctuate(&mut self) -> Result<(), CommitError> {
        let wall_ms = (self.p.wall_ms)();
        let mut emitted = false;
        for o in 0..self.p.operators.len() {
            let mut made = Vec::new();
            let mut none = EventClock::new(0, i64::MAX);
            let mut late = Vec::new();
            let mut ctx = OpCtx {
                codec: &self.p.codec,
                out: &mut made,
                clock: self.p.clock.as_mut().unwrap_or(&mut none),
                wall_ms,
                late: &mut late,
                fetched: self.fetched,
            };
            let punctuated = self.p.operators[o].op.punctuate(&mut ctx);
            self.queue.extend(made);
            let at = At {
                partition: -1,
                offset: -1,
            };
            let routed = match punctuated {
                Ok(()) => self.route(at, false, wall_ms),
                Err(f) => Routed::Failed(f),
            };
            match routed {
                Routed::Done => {
                    emitted |= !self.pending.is_empty();
                    self.punctuated +=
                        self.write_pending(at).map_err(|w| match w.error.kafka() {
                            Some(k) => CommitError::Kafka(k.clone()),
                            None => CommitError::Database(Box::new(w.error)),
                        })?;
                }
                Routed::Failed(f) => {
                    // No input record to send: a letter that says what failed.
                    self.pending.clear();
                    tracing::warn!(topology = %self.p.topology, error = %f, "a stateful operator's result failed on its way to the sinks");
                    let source = Source {
                        topic: &self.p.source,
                        partition: -1,
                        offset: -1,
                        timestamp_ms: wall_ms,
                        key: None,
                        value: None,
                        headers: letters::SourceHeaders::Copied(&[]),
                    };
                    let dlq = self.p.dead_letter.clone();
                    let letter = letters::dead_letter(&dlq, &self.p.topology, &source, &f);
                    self.send_letter(&letter)
                        .map_err(|w| match w.error.kafka() {
                            Some(k) => CommitError::Kafka(k.clone()),
                            None => CommitError::Database(Box::new(w.error)),
                        })?;
                    self.p.stats.count_dead_letters(letter.kind, 1);
                    if let Some(op) = &letter.operator {
                        self.p.stats.count_refused(op, 1);
                    }
                }
            }
        }
        if emitted && self.p.keeper.domain() == "kafka" {
            // A crash here leaves the emitted results in a transaction
            // never committed.
            crate::failpoint::hit("final-windows-sent");
        }
        Ok(())
    }

    /// Every claimed partition's position, or the unit's.
    fn positions(&mut self, unit: &Unit) -> Vec<Position> {
        if !self.claims() {
            return unit
                .next_offsets()
                .into_iter()
                .map(|(partition, next)| Position {
                    partition,
                    next_offset: next,
                    resume_offset: next,
                    watermark_ms: i64::MIN,
                    epoch: 0,
                })
                .collect();
        }
        let wall_ms = (self.p.wall_ms)();
        let mut out = Vec::new();
        for (&partition, part) in &self.parts {
            let resume = self
                .p
                .operators
                .iter()
                .filter_map(|o| o.op.resume_offset(partition))
                .fold(part.next, |a, b| if a < 0 { a } else { a.min(b) });
            let watermark_ms = match &mut self.p.clock {
                Some(c) => c.watermark(partition, wall_ms),
                None => i64::MIN,
            };
            out.push(Position {
                partition,
                // Re-reading must not lower it.
                next_offset: part.next.max(part.processed),
                resume_offset: resume,
                watermark_ms,
                epoch: part.epoch,
            });
        }
        out
    }
}

impl Participant for Task {
    fn keeps_positions(&self) -> bool {
        self.claims()
    }

    fn owns_group_offsets(&self) -> bool {
        self.p.keeper.owns_group_offsets()
    }

    fn needs_input(&self) -> bool {
        !self.p.operators.is_empty()
    }

    fn claim(&mut self, partitions: &[i32], group: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        let claims = self.p.keeper.claim(partitions, group)?;
        let wall_ms = (self.p.wall_ms)();
        if !self.p.operators.is_empty() && !claims.is_empty() {
            let parts: Vec<i32> = claims.iter().map(|c| c.partition).collect();
            let what = format!("restoring the state of partitions {parts:?}");
            self.p.stats.set_restoring(Some(what));
        }
        for c in &claims {
            for o in &mut self.p.operators {
                let domain = self.p.keeper.domain();
                let (from, kept_in): (&mut dyn Changelogs, _) = match self.p.keeper.stores() {
                    Some(db) => (db, domain),
                    None => (&mut *self.p.changelogs, "topic"),
                };
                o.op.assigned(Assigned {
                    claim: c,
                    changelogs: &mut Counted {
                        from,
                        stats: &self.p.stats,
                    },
                    kept_in,
                })
                .map_err(|e| CommitError::Restore(Box::new(e)))?;
            }
            if let Some(clock) = &mut self.p.clock {
                clock.restore(c.partition, c.watermark_ms, wall_ms);
            }
            self.parts.insert(
                c.partition,
                Part {
                    epoch: c.epoch,
                    next: c.next_offset.unwrap_or(-1),
                    processed: c.processed,
                },
            );
        }
        self.p.stats.set_restoring(None);
        Ok(claims)
    }

    fn fetched_by(&mut self, at: Instant) {
        self.fetched = at;
        self.chunk_wall_ms = Some((self.p.wall_ms)());
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        emitted: &mut [Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError> {
        let at = At {
            partition: source.partition,
            offset: source.offset,
        };
        let claims = self.claims();
        let replay = match self.parts.get_mut(&at.partition) {
            Some(part) => {
                part.next = at.offset + 1;
                at.offset < part.processed
            }
            // Not ours (yet, or any more): its owner reads it.
            None if claims => return Ok(Written::default()),
            None => false,
        };
        let mut failure = if replay { None } else { self.too_many(emitted) };
        if failure.is_none() {
            self.queue.clear();
            for e in emitted.iter_mut() {
                let payload = std::mem::replace(&mut e.payload, Payload::Value(Box::new(())));
                self.queue.push(Emitted { to: e.to, payload });
            }
            let wall_ms = self.chunk_wall_ms.unwrap_or_else(|| (self.p.wall_ms)());
            if let Routed::Failed(f) = self.route(at, replay, wall_ms) {
                failure = Some(f);
            }
        }
        if replay {
            // Its results and letters went out before the restart.
            self.pending.clear();
            self.late.clear();
            return Ok(Written::default());
        }
        let late = std::mem::take(&mut self.late);
        let mut written = Written::default();
        match failure {
            Some(f) => {
                self.pending.clear();
                let dlq = self.p.dead_letter.clone();
                let letter = letters::dead_letter(&dlq, &self.p.topology, source, &f);
                self.send_letter(&letter)?;
                written.dead = Some(letter.kind);
                written.refused_by = letter.operator.clone();
            }
            None => {
                written.outputs = self.write_pending(at)?;
                if let Some(d) = dead {
                    self.send_letter(d)?;
                }
            }
        }
        if let (false, Some(topic)) = (late.is_empty(), self.p.late.clone()) {
            let letter = letters::late_record(&topic, &self.p.topology, source, &late);
            self.send_letter(&letter)?;
            written.late = true;
        }
        Ok(written)
    }

    fn commit(&mut self, unit: &Unit, group: &dyn Group) -> Result<Option<u64>, CommitError> {
        self.punctuate()?;
        let positions = self.positions(unit);
        if unit.is_empty() && !self.written && positions.is_empty() {
            return Ok(None);
        }
        let now_ms = (self.p.wall_ms)();
        for o in &mut self.p.operators {
            match self.p.keeper.stores() {
                Some(db) => o.op.flush(db)?,
                None => o.op.flush(&mut ToTopics {
                    out: &mut *self.p.out,
                    now_ms,
                })?,
            }
        }
        let mut rows = 0;
        for s in &mut self.p.sinks {
            let mut w = UnitWriter {
                kafka: &mut *self.p.out,
                staged: self.p.keeper.staged(),
            };
            let n = s
                .sink
                .flush(&mut w)
                .map_err(|e| CommitError::Database(Box::new(e)))?;
            if s.database {
                rows += n;
            }
        }
        if (unit.is_empty() || positions.iter().all(|p| p.next_offset < 0))
            && !self.written
            && rows == 0
        {
            // Nothing read, emitted or changed since the last commit.
            return Ok(None);
        }
        let started = Instant::now();
        self.p.keeper.commit(&positions, &mut *self.p.out, group)?;
        if let Some(parts) = self.p.out.commit_parts() {
            self.p.timings.commit_parts(&parts);
        }
        if self.p.keeper.domain() == "postgres" {
            self.p.timings.postgres(started.elapsed());
        }
        for o in &mut self.p.operators {
            o.op.committed();
        }
        self.written = false;
        for (topic, n) in self.sent.drain(..) {
            self.p.stats.count_outputs(&topic, n);
        }
        self.p.stats.count_nodes(&self.sink_counts, &self.op_counts);
        self.sink_counts.fill(0);
        self.op_counts.fill(0);
        let punctuated = std::mem::take(&mut self.punctuated);
        let held: u64 = self.p.operators.iter().map(|o| o.op.held()).sum();
        self.p
            .stats
            .open_windows
            .store(held, std::sync::atomic::Ordering::Relaxed);
        self.p
            .stats
            .window_rows
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(rows + punctuated))
    }

    fn abort(&mut self, unit: &Unit) -> Rewind {
        for s in &mut self.p.sinks {
            s.sink.abort();
        }
        for o in &mut self.p.operators {
            o.op.abort();
        }
        self.queue.clear();
        self.pending.clear();
        self.late.clear();
        self.written = false;
        self.sent.clear();
        self.punctuated = 0;
        self.sink_counts.fill(0);
        self.op_counts.fill(0);
        self.p.keeper.abort(&mut *self.p.out);
        if self.claims() {
            let parts = std::mem::take(&mut self.parts);
            if let Some(clock) = &mut self.p.clock {
                for p in parts.keys() {
                    clock.forget(*p);
                }
            }
            Rewind::Claim(parts.into_keys().collect())
        } else if self.p.keeper.rereads_after_abort() {
            Rewind::Claim(unit.first_offsets().into_iter().map(|(p, _)| p).collect())
        } else {
            Rewind::To(unit.first_offsets())
        }
    }

    fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
            if let Some(clock) = &mut self.p.clock {
                clock.forget(*p);
            }
        }
        for o in &mut self.p.operators {
            o.op.release(partitions);
        }
        for s in &mut self.p.sinks {
            s.sink.release(partitions);
        }
    }

    fn wants_commit(&mut self) -> bool {
        self.p.operators.iter().any(|o| o.op.ticking())
    }

    fn commit_parts(&self) -> Option<crate::commit::CommitParts> {
        self.p.out.commit_parts()
    }
}

/// `topic`'s place in `sent`, added if new: found by pointer first, as a
/// sink sends under the same name each time.
fn sent_slot(sent: &mut Vec<(Arc<str>, u64)>, topic: &Arc<str>) -> usize {
    let found = sent
        .iter()
        .position(|(t, _)| Arc::ptr_eq(t, topic))
        .or_else(|| sent.iter().position(|(t, _)| t == topic));
    found.unwrap_or_else(|| {
        sent.push((topic.clone(), 0));
        sent.len() - 1
    })
}
