//! `sluice bench-worker`: one processor of the comparison in a process of
//! its own, so that its CPU and memory are its own: a shipped topology on
//! the benchmark's topics, run by the same runtime (and metrics server) as
//! `sluice run`, or the pass-through ceiling. Runs until SIGTERM.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use rdkafka::{
    Message, Offset, Timestamp, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    producer::{BaseProducer, BaseRecord},
};

use crate::{
    bench::e2e::{Taken, enqueue},
    topologies::{iot_enriched, iot_events, logins_by_locale, user_login},
};
use sluice::{
    avro::{AvroCodec, RegistryConfig},
    kafka::KafkaConfig,
    runtime::{RunOptions, Workers, trace::Trace},
    window::WindowSpec,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The user-login topology, exactly-once.
    UserLogin,
    /// iot-window-aggregates: final 1-minute windows (10 s grace) to a topic, exactly-once.
    IotWindows,
    /// iot-enriched's join alone: readings left-joined with the devices
    /// table (--table), exactly-once.
    IotEnriched,
    /// The same readings to a topic without the join, exactly-once.
    IotUnjoined,
    /// logins-by-locale: valid logins re-keyed by locale through a
    /// repartition topic and counted, every update out, exactly-once.
    LoginCounts,
    /// Bytes copied from input to output: the ceiling.
    PassThrough,
    /// Bytes copied in transactions with the input offsets: the exactly-once floor.
    Floor,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub registry_url: String,
    #[arg(long)]
    pub input: String,
    #[arg(long)]
    pub output: String,
    /// The table topic a join reads (iot-enriched).
    #[arg(long)]
    pub table: Option<String>,
    /// Names the consumer group and transactional ids.
    #[arg(long)]
    pub name: String,
    /// Partitions of the input (the pass-through assigns them itself).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Group members (topologies) or copiers (pass-through) in this process.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, default_value_t = 50_000)]
    pub batch_size: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub commit_interval: Duration,
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = sluice::kafka::parse_property)]
    pub kafka_config: Vec<(String, String)>,
    /// Where to write, on exit, the steps of one record in --trace-every
    /// (a line per record: partition, offset, timestamp, then µs times).
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub trace_every: u64,
}

pub async fn serve(args: WorkerArgs) -> anyhow::Result<()> {
    let shutdown = sluice_cli::shutdown_signal();
    let kafka = KafkaConfig {
        bootstrap: args.bootstrap.clone(),
        properties: args.kafka_config.clone(),
    };
    let topology = match args.kind {
        Kind::PassThrough => return passthrough(&args, &kafka, shutdown).await,
        Kind::Floor => return floor(&args, &kafka, shutdown).await,
        Kind::UserLogin => user_login::declare(&args.name, &args.input, &args.output)?,
        Kind::IotWindows => iot_events::declare_windows(
            &args.name,
            &args.input,
            &args.output,
            WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10)),
        )?,
        Kind::IotEnriched => {
            let table = (args.table.as_deref())
                .ok_or_else(|| anyhow::anyhow!("iot-enriched needs --table TOPIC"))?;
            iot_enriched::declare(&args.name, &args.input, table, &args.output, None)?
        }
        Kind::IotUnjoined => iot_enriched::declare_unjoined(&args.name, &args.input, &args.output)?,
        Kind::LoginCounts => {
            let t = logins_by_locale::declare(&args.name, &args.input, &args.output)?;
            // Its repartition topic (and its schema) and changelog, as
            // `sluice run` makes them.
            let settings = sluice::service::TopicSettings {
                partitions: args.partitions,
                ..Default::default()
            };
            let units = t.clone().units();
            sluice::service::create_changelogs(&kafka, &units, settings, false).await?;
            let registry = RegistryConfig::new(&args.registry_url, None)?;
            sluice::avro::RegistryClient::new(registry)?
                .register_all(&sluice::service::schemas_of(&units))
                .await?;
            t
        }
    };
    let codec = Arc::new(AvroCodec::new(&RegistryConfig::new(
        &args.registry_url,
        None,
    )?)?);
    let metrics = sluice::metrics::Metrics::new()?;
    let trace = args
        .trace
        .as_ref()
        .map(|_| Arc::new(Trace::new(args.trace_every)));
    let opts = RunOptions {
        trace: trace.clone(),
        instance_id: args.name.clone(),
        batch_size: args.batch_size.max(1),
        commit_interval: args.commit_interval,
        threads: args.threads.max(1),
        meter: Some(metrics.meter()),
        ..RunOptions::default()
    };
    let mut workers = Workers::spawn(vec![topology], &kafka, codec, &opts);
    sluice_cli::memory::spawn_trimmer();
    metrics.observe_topologies(workers.stats.clone());
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = sluice::metrics::spawn(
        "127.0.0.1:0".parse().expect("an address"),
        Arc::new(metrics),
        async {
            let _ = stopped.await;
        },
    )
    .await?;
    tokio::select! {
        _ = shutdown => {}
        e = workers.failure() => return Err(e.into()),
    }
    let stats = workers.stats.clone();
    workers.stop(Duration::from_secs(30)).await?;
    // What joins waited for their tables, in the process's log.
    for (_, s) in &stats {
        for t in s.tables.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "table {}: {} probes, joins waited {} ms in all",
                t.name,
                load(&t.probes),
                load(&t.join_wait_us) / 1000
            );
        }
    }
    if let (Some(path), Some(trace)) = (&args.trace, trace) {
        let lines: Vec<String> = trace.taken().iter().map(|s| s.line()).collect();
        std::fs::write(path, lines.join("\n"))?;
    }
    let _ = stop_metrics.send(());
    let _ = server.await;
    Ok(())
}

