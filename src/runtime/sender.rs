//! The worker's sender thread: it owns the producer and the unit of commit.
//! The loop consumes and processes, and hands results over in chunks; this
//! thread sends them into the open transaction, commits by size and
//! interval, and aborts on failure. Producing a record costs librdkafka
//! about as much as processing it, and on one thread each waited for the
//! other while a core stood idle; a commit's round trips now hold up
//! neither.
//!
//! A failed unit must be read again: this thread aborts it, tells the loop
//! where each partition restarts, and drops every record of those
//! partitions it receives until the loop says it has seeked back (the
//! channel is in read order, so those were all read before the seek).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Instant,
};

use rdkafka::consumer::StreamConsumer;

use super::{
    Backoff, Stats,
    chunk::Chunk,
    refused::{Refusal, Refusals, send_results},
    tally::Tally,
    txn::{Txn, WorkerContext},
};
use crate::metrics::Timings;

pub enum Work {
    Chunk(Chunk),
    /// Partitions are being revoked: commit everything handed over so far,
    /// then answer. When they were lost instead (the session timed out, so
    /// another member may own them already), abort it all.
    Revoke {
        revoked: Vec<i32>,
        lost: bool,
        done: SyncSender<()>,
    },
    /// The loop has seeked back as far as the rewind of this generation asked.
    Rewound(u64),
    Stop,
}

/// What the loop and the sender thread share.
#[derive(Default)]
pub struct Shared {
    refusals: Mutex<Refusals>,
    any_refused: AtomicBool,
    rewind: Mutex<Rewind>,
    rewind_due: AtomicBool,
    /// Wakes a loop waiting for messages when a rewind is due.
    wake: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Rewind {
    /// Where each partition restarts.
    pub positions: Vec<(i32, i64)>,
    pub generation: u64,
}

impl Shared {
    /// What the producer refused of this record when it was last handled.
    pub fn refusal(&self, partition: i32, offset: i64) -> Option<Refusal> {
        if !self.any_refused.load(Ordering::Acquire) {
            return None;
        }
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.get(partition, offset)
    }

    /// Forgets refusals of records that are committed or handed over.
    fn forget_refusals(&self, done: impl Fn(i32, i64) -> bool) {
        if !self.any_refused.load(Ordering::Acquire) {
            return;
        }
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.forget(done);
        self.any_refused
            .store(!refusals.is_empty(), Ordering::Release);
    }

    fn absorb(&self, partition: i32, offset: i64, f: &super::refused::SendFailure) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let absorbed = refusals.absorb(partition, offset, f);
        self.any_refused
            .store(!refusals.is_empty(), Ordering::Release);
        absorbed
    }

    /// Where to seek back to, if a unit failed since the last call.
    pub fn take_rewind(&self) -> Option<Rewind> {
        // Checked per message: a plain load while nothing is due.
        if !self.rewind_due.load(Ordering::Acquire)
            || !self.rewind_due.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        Some(std::mem::take(
            &mut *self.rewind.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Resolves when a rewind may be due (check with `take_rewind`).
    pub async fn rewind_wanted(&self) {
        self.wake.notified().await
    }

    fn forget_rewinds(&self, revoked: &[i32]) {
        let mut r = self.rewind.lock().unwrap_or_else(|p| p.into_inner());
        r.positions.retain(|(p, _)| !revoked.contains(p));
    }
}

pub struct Sender {
    pub consumer: Arc<StreamConsumer<WorkerContext>>,
    pub txn: Txn,
    pub stats: Arc<Stats>,
    pub timings: Timings,
    pub name: String,
    pub batch_size: usize,
    pub commit_interval: std::time::Duration,
    pub shared: Arc<Shared>,
    /// Partitions whose records are dropped until the loop has seeked
    /// back, with the rewind generation that asked for it.
    dropping: HashMap<i32, u64>,
    generation: u64,
    retry: Backoff,
    /// What the unit holds, counted once it commits.
    tally: Tally,
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: Arc<StreamConsumer<WorkerContext>>,
        txn: Txn,
        stats: Arc<Stats>,
        timings: Timings,
        name: &str,
        batch_size: usize,
        commit_interval: std::time::Duration,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            consumer,
            txn,
            stats,
            timings,
            name: name.to_string(),
            batch_size,
            commit_interval,
            shared,
            dropping: HashMap::new(),
            generation: 0,
            retry: Backoff::new(),
            tally: Tally::default(),
        }
    }

    /// Starts the thread; sent chunks go back through `used`.
    pub fn spawn(
        self,
        work: Receiver<Work>,
        used: SyncSender<Chunk>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("send-{}", self.name))
            .spawn(move || self.run(work, used))
    }

