//! Through a broker: a raw librdkafka pass-through (the ceiling), then the
//! user-login topology with exactly-once. Each run first preloads its input
//! topic, then starts the processor; throughput is timed from the first record
//! the processor takes to the last one a read_committed reader reads back, so
//! neither the feeder nor the consumer-group joins compete with or count
//! against it. Then, with the pipeline warm, records are offered at a fixed
//! rate for latency: read time minus the input record's timestamp, which
//! both processors carry through.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use rdkafka::{
    ClientContext, Message, Offset, Timestamp, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    message::DeliveryResult,
    mocking::MockCluster,
    producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext},
};

use super::Figures;
use crate::{simulate::logins::Generator, topologies::user_login};
use sluice::{
    avro::{AvroCodec, RegistryClient},
    kafka::{KafkaConfig, TopicSpec, create_topics, delete_topics, deliveries::serve_deliveries},
    runtime::{RunOptions, Workers},
    topology::{Emitted, Failure, Guarantee, Input, Processor, Topology},
};

pub struct Setup<'a> {
    pub kafka: &'a KafkaConfig,
    /// The in-process mock cluster, which creates topics only through its own API.
    pub mock: Option<&'a MockCluster<'static, DefaultProducerContext>>,
    pub codec: Arc<AvroCodec>,
    pub registry: &'a RegistryClient,
    /// Preloaded records of the throughput run.
    pub records: usize,
    pub partitions: i32,
    /// Records per second offered in the latency run, and how many.
    pub rate: u64,
    pub latency_records: usize,
    pub run_id: String,
    /// Commit after this many records or this long (the workers' --batch-size, --commit-interval).
    pub batch_size: usize,
    pub commit_interval: Duration,
    /// Of the topic-to-topic run.
    pub guarantee: Guarantee,
    /// Copiers of the pass-through and group members of the topology.
    pub threads: usize,
}

impl Setup<'_> {
    /// Registers, for the bench's own `topic`, the schema of the shipped
    /// topic `schema_of`.
    pub(super) async fn register(&self, topic: &str, schema_of: &str) -> anyhow::Result<()> {
        let text = crate::topologies::schema_for(schema_of)
            .ok_or_else(|| anyhow::anyhow!("no shipped topology has a schema for {schema_of}"))?;
        self.registry
            .register(&sluice::schemas::value_subject(topic), &text)
            .await?;
        Ok(())
    }

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
                compact: false,
            })
            .collect();
        create_topics(self.kafka, &specs).await?;
        Ok(())
    }

    /// Drops a finished run's topics: a broker that keeps everything in
    /// memory (tansu) slowed down by a fifth per run kept, which would make
    /// every run pay for the ones before it.
    pub(super) async fn drop_topics(&self, topics: &[&str]) {
        if self.mock.is_some() {
            return;
        }
        if let Err(e) = delete_topics(self.kafka, topics).await {
            tracing::warn!(error = %e, ?topics, "cannot delete the benchmark's topics");
        }
    }

    /// Pre-encoded valid logins, cycled.
    pub(super) async fn payloads(
        &self,
        topic: &str,
    ) -> anyhow::Result<Arc<Vec<(String, Vec<u8>)>>> {
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
        Ok(Arc::new(out))
    }

    /// A copier's input and output topics, made, the input preloaded with
    /// logins and a reader waiting on the output (`variant` names the
    /// topics, `reader` the reader's group).
    pub(super) async fn copier_topics(
        &self,
        variant: &str,
        reader: &str,
    ) -> anyhow::Result<(String, String, Prepared)> {
        let (input, output) = self.topics(variant);
        self.create(&[&input, &output]).await?;
        let payloads = self.payloads(user_login::SOURCE).await?;
        let prepared = self.prepare(reader, &input, &output, payloads).await?;
        Ok((input, output, prepared))
    }

    /// Records offered at `rate` after the throughput run; none without a rate.
    fn offered(&self) -> usize {
        if self.rate > 0 {
            self.latency_records
        } else {
            0
        }
    }

    /// Preloads the input, and subscribes a reader to the output that has
    /// joined its group by the time this returns.
    pub(super) async fn prepare(
        &self,
        variant: &str,
        input: &str,
        output: &str,
        payloads: Arc<Vec<(String, Vec<u8>)>>,
    ) -> anyhow::Result<Prepared> {
        let (kafka, topic, n, feed_with) = (
            self.kafka.clone(),
            input.to_string(),
            self.records,
            payloads.clone(),
        );
        let preload = tokio::task::spawn_blocking(move || feed(&kafka, &topic, &feed_with, n, 0));
        let group = format!("bench-{}-{variant}-reader", self.run_id);
        let reader = joined_reader(self.kafka, &group, output).await?;
        preload.await??;
        Ok(Prepared {
            input: input.to_string(),
            payloads,
            reader,
        })
    }
}

