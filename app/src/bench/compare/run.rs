//! One processor's run on one preloaded stream: topics, the process, the
//! timed pass (sentinel to sentinel), latency at a fixed offered rate, and
//! the check that the output is exactly the input's, once.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    Message, Offset, Timestamp, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{Consumer, StreamConsumer},
    producer::BaseRecord,
};

use super::{
    breakdown::{Breakdown, paced},
    child::{Watched, cpu_between, median_rss, now_ms},
    stream::{Rec, Stream, Work, sentinel},
    verify,
};
use crate::bench::e2e::{finish, plain_producer, send};
use sluice::{
    avro::{AvroCodec, RegistryClient},
    kafka::{KafkaConfig, delete_topics},
    schemas,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processor {
    PassThrough,
    /// The exactly-once floor: a transactional copier, no decode.
    Floor,
    Sluice,
    KafkaStreams,
    /// Quix Streams, exactly-once (true) or at-least-once; user-login only.
    QuixStreams(bool),
}

impl Processor {
    pub fn label(self, work: Work) -> &'static str {
        match (self, work) {
            (Processor::PassThrough, _) => "pass-through (librdkafka)",
            (Processor::Floor, _) => "exactly-once floor (transactional copier)",
            (Processor::Sluice, Work::Logins) => "sluice user-login",
            (Processor::Sluice, Work::Readings) => "sluice iot windows",
            (Processor::KafkaStreams, Work::Logins) => "Kafka Streams user-login",
            (Processor::KafkaStreams, Work::Readings) => "Kafka Streams iot windows",
            (Processor::Sluice, Work::Enriched) => "sluice iot-enriched (join)",
            (Processor::KafkaStreams, Work::Enriched) => {
                "Kafka Streams iot-enriched (GlobalKTable join)"
            }
            (_, Work::Unjoined) => "sluice readings to a topic, no join",
            (Processor::Sluice, Work::Counts) => "sluice logins-by-locale (re-key, count)",
            (Processor::KafkaStreams, Work::Counts) => "Kafka Streams groupBy(locale).count()",
            (Processor::QuixStreams(true), _) => "Quix Streams user-login",
            (Processor::QuixStreams(false), _) => "Quix Streams user-login, at-least-once",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Processor::PassThrough => "pt",
            Processor::Floor => "fl",
            Processor::Sluice => "sl",
            Processor::KafkaStreams => "ks",
            Processor::QuixStreams(true) => "qx",
            Processor::QuixStreams(false) => "qa",
        }
    }
}

pub struct Bench<'a> {
    pub kafka: &'a KafkaConfig,
    pub registry_url: String,
    pub client: &'a RegistryClient,
    pub codec: Arc<AvroCodec>,
    pub partitions: i32,
    /// Offered rate and records of the latency pass (0: none).
    pub rate: u64,
    pub latency_records: usize,
    pub run_id: String,
    /// `bench/peers/kafka-streams/run`.
    pub peer: PathBuf,
    /// `bench/peers/quix-streams/run`.
    pub quix: PathBuf,
    /// Where the processes' logs and Kafka Streams' state go.
    pub scratch: PathBuf,
    pub batch_size: usize,
    pub commit_interval: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub threads: usize,
    pub rate: f64,
    /// CPU of the processor's process per record, µs.
    pub cpu_us: Option<f64>,
    /// p50, p99, p99.9 at the offered rate.
    pub latency: Option<[Duration; 3]>,
    pub peak_rss: Option<u64>,
    pub steady_rss: Option<u64>,
    /// From the process's start to the first record a read_committed reader saw.
    pub first_output: Duration,
    /// Records of aborted transactions on the output (read again and
    /// committed after): members joining one after another rebalance.
    pub aborted: usize,
    /// sluice's: where the latency pass's time went.
    pub breakdown: Option<Breakdown>,
}

/// The latency pass's records: where each landed, when each was read back.
struct Offered {
    located: HashMap<(i32, i64), usize>,
    read_ms: Vec<i64>,
}

pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    /// The table a join reads, preloaded before the input.
    pub table: Option<String>,
}

const LIMIT: Duration = Duration::from_secs(600);

