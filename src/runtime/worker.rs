//! The worker loop, one per consumer-group member, for every topology:
//! consume, run the consuming side of the graph (decode and the stateless
//! operators), dead-letter what fails, and hand the results to the task
//! thread (`committer`), which runs the rest and commits. Start-up with
//! back-off, the retry of a record while the registry is down, rewinds
//! after a failed commit, and a fresh start after a fatal client error are
//! all here, once.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering, mpsc},
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use rdkafka::{
    Message, Timestamp,
    consumer::{Consumer, StreamConsumer},
};
use tokio::time::sleep;

use super::{
    RunOptions, RuntimeError,
    backoff::Backoff,
    chunk::{Chunk, Read},
    committer::{Committer, Settings, Work},
    context::MemberContext,
    letters::{self, Source, SourceHeaders, copy_headers},
    open,
    participant::Participant,
    shared::Shared,
    trace,
};
use crate::{
    avro::AvroCodec,
    kafka::{KafkaConfig, blocking},
    stats::{Stats, Timings, fatal_error, timings::SAMPLE},
    topology::{Failure, Input, Topology, fetch_missing},
};

/// Records per chunk handed to the sender: enough that the channel costs
/// little per record, few enough that the sender starts early.
const CHUNK: usize = 256;

/// A member's transactional id: its topology's group and its instance.
pub(super) fn transactional_id(d: &crate::topology::Description, instance: &str) -> String {
    format!("{}-{instance}", d.transactional_prefix)
}