/// A preloaded input and a reader waiting on the output.
pub(super) struct Prepared {
    input: String,
    payloads: Arc<Vec<(String, Vec<u8>)>>,
    reader: StreamConsumer,
}

/// What one end-to-end run measured: throughput, then latency at the offered rate.
pub struct Measured {
    pub throughput: Figures,
    /// What the throughput run cost in CPU, where `/proc` tells.
    pub cpu: Option<super::cpu::Cost>,
    pub latency: Option<Figures>,
}

/// Subscribes and polls until the group has assigned the partitions, so
/// that the join is not timed. The output is empty until the processor starts.
async fn joined_reader(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = kafka.consumer(group).create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + JOIN_LIMIT;
    while consumer.assignment()?.count() == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reader of {topic} did not join its group within {JOIN_LIMIT:?}"
        );
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            m?;
            anyhow::bail!("{topic} holds records before the processor started");
        }
    }
    Ok(consumer)
}

const JOIN_LIMIT: Duration = Duration::from_secs(120);

/// When the processor under test took its first record: waits for it
/// (polling every millisecond) and gives the instant the processor stamped,
/// so a late poll does not shorten the run.
/// A topology's processor, stamping the instant it is first called: the
/// benchmark's clock starts there, not when its own task, polling, sees it.
pub(super) struct Stamped {
    inner: Arc<dyn Processor>,
    pub first: Arc<std::sync::OnceLock<Instant>>,
}

impl Stamped {
    /// `topology` with its processor stamped, and the stamp.
    pub fn wrap(topology: Topology) -> (Topology, Arc<std::sync::OnceLock<Instant>>) {
        let first = Arc::new(std::sync::OnceLock::new());
        let stamped = Arc::new(Stamped {
            inner: topology.processor().clone(),
            first: first.clone(),
        });
        (topology.with_processor(stamped), first)
    }
}

impl Processor for Stamped {
    fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        self.first.get_or_init(Instant::now);
        self.inner.process(codec, input, out)
    }

    fn reader(&self) -> &sluice::avro::Reader {
        self.inner.reader()
    }
}

pub(super) async fn first_taken(
    taken: &AtomicU64,
    first: &std::sync::OnceLock<Instant>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + JOIN_LIMIT;
    while taken.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the processor took no record within {JOIN_LIMIT:?}; did it join its group?"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(first.get().copied().unwrap_or_else(Instant::now))
}

fn now_ms() -> i64 {
    sluice::topology::clock::wall_clock_ms()
}

/// Counts failed deliveries of the benchmark's plain producers.
#[derive(Default)]
pub(super) struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(super) type Plain = BaseProducer<Failures>;

pub(super) fn plain_producer(kafka: &KafkaConfig) -> anyhow::Result<Plain> {
    Ok(kafka
        .producer(None)
        .create_with_context(Failures::default())?)
}

/// Sends a record, waiting while the local queue is full, and serves
/// the delivery reports that are ready.
pub(super) fn send(producer: &Plain, record: BaseRecord<'_, [u8], [u8]>) {
    enqueue(producer, record);
    producer.poll(Duration::ZERO);
}

/// Queues a record, serving delivery reports while librdkafka's queue is full.
pub(super) fn enqueue<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) {
    while let Err((_, r)) = producer.send(record) {
        record = r;
        let queued = producer.in_flight_count();
        let deadline = Instant::now() + Duration::from_millis(10);
        serve_deliveries(producer, || producer.in_flight_count() < queued, deadline);
    }
}

/// Waits for every acknowledgement; fails if any record was lost.
pub(super) fn finish(producer: &Plain) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    let idle = || producer.in_flight_count() == 0;
    anyhow::ensure!(
        serve_deliveries(producer, idle, deadline),
        "records still unacknowledged after {LIMIT:?}"
    );
    match producer.context().0.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => anyhow::bail!("{n} records were not delivered"),
    }
}

