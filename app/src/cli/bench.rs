use std::sync::Arc;

use clap::Args;

use crate::bench::{self, e2e};
use sluice::{
    avro::{AvroCodec, RegistryClient, RegistryConfig},
    kafka::KafkaConfig,
    registry::{self},
    schemas,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Records per in-process measurement.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Records per end-to-end throughput run, preloaded, then processed
    /// (default: 500 000 through a broker, 100 000 on the mock cluster).
    #[arg(long)]
    e2e_records: Option<usize>,
    /// Broker for the end-to-end runs (e.g. Apache Kafka from `dev/kafka/start`);
    /// without it they run against the in-process mock cluster.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Offered load of the end-to-end latency runs, records/s (0: no latency
    /// runs; default 20 000, with --compare 10 000).
    #[arg(long)]
    rate: Option<u64>,
    /// Records per end-to-end latency run.
    #[arg(long, default_value_t = 100_000)]
    latency_records: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// librdkafka properties for the end-to-end clients, KEY=VALUE, repeatable.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = sluice::kafka::parse_property)]
    kafka_config: Vec<(String, String)>,
    /// Only the in-process measurements.
    #[arg(long)]
    in_process_only: bool,
    /// Rows of the table-memory measurement (a devices table in memory; 0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    table_rows: usize,
    /// With --compare: rows of the iot-enriched join's devices table (the
    /// readings name the first 5 000; the rest only take memory, as a big
    /// table's rows would).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(5_000..))]
    table_devices: u32,
    /// Guarantee of the topic-to-topic run.
    #[arg(long, value_parser = sluice_cli::guarantee(), default_value = "exactly-once")]
    guarantee: sluice::topology::Guarantee,
    /// Rounds of the three topic-to-topic runs (with --compare, of every
    /// processor), each round on fresh topics; with more than one, medians
    /// are reported too (on a shared or virtual machine single runs vary by
    /// 15 % or more).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Pass-through copiers and topology group members (the workers' --threads).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The workers' --batch-size.
    #[arg(long, default_value_t = 50_000)]
    batch_size: usize,
    /// The workers' --commit-interval.
    #[arg(long, value_parser = sluice_cli::duration, default_value = "100ms")]
    commit_interval: std::time::Duration,
    /// PostgreSQL for the runs into tables (iot-windows and iot-readings,
    /// each into a scratch table dropped afterwards); without it they are skipped.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Instead of the runs above: on the broker of --bootstrap, one after
    /// another on the same preloaded records, the pass-through, sluice,
    /// Kafka Streams (bench/peers/kafka-streams) and Quix Streams
    /// (bench/peers/quix-streams, user-login only), each in a process of its
    /// own, for user-login and the iot windows; one table of records/s, CPU
    /// per record, latency at --rate, resident memory and time to first output.
    #[arg(long)]
    compare: bool,
    /// With --compare: the Kafka Streams peer's launcher.
    #[arg(long, default_value = "bench/peers/kafka-streams/run")]
    peer: std::path::PathBuf,
    /// With --compare: the Quix Streams peer's launcher (it installs its
    /// pinned packages from PyPI into a virtualenv beside it on first use).
    #[arg(long, default_value = "bench/peers/quix-streams/run")]
    quix_peer: std::path::PathBuf,
    /// With --compare: Apache Kafka's jars, for its perf tools (dev/kafka/fetch puts them there).
    #[arg(long, default_value = "dev/kafka/libs")]
    kafka_libs: std::path::PathBuf,
    /// With --compare: which processors to run (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["pass-through", "floor", "sluice", "kafka-streams", "quix-streams"], requires = "compare")]
    processors: Vec<String>,
    /// With --compare: which work to compare (default: all): user-login,
    /// the iot windows, the iot-enriched join (5 000 devices' table), the
    /// logins counted by locale through a repartition topic.
    #[arg(long, value_delimiter = ',', value_parser = ["logins", "windows", "enriched", "counts"], requires = "compare")]
    works: Vec<String>,
    /// With --compare: also records/s with 1, 2 and 4 threads on 8 partitions.
    #[arg(long, requires = "compare")]
    scaling: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Bad flags fail before anything is measured.
    let e2e_records = e2e_records(&args)?;
    if args.compare {
        let Some(bootstrap) = args.bootstrap.clone() else {
            anyhow::bail!(
                "--compare needs a real broker: pass --bootstrap HOST:PORT (e.g. from dev/kafka/start), \
                 or run bench/compare, which starts one"
            );
        };
        return bench::compare::run(bench::compare::Params {
            bootstrap,
            kafka_config: args.kafka_config,
            records: e2e_records,
            partitions: args.partitions,
            rate: args.rate.unwrap_or(10_000),
            latency_records: args.latency_records,
            batch_size: args.batch_size.max(1),
            commit_interval: args.commit_interval,
            peer: args.peer,
            quix: args.quix_peer,
            kafka_libs: args.kafka_libs,
            scaling: args.scaling,
            processors: args.processors,
            works: args.works,
            rounds: args.rounds,
            table_devices: args.table_devices as usize,
        })
        .await;
    }
    let rate = args.rate.unwrap_or(20_000);
    println!("{}", bench::inprocess::run(args.records).await?);
    if args.table_rows > 0 {
        println!("{}", bench::table::run(args.table_rows).await?);
    }
    if args.in_process_only {
        return Ok(());
    }
    let mock = match &args.bootstrap {
        Some(_) => None,
        None => Some(rdkafka::mocking::MockCluster::new(1)?),
    };
    let (bootstrap, broker) = match (&args.bootstrap, &mock) {
        (Some(b), _) => (b.clone(), format!("broker at {b}")),
        (None, Some(m)) => (
            m.bootstrap_servers(),
            "librdkafka mock cluster (in-process)".to_string(),
        ),
        (None, None) => unreachable!("a mock is made when no broker is given"),
    };
    let reg = registry::spawn_preloaded(&schemas::files(&crate::topologies::schemas())).await?;
    let config = RegistryConfig::new(&reg.url(), None)?;
    let client = RegistryClient::new(config.clone())?;
    let kafka = KafkaConfig {
        bootstrap,
        properties: args.kafka_config.clone(),
    };
    let codec = Arc::new(AvroCodec::new(&config)?);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let setup = |round: u32| e2e::Setup {
        kafka: &kafka,
        mock: mock.as_ref(),
        codec: codec.clone(),
        registry: &client,
        records: e2e_records,
        partitions: args.partitions,
        // Latency is measured in the first round only.
        rate: if round == 0 { rate } else { 0 },
        latency_records: args.latency_records,
        run_id: if round == 0 {
            run_id.clone()
        } else {
            format!("{run_id}r{round}")
        },
        batch_size: args.batch_size.max(1),
        commit_interval: args.commit_interval,
        guarantee: args.guarantee,
        threads: args.threads.max(1),
    };
    println!(
        "end to end through the {broker}, {} partitions, commits every {} records or {:?}:",
        args.partitions, args.batch_size, args.commit_interval
    );
    println!(
        "throughput: {} records preloaded, timed from the processor's first record to the last read back",
        e2e_records
    );
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        if args.rounds > 1 {
            println!("round {} of {}:", round + 1, args.rounds);
        }
        let measured = bench::rounds::round(&setup(round), round).await?;
        println!(
            "of the pass-through ceiling: {} topology {:.0} %, runtime alone {:.0} %",
            args.guarantee,
            measured.topology_share(),
            measured.runtime_share()
        );
        if let (Some(t), Some(r)) = (
            measured.cpu_share(&measured.topology),
            measured.cpu_share(&measured.runtime),
        ) {
            println!(
                "by CPU per record (what they reach where CPU is all that limits): topology {t:.0} %, runtime alone {r:.0} %"
            );
        }
        rounds.push(measured);
    }
    let summary = bench::rounds::Summary::of(&rounds);
    if args.rounds > 1 {
        println!("{summary}");
    }
    let first = &rounds[0];
    let latencies: Vec<_> = [
        &first.ceiling,
        &first.floor,
        &first.runtime,
        &first.topology,
    ]
    .iter()
    .filter_map(|m| m.latency.as_ref())
    .collect();
    if !latencies.is_empty() {
        println!(
            "latency: {} records offered at {} records/s, production to read back:",
            args.latency_records, rate
        );
        for l in latencies {
            println!("{l}");
        }
        if let Some(ratios) = bench::latency_ratios(
            first.topology.latency.as_ref(),
            &[
                ("the exactly-once floor", first.floor.latency.as_ref()),
                ("the pass-through", first.ceiling.latency.as_ref()),
            ],
        ) {
            println!("{ratios}");
        }
    }
    if mock.is_some() {
        // The run is timed by the offsets its transactions commit, which the
        // mock cluster drops.
        println!("(final windows to a topic: needs a real broker, --bootstrap)");
    } else {
        let finals = bench::windows::final_windows(&setup(0)).await?;
        println!("{finals}");
        println!(
            "windowed topology to a topic at {:.2}× the topic-to-topic rate",
            finals.rate() / summary.topology_rate
        );
    }
    match &args.database_url {
        Some(url) => {
            let pool = sluice::db::connect(url).await?;
            sluice::db::migrate(&pool).await?;
            let windows = bench::windows::windows(&setup(0), pool.clone()).await?;
            println!("{windows}");
            println!(
                "windowed topology into PostgreSQL at {:.2}× the topic-to-topic rate",
                windows.rate() / summary.topology_rate
            );
            let readings = bench::readings::readings(&setup(0), pool).await?;
            println!("{readings}");
            println!(
                "every reading into PostgreSQL at {:.2}× the topic-to-topic rate",
                readings.rate() / summary.topology_rate
            );
        }
        None => {
            println!("(set DATABASE_URL or --database-url for the runs into PostgreSQL)")
        }
    }
    reg.stop().await?;
    Ok(())
}

/// librdkafka's mock cluster keeps at most 5 MiB per partition and drops
/// the oldest records beyond that, so a preloaded input must fit.
const MOCK_RECORDS_PER_PARTITION: usize = 25_000;

pub(super) fn e2e_records(args: &BenchArgs) -> anyhow::Result<usize> {
    let mock_limit = MOCK_RECORDS_PER_PARTITION * args.partitions.max(1) as usize;
    match (args.e2e_records, &args.bootstrap) {
        (Some(n), None) if n > mock_limit => anyhow::bail!(
            "--e2e-records {n} does not fit the in-process mock cluster, which keeps about \
             {MOCK_RECORDS_PER_PARTITION} records per partition ({mock_limit} with --partitions {}): \
             use at most {mock_limit}, more --partitions, or a real broker with --bootstrap",
            args.partitions
        ),
        (Some(n), _) => Ok(n.max(1)),
        (None, None) => Ok(100_000.min(mock_limit)),
        (None, Some(_)) => Ok(500_000),
    }
}
