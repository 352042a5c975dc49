//! The worker's task thread: it owns the unit's participant (`task::Task`)
//! and drives the commit protocol. The loop consumes and processes and
//! hands results over in chunks; this thread writes them into the open
//! unit, commits it with the input positions by size and interval (and
//! when the task wants a commit of its own, such as windows closing by the
//! clock), claims partitions where positions are kept or state restored,
//! and aborts on failure. On one thread, the commit's work and the loop's
//! each waited for the other while a core stood idle.
//!
//! A failed unit must be read again: this thread aborts it, tells the loop
//! where each partition restarts, and drops every record of those
//! partitions it receives until the loop says it has seeked back (the
//! channel is in read order, so those were all read before the seek).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerGroupMetadata, StreamConsumer},
    error::KafkaError,
};

use super::{
    Group,
    backoff::Backoff,
    chunk::Chunk,
    context::assign,
    participant::{Participant, Rewind},
    shared::{Shared, merge},
    tally::Tally,
    trace::{self, Sample, Trace},
    unit::Unit,
};
use crate::stats::{Stats, Timings, timings::SAMPLE};

pub enum Work {
    Chunk(Chunk),
    /// Partitions assigned to a task that claims them: claim them, then
    /// assign them at the stored offsets.
    Claim {
        partitions: Vec<i32>,
        eager: bool,
    },
    /// Partitions are being revoked: commit everything handed over so far
    /// (or abort it, if they were lost), then answer.
    Revoke {
        revoked: Vec<i32>,
        lost: bool,
        done: SyncSender<()>,
    },
    /// The loop has seeked back as far as the rewind of this generation asked.
    Rewound(u64),
    Stop,
}

/// The group member as the committer needs it: the group at commit, and
/// the assignment it makes once claimed partitions are known.
pub trait Member: Group + Send + Sync {
    fn assign(&self, tpl: &TopicPartitionList, eager: bool) -> Result<(), KafkaError>;
}

impl<C: rdkafka::consumer::ConsumerContext + 'static> Group for StreamConsumer<C> {
    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.group_metadata()
    }

    fn commit_offsets(&self, offsets: &TopicPartitionList, sync: bool) -> Result<(), KafkaError> {
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.commit(offsets, mode)
    }
}

impl<C: rdkafka::consumer::ConsumerContext + 'static> Member for StreamConsumer<C> {
    fn assign(&self, tpl: &TopicPartitionList, eager: bool) -> Result<(), KafkaError> {
        assign(self, tpl, eager)
    }
}

pub struct Settings {
    pub name: String,
    pub source: String,
    pub batch_size: usize,
    pub commit_interval: Duration,
    pub trace: Option<Arc<Trace>>,
}

pub struct Committer {
    consumer: Arc<dyn Member>,
    task: Box<dyn Participant>,
    stats: Arc<Stats>,
    timings: Timings,
    settings: Settings,
    shared: Arc<Shared>,
    unit: Unit,
    /// When the unit's first record was taken.
    started: Option<Instant>,
    /// Partitions whose records are dropped until the loop has seeked
    /// back, with the rewind generation that asked for it.
    dropping: HashMap<i32, u64>,
    generation: u64,
    retry: Backoff,
    /// Partitions to claim (`eager`: the whole assignment at once), and
    /// those to claim again after a failed commit before reading on.
    claims: Option<(Vec<i32>, bool)>,
    reclaims: Vec<i32>,
    claim_at: Option<Instant>,
    claim_retry: Backoff,
    /// What the unit holds, counted once it commits.
    tally: Tally,
    /// The loop had nothing more to read when it handed the last chunk
    /// over: commit once every chunk already queued has been taken.
    drained: bool,
    /// Timestamps of one record in `SAMPLE` of the unit: their end-to-end
    /// latency is known when the unit commits.
    sampled: Vec<i64>,
    /// The unit's traced records, written and waiting for the commit.
    traced: Vec<Sample>,
}

