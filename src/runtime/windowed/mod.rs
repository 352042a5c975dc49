//! The worker loop of a windowed topology: records fold into per-partition
//! window state; every commit interval the partial aggregates, the windows
//! turned final and the input positions go to the store in one transaction.
//! A failed commit drops everything uncommitted and re-claims the
//! partitions from the store, so the store's offsets and rows always agree.

mod owned;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use rdkafka::{
    Message, Offset, Timestamp, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
};
use tokio::{
    sync::Notify,
    time::{Instant, sleep, sleep_until},
};

use owned::{Owned, Part, WindowContext};

use super::{
    Backoff, RunOptions, RuntimeError, Stats,
    dlq::{self, DeadLetter, Origin},
    tally::Tally,
    txn::{Txn, blocking},
};
use crate::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    metrics::{Timings, timings::SAMPLE},
    sink::{
        WindowStore,
        postgres::{ClosedRow, Position, Row},
    },
    topology::{Description, Guarantee, Input, Reading, WindowProcessor},
    window::{Aggregate, Stats as Agg, Window, WindowState},
};

type Consumer_ = Arc<StreamConsumer<WindowContext>>;

const FATAL_CHECK: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a windowed worker runs with, besides its connections.
pub struct Parts {
    pub processor: Arc<dyn WindowProcessor>,
    pub store: Arc<dyn WindowStore>,
    pub stats: Arc<Stats>,
    pub timings: Timings,
}

/// Runs one windowed topology until `shutdown` resolves; then commits what
/// it processed and leaves the group.
pub async fn run_windows(
    d: &Description,
    parts: Parts,
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let Parts {
        processor,
        store,
        stats,
        timings,
    } = parts;
    let client_err = |source| RuntimeError::Client {
        topology: d.name.clone(),
        source,
    };
    tokio::pin!(shutdown);
    // Late records and dead letters: flushed before each store commit, so
    // they are at least once (a crash between the two repeats them).
    let instance = format!("{}-{}", d.group_id, opts.instance_id);
    let mut backoff = Backoff::new();
    let mut producer = loop {
        match Txn::new(
            kafka,
            Guarantee::AtLeastOnce,
            &instance,
            (&d.name, &d.source),
            stats.clone(),
        ) {
            Ok(t) => break t,
            Err(e @ rdkafka::error::KafkaError::ClientCreation(_)) => return Err(client_err(e)),
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(topology = %d.name, error = %e, retry_in = ?wait, "cannot start the producer; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = sleep(wait) => {}
                }
            }
        }
    };
    let group = opts.group_id.clone().unwrap_or_else(|| d.group_id.clone());
    let owned = Arc::new(Mutex::new(Owned::new(processor.spec())));
    let wake = Arc::new(Notify::new());
    let context = WindowContext {
        topology: d.name.clone(),
        source: d.source.clone(),
        owned: owned.clone(),
        stats: stats.clone(),
        wake: wake.clone(),
        closing: Default::default(),
    };
    let consumer: Consumer_ = Arc::new(
        kafka
            .worker_consumer(&group, &opts.membership(&instance))
            .create_with_context(context)
            .map_err(client_err)?,
    );
    consumer.subscribe(&[&d.source]).map_err(client_err)?;
    tracing::info!(topology = %d.name, group = %group, table = processor.table(), "windowed worker started");

    let mut w = Worker {
        d,
        processor,
        codec,
        store,
        stats,
        consumer: consumer.clone(),
        owned,
        dlq: d.dead_letter.as_str().into(),
        late: d.late.clone().unwrap_or_default().as_str().into(),
        readings: Vec::new(),
        uncommitted: 0,
        batch_started: None,
        timings,
    };
    let mut commit_at: Option<Instant> = None;
    let mut claim_at: Option<Instant> = None;
    let mut claim_backoff = Backoff::new();
    let mut consume_backoff = Backoff::new();
    // librdkafka's fatal errors (a fenced consumer) are looked for now and then.
    let mut fatal_tick = tokio::time::interval(FATAL_CHECK);
    let mut fatal_check = None;
    // Windows close by watermark even when no record arrives.
    let mut tick = tokio::time::interval(opts.commit_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if claim_at.is_none_or(|t| t <= Instant::now()) && w.has_pending_claims() {
            match w.claim().await {
                Ok(()) => {
                    claim_at = None;
                    claim_backoff = Backoff::new();
                }
                Err(e) => {
                    let wait = claim_backoff.next();
                    tracing::warn!(topology = %d.name, error = %e, retry_in = ?wait, "cannot claim partitions in the store; retrying");
                    claim_at = Some(Instant::now() + wait);
                }
            }
        }
        if let Some(reason) = fatal_check
            .take()
            .and_then(|_| super::health::fatal_error(consumer.client()))
        {
            drop(w);
            blocking(|| drop(consumer));
            return Err(RuntimeError::Fatal {
                topology: d.name.clone(),
                reason,
            });
        }
        let msg = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = fatal_tick.tick() => {
                fatal_check = Some(());
                continue;
            }
            _ = wake.notified() => continue,
            _ = sleep_until(claim_at.unwrap_or_else(Instant::now)), if claim_at.is_some() => continue,
            _ = sleep_until(commit_at.unwrap_or_else(Instant::now)), if commit_at.is_some() => {
                commit_at = None;
                w.commit(&mut producer, &mut claim_at).await;
                continue;
            }
            _ = tick.tick() => {
                if commit_at.is_none() {
                    w.commit(&mut producer, &mut claim_at).await;
                }
                continue;
            }
            m = consumer.recv() => m,
        };
        let Some(msg) = consume_backoff.received(msg, &d.name).await? else {
            continue;
        };
        let taken = tokio::select! {
            _ = &mut shutdown => break,
            t = w.take(&msg, &mut producer) => t,
        };
        if taken {
            w.uncommitted += 1;
            if w.uncommitted >= opts.batch_size {
                commit_at = None;
                w.commit(&mut producer, &mut claim_at).await;
            } else if commit_at.is_none() {
                commit_at = Some(Instant::now() + opts.commit_interval);
            }
        }
    }

    tracing::info!(topology = %d.name, "stopping: committing in-flight windows and leaving the group");
    w.commit(&mut producer, &mut None).await;
    w.release_pending();
    consumer.unsubscribe();
    drop(w);
    blocking(|| drop(consumer));
    Ok(())
}