/// Runs one member of a topology's group until `shutdown` resolves; then
/// stops fetching, commits what it processed and leaves the group.
pub async fn run_member(
    topology: &Topology,
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &RunOptions,
    stats: Arc<Stats>,
    timings: Timings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let d = &topology.description;
    let client_err = |source| RuntimeError::Client {
        topology: d.name.clone(),
        source,
    };
    let instance = transactional_id(d, &opts.instance_id);
    let group = opts.group_of(d);
    tokio::pin!(shutdown);
    co_partitioning(topology, kafka)?;
    // Tables the process did not start are read for this member alone,
    // until it ends (after its task thread).
    let mut tables = opts.tables.clone();
    let (_tables_stop, tables_stopped) = tokio::sync::watch::channel(false);
    tables.start(&topology.read_tables, kafka, &codec, &tables_stopped);
    for t in &topology.read_tables {
        if let Some(r) = tables.get(t.topic()) {
            stats.add_table(r.stats.clone());
        }
    }
    let env = open::Env {
        kafka,
        codec: &codec,
        opts,
        group: &group,
        transactional_id: &instance,
        stats: stats.clone(),
        timings: timings.clone(),
        tables: &tables,
    };
    let mut backoff = Backoff::new();
    let task = loop {
        // Sinks that encode where the unit commits need their schemas first.
        let mut schemas = Ok(());
        for t in topology.sinks.iter().filter_map(|s| s.schema_topic()) {
            if let Err(e) = codec.resolve_sink(t).await {
                schemas = Err(e);
                break;
            }
        }
        let opened = match schemas {
            Ok(()) => blocking(|| open::open(topology, &env)).map_err(|e| {
                let retry = e.is_retryable();
                (e.to_string(), retry, Some(e))
            }),
            Err(e) => Err((format!("schema registry: {e}"), e.is_retryable(), None)),
        };
        match opened {
            Ok(t) => break t,
            // A bad property or table: no retry will fix that.
            Err((_, false, Some(e))) => {
                return Err(RuntimeError::Open {
                    topology: d.name.clone(),
                    source: e,
                });
            }
            Err((why, _, _)) => {
                let wait = backoff.next();
                tracing::warn!(topology = %d.name, error = %why, retry_in = ?wait, "cannot open the worker's sinks and producer; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = sleep(wait) => {}
                }
            }
        }
    };
    let sink: Box<dyn Participant> = Box::new(task);
    let keep_input = sink.needs_input();
    // Bounded memory: about one unit's worth of records in the channel.
    let (work, to_send) = mpsc::sync_channel((opts.batch_size / CHUNK).max(2));
    let (used, reuse) = mpsc::sync_channel::<Chunk>(4);
    // Only the loop receives; the lock makes the receiver `Sync` for the future.
    let reuse = std::sync::Mutex::new(reuse);
    let context = MemberContext::new(
        &d.name,
        &d.source,
        work.clone(),
        sink.keeps_positions(),
        stats.clone(),
        timings.clone(),
    );
    let mut config = kafka.worker_consumer(&group, &opts.membership(&instance));
    if d.reads_repartition && config.get("fetch.wait.max.ms").is_none() {
        // A repartition topic is written in transactions, and the broker
        // does not answer a read_committed fetch parked at its end when a
        // commit makes records readable, only when fetch.wait.max.ms (500
        // ms) runs out: measured on Kafka 4.4, a p50 of 579 ms through one
        // repartition hop at 5 000 logins/s. Short waits cost an idle
        // member a fetch request every 20 ms.
        config.set("fetch.wait.max.ms", "20");
    }
    let consumer: Arc<StreamConsumer<MemberContext>> =
        Arc::new(config.create_with_context(context).map_err(client_err)?);
    consumer.subscribe(&[&d.source]).map_err(client_err)?;
    let shared = Arc::new(Shared::default());
    let settings = Settings {
        name: d.name.clone(),
        source: d.source.clone(),
        batch_size: opts.batch_size,
        commit_interval: opts.commit_interval,
        trace: opts.trace.clone(),
    };
    let sender = Committer::new(
        consumer.clone(),
        sink,
        stats.clone(),
        timings.clone(),
        settings,
        shared.clone(),
    )
    .spawn(to_send, used)
    .map_err(|e| {
        RuntimeError::Crashed(format!("{}: cannot start the sender thread: {e}", d.name))
    })?;
    let sinks: Vec<&str> = d.sinks.iter().map(|s| s.label.as_str()).collect();
    tracing::info!(topology = %d.name, group = %group, sinks = %sinks.join(", "), guarantee = %opts.guarantee, instance = %instance, "worker started");

    let crashed = || RuntimeError::Crashed(format!("{}: the sender thread stopped", d.name));
    let ahead: Vec<_> = (topology.read_tables.iter())
        .filter_map(|t| tables.get(t.topic()).map(|r| r.ahead.clone()))
        .collect();
    let hand = |chunk: &mut Chunk| -> Result<(), RuntimeError> {
        let recycled = reuse.lock().ok().and_then(|r| r.try_recv().ok());
        let fresh = match recycled {
            Some(mut c) => {
                c.clear();
                c
            }
            None => Chunk::default(),
        };
        if !chunk.traced.is_empty() {
            let now = trace::now_us();
            for s in &mut chunk.traced {
                s.handed_us = now;
            }
        }
        let handed = std::time::Instant::now();
        chunk.handed = Some(handed);
        for t in &ahead {
            t.want(handed);
        }
        let full = std::mem::replace(chunk, fresh);
        match work.try_send(Work::Chunk(full)) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(w)) => blocking(|| work.send(w)).map_err(|_| crashed()),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(crashed()),
        }
    };
    let dlq_topic: Arc<str> = d.dead_letter.as_str().into();
    let processor = &*topology.processor;
    let mut chunk = Chunk::default();
    let mut emitted = Vec::new();
    let mut consume_backoff = Backoff::new();
    // One stream for the worker's life: `recv` registers and drops a waker
    // slot, two lock round trips, per message.
    let mut messages = consumer.stream();
    let mut fatal = None;
    // librdkafka's fatal errors (a fenced consumer) are looked for now and
    // then: while waiting, and with every chunk handed over.
    let mut fatal_tick = tokio::time::interval(Duration::from_secs(1));
    let mut fatal_check = None;

    'outer: loop {
        // Ready messages are taken without a wait; before waiting, the
        // chunk goes to the sender.
        let ready = if chunk.is_empty() {
            None
        } else {
            messages.next().now_or_never()
        };
        forget_revoked(&consumer, &mut chunk);
        if let Some(reason) = fatal_check
            .take()
            .and_then(|_| fatal_error(consumer.client()))
        {
            fatal = Some(RuntimeError::Fatal {
                topology: d.name.clone(),
                reason,
            });
            break;
        }
        let next = match ready {
            Some(m) => m,
            None => {
                if !chunk.is_empty() {
                    chunk.drained = true;
                    hand(&mut chunk)?;
                }
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = fatal_tick.tick() => {
                        fatal_check = Some(());
                        continue;
                    }
                    // A unit failed with nothing more to read: seek back now.
                    _ = shared.rewind_wanted() => {
                        if let Some(rewind) = shared.take_rewind() {
                            if let Err(e) = seek(&consumer, &d.source, &rewind.positions) {
                                fatal = Some(seek_failed(&d.name, e));
                                break;
                            }
                            blocking(|| work.send(Work::Rewound(rewind.generation)))
                                .map_err(|_| crashed())?;
                        }
                        continue;
                    }
                    m = messages.next() => m,
                }
            }
        };
        let msg = match consume_backoff
            .received(next.expect("a consumer stream never ends"), &d.name)
            .await
        {
            Ok(Some(msg)) => msg,
            Ok(None) => continue,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        forget_revoked(&consumer, &mut chunk);
        if consumer.context().disowns(partition) {
            // Fetched before its partition was revoked: its new owner reads it.
            continue;
        }
        if let Some(rewind) = shared.take_rewind() {
            // A unit failed: what was read of its partitions, this message
            // too, comes again after the seek; the sender drops the rest.
            hand(&mut chunk)?;
            if let Err(e) = seek(&consumer, &d.source, &rewind.positions) {
                fatal = Some(seek_failed(&d.name, e));
                break;
            }
            blocking(|| work.send(Work::Rewound(rewind.generation))).map_err(|_| crashed())?;
            if rewind.positions.iter().any(|(p, _)| *p == partition) {
                continue;
            }
        }
        let n_in = stats.record_in();
        let fetched_us = (opts.trace.as_ref()).and_then(|t| t.samples(n_in).then(trace::now_us));
        let timestamp_ms = match msg.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => chrono::Utc::now().timestamp_millis(),
        };
        let input = Input {
            key: msg.key(),
            value: msg.payload(),
            timestamp_ms,
        };
        let source = Source {
            topic: msg.topic(),
            partition,
            offset,
            timestamp_ms,
            key: msg.key(),
            value: msg.payload(),
            headers: SourceHeaders::Borrowed(&msg),
        };
        // What the producer refused of this record before it was read again.
        let refusal = shared.refusal(partition, offset).unwrap_or_default();
        let mut retry = Backoff::new();
        let mut dead = if refusal.replaces_outputs() {
            emitted.clear();
            None
        } else {
            loop {
                emitted.clear();
                let processed = match processor.process(&codec, input, &mut emitted) {
                    Err(Failure::Missing(missing)) => {
                        // Asked for, then the record is handled again.
                        stats.schema_misses.fetch_add(1, Ordering::Relaxed);
                        match fetch_missing(&codec, processor, input, &missing).await {
                            Ok(()) => continue,
                            Err(f) => Err(f),
                        }
                    }
                    done => {
                        stats.schema_hits.fetch_add(1, Ordering::Relaxed);
                        done
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
                        tracing::debug!(topology = %d.name, kind = f.kind(), error = %f, offset, "dead letter");
                        break Some(letters::dead_letter(&dlq_topic, &d.name, &source, &f));
                    }
                }
            }
        };
        refusal.apply(&mut dead, &mut emitted, |kind, reason| {
            letters::rejected(&dlq_topic, &d.name, &source, kind, reason)
        });
        if n_in.is_multiple_of(SAMPLE) {
            let ms = crate::topology::clock::processing_time_ms() - timestamp_ms;
            timings.latency_ms(ms);
            stats.recent_latency.record(ms.max(0) as f64);
        }
        if let Some(fetched_us) = fetched_us {
            chunk.traced.push(trace::Sample {
                partition,
                offset,
                record_ms: timestamp_ms,
                fetched_us,
                processed_us: trace::now_us(),
                ..Default::default()
            });
        }
        let read = Read {
            partition,
            offset,
            timestamp_ms,
            input: keep_input.then(|| (msg.key(), msg.payload(), copy_headers(msg.headers()))),
        };
        chunk.push(read, &mut emitted, dead);
        if chunk.len() >= CHUNK {
            hand(&mut chunk)?;
            fatal_check = Some(());
            // While messages keep coming the loop would never give its
            // thread back: other topologies, the metrics server and, in the
            // benchmark, the clock's own task would wait seconds.
            tokio::task::yield_now().await;
        }
    }

    drop(messages);
    consumer.context().closing.store(true, Ordering::Relaxed);
    if fatal.is_some() {
        // What was handed over may still commit (the sender decides); the
        // rest is read again by the worker started afresh.
        chunk.clear();
    } else {
        tracing::info!(topology = %d.name, "stopping: committing in-flight work and leaving the group");
        hand(&mut chunk)?;
    }
    let _ = work.send(Work::Stop);
    drop(work);
    blocking(|| sender.join()).map_err(|_| crashed())?;
    consumer.unsubscribe();
    blocking(|| drop(consumer));
    fatal.map_or(Ok(()), Err)
}

