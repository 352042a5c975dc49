//! The exactly-once floor: a minimal transactional copier with sluice's
//! librdkafka settings and no decoding — consume, produce the same bytes in
//! a transaction, send the offsets, commit when the input drains (or at the
//! commit interval under load). What exactly-once can reach on this broker,
//! beside the non-transactional pass-through. Like sluice's producer it
//! asks for failed deliveries only, waits for the rest before sending the
//! offsets, and alternates two transactional ids (`kafka::txn` says why):
//! with one, it waited 20 ms after most commits and its median was 170 ms.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{BaseProducer, Producer},
    types::RDKafkaErrorCode,
};

use super::e2e::{Measured, Setup, Taken, copy_of, measure};
use sluice::kafka::{KafkaConfig, deliveries::serve_deliveries};

const TXN: Duration = Duration::from_secs(30);

pub async fn txn_copier(s: &Setup<'_>) -> anyhow::Result<Measured> {
    let (input, output, prepared) = s.copier_topics("floor", "floor").await?;
    let taken: Arc<Taken> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = s.threads.clamp(1, s.partitions.max(1) as usize);
    let group = format!("bench-{}-floor", s.run_id);
    let mut copiers = Vec::new();
    for i in 0..threads {
        let consumer: BaseConsumer = s.kafka.consumer(&group).create()?;
        consumer.subscribe(&[&input])?;
        let id = format!("{group}-{i}");
        let producers = producers(s.kafka, &id)?;
        let (out, taken, stop, every) = (
            output.clone(),
            taken.clone(),
            stop.clone(),
            s.commit_interval,
        );
        copiers.push(tokio::task::spawn_blocking(move || {
            copy(&consumer, &producers, &out, &taken, &stop, every)
        }));
    }
    let measured = measure(
        s,
        "exactly-once floor (transactional copier, no decode)",
        prepared,
        (&taken.0, &taken.1),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in copiers {
        c.await??;
    }
    s.drop_topics(&[&input, &output]).await;
    measured
}

/// Two transactional producers, `id` and `id-b`, reporting failures only.
pub(crate) fn producers(kafka: &KafkaConfig, id: &str) -> anyhow::Result<[BaseProducer; 2]> {
    let make = |id: &str| -> anyhow::Result<BaseProducer> {
        let mut config = kafka.producer(Some(id));
        config.set("delivery.report.only.error", "true");
        Ok(config.create()?)
    };
    Ok([make(id)?, make(&format!("{id}-b"))?])
}

/// One copier until `stop`: a transaction per drained input or `every`.
pub(crate) fn copy(
    consumer: &BaseConsumer,
    producers: &[BaseProducer; 2],
    out: &str,
    taken: &Taken,
    stop: &AtomicBool,
    every: Duration,
) -> anyhow::Result<()> {
    for p in producers {
        p.init_transactions(TXN)?;
    }
    let mut turn = 0;
    let mut offsets = TopicPartitionList::new();
    let mut open: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let producer = &producers[turn];
        let polled = consumer.poll(Duration::from_millis(1));
        producer.poll(Duration::ZERO);
        let drained = match polled {
            None => true,
            Some(m) => {
                let m = m?;
                if open.is_none() {
                    producer.begin_transaction()?;
                    open = Some(Instant::now());
                }
                if taken.0.fetch_add(1, Ordering::Relaxed) == 0 {
                    let _ = taken.1.set(Instant::now());
                }
                let mut record = copy_of(&m, out);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            producer.poll(Duration::from_millis(1));
                            record = r;
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
                let next = Offset::Offset(m.offset() + 1);
                match offsets.find_partition(m.topic(), m.partition()) {
                    Some(mut e) => e.set_offset(next)?,
                    None => offsets.add_partition_offset(m.topic(), m.partition(), next)?,
                }
                false
            }
        };
        if let Some(began) = open
            && (drained || began.elapsed() >= every)
        {
            let meta = consumer
                .group_metadata()
                .ok_or_else(|| anyhow::anyhow!("the copier has no group metadata"))?;
            let idle = || producer.in_flight_count() == 0;
            anyhow::ensure!(
                serve_deliveries(producer, idle, Instant::now() + TXN),
                "the copier's records were not acknowledged within {TXN:?}"
            );
            producer.send_offsets_to_transaction(&offsets, &meta, TXN)?;
            producer.commit_transaction(TXN)?;
            turn = 1 - turn;
            offsets = TopicPartitionList::new();
            open = None;
        }
    }
    if open.is_some() {
        producers[turn].abort_transaction(TXN)?;
    }
    Ok(())
}