/// Transactional copiers in the group (see `bench::floor`), until shutdown.
async fn floor(
    args: &WorkerArgs,
    kafka: &KafkaConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut copiers = Vec::new();
    for i in 0..args.threads.max(1) {
        let consumer: BaseConsumer = kafka.consumer(&args.name).create()?;
        consumer.subscribe(&[&args.input])?;
        let producers = crate::bench::floor::producers(kafka, &format!("{}-{i}", args.name))?;
        let (out, stop, every) = (args.output.clone(), stop.clone(), args.commit_interval);
        copiers.push(tokio::task::spawn_blocking(move || {
            crate::bench::floor::copy(&consumer, &producers, &out, &Taken::default(), &stop, every)
        }));
    }
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    for c in copiers {
        c.await??;
    }
    Ok(())
}

/// Copiers, each a consumer of its share of the partitions (assigned, not
/// through a group: nothing is committed, so a rebalance would copy twice)
/// handing records to a producer on a thread of its own, with the
/// producer settings of sluice's sink: the threading and settings of the
/// runtime, without decoding, transactions or commits.
async fn passthrough(
    args: &WorkerArgs,
    kafka: &KafkaConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let threads = args.threads.clamp(1, args.partitions.max(1) as usize);
    let mut copiers = tokio::task::JoinSet::new();
    for i in 0..threads {
        let mut partitions = TopicPartitionList::new();
        for p in (i as i32..args.partitions).step_by(threads) {
            partitions.add_partition_offset(&args.input, p, Offset::Beginning)?;
        }
        let consumer: StreamConsumer = kafka.consumer(&format!("{}-copier", args.name)).create()?;
        consumer.assign(&partitions)?;
        let mut config = kafka.producer(None);
        config.set("delivery.report.only.error", "true");
        let producer: BaseProducer = config.create()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Copied>>(64);
        let output = args.output.clone();
        std::thread::Builder::new()
            .name(format!("send-{i}"))
            .spawn(move || send_all(&producer, &output, rx))?;
        copiers.spawn(read_all(consumer, tx));
    }
    tokio::select! {
        _ = shutdown => Ok(()),
        Some(done) = copiers.join_next() => match done? {
            Ok(()) => anyhow::bail!("a copier stopped"),
            Err(e) => Err(e),
        },
    }
}

/// A record as copied: key, value and its timestamp.
type Copied = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// Reads and hands over chunks, as the worker's loop does: full ones, or
/// whatever is there when nothing more is ready.
async fn read_all(
    consumer: StreamConsumer,
    tx: std::sync::mpsc::SyncSender<Vec<Copied>>,
) -> anyhow::Result<()> {
    use futures::FutureExt;
    let mut messages = consumer.stream();
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let next = match messages.next().now_or_never() {
            Some(m) => m,
            None => {
                if !chunk.is_empty() {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    tokio::task::block_in_place(|| tx.send(full))?;
                }
                messages.next().await
            }
        };
        let m = next.ok_or_else(|| anyhow::anyhow!("the consumer stream ended"))??;
        let ts = match m.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => 0,
        };
        chunk.push((
            m.key().map(<[u8]>::to_vec),
            m.payload().map(<[u8]>::to_vec),
            ts,
        ));
        if chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            tokio::task::block_in_place(|| tx.send(full))?;
            tokio::task::yield_now().await;
        }
    }
}

const CHUNK: usize = 256;

fn send_all(producer: &BaseProducer, topic: &str, rx: std::sync::mpsc::Receiver<Vec<Copied>>) {
    while let Ok(chunk) = rx.recv() {
        for (key, value, ts) in &chunk {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).timestamp(*ts);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            enqueue(producer, record);
        }
        producer.poll(Duration::ZERO);
    }
}