struct Worker<'a> {
    d: &'a Description,
    processor: Arc<dyn WindowProcessor>,
    codec: Arc<AvroCodec>,
    store: Arc<dyn WindowStore>,
    stats: Arc<Stats>,
    consumer: Consumer_,
    owned: Arc<Mutex<Owned>>,
    dlq: Arc<str>,
    late: Arc<str>,
    readings: Vec<Reading>,
    uncommitted: usize,
    batch_started: Option<std::time::Instant>,
    timings: Timings,
}

impl Worker<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands librdkafka the partitions still waiting for a claim, so that
    /// leaving the group does not wait for an assign call that never comes.
    fn release_pending(&self) {
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Relaxed);
        let mut o = self.lock();
        let pending: Vec<i32> = std::mem::take(&mut o.to_claim)
            .into_iter()
            .filter(|p| !o.assigned.contains(p))
            .collect();
        let eager = o.eager;
        drop(o);
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in pending {
            tpl.add_partition(&self.d.source, p);
        }
        let r = if eager {
            self.consumer.assign(&tpl)
        } else {
            self.consumer.incremental_assign(&tpl)
        };
        if let Err(e) = r {
            tracing::debug!(topology = %self.d.name, error = %e, "assign before leaving failed");
        }
    }

    fn has_pending_claims(&self) -> bool {
        !self.lock().to_claim.is_empty()
    }

    /// Claims the partitions waiting for it, then assigns them at their
    /// stored offsets (or seeks there, if they were already assigned).
    async fn claim(&mut self) -> Result<(), crate::sink::postgres::SinkError> {
        let (wanted, eager) = {
            let o = self.lock();
            (o.to_claim.iter().copied().collect::<Vec<_>>(), o.eager)
        };
        // Already-assigned partitions stay quiet until they are re-positioned.
        self.set_paused(&wanted, true);
        let started = std::time::Instant::now();
        let claims = self.store.claim(&wanted).await?;
        let mut o = self.lock();
        let (mut fresh, mut reseek) = (TopicPartitionList::new(), Vec::new());
        let wall = now_ms();
        for c in claims {
            // Revoked while the claim was in flight: not ours any more.
            if !o.to_claim.remove(&c.partition) {
                continue;
            }
            let offset = c.next_offset.map_or(Offset::Beginning, Offset::Offset);
            let spec = o.spec;
            o.marks.restore_partition(c.partition, c.watermark_ms, wall);
            o.parts.insert(
                c.partition,
                Part {
                    epoch: c.epoch,
                    next: c.next_offset.unwrap_or(-1),
                    floor: c.watermark_ms,
                    state: WindowState::new(spec),
                    tally: Tally::default(),
                },
            );
            o.marks.reset_current();
            if o.assigned.contains(&c.partition) {
                reseek.push((c.partition, offset));
            } else {
                let _ = fresh.add_partition_offset(&self.d.source, c.partition, offset);
                o.assigned.insert(c.partition);
            }
            tracing::info!(topology = %self.d.name, partition = c.partition, offset = ?c.next_offset, epoch = c.epoch, "partition claimed");
        }
        drop(o);
        if fresh.count() > 0 {
            let r = if eager {
                self.consumer.assign(&fresh)
            } else {
                self.consumer.incremental_assign(&fresh)
            };
            if let Err(e) = r {
                tracing::warn!(topology = %self.d.name, error = %e, "assign failed");
            }
        }
        self.timings.rebalance(started.elapsed());
        for (p, offset) in reseek {
            let topic = &self.d.source;
            let seek = blocking(|| {
                self.consumer
                    .seek(topic, p, offset, Duration::from_secs(10))
            });
            if let Err(e) = seek {
                tracing::warn!(topology = %self.d.name, partition = p, error = %e, "cannot seek; claiming again");
                self.lock().reclaim_all();
            }
            self.set_paused(&[p], false);
        }
        Ok(())
    }

    fn set_paused(&self, partitions: &[i32], paused: bool) {
        let assigned: Vec<i32> = {
            let o = self.lock();
            partitions
                .iter()
                .copied()
                .filter(|p| o.assigned.contains(p))
                .collect()
        };
        if assigned.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in assigned {
            tpl.add_partition(&self.d.source, p);
        }
        let r = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::debug!(topology = %self.d.name, error = %e, paused, "pause/resume failed");
        }
    }

    /// Folds one record into its partition's windows; false if the record
    /// was not for this worker (not claimed, or read before a seek).
    async fn take(
        &mut self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        producer: &mut Txn,
    ) -> bool {
        let (p, offset) = (msg.partition(), msg.offset());
        {
            let o = self.lock();
            match o.parts.get(&p) {
                Some(part) if offset >= part.next => {}
                _ => return false,
            }
        }
        let n = self.stats.record_in();
        self.batch_started
            .get_or_insert_with(std::time::Instant::now);
        let timestamp_ms = match msg.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => now_ms(),
        };
        let input = Input {
            key: msg.key(),
            value: msg.payload(),
            timestamp_ms,
        };
        let origin = Origin {
            topic: msg.topic(),
            partition: p,
            offset,
            timestamp_ms,
            headers: msg.headers(),
        };
        let mut retry = Backoff::new();
        let mut readings = std::mem::take(&mut self.readings);
        let processed = loop {
            readings.clear();
            let r = match self
                .processor
                .process_cached(&self.codec, input, &mut readings)
            {
                Some(r) => {
                    self.stats.schema_hits.fetch_add(1, Ordering::Relaxed);
                    r
                }
                None => {
                    self.stats.schema_misses.fetch_add(1, Ordering::Relaxed);
                    self.processor
                        .process(&self.codec, input, &mut readings)
                        .await
                }
            };
            match r {
                Err(f) if f.is_retryable() => {
                    let wait = retry.next();
                    tracing::warn!(topology = %self.d.name, error = %f, retry_in = ?wait, "transient failure; retrying the record");
                    sleep(wait).await;
                }
                r => break r,
            }
        };
        let mut rejected: Option<DeadLetter> = None;
        {
            let owned = self.owned.clone();
            let mut guard = owned.lock().unwrap_or_else(|p| p.into_inner());
            let o = &mut *guard;
            let Some(part) = o.parts.get_mut(&p) else {
                self.readings = readings;
                return false;
            };
            match processed {
                Ok(()) => {
                    let wall = now_ms();
                    let mut missed = Vec::new();
                    for r in &readings {
                        o.marks.observe(p, r.event_ms, wall);
                        let watermark = o.marks.current().max(part.floor);
                        missed.extend(part.state.add(&r.key, r.event_ms, &r.value, watermark));
                    }
                    if !missed.is_empty() {
                        part.tally.late += 1;
                        let event_ms = readings.first().map_or(timestamp_ms, |r| r.event_ms);
                        rejected = Some(dlq::late_record(
                            &self.late,
                            &self.d.name,
                            origin,
                            (msg.key(), msg.payload()),
                            event_ms,
                            &missed,
                        ));
                    }
                }
                Err(f) => {
                    part.tally.dead_letter(f.kind());
                    rejected = Some(dlq::dead_letter(
                        &self.dlq,
                        &self.d.name,
                        origin,
                        msg.key(),
                        msg.payload(),
                        &f,
                    ));
                }
            }
            part.next = offset + 1;
        }
        if n.is_multiple_of(SAMPLE) {
            self.timings.latency_ms(now_ms() - timestamp_ms);
        }
        self.readings = readings;
        if let Some(r) = rejected
            && let Err(e) = producer.send_dead_letter(&r)
        {
            // Not flushed, so the commit fails and the record is read again.
            tracing::warn!(topology = %self.d.name, error = %e, "cannot queue a late or dead-letter record");
            producer.poison(e);
        }
        true
    }

    /// Writes everything since the last commit in one store transaction.
    async fn commit(&mut self, producer: &mut Txn, claim_at: &mut Option<Instant>) {
        let mut tally = Tally::default();
        let (rows, closed, positions) = {
            let mut guard = self.lock();
            let o = &mut *guard;
            let watermark = o.marks.advance(now_ms());
            let mut merged: HashMap<(String, String, Window), (Agg, bool)> = HashMap::new();
            let mut closed: Vec<ClosedRow> = Vec::new();
            let mut positions = Vec::new();
            for (p, part) in o.parts.iter_mut() {
                tally.absorb(&mut part.tally);
                part.floor = part.floor.max(watermark);
                let (updates, done) = part.state.flush(part.floor);
                for u in updates {
                    let e = merged
                        .entry((u.key.0, u.key.1, u.window))
                        .or_insert((Agg::default(), false));
                    <Agg as Aggregate<f64>>::merge(&mut e.0, &u.partial);
                    e.1 |= u.is_final;
                }
                closed.extend(done.into_iter().map(|c| (c.key.0, c.key.1, c.window)));
                positions.push(Position {
                    partition: *p,
                    next_offset: part.next,
                    watermark_ms: part.floor,
                    epoch: part.epoch,
                });
            }
            let rows: Vec<Row> = merged
                .into_iter()
                .map(
                    |((device_id, sensor_type, window), (partial, is_final))| Row {
                        device_id,
                        sensor_type,
                        window,
                        partial,
                        is_final,
                    },
                )
                .collect();
            closed.retain(|c| {
                !rows
                    .iter()
                    .any(|r| (&r.device_id, &r.sensor_type, r.window) == (&c.0, &c.1, c.2))
            });
            closed.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
            closed.dedup();
            let open: usize = o.parts.values().map(|p| p.state.open_windows()).sum();
            self.stats
                .open_windows
                .store(open as u64, Ordering::Relaxed);
            (rows, closed, positions)
        };
        if self.uncommitted == 0 && rows.is_empty() && closed.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        super::failpoint::hit("before-store-commit");
        let result = match producer.flush() {
            Ok(()) => {
                let write = std::time::Instant::now();
                let r = self.store.commit(&rows, &closed, &positions).await;
                self.timings.postgres(write.elapsed());
                r.map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("late or dead-letter records not delivered: {e}")),
        };
        self.timings.commit(started.elapsed());
        if let Some(b) = self.batch_started.take() {
            self.timings.batch(b.elapsed());
        }
        match result {
            Ok(()) => {
                super::failpoint::hit("after-store-commit");
                self.stats.health.committed(true);
                self.uncommitted = 0;
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                // Its sink is `postgres:<table>`: rows are what it writes.
                tally.outputs = rows.len() as u64;
                tally.committed(&self.stats);
                self.stats
                    .window_rows
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                tracing::debug!(topology = %self.d.name, rows = rows.len(), closed = closed.len(), took = ?started.elapsed(), "committed");
                self.commit_to_kafka(&positions);
            }
            Err(e) => {
                tracing::warn!(topology = %self.d.name, error = %e, "commit failed; re-reading from the last stored positions");
                self.stats.health.committed(false);
                self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                self.uncommitted = 0;
                self.lock().reclaim_all();
                claim_at.get_or_insert_with(|| Instant::now() + Duration::from_millis(200));
            }
        }
    }

    /// The store holds the real positions; these let Kafka tools show lag.
    fn commit_to_kafka(&self, positions: &[Position]) {
        let mut tpl = TopicPartitionList::new();
        for p in positions.iter().filter(|p| p.next_offset >= 0) {
            let _ = tpl.add_partition_offset(
                &self.d.source,
                p.partition,
                Offset::Offset(p.next_offset),
            );
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(topology = %self.d.name, error = %e, "informational offset commit failed");
        }
    }
}