impl Bench<'_> {
    pub async fn run(
        &self,
        work: Work,
        stream: &Stream,
        who: Processor,
        threads: usize,
    ) -> anyhow::Result<Row> {
        let kind = match work {
            Work::Logins => "login",
            Work::Readings => "iot",
            Work::Enriched => "enr",
            Work::Unjoined => "unj",
            Work::Counts => "cnt",
        };
        let variant = format!("{kind}-{}{threads}", who.short());
        let input = format!("cmp-{}-{variant}-in", self.run_id);
        let topics = Topics {
            output: format!("cmp-{}-{variant}-out", self.run_id),
            dlq: format!("{input}.dlq"),
            table: (work == Work::Enriched)
                .then(|| format!("cmp-{}-{variant}-devices", self.run_id)),
            input,
        };
        let app_id = format!("cmp-{}-{variant}", self.run_id);
        self.create(&topics).await?;
        self.register(work, &topics).await?;
        // Off the runtime's other tasks: a million records take seconds.
        tokio::task::block_in_place(|| {
            if let Some(table) = &topics.table {
                preload_keyed(self.kafka, table, &stream.table)?;
            }
            preload(self.kafka, &topics.input, &stream.partitions)
        })?;
        let reader = self.reader(&topics, "read_committed")?;
        let mut child = self.spawn(work, who, threads, &topics, &app_id)?;
        let measured = self
            .measure(work, stream, who, &topics, &reader, &mut child)
            .await;
        let (measured, offered) = match measured {
            Ok((row, offered)) => (Ok(row), offered),
            Err(e) => (Err(e), None),
        };
        let peak_rss = child.peak_rss();
        let verified = match &measured {
            Ok(_) => verify::output(self, work, stream, who, &topics, &mut child).await,
            Err(_) => Ok(0),
        };
        let stopped = tokio::task::spawn_blocking(move || child.stop(Duration::from_secs(40)));
        stopped.await??;
        // Before the topics go, or it logs their partitions' disappearance.
        drop(reader);
        self.drop_topics(&topics, &app_id).await;
        let mut row = measured?;
        row.aborted = verified?;
        if let Some(o) = offered
            && who == Processor::Sluice
            && work == Work::Logins
        {
            let samples = Breakdown::read(&self.trace_file(app_id.as_str()))?;
            row.breakdown = Breakdown::of(&samples, &o.located, &o.read_ms);
        }
        // One member has nothing to rebalance with: an abort there is a fault.
        anyhow::ensure!(
            row.aborted == 0 || threads > 1,
            "{}: {} records of aborted transactions on {}",
            who.label(work),
            row.aborted,
            topics.output
        );
        row.name = who.label(work).to_string();
        row.threads = threads;
        row.peak_rss = peak_rss;
        Ok(row)
    }

    async fn measure(
        &self,
        work: Work,
        stream: &Stream,
        who: Processor,
        topics: &Topics,
        reader: &StreamConsumer,
        child: &mut Watched,
    ) -> anyhow::Result<(Row, Option<Offered>)> {
        let p = stream.partitions.len();
        // Outputs that must be read before the run is done: every login;
        // windows come out only when later readings close them.
        let want = if work.one_to_one() { stream.records } else { 0 };
        let (mut starts, mut ends, mut outputs) = (Vec::new(), Vec::new(), 0usize);
        // Past a repartition topic the last outputs commit after the end
        // sentinel's dead letter: the pass ends with whichever is later.
        let mut last_output = i64::MIN;
        let mut first: Option<Instant> = None;
        let deadline = Instant::now() + LIMIT;
        while starts.len() < p || ends.len() < p || outputs < want {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: after {LIMIT:?}, {} of {p} start and {} of {p} end sentinels and {outputs} of {want} outputs",
                who.label(work),
                starts.len(),
                ends.len()
            );
            let m = match tokio::time::timeout(Duration::from_secs(1), reader.recv()).await {
                Ok(m) => m?,
                Err(_) => {
                    child.check_alive()?;
                    continue;
                }
            };
            first.get_or_insert_with(Instant::now);
            let appended = match m.timestamp() {
                Timestamp::LogAppendTime(t) => t,
                other => anyhow::bail!("{} is not LogAppendTime ({other:?})", m.topic()),
            };
            match sentinel(m.key()) {
                Some(true) => starts.push(appended),
                Some(false) => ends.push(appended),
                None if m.topic() == topics.output => {
                    outputs += 1;
                    last_output = last_output.max(appended);
                }
                None => anyhow::bail!(
                    "{}: an input record was dead-lettered: {:?}",
                    who.label(work),
                    letter_reason(&m)
                ),
            }
        }
        let first_output = first.map_or(Duration::ZERO, |f| f.duration_since(child.started));
        let (from, to) = (
            starts.iter().copied().min().unwrap_or(0),
            ends.iter().copied().max().unwrap_or(0).max(last_output),
        );
        let elapsed = Duration::from_millis((to - from).max(1) as u64);
        // The samples around `to` must exist before reading them.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let samples = child.samples();
        let cpu_us = cpu_between(&samples, from, to).map(|s| s * 1e6 / stream.records as f64);
        let mut row = Row {
            name: String::new(),
            threads: 1,
            rate: stream.records as f64 / elapsed.as_secs_f64(),
            cpu_us,
            latency: None,
            peak_rss: None,
            steady_rss: median_rss(&samples, from, to),
            first_output,
            aborted: 0,
            breakdown: None,
        };
        let mut offered = None;
        if matches!(work, Work::Logins | Work::Counts) && self.rate > 0 && self.latency_records > 0
        {
            // Let the broker settle after the burst (segment rolls, the
            // JVM's collections) so that latency is the pipeline's at rest.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (lat, from, to, o) = self.latency(work, stream, topics, reader).await?;
            row.latency = Some(lat);
            offered = Some(o);
            row.steady_rss = median_rss(&child.samples(), from, to);
        }
        Ok((row, offered))
    }

    /// Fresh logins offered at the set rate, each timed from its send to
    /// its output read back; and the span it ran over, for the resident set.
    async fn latency(
        &self,
        work: Work,
        stream: &Stream,
        topics: &Topics,
        reader: &StreamConsumer,
    ) -> anyhow::Result<([Duration; 3], i64, i64, Offered)> {
        let m = self.latency_records;
        let first = stream.records;
        let counts = work == Work::Counts;
        let records =
            super::stream::fresh_logins(&self.codec, &topics.input, first, m, counts).await?;
        let seq_of = match counts {
            true => super::stream::count_seq,
            false => super::stream::login_seq,
        };
        let sent: Arc<Vec<AtomicI64>> = Arc::new((0..m).map(|_| AtomicI64::new(0)).collect());
        let (kafka, input, rate, at) = (
            self.kafka.clone(),
            topics.input.clone(),
            self.rate,
            sent.clone(),
        );
        let from = now_ms();
        let feeder =
            tokio::task::spawn_blocking(move || paced(&kafka, &input, &records, rate, &at));
        let mut lat = Vec::with_capacity(m);
        let mut read_ms = vec![0; m];
        let deadline = Instant::now() + LIMIT;
        while lat.len() < m {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {m} offered records came out",
                lat.len()
            );
            let msg = match tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
                Ok(msg) => msg?,
                Err(_) => continue,
            };
            if msg.topic() != topics.output {
                continue;
            }
            let now = now_ms();
            if let Some(seq) = msg.payload().and_then(seq_of)
                && seq >= first
                && let Some(at) = sent.get(seq - first)
            {
                read_ms[seq - first] = now;
                lat.push(Duration::from_millis(
                    (now - at.load(Ordering::Acquire)).max(0) as u64,
                ));
            }
        }
        let located = feeder.await??;
        let to = now_ms();
        lat.sort_unstable();
        let q = |f: f64| crate::bench::quantile(&lat, f);
        let offered = Offered { located, read_ms };
        Ok(([q(0.50), q(0.99), q(0.999)], from, to, offered))
    }

    async fn create(&self, t: &Topics) -> anyhow::Result<()> {
        let late = format!("{}.late", t.input);
        let mut topics = vec![
            (t.input.as_str(), Kind::Plain),
            (t.output.as_str(), Kind::AppendTime),
            (t.dlq.as_str(), Kind::AppendTime),
            (late.as_str(), Kind::AppendTime),
        ];
        topics.extend(t.table.as_deref().map(|table| (table, Kind::Table)));
        self.create_topics(&topics).await
    }

    /// Topics of `partitions`, each of its `Kind`.
    pub(super) async fn create_topics(&self, topics: &[(&str, Kind)]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.kafka.client().create()?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|&(name, kind)| {
                let n = NewTopic::new(name, self.partitions, TopicReplication::Fixed(1));
                match kind {
                    Kind::Plain => n,
                    Kind::AppendTime => n.set("message.timestamp.type", "LogAppendTime"),
                    // Compacted, never deleted by age: the rows' timestamps
                    // may be older than the broker's retention.
                    Kind::Table => n.set("cleanup.policy", "compact"),
                }
            })
            .collect();
        for r in admin.create_topics(&new, &AdminOptions::new()).await? {
            r.map_err(|(name, code)| anyhow::anyhow!("cannot create {name}: {code}"))?;
        }
        Ok(())
    }

    async fn register(&self, work: Work, t: &Topics) -> anyhow::Result<()> {
        let (source, sink) = match work {
            Work::Logins => ("user-login", "processed-user-login"),
            Work::Readings => ("iot_sensor_data", "iot-window-aggregates"),
            Work::Enriched | Work::Unjoined => ("iot_sensor_data", "iot-enriched-readings"),
            Work::Counts => ("user-login", "login-counts-by-locale"),
        };
        let mut subjects = vec![(&t.input, source), (&t.output, sink)];
        subjects.extend(t.table.as_ref().map(|table| (table, "iot-devices")));
        for (topic, schema_of) in subjects {
            let text = crate::topologies::schema_for(schema_of)
                .ok_or_else(|| anyhow::anyhow!("no schema for {schema_of}"))?;
            self.client
                .register(&schemas::value_subject(topic), &text)
                .await?;
        }
        Ok(())
    }

    /// Output and dead letters from the beginning, assigned (no group join).
    pub(super) fn reader(&self, t: &Topics, isolation: &str) -> anyhow::Result<StreamConsumer> {
        let mut config = self.kafka.consumer(&format!("cmp-{}-reader", self.run_id));
        config.set("isolation.level", isolation);
        // On Kafka 4.4 a fetch of these LogAppendTime topics, parked while
        // they were idle, was not answered when records arrived but only
        // at fetch.wait.max.ms (500 ms): the first records after a pause
        // then measured half a second late. Short waits keep the reader,
        // the instrument, out of the figures; the processors keep theirs.
        config.set("fetch.wait.max.ms", "20");
        let consumer: StreamConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in [&t.output, &t.dlq] {
            for p in 0..self.partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(consumer)
    }

    fn spawn(
        &self,
        work: Work,
        who: Processor,
        threads: usize,
        t: &Topics,
        app_id: &str,
    ) -> anyhow::Result<Watched> {
        let log = self.scratch.join(format!("{app_id}.log"));
        let common = |c: &mut Command| {
            c.args(["--input", &t.input, "--output", &t.output]);
            c.args(["--threads", &threads.to_string()]);
            if let Some(table) = &t.table {
                c.args(["--table", table]);
            }
        };
        let command = match who {
            Processor::KafkaStreams => {
                let mut c = Command::new(&self.peer);
                c.arg(match work {
                    Work::Logins => "user-login",
                    Work::Enriched | Work::Unjoined => "iot-enriched",
                    Work::Readings => "iot-windows",
                    Work::Counts => "login-counts",
                });
                c.args([
                    "--bootstrap",
                    &self.kafka.bootstrap,
                    "--registry",
                    &self.registry_url,
                ]);
                c.args(["--dlq", &t.dlq, "--application-id", app_id]);
                c.arg("--state-dir").arg(self.scratch.join(app_id));
                common(&mut c);
                c
            }
            Processor::QuixStreams(exactly_once) => {
                let mut c = Command::new(&self.quix);
                c.args(["user-login", "--bootstrap", &self.kafka.bootstrap]);
                c.args(["--registry", &self.registry_url]);
                c.args(["--dlq", &t.dlq, "--application-id", app_id]);
                c.arg("--state-dir").arg(self.scratch.join(app_id));
                c.args([
                    "--guarantee",
                    if exactly_once {
                        "exactly-once"
                    } else {
                        "at-least-once"
                    },
                ]);
                c.arg("--commit-interval")
                    .arg(self.commit_interval.as_secs_f64().to_string());
                common(&mut c);
                c
            }
            Processor::Sluice | Processor::PassThrough | Processor::Floor => {
                let mut c = Command::new(std::env::current_exe()?);
                let kind = match (who, work) {
                    (Processor::PassThrough, _) => "pass-through",
                    (Processor::Floor, _) => "floor",
                    (_, Work::Logins) => "user-login",
                    (_, Work::Readings) => "iot-windows",
                    (_, Work::Enriched) => "iot-enriched",
                    (_, Work::Unjoined) => "iot-unjoined",
                    (_, Work::Counts) => "login-counts",
                };
                c.args(["bench-worker", kind, "--bootstrap", &self.kafka.bootstrap]);
                c.args(["--registry-url", &self.registry_url, "--name", app_id]);
                c.args(["--partitions", &self.partitions.to_string()]);
                c.args(["--batch-size", &self.batch_size.to_string()]);
                c.arg("--commit-interval")
                    .arg(humantime::format_duration(self.commit_interval).to_string());
                for (k, v) in &self.kafka.properties {
                    c.arg("--kafka-config").arg(format!("{k}={v}"));
                }
                if who == Processor::Sluice && work == Work::Logins {
                    c.arg("--trace").arg(self.trace_file(app_id));
                }
                common(&mut c);
                c
            }
        };
        Watched::spawn(who.label(work), command, &log)
    }

    fn trace_file(&self, app_id: &str) -> PathBuf {
        self.scratch.join(format!("{app_id}.trace"))
    }

    async fn drop_topics(&self, t: &Topics, app_id: &str) {
        let late = format!("{}.late", t.input);
        let mut names = vec![t.input.clone(), t.output.clone(), t.dlq.clone(), late];
        names.extend(t.table.clone());
        // The processors' changelogs and repartition topics.
        if let Ok(consumer) = self
            .kafka
            .client()
            .create::<rdkafka::consumer::BaseConsumer>()
            && let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(10))
        {
            names.extend(
                md.topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|n| {
                        // sluice's are named after its group, `sluice-<name>`.
                        n.starts_with(&format!("{app_id}-"))
                            || n.starts_with(&format!("sluice-{app_id}-"))
                    }),
            );
        }
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = delete_topics(self.kafka, &names).await {
            tracing::warn!(error = %e, "cannot delete the comparison's topics");
        }
    }
}

/// Why a record was dead-lettered, from its headers.
fn letter_reason(m: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a benchmark topic is created.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Plain,
    /// Stamped with the broker's append time, which the timing reads.
    AppendTime,
    /// A table's: compacted.
    Table,
}

/// Produces `records`, partitioned by key as any producer would.
fn preload_keyed(kafka: &KafkaConfig, topic: &str, records: &[Rec]) -> anyhow::Result<()> {
    let producer = plain_producer(kafka)?;
    for (key, value, ts) in records {
        send(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_slice())
                .payload(value.as_slice())
                .timestamp(*ts),
        );
    }
    finish(&producer)
}

/// Produces every partition's records in order, the partitions interleaved.
pub(super) fn preload(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[Vec<Rec>],
) -> anyhow::Result<()> {
    let producer = plain_producer(kafka)?;
    let longest = partitions.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (p, records) in partitions.iter().enumerate() {
            if let Some((key, value, ts)) = records.get(i) {
                send(
                    &producer,
                    BaseRecord::to(topic)
                        .partition(p as i32)
                        .key(key.as_slice())
                        .payload(value.as_slice())
                        .timestamp(*ts),
                );
            }
        }
    }
    finish(&producer)
}