/// After each poll, which is where revocations happen: drops what the
/// chunk holds of revoked partitions, which their new owner reads again.
fn forget_revoked(consumer: &StreamConsumer<MemberContext>, chunk: &mut Chunk) {
    if let Some(revoked) = consumer.context().take_revoked() {
        chunk.forget(|p| revoked.contains(&p));
    }
}

/// Seeks each partition back (see `seek`): a partition still owned that
/// cannot be seeked ends the member.
fn seek(
    consumer: &StreamConsumer<MemberContext>,
    topic: &str,
    positions: &[(i32, i64)],
) -> Result<(), super::seek::SeekFailed> {
    let member = super::seek::Member { consumer, topic };
    blocking(|| super::seek::seek_back(&member, positions, std::thread::sleep))
}

/// The member cannot go on without committing past a gap: its successor
/// starts afresh from the committed positions.
fn seek_failed(topology: &str, e: super::seek::SeekFailed) -> RuntimeError {
    tracing::warn!(topology, error = %e, "ending the member rather than commit past records never sent");
    RuntimeError::Fatal {
        topology: topology.to_string(),
        reason: e.to_string(),
    }
}

/// A co-partitioned table's topic must have as many partitions as the
/// source: the member reads the table's partitions by the source's numbers.
fn co_partitioning(topology: &Topology, kafka: &KafkaConfig) -> Result<(), RuntimeError> {
    let d = &topology.description;
    let tables: Vec<&str> = (topology.read_tables.iter())
        .filter(|t| t.co_partitioned())
        .map(|t| t.topic())
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let mut topics = vec![d.source.as_str()];
    topics.extend(&tables);
    let counts =
        crate::kafka::partition_counts(kafka, &topics).map_err(|e| RuntimeError::Fatal {
            topology: d.name.clone(),
            reason: format!(
                "cannot read the partition counts of {}: {e}",
                topics.join(", ")
            ),
        })?;
    // A missing topic is said where it is read.
    let Some(source_partitions) = counts[0] else {
        return Ok(());
    };
    for (table, count) in tables.iter().zip(&counts[1..]) {
        if let Some(table_partitions) = *count
            && table_partitions != source_partitions
        {
            return Err(RuntimeError::CoPartitioning {
                topology: d.name.clone(),
                table: table.to_string(),
                table_partitions,
                source_topic: d.source.clone(),
                source_partitions,
            });
        }
    }
    Ok(())
}