impl Committer {
    pub fn new(
        consumer: Arc<dyn Member>,
        task: Box<dyn Participant>,
        stats: Arc<Stats>,
        timings: Timings,
        settings: Settings,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            consumer,
            task,
            stats,
            timings,
            settings,
            shared,
            unit: Unit::default(),
            started: None,
            dropping: HashMap::new(),
            generation: 0,
            retry: Backoff::new(),
            claims: None,
            reclaims: Vec::new(),
            claim_at: None,
            claim_retry: Backoff::new(),
            tally: Tally::default(),
            drained: false,
            sampled: Vec::new(),
            traced: Vec::new(),
        }
    }

    /// Starts the thread; sent chunks go back through `used`.
    pub fn spawn(
        self,
        work: Receiver<Work>,
        used: SyncSender<Chunk>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("send-{}", self.settings.name))
            .spawn(move || self.run(work, used))
    }

    /// When something is due without input: a commit, or a claim retried.
    fn deadline(&mut self) -> Option<Instant> {
        let commit = self.started.map(|t| t + self.settings.commit_interval);
        let tick = self
            .task
            .wants_commit()
            .then(|| Instant::now() + self.settings.commit_interval);
        [commit, tick, self.claim_at].into_iter().flatten().min()
    }

    fn run(mut self, work: Receiver<Work>, used: SyncSender<Chunk>) {
        let mut last_tick = Instant::now();
        loop {
            if self.claim_at.is_some_and(|t| t <= Instant::now()) {
                self.claim();
            }
            let deadline = self.deadline();
            // Under steady load there is always a chunk waiting.
            if self
                .started
                .is_some_and(|t| t + self.settings.commit_interval <= Instant::now())
            {
                self.commit();
                continue;
            }
            // Input drained: a read_committed reader sees these records
            // only once they commit, so commit as soon as every chunk
            // already queued is in the unit, rather than at the interval.
            // Under load chunks come full, and size and interval decide.
            let next = if self.drained {
                match work.try_recv() {
                    Ok(w) => Ok(w),
                    Err(TryRecvError::Empty) => {
                        self.drained = false;
                        self.commit();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                match deadline {
                    Some(d) => work.recv_timeout(d.saturating_duration_since(Instant::now())),
                    None => work.recv().map_err(|_| RecvTimeoutError::Disconnected),
                }
            };
            match next {
                Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(w) => self.handle(w, &used),
                Err(RecvTimeoutError::Timeout) => {
                    // The task's own tick (windows closing by the clock) comes
                    // once per commit interval.
                    if !self.unit.is_empty() || last_tick.elapsed() >= self.settings.commit_interval
                    {
                        last_tick = Instant::now();
                        self.commit();
                    }
                }
            }
        }
        // Nothing is read again after this: a failed last commit is left to
        // the partitions' next owner.
        self.commit();
        // Leaving the group must not wait for an assign call that never comes.
        if let Some((partitions, eager)) = self.claims.take() {
            let _ = self.consumer.assign(&self.tpl(&partitions, &[]), eager);
        }
    }

    /// One message from the loop (or the consumer's rebalance callback).
    fn handle(&mut self, work: Work, used: &SyncSender<Chunk>) {
        match work {
            Work::Chunk(mut chunk) => {
                self.take(&mut chunk);
                self.drained |= chunk.drained && self.started.is_some();
                // Freed where it was allocated, by the loop: every output
                // holds its topic's `Arc` and two buffers, and dropping
                // them here moved a reference count's cache line and the
                // allocator's free lists between the cores per record.
                let _ = used.try_send(chunk);
            }
            Work::Claim { partitions, eager } => {
                let pending = self.claims.get_or_insert((Vec::new(), eager));
                pending.0.extend(partitions);
                pending.1 = eager;
                self.claim();
            }
            Work::Revoke {
                revoked,
                lost,
                done,
            } => {
                // Everything handed over before this is in the unit.
                if lost {
                    self.drop_unit();
                } else {
                    self.commit();
                }
                self.task.release(&revoked);
                for p in &revoked {
                    self.dropping.remove(p);
                }
                self.reclaims.retain(|p| !revoked.contains(p));
                if let Some((c, _)) = &mut self.claims {
                    c.retain(|p| !revoked.contains(p));
                }
                // Their new owner reads them from the committed offsets.
                self.shared.forget_rewinds(&revoked);
                self.shared.forget_refusals(|p, _| revoked.contains(&p));
                let _ = done.send(());
            }
            Work::Rewound(generation) => self.dropping.retain(|_, g| *g > generation),
            Work::Stop => {}
        }
    }

    /// Writes a chunk's results into the unit, committing whenever it is full.
    fn take(&mut self, chunk: &mut Chunk) {
        let topic = self.settings.source.clone();
        let mut failed = None;
        let mut traced = std::mem::take(&mut chunk.traced);
        let mut next_traced = 0;
        self.task
            .fetched_by(chunk.handed.unwrap_or_else(std::time::Instant::now));
        chunk.each(&topic, |i, held| {
            let partition = held.source.partition;
            if self.dropping.contains_key(&partition) {
                return true;
            }
            match self.task.write(&held.source, held.emitted, held.dead) {
                Ok(written) => {
                    self.unit.consumed(partition, held.source.offset);
                    if let Some(s) = traced.get_mut(next_traced)
                        && (s.partition, s.offset) == (partition, held.source.offset)
                    {
                        s.written_us = trace::now_us();
                        self.traced.push(*s);
                        next_traced += 1;
                    }
                    // The first of each unit too, or a trickle never samples.
                    if self.unit.records() as u64 % SAMPLE == 1 {
                        self.sampled.push(held.source.timestamp_ms);
                    }
                    self.started.get_or_insert_with(Instant::now);
                    self.tally.outputs += written.outputs;
                    if written.late {
                        self.tally.late += 1;
                    }
                    if let Some(kind) = written.dead.or(held.dead.map(|d| d.kind)) {
                        self.tally.dead_letter(kind);
                    }
                    if let Some(op) = written
                        .refused_by
                        .as_ref()
                        .or(held.dead.and_then(|d| d.operator.as_ref()))
                    {
                        self.tally.refused_by(op);
                    }
                    if self.unit.records() >= self.settings.batch_size {
                        self.commit();
                    }
                    true
                }
                Err(f) => {
                    let name = &self.settings.name;
                    let refused = self.shared.absorb(partition, held.source.offset, &f);
                    if refused {
                        tracing::warn!(topology = %name, error = %f.error, topic = %f.topic, partition, offset = held.source.offset, "the producer refused a record; aborting the batch to send a dead letter in its place");
                    } else {
                        tracing::warn!(topology = %name, error = %f.error, "produce failed; aborting the batch");
                    }
                    failed = Some((i, refused));
                    false
                }
            }
        });
        traced.clear();
        chunk.traced = traced;
        if let Some((i, refused)) = failed {
            self.stats.aborts.fetch_add(1, Ordering::Relaxed);
            // This record and the rest of the chunk were not written.
            let rest = chunk.first_offsets(i);
            self.abort(rest);
            if !refused {
                std::thread::sleep(self.retry.next());
            }
        }
    }

    /// Commits the unit; on failure aborts it and has it read again.
    fn commit(&mut self) {
        let wants = self.task.wants_commit();
        if self.unit.is_empty() && !wants {
            return;
        }
        let started = Instant::now();
        let begun_us = self.settings.trace.as_ref().map(|_| trace::now_us());
        let records = self.unit.records();
        // Only needed to forget refusals once their records are committed.
        let next = if self.shared.any_refused.load(Ordering::Acquire) {
            self.unit.next_offsets()
        } else {
            Vec::new()
        };
        self.stats.health.committing();
        let committed = self.task.commit(&self.unit, &*self.consumer);
        let timed = !self.unit.is_empty();
        match committed {
            Ok(None) => self.stats.health.committed(true),
            Ok(Some(rows)) => {
                if timed {
                    self.timings.commit(started.elapsed());
                    self.stats
                        .recent_commits
                        .record(started.elapsed().as_secs_f64() * 1000.0);
                }
                if let Some(b) = self.started {
                    self.timings.batch(b.elapsed());
                }
                self.stats.health.committed(true);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                let now_ms = crate::topology::clock::processing_time_ms();
                if let (Some(t), Some(begun_us)) = (&self.settings.trace, begun_us) {
                    t.committed(&mut self.traced, begun_us, self.task.commit_parts());
                }
                for ts in self.sampled.drain(..) {
                    self.timings.e2e_ms(now_ms - ts);
                    self.stats.recent_e2e.record((now_ms - ts).max(0) as f64);
                }
                self.tally.outputs += rows;
                self.tally.committed(&self.stats);
                self.retry = Backoff::new();
                self.shared.forget_refusals(|partition, offset| {
                    next.iter().any(|&(p, n)| p == partition && offset < n)
                });
                if self.task.keeps_positions() && !self.task.owns_group_offsets() {
                    self.tell_group();
                }
                tracing::debug!(topology = %self.settings.name, records, took = ?started.elapsed(), "committed");
                self.unit.clear();
                self.started = None;
            }
            Err(e) => {
                tracing::warn!(topology = %self.settings.name, error = %e, "commit failed; aborting and re-reading the batch");
                self.stats.health.committed(false);
                self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                self.abort(Vec::new());
            }
        }
    }

    /// A database keeps the real positions; these let Kafka's tools show lag.
    fn tell_group(&self) {
        let offsets = self.unit.offsets(&self.settings.source);
        if let Ok(tpl) = offsets
            && tpl.count() > 0
            && let Err(e) = self.consumer.commit_offsets(&tpl, false)
        {
            tracing::debug!(topology = %self.settings.name, error = %e, "informational offset commit failed");
        }
    }

    /// Aborts the unit and has it read again, with `more` positions (records
    /// handed over after the failure) on top of the unit's.
    fn abort(&mut self, more: Vec<(i32, i64)>) {
        self.tally.clear();
        self.sampled.clear();
        self.traced.clear();
        let rewind = self.task.abort(&self.unit);
        self.unit.clear();
        self.started = None;
        match rewind {
            Rewind::To(mut positions) => {
                merge(
                    &mut positions,
                    more.into_iter()
                        .filter(|(p, _)| !self.dropping.contains_key(p)),
                );
                self.rewind(positions);
            }
            Rewind::Claim(mut partitions) => {
                // Nothing of them is taken until the store says where they
                // resume, the ones handed over after the failure included.
                partitions.extend(
                    more.iter()
                        .map(|&(p, _)| p)
                        .filter(|p| !self.dropping.contains_key(p)),
                );
                partitions.sort_unstable();
                partitions.dedup();
                self.generation += 1;
                for &p in &partitions {
                    self.dropping.insert(p, self.generation);
                }
                self.reclaims.extend(partitions);
                self.reclaims.sort_unstable();
                self.reclaims.dedup();
                self.claim_at = Some(Instant::now() + Duration::from_millis(200));
            }
        }
    }

    /// Aborts the unit without reading it again here: its partitions are
    /// gone, and their next owner starts from the committed offsets.
    fn drop_unit(&mut self) {
        if self.unit.is_empty() {
            return;
        }
        tracing::info!(topology = %self.settings.name, records = self.unit.records(), "partitions lost; aborting their uncommitted work");
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        self.tally.clear();
        self.sampled.clear();
        self.traced.clear();
        let _ = self.task.abort(&self.unit);
        self.unit.clear();
        self.started = None;
    }

    /// Claims what waits for a claim; retried with back-off on failure.
    fn claim(&mut self) {
        let fresh = self
            .claims
            .as_ref()
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        let wanted: Vec<i32> = fresh.iter().chain(&self.reclaims).copied().collect();
        if wanted.is_empty() {
            self.claim_at = None;
            return;
        }
        let started = Instant::now();
        match self.task.claim(&wanted, &*self.consumer) {
            Ok(claims) => {
                self.timings.rebalance(started.elapsed());
                self.claim_at = None;
                self.claim_retry = Backoff::new();
                let at = |c: &super::Claim| (c.partition, c.next_offset);
                let positions: Vec<(i32, Option<i64>)> = claims.iter().map(at).collect();
                for c in &claims {
                    tracing::info!(topology = %self.settings.name, partition = c.partition, offset = ?c.next_offset, epoch = c.epoch, "partition claimed");
                }
                if let Some((partitions, eager)) = self.claims.take() {
                    let tpl = self.tpl(&partitions, &positions);
                    if let Err(e) = self.consumer.assign(&tpl, eager) {
                        tracing::warn!(topology = %self.settings.name, error = %e, "assign failed");
                    }
                }
                let reclaimed: Vec<(i32, i64)> = std::mem::take(&mut self.reclaims)
                    .into_iter()
                    .filter_map(|p| positions.iter().find(|(q, _)| *q == p))
                    // Never committed: from the beginning.
                    .map(|&(p, next)| (p, next.unwrap_or(0)))
                    .collect();
                self.rewind(reclaimed);
            }
            Err(e) => {
                let wait = self.claim_retry.next();
                tracing::warn!(topology = %self.settings.name, error = %e, retry_in = ?wait, "cannot claim partitions in the store; retrying");
                self.claim_at = Some(Instant::now() + wait);
            }
        }
    }

    /// The partitions at their claimed offsets (the beginning where none).
    fn tpl(&self, partitions: &[i32], positions: &[(i32, Option<i64>)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            let offset = match positions.iter().find(|(q, _)| *q == p) {
                Some((_, Some(n))) => Offset::Offset(*n),
                Some((_, None)) => Offset::Beginning,
                None => Offset::Invalid,
            };
            let _ = tpl.add_partition_offset(&self.settings.source, p, offset);
        }
        tpl
    }

    /// Asks the loop to seek back, and drops what it read before it did.
    fn rewind(&mut self, positions: Vec<(i32, i64)>) {
        if positions.is_empty() {
            return;
        }
        self.generation += 1;
        let mut r = self.shared.rewind.lock().unwrap_or_else(|p| p.into_inner());
        for &(p, _) in &positions {
            self.dropping.insert(p, self.generation);
        }
        merge(&mut r.positions, positions);
        r.generation = self.generation;
        self.shared.rewind_due.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
#[path = "committer_tests.rs"]
mod tests;
