//! The worker loop of one topology.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard, atomic::Ordering},
    time::Duration,
};

use rdkafka::{
    Message, Offset, Timestamp,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
};
use tokio::{
    task::JoinHandle,
    time::{Instant, sleep, sleep_until},
};

use super::{
    Backoff, RunOptions, RuntimeError, Stats,
    dlq::{self, Origin},
    pending::Pending,
    refused::{self, Refusals},
    txn::{Txn, WorkerContext, blocking},
};
use crate::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    metrics::{Timings, timings::SAMPLE},
    topology::{Description, Input, Output, Processor},
};

/// Runs one topology until `shutdown` resolves; then stops fetching, commits
/// what it processed and leaves the group.
#[allow(clippy::too_many_arguments)]
pub async fn run_topic(
    d: &Description,
    processor: &dyn Processor,
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &RunOptions,
    stats: Arc<Stats>,
    timings: Timings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let client_err = |source| RuntimeError::Client {
        topology: d.name.clone(),
        source,
    };
    let instance = format!("{}-{}", d.group_id, opts.instance_id);
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new();
    let txn = loop {
        match Txn::new(kafka, opts.guarantee, &instance, &d.source) {
            Ok(t) => break Arc::new(Mutex::new(t)),
            // A bad property: no retry will fix that.
            Err(e @ KafkaError::ClientCreation(_)) => return Err(client_err(e)),
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(topology = %d.name, error = %e, retry_in = ?wait, "cannot start the producer; is the broker reachable? retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = sleep(wait) => {}
                }
            }
        }
    };
    let group = opts.group_id.clone().unwrap_or_else(|| d.group_id.clone());
    let context = WorkerContext::new(&d.name, txn.clone(), stats.clone(), timings.clone());
    let pending = context.pending.clone();
    let consumer: Arc<StreamConsumer<WorkerContext>> = Arc::new(
        kafka
            .worker_consumer(&group)
            .create_with_context(context)
            .map_err(client_err)?,
    );
    consumer.subscribe(&[&d.source]).map_err(client_err)?;
    tracing::info!(topology = %d.name, group = %group, guarantee = %opts.guarantee, instance = %instance, "worker started");

    let unit = Unit {
        consumer: consumer.clone(),
        txn,
        pending,
        stats: stats.clone(),
        timings: timings.clone(),
        name: d.name.clone(),
        source: d.source.clone(),
    };
    let dlq_topic: Arc<str> = d.dead_letter.as_str().into();
    let mut outputs: Vec<Output> = Vec::new();
    let mut commit_at: Option<Instant> = None;
    // The unit committing in the background, if any: meanwhile results are
    // held in `pending`.
    let mut committing: Option<JoinHandle<Committed>> = None;
    // One timer, re-armed per batch: a fresh `sleep_until` per record would
    // register and drop a timer entry for every message.
    let commit_timer = sleep_until(Instant::now());
    tokio::pin!(commit_timer);
    let mut consume_backoff = Backoff::new();
    let mut refusals = Refusals::default();

    'outer: loop {
        let msg = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            done = async { committing.as_mut().expect("guarded").await }, if committing.is_some() => {
                committing = None;
                match unit.settle(done, &mut refusals)? {
                    Some(records) if records >= opts.batch_size => {
                        committing = Some(unit.commit_in_background());
                        commit_at = None;
                    }
                    Some(_) => {
                        let at = Instant::now() + opts.commit_interval;
                        commit_at = Some(at);
                        commit_timer.as_mut().reset(at);
                    }
                    None => commit_at = None,
                }
                continue;
            }
            _ = &mut commit_timer, if commit_at.is_some() && committing.is_none() => {
                committing = Some(unit.commit_in_background());
                commit_at = None;
                continue;
            }
            m = consumer.recv() => m,
        };
        let Some(msg) = consume_backoff.received(msg, &d.name).await else {
            continue;
        };
        if let Some(positions) = consumer.context().take_rewind() {
            // A commit before revocation failed: read its records again,
            // this one too.
            let here = (msg.partition(), msg.offset());
            unit.rewind(positions, Some(here));
            commit_at = None;
            continue;
        }
        let n_in = stats.records_in.fetch_add(1, Ordering::Relaxed);
        let timestamp_ms = match msg.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => chrono::Utc::now().timestamp_millis(),
        };
        let input = Input {
            key: msg.key(),
            value: msg.payload(),
            timestamp_ms,
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        let origin = Origin {
            topic: msg.topic(),
            partition,
            offset,
            timestamp_ms,
        };
        let letter = |kind, reason| {
            dlq::rejected(
                &dlq_topic,
                &d.name,
                origin,
                (msg.key(), msg.payload()),
                kind,
                reason,
            )
        };
        // What the producer refused of this record before it was read again.
        let mut refusal = refusals.take(partition, offset).unwrap_or_default();
        let mut retry = Backoff::new();
        let mut dead = if refusal.replaces_outputs() {
            stats.count_dead_letter(refused::KIND);
            outputs.clear();
            None
        } else {
            loop {
                outputs.clear();
                let processed = match processor.process_cached(&codec, input, &mut outputs) {
                    Some(done) => {
                        stats.schema_hits.fetch_add(1, Ordering::Relaxed);
                        done
                    }
                    None => {
                        stats.schema_misses.fetch_add(1, Ordering::Relaxed);
                        processor.process(&codec, input, &mut outputs).await
                    }
                };
                match processed {
                    Ok(()) => break None,
                    Err(f) if f.is_retryable() => {
                        let wait = retry.next();
                        tracing::warn!(topology = %d.name, error = %f, retry_in = ?wait, "transient failure; retrying the record");
                        tokio::select! {
                            _ = &mut shutdown => break 'outer,
                            _ = sleep(wait) => {}
                        }
                    }
                    Err(f) => {
                        stats.count_dead_letter(f.kind());
                        tracing::debug!(topology = %d.name, kind = f.kind(), error = %f, offset, "dead letter");
                        break Some(dlq::dead_letter(
                            &dlq_topic,
                            &d.name,
                            origin,
                            msg.key(),
                            msg.payload(),
                            &f,
                        ));
                    }
                }
            }
        };
        refusal.apply(&mut dead, &mut outputs, letter);
        if n_in.is_multiple_of(SAMPLE) {
            timings.latency_ms(crate::topology::clock::processing_time_ms() - timestamp_ms);
        }
        if let Some(in_flight) = committing.as_mut() {
            let held = {
                let mut p = unit.pending();
                p.push(partition, offset, &mut outputs, dead);
                p.len()
            };
            if held >= opts.batch_size {
                // Bounded memory: wait for the commit before taking more.
                let done = in_flight.await;
                committing = None;
                if unit.settle(done, &mut refusals)?.is_some() {
                    committing = Some(unit.commit_in_background());
                }
                commit_at = None;
            }
            continue;
        }
        let sent = loop {
            let sent = {
                let mut t = unit.txn();
                refused::send_results(&mut t, dead.as_ref(), &outputs).map(|()| {
                    t.consumed(partition, offset);
                    t.records
                })
            };
            match sent {
                // Nothing of this record is in the unit yet: send what can be
                // sent in its place right away.
                Err(f) if !f.partial && refusal.absorb(&f) => {
                    if !f.of_dead_letter {
                        stats.count_dead_letter(refused::KIND);
                    }
                    tracing::warn!(topology = %d.name, error = %f.error, topic = %f.topic, partition, offset, "the producer refused a record; sending a dead letter in its place");
                    refusal.apply(&mut dead, &mut outputs, letter);
                }
                other => break other,
            }
        };
        match sent {
            Ok(n) => {
                stats
                    .records_out
                    .fetch_add(outputs.len() as u64, Ordering::Relaxed);
                if n >= opts.batch_size {
                    committing = Some(unit.commit_in_background());
                    commit_at = None;
                } else if commit_at.is_none() {
                    let at = Instant::now() + opts.commit_interval;
                    commit_at = Some(at);
                    commit_timer.as_mut().reset(at);
                }
            }
            Err(f) => {
                // Part of the record's results are in the unit: only an
                // abort takes them out.
                let refused = refusal.absorb(&f);
                if refused {
                    tracing::warn!(topology = %d.name, error = %f.error, topic = %f.topic, partition, offset, "the producer refused a record; aborting the batch to send a dead letter in its place");
                    refusals.keep(partition, offset, refusal);
                } else {
                    tracing::warn!(topology = %d.name, error = %f.error, "produce failed; aborting the batch");
                }
                // This record was not marked consumed: rewind to it as well.
                let positions = unit.abort();
                unit.rewind(positions, Some((partition, offset)));
                commit_at = None;
                if !refused {
                    sleep(retry.next()).await;
                }
            }
        }
    }

    tracing::info!(topology = %d.name, "stopping: committing in-flight work and leaving the group");
    if let Some(in_flight) = committing.take() {
        unit.settle(in_flight.await, &mut refusals)?;
    }
    if let Err(positions) = blocking(|| unit.commit_now()) {
        unit.rewind(positions, None);
    }
    consumer.unsubscribe();
    drop(unit);
    blocking(|| drop(consumer));
    Ok(())
}

