//! Through a broker: a raw librdkafka pass-through (the ceiling), then the
//! user-login topology with exactly-once. Each run feeds its input topic at
//! full speed while a read_committed reader drains the output; latency is
//! read time minus the input record's timestamp, which both carry through.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Message, Timestamp,
    consumer::{Consumer, StreamConsumer},
    message::DeliveryResult,
    mocking::MockCluster,
    producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext},
};

use super::Figures;
use crate::{
    avro::{AvroCodec, RegistryClient},
    kafka::{KafkaConfig, TopicSpec, create_topics},
    runtime::{RunOptions, Workers, blocking},
    schemas,
    simulate::logins::Generator,
    topologies::user_login,
    topology::Guarantee,
};

pub struct Setup<'a> {
    pub kafka: &'a KafkaConfig,
    /// The in-process mock cluster, which creates topics only through its own API.
    pub mock: Option<&'a MockCluster<'static, DefaultProducerContext>>,
    pub codec: Arc<AvroCodec>,
    pub registry: &'a RegistryClient,
    pub records: usize,
    pub partitions: i32,
    /// Records per second offered; 0 for as fast as the feeder can.
    pub rate: u64,
    pub run_id: String,
    /// Commit after this many records or this long (the workers' --batch-size, --commit-interval).
    pub batch_size: usize,
    pub commit_interval: Duration,
    /// Of the topic-to-topic run.
    pub guarantee: Guarantee,
}

impl Setup<'_> {
    pub(super) fn topics(&self, variant: &str) -> (String, String) {
        (
            format!("bench-{}-{variant}-in", self.run_id),
            format!("bench-{}-{variant}-out", self.run_id),
        )
    }

    pub(super) async fn create(&self, topics: &[&str]) -> anyhow::Result<()> {
        if let Some(mock) = self.mock {
            for t in topics {
                mock.create_topic(t, self.partitions, 1)?;
            }
            return Ok(());
        }
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|t| TopicSpec {
                name: t.to_string(),
                partitions: self.partitions,
                replication: 1,
                min_insync_replicas: None,
            })
            .collect();
        create_topics(self.kafka, &specs).await?;
        Ok(())
    }

    /// Pre-encoded valid logins, cycled.
    async fn payloads(&self, topic: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut generator = Generator::new(5, 0.0);
        let now = chrono::Utc::now().timestamp();
        let mut out = Vec::new();
        for _ in 0..self.records.min(10_000) {
            let login = generator.valid(now);
            out.push((
                login.user_id.clone(),
                self.codec.encode(topic, &login).await?,
            ));
        }
        Ok(out)
    }

    fn consumer(&self, group: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
        let consumer: StreamConsumer = self.kafka.consumer(group).create()?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Counts failed deliveries of the benchmark's plain producers.
#[derive(Default)]
struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Plain = BaseProducer<Failures>;

fn plain_producer(kafka: &KafkaConfig) -> anyhow::Result<Plain> {
    Ok(kafka
        .producer(None)
        .create_with_context(Failures::default())?)
}

/// Sends a record, waiting while the local queue is full.
fn send(producer: &Plain, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return;
            }
            Err((_, r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
        }
    }
}

/// Waits for every acknowledgement; fails if any record was lost.
fn finish(producer: &Plain) -> anyhow::Result<()> {
    while producer.in_flight_count() > 0 {
        producer.poll(Duration::from_millis(1));
    }
    match producer.context().0.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => anyhow::bail!("{n} records were not delivered"),
    }
}

/// Produces `n` payloads, each with the current time as its timestamp.
pub(super) fn feed(
    kafka: &KafkaConfig,
    topic: &str,
    payloads: &[(String, Vec<u8>)],
    n: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let producer = plain_producer(kafka)?;
    let started = Instant::now();
    for i in 0..n {
        if rate > 0 {
            // Hold the offered load at `rate`, so latency is the pipeline's, not a backlog's.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed())
                && ahead > Duration::from_millis(1)
            {
                producer.poll(Duration::ZERO);
                std::thread::sleep(ahead);
            }
        }
        let (key, value) = &payloads[i % payloads.len()];
        send(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_slice())
                .timestamp(now_ms()),
        );
    }
    finish(&producer)
}

/// Reads `n` records, returning per-record latencies.
async fn drain(
    consumer: StreamConsumer,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n);
    drain_into(&consumer, n, limit, &mut lat).await?;
    Ok(lat)
}

