//! The worker loop of one topology.

use std::{
    future::Future,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use rdkafka::{
    Message, Offset, Timestamp,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
};
use tokio::time::{Instant, sleep, sleep_until};

use super::{
    Backoff, RunOptions, RuntimeError, Stats,
    dlq::{self, Origin},
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
    let context = WorkerContext {
        topology: d.name.clone(),
        txn: txn.clone(),
        stats: stats.clone(),
        timings: timings.clone(),
    };
    let consumer: StreamConsumer<WorkerContext> = kafka
        .worker_consumer(&group)
        .create_with_context(context)
        .map_err(client_err)?;
    consumer.subscribe(&[&d.source]).map_err(client_err)?;
    tracing::info!(topology = %d.name, group = %group, guarantee = %opts.guarantee, instance = %instance, "worker started");

    let dlq_topic: Arc<str> = d.dead_letter.as_str().into();
    let lock = || txn.lock().unwrap_or_else(|p| p.into_inner());
    let mut outputs: Vec<Output> = Vec::new();
    let mut commit_at: Option<Instant> = None;
    // One timer, re-armed per batch: a fresh `sleep_until` per record would
    // register and drop a timer entry for every message.
    let commit_timer = sleep_until(Instant::now());
    tokio::pin!(commit_timer);
    let mut consume_backoff = Backoff::new();

    'outer: loop {
        let msg = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = &mut commit_timer, if commit_at.is_some() => {
                commit(&consumer, &mut lock(), &stats, &d.name, &timings);
                commit_at = None;
                continue;
            }
            m = consumer.recv() => m,
        };
        let Some(msg) = consume_backoff.received(msg, &d.name).await else {
            continue;
        };
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
        let mut retry = Backoff::new();
        let dead = loop {
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
                    let origin = Origin {
                        topic: msg.topic(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                        timestamp_ms,
                    };
                    stats.count_dead_letter(f.kind());
                    tracing::debug!(topology = %d.name, kind = f.kind(), error = %f, offset = msg.offset(), "dead letter");
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
        };
        let sent = {
            let mut t = lock();
            let mut sent = Ok(());
            if let Some(dead) = &dead {
                sent = t.send(&dead.record, &dead.headers);
            }
            for out in &outputs {
                if sent.is_err() {
                    break;
                }
                sent = t.send(out, &[]);
            }
            if sent.is_ok() {
                t.consumed(msg.partition(), msg.offset());
            }
            sent.map(|()| t.records)
        };
        match sent {
            Ok(n) => {
                stats
                    .records_out
                    .fetch_add(outputs.len() as u64, Ordering::Relaxed);
                if n_in.is_multiple_of(SAMPLE) {
                    timings.latency_ms(crate::topology::clock::processing_time_ms() - timestamp_ms);
                }
                if n >= opts.batch_size {
                    commit(&consumer, &mut lock(), &stats, &d.name, &timings);
                    commit_at = None;
                } else if commit_at.is_none() {
                    let at = Instant::now() + opts.commit_interval;
                    commit_at = Some(at);
                    commit_timer.as_mut().reset(at);
                }
            }
            Err(e) => {
                tracing::warn!(topology = %d.name, error = %e, "produce failed; aborting the batch");
                // This record was not marked consumed: rewind to it as well.
                let here = Some((msg.partition(), msg.offset()));
                rewind(&consumer, &mut lock(), &stats, here);
                commit_at = None;
                sleep(retry.next()).await;
            }
        }
    }

    tracing::info!(topology = %d.name, "stopping: committing in-flight work and leaving the group");
    commit(&consumer, &mut lock(), &stats, &d.name, &timings);
    consumer.unsubscribe();
    blocking(|| drop(consumer));
    Ok(())
}

fn commit(
    consumer: &StreamConsumer<WorkerContext>,
    txn: &mut Txn,
    stats: &Stats,
    name: &str,
    timings: &Timings,
) {
    if txn.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let records = txn.records;
    let batch = txn.started;
    let committed = txn.commit(consumer);
    timings.commit(started.elapsed());
    if let Some(b) = batch {
        timings.batch(b.elapsed());
    }
    match committed {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topology = %name, records, took = ?started.elapsed(), "committed");
        }
        Err(e) => {
            tracing::warn!(topology = %name, error = %e, "commit failed; aborting and re-reading the batch");
            rewind(consumer, txn, stats, None);
        }
    }
}

/// Aborts the unit and seeks its partitions back to their first uncommitted record.
fn rewind(
    consumer: &StreamConsumer<WorkerContext>,
    txn: &mut Txn,
    stats: &Stats,
    also: Option<(i32, i64)>,
) {
    stats.aborts.fetch_add(1, Ordering::Relaxed);
    let topic = txn.source().to_string();
    let mut positions = txn.abort();
    if let Some((p, o)) = also
        && !positions.iter().any(|(pp, _)| *pp == p)
    {
        positions.push((p, o));
    }
    for (partition, offset) in positions {
        let seek = blocking(|| {
            consumer.seek(
                &topic,
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