/// What a background commit left: `Err` holds where to read again from.
type Committed = Result<(), Vec<(i32, i64)>>;

/// The state a worker shares with its consumer context and background committer.
struct Unit {
    consumer: Arc<StreamConsumer<WorkerContext>>,
    txn: Arc<Mutex<Txn>>,
    pending: Arc<Mutex<Pending>>,
    stats: Arc<Stats>,
    timings: Timings,
    name: String,
    source: String,
}

impl Unit {
    fn txn(&self) -> MutexGuard<'_, Txn> {
        self.txn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_in_background(&self) -> JoinHandle<Committed> {
        let unit = self.detached();
        tokio::task::spawn_blocking(move || unit.commit_now())
    }

    fn detached(&self) -> Unit {
        Unit {
            consumer: self.consumer.clone(),
            txn: self.txn.clone(),
            pending: self.pending.clone(),
            stats: self.stats.clone(),
            timings: self.timings.clone(),
            name: self.name.clone(),
            source: self.source.clone(),
        }
    }

    /// Commits the unit; on failure aborts it and gives where to read again from.
    fn commit_now(&self) -> Committed {
        let mut txn = self.txn();
        if txn.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let records = txn.records;
        let batch = txn.started;
        let committed = txn.commit_now(&*self.consumer);
        self.timings.commit(started.elapsed());
        if let Some(b) = batch {
            self.timings.batch(b.elapsed());
        }
        match committed {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(topology = %self.name, records, took = ?started.elapsed(), "committed");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(topology = %self.name, error = %e, "commit failed; aborting and re-reading the batch");
                self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                Err(blocking(|| txn.abort()))
            }
        }
    }

    fn abort(&self) -> Vec<(i32, i64)> {
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        self.txn().abort()
    }

    /// After a background commit: sends the held results into the next unit
    /// and gives its size, or rewinds (`None`).
    fn settle(
        &self,
        done: Result<Committed, tokio::task::JoinError>,
        refusals: &mut Refusals,
    ) -> Result<Option<usize>, RuntimeError> {
        let done =
            done.map_err(|e| RuntimeError::Crashed(format!("{}: committer: {e}", self.name)))?;
        if let Err(positions) = done {
            self.rewind(positions, None);
            return Ok(None);
        }
        let sent = {
            let mut txn = self.txn();
            let mut pending = self.pending();
            pending
                .send_into(&mut txn)
                .map(|outputs| (outputs, txn.records))
        };
        match sent {
            Ok((outputs, records)) => {
                self.stats.records_out.fetch_add(outputs, Ordering::Relaxed);
                Ok((records > 0).then_some(records))
            }
            Err((f, (partition, offset))) => {
                if refusals.absorb(partition, offset, &f) {
                    tracing::warn!(topology = %self.name, error = %f.error, topic = %f.topic, partition, offset, "the producer refused a record; aborting the batch to send a dead letter in its place");
                } else {
                    tracing::warn!(topology = %self.name, error = %f.error, "produce failed; aborting the batch");
                }
                let positions = self.abort();
                self.rewind(positions, None);
                Ok(None)
            }
        }
    }

    /// Drops the held results and seeks each partition back to `positions`
    /// (an aborted unit's first offsets), to the first held record, or to
    /// `also`, whichever is earliest.
    fn rewind(&self, mut positions: Vec<(i32, i64)>, also: Option<(i32, i64)>) {
        let held = self.pending().discard();
        for (partition, offset) in held.into_iter().chain(also) {
            match positions.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, o)) => *o = (*o).min(offset),
                None => positions.push((partition, offset)),
            }
        }
        let topic = &self.source;
        for (partition, offset) in positions {
            let seek = blocking(|| {
                self.consumer.seek(
                    topic,
                    partition,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                )
            });
            if let Err(e) = seek {
                // Most likely revoked meanwhile: its new owner starts from the committed offset.
                tracing::info!(%topic, partition, offset, error = %e, "cannot seek back");
            }
        }
    }
}