async fn drain_into(
    consumer: &StreamConsumer,
    n: usize,
    limit: Duration,
    lat: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while lat.len() < n {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {} of {n} records arrived within {limit:?}", lat.len())
            })??;
        if let Timestamp::CreateTime(t) = m.timestamp() {
            lat.push(Duration::from_millis((now_ms() - t).max(0) as u64));
        }
    }
    Ok(())
}

/// One record through before the clock starts, so that consumer-group
/// joins are not measured.
async fn warm_up(
    kafka: &KafkaConfig,
    input: &str,
    payloads: &[(String, Vec<u8>)],
    reader: StreamConsumer,
) -> anyhow::Result<StreamConsumer> {
    feed(kafka, input, payloads, 1, 0)?;
    drain_into(&reader, 1, Duration::from_secs(120), &mut Vec::new()).await?;
    Ok(reader)
}

/// Warms the pipeline up, then feeds `s.records` into `input` while `reader`
/// drains the output; the clock runs from the first record fed to the last read.
async fn measure(
    s: &Setup<'_>,
    name: &str,
    input: String,
    payloads: Vec<(String, Vec<u8>)>,
    reader: StreamConsumer,
) -> anyhow::Result<Figures> {
    let (kafka, n, rate) = (s.kafka.clone(), s.records, s.rate);
    let reader = warm_up(&kafka, &input, &payloads, reader).await?;
    let started = Instant::now();
    let feeder = tokio::task::spawn_blocking(move || feed(&kafka, &input, &payloads, n, rate));
    let lat = drain(reader, n, LIMIT).await?;
    let elapsed = started.elapsed();
    feeder.await??;
    Ok(Figures::from_latencies(name, elapsed, lat))
}

const LIMIT: Duration = Duration::from_secs(600);

/// Copies bytes from one topic to another: the most a consume → produce loop
/// on this broker can do, with no decoding and no transactions.
pub async fn passthrough(s: &Setup<'_>) -> anyhow::Result<Figures> {
    let (input, output) = s.topics("passthrough");
    s.create(&[&input, &output]).await?;
    let payloads = s.payloads(user_login::SOURCE).await?;
    let reader = s.consumer(&format!("bench-{}-pt-reader", s.run_id), &output)?;
    let copier = s.consumer(&format!("bench-{}-pt-copier", s.run_id), &input)?;
    let producer = plain_producer(s.kafka)?;
    let n = s.records;
    let out_topic = output.clone();
    let copy = tokio::spawn(async move {
        for _ in 0..n + 1 {
            let m = copier.recv().await?;
            let ts = match m.timestamp() {
                Timestamp::CreateTime(t) => t,
                _ => now_ms(),
            };
            let mut record = BaseRecord::<[u8], [u8]>::to(&out_topic).timestamp(ts);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            send(&producer, record);
        }
        blocking(|| finish(&producer))
    });
    let figures = measure(
        s,
        "pass-through (librdkafka, no decode)",
        input,
        payloads,
        reader,
    )
    .await?;
    copy.await??;
    Ok(figures)
}

/// The user-login topology, exactly-once, on its own topics.
pub async fn topology(s: &Setup<'_>) -> anyhow::Result<Figures> {
    let (input, output) = s.topics("sluice");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &output, &dlq]).await?;
    let text = |t: &str| {
        schemas::embedded()
            .into_iter()
            .find(|f| f.topic == t)
            .map(|f| f.text)
    };
    s.registry
        .register(
            &schemas::value_subject(&input),
            &text(user_login::SOURCE).unwrap_or_default(),
        )
        .await?;
    s.registry
        .register(
            &schemas::value_subject(&output),
            &text(user_login::SINK).unwrap_or_default(),
        )
        .await?;
    let payloads = s.payloads(&input).await?;
    let reader_schema =
        schemas::for_topic(user_login::SOURCE).ok_or_else(|| anyhow::anyhow!("no schema"))?;
    let topology = user_login::declare(
        &format!("bench-{}", s.run_id),
        &input,
        &output,
        reader_schema,
    )?;
    let reader = s.consumer(&format!("bench-{}-sluice-reader", s.run_id), &output)?;
    let opts = RunOptions {
        guarantee: s.guarantee,
        instance_id: format!("bench-{}", s.run_id),
        batch_size: s.batch_size,
        commit_interval: s.commit_interval,
        ..RunOptions::default()
    };
    let workers = Workers::spawn(vec![topology], s.kafka, s.codec.clone(), &opts);
    let figures = measure(
        s,
        &format!("user-login topology, {}", s.guarantee),
        input,
        payloads,
        reader,
    )
    .await?;
    workers.stop(Duration::from_secs(30)).await?;
    Ok(figures)
}