/// Produces `n` payloads, each with the current time as its timestamp, at
/// `rate` records/s (0: as fast as the broker takes them).
pub(super) fn feed(
    kafka: &KafkaConfig,
    topic: &str,
    payloads: &[(String, Vec<u8>)],
    n: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let producer = connected_producer(kafka, topic)?;
    let started = Instant::now();
    for i in 0..n {
        if rate > 0 {
            pace(&producer, started, i, rate);
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

/// A producer connected to `topic`'s leaders before the first record's
/// timestamp, so that latency does not include the producer's own start.
pub(super) fn connected_producer(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Plain> {
    let producer = plain_producer(kafka)?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))?;
    Ok(producer)
}

/// Holds the offered load at `rate`: sleeps until record `i` is due, so
/// that latency is the pipeline's, not a backlog's.
pub(super) fn pace(producer: &Plain, started: Instant, i: usize, rate: u64) {
    pace_with(|| producer.poll(Duration::ZERO), started, i, rate)
}

/// As [`pace`], serving the producer with `poll` before a sleep.
pub(super) fn pace_with(poll: impl Fn(), started: Instant, i: usize, rate: u64) {
    let due = Duration::from_secs_f64(i as f64 / rate as f64);
    if let Some(ahead) = due.checked_sub(started.elapsed())
        && ahead > Duration::from_millis(1)
    {
        poll();
        std::thread::sleep(ahead);
    }
}

/// Reads `n` records, appending per-record latencies when `lat` is given.
/// The reader shares the cores with the processor under test, so it does
/// no more per record than it must: one deadline for the whole read, and no
/// clock reads when latency is not wanted.
async fn drain_into(
    consumer: &StreamConsumer,
    n: usize,
    mut lat: Option<&mut Vec<Duration>>,
) -> anyhow::Result<()> {
    let mut read = 0;
    let reading = async {
        while read < n {
            let m = consumer.recv().await?;
            read += 1;
            if let Some(lat) = lat.as_deref_mut()
                && let Timestamp::CreateTime(t) = m.timestamp()
            {
                lat.push(Duration::from_millis((now_ms() - t).max(0) as u64));
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(LIMIT, reading).await {
        Ok(done) => done,
        Err(_) => anyhow::bail!("only {read} of {n} records arrived within {LIMIT:?}"),
    }
}

const LIMIT: Duration = Duration::from_secs(600);

/// Times the processor from its first record to the last one read back,
/// then offers the latency run's records at the set rate.
pub(super) async fn measure(
    s: &Setup<'_>,
    name: &str,
    prepared: Prepared,
    (taken, first): (&AtomicU64, &std::sync::OnceLock<Instant>),
) -> anyhow::Result<Measured> {
    let Prepared {
        input,
        payloads,
        reader,
    } = prepared;
    let begun = first_taken(taken, first).await?;
    let cpu_before = super::cpu::Sample::now();
    drain_into(&reader, s.records, None).await?;
    let elapsed = begun.elapsed();
    let cpu = cpu_before
        .zip(super::cpu::Sample::now())
        .and_then(|(a, b)| b.since(&a, s.records as u64, elapsed.as_secs_f64()));
    let throughput = Figures::throughput(name, s.records as u64, elapsed);
    let m = s.offered();
    if m == 0 {
        return Ok(Measured {
            throughput,
            cpu,
            latency: None,
        });
    }
    let (kafka, rate) = (s.kafka.clone(), s.rate);
    let started = Instant::now();
    let feeder = tokio::task::spawn_blocking(move || feed(&kafka, &input, &payloads, m, rate));
    let mut lat = Vec::with_capacity(m);
    drain_into(&reader, m, Some(&mut lat)).await?;
    let elapsed = started.elapsed();
    feeder.await??;
    let latency = Figures::from_latencies(&format!("{name}, offered {rate}/s"), elapsed, lat);
    Ok(Measured {
        throughput,
        cpu,
        latency: Some(latency),
    })
}

/// Copies bytes from one topic to another: the most a consume → produce loop
/// on this broker can do, with no decoding and no transactions.
pub async fn passthrough(s: &Setup<'_>) -> anyhow::Result<Measured> {
    let (input, output, prepared) = s.copier_topics("passthrough", "pt").await?;
    let taken: Arc<Taken> = Arc::default();
    let mut copiers = tokio::task::JoinSet::new();
    let threads = s.threads.clamp(1, s.partitions.max(1) as usize);
    for i in 0..threads {
        // Partitions assigned outright, not through a group: copiers commit
        // nothing, so a rebalance would copy records twice.
        let mut partitions = TopicPartitionList::new();
        for p in (i as i32..s.partitions).step_by(threads) {
            partitions.add_partition_offset(&input, p, Offset::Beginning)?;
        }
        let copier: StreamConsumer = s
            .kafka
            .consumer(&format!("bench-{}-pt-copier", s.run_id))
            .create()?;
        copier.assign(&partitions)?;
        let producer = plain_producer(s.kafka)?;
        let (out_topic, counter) = (output.clone(), taken.clone());
        copiers.spawn(copy(copier, producer, out_topic, counter));
    }
    let measured = measure(
        s,
        "pass-through (librdkafka, no decode)",
        prepared,
        (&taken.0, &taken.1),
    )
    .await;
    // Every record has been read back, so every copy was delivered.
    copiers.abort_all();
    while let Some(done) = copiers.join_next().await {
        match done {
            Ok(r) => r?,
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    s.drop_topics(&[&input, &output]).await;
    measured
}

/// Records the copiers took, and when the first was.
pub(super) type Taken = (AtomicU64, std::sync::OnceLock<Instant>);

/// One copier of the pass-through: consume, produce the same bytes, count.
async fn copy(
    copier: StreamConsumer,
    producer: Plain,
    out_topic: String,
    taken: Arc<Taken>,
) -> anyhow::Result<()> {
    // One stream, as the worker does: `recv` registers and drops a waker
    // slot per message.
    let mut messages = copier.stream();
    loop {
        let m = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the consumer stream ended"))??;
        let n = taken.0.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            let _ = taken.1.set(Instant::now());
        } else if n.is_multiple_of(256) {
            // As the worker's loop: give the thread back now and then.
            tokio::task::yield_now().await;
        }
        send(&producer, copy_of(&m, &out_topic));
    }
}

/// `m`'s key, value and creation time, for `topic`: what the copiers send.
pub(super) fn copy_of<'a>(m: &'a impl Message, topic: &'a str) -> BaseRecord<'a, [u8], [u8]> {
    let ts = match m.timestamp() {
        Timestamp::CreateTime(t) => t,
        _ => now_ms(),
    };
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).timestamp(ts);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(p) = m.payload() {
        record = record.payload(p);
    }
    record
}

/// The user-login topology, exactly-once, on its own topics.
pub async fn topology(s: &Setup<'_>) -> anyhow::Result<Measured> {
    let (input, output) = s.topics("sluice");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &output, &dlq]).await?;
    s.register(&input, user_login::SOURCE).await?;
    s.register(&output, user_login::SINK).await?;
    let payloads = s.payloads(&input).await?;
    let topology = user_login::declare(&format!("bench-{}", s.run_id), &input, &output)?;
    let name = format!("user-login topology, {}", s.guarantee);
    let measured = run_workers(s, "sluice", topology, &name, (&input, &output), payloads).await;
    s.drop_topics(&[&input, &output, &dlq]).await;
    measured
}

/// Runs `topology` as the workers would, on its preloaded input.
pub(super) async fn run_workers(
    s: &Setup<'_>,
    variant: &str,
    topology: Topology,
    name: &str,
    (input, output): (&str, &str),
    payloads: Arc<Vec<(String, Vec<u8>)>>,
) -> anyhow::Result<Measured> {
    let prepared = s.prepare(variant, input, output, payloads).await?;
    let opts = RunOptions {
        guarantee: s.guarantee,
        instance_id: format!("bench-{}-{variant}", s.run_id),
        batch_size: s.batch_size,
        commit_interval: s.commit_interval,
        threads: s.threads,
        ..RunOptions::default()
    };
    let (topology, first) = Stamped::wrap(topology);
    let workers = Workers::spawn(vec![topology], s.kafka, s.codec.clone(), &opts);
    let stats = workers.stats[0].1.clone();
    let measured = measure(s, name, prepared, (&stats.records_in, &first)).await;
    workers.stop(Duration::from_secs(30)).await?;
    measured
}