    fn run(mut self, work: Receiver<Work>, used: SyncSender<Chunk>) {
        loop {
            let deadline = self.txn.started.map(|t| t + self.commit_interval);
            // Under steady load there is always a chunk waiting.
            if deadline.is_some_and(|d| d <= Instant::now()) {
                self.commit();
                continue;
            }
            let next = match deadline {
                Some(d) => work.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => work.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(Work::Chunk(chunk)) => {
                    self.take(&chunk);
                    // Freed where it was allocated, by the loop: every output
                    // holds its topic's `Arc` and two buffers, and dropping
                    // them here moved a reference count's cache line and the
                    // allocator's free lists between the cores per record.
                    let _ = used.try_send(chunk);
                }
                Ok(Work::Revoke {
                    revoked,
                    lost,
                    done,
                }) => {
                    // Everything handed over before this is in the unit.
                    if lost {
                        self.drop_unit();
                    } else {
                        self.commit();
                    }
                    for p in &revoked {
                        self.dropping.remove(p);
                    }
                    // Their new owner reads them from the committed offsets.
                    self.shared.forget_rewinds(&revoked);
                    self.shared.forget_refusals(|p, _| revoked.contains(&p));
                    let _ = done.send(());
                }
                Ok(Work::Rewound(generation)) => self.dropping.retain(|_, g| *g > generation),
                Err(RecvTimeoutError::Timeout) => self.commit(),
                Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Nothing is read again after this: a failed last commit is left to
        // the partitions' next owner.
        self.commit();
    }

    /// Sends a chunk's results into the unit, committing whenever it is full.
    fn take(&mut self, chunk: &Chunk) {
        for (i, held) in chunk.iter().enumerate() {
            if self.dropping.contains_key(&held.partition) {
                continue;
            }
            match send_results(&mut self.txn, held.dead, held.outputs) {
                Ok(()) => {
                    self.txn.consumed(held.partition, held.offset);
                    self.tally.outputs += held.outputs.len() as u64;
                    if let Some(d) = held.dead {
                        self.tally.dead_letter(d.kind);
                    }
                    if self.txn.records >= self.batch_size {
                        self.commit();
                    }
                }
                Err(f) => {
                    let refused = self.shared.absorb(held.partition, held.offset, &f);
                    if refused {
                        tracing::warn!(topology = %self.name, error = %f.error, topic = %f.topic, partition = held.partition, offset = held.offset, "the producer refused a record; aborting the batch to send a dead letter in its place");
                    } else {
                        tracing::warn!(topology = %self.name, error = %f.error, "produce failed; aborting the batch");
                    }
                    self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                    self.tally.clear();
                    let mut positions = self.txn.abort();
                    // This record and the rest of the chunk were not sent.
                    let rest = chunk.first_offsets(i).into_iter();
                    merge(
                        &mut positions,
                        rest.filter(|(p, _)| !self.dropping.contains_key(p)),
                    );
                    self.rewind(positions);
                    if !refused {
                        std::thread::sleep(self.retry.next());
                    }
                    break;
                }
            }
        }
    }

    /// Commits the unit; on failure aborts it and has it read again.
    fn commit(&mut self) {
        if self.txn.is_empty() {
            return;
        }
        let started = Instant::now();
        let records = self.txn.records;
        let batch = self.txn.started;
        // Only needed to forget refusals once their records are committed.
        let next = if self.shared.any_refused.load(Ordering::Acquire) {
            self.txn.next_offsets()
        } else {
            Vec::new()
        };
        self.stats.health.committing();
        let committed = self.txn.commit_now(&*self.consumer);
        self.timings.commit(started.elapsed());
        if let Some(b) = batch {
            self.timings.batch(b.elapsed());
        }
        match committed {
            Ok(()) => {
                self.stats.health.committed(true);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.tally.committed(&self.stats);
                self.retry = Backoff::new();
                self.shared.forget_refusals(|partition, offset| {
                    next.iter().any(|&(p, n)| p == partition && offset < n)
                });
                tracing::debug!(topology = %self.name, records, took = ?started.elapsed(), "committed");
            }
            Err(e) => {
                tracing::warn!(topology = %self.name, error = %e, "commit failed; aborting and re-reading the batch");
                self.stats.health.committed(false);
                self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                self.tally.clear();
                let positions = self.txn.abort();
                self.rewind(positions);
            }
        }
    }

    /// Aborts the unit without reading it again here: its partitions are
    /// gone, and their next owner starts from the committed offsets.
    fn drop_unit(&mut self) {
        if self.txn.is_empty() {
            return;
        }
        tracing::info!(topology = %self.name, records = self.txn.records, "partitions lost; aborting their uncommitted work");
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        self.tally.clear();
        self.txn.abort();
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

/// Adds positions, keeping the earliest per partition.
fn merge(into: &mut Vec<(i32, i64)>, more: impl IntoIterator<Item = (i32, i64)>) {
    for (partition, offset) in more {
        match into.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, o)) => *o = (*o).min(offset),
            None => into.push((partition, offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_earliest_position_per_partition() {
        let mut into = vec![(0, 10), (1, 5)];
        merge(&mut into, [(1, 3), (2, 7), (0, 12)]);
        assert_eq!(into, vec![(0, 10), (1, 3), (2, 7)]);
    }

    #[test]
    fn a_rewind_is_taken_once() {
        let shared = Shared::default();
        assert!(shared.take_rewind().is_none());
        {
            let mut r = shared.rewind.lock().unwrap();
            r.positions = vec![(0, 4), (1, 9)];
            r.generation = 2;
        }
        shared.rewind_due.store(true, Ordering::Release);
        shared.forget_rewinds(&[1]);
        let r = shared.take_rewind().unwrap();
        assert_eq!((r.positions, r.generation), (vec![(0, 4)], 2));
        assert!(shared.take_rewind().is_none());
    }
}
