use std::sync::Arc;

use clap::Args;

use crate::{
    avro::{AvroCodec, RegistryClient, RegistryConfig},
    bench::{self, e2e},
    kafka::KafkaConfig,
    registry::{self},
    schemas,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Records per in-process measurement.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Records per end-to-end measurement.
    #[arg(long, default_value_t = 200_000)]
    e2e_records: usize,
    /// Broker for the end-to-end runs (e.g. a tansu or Kafka on loopback);
    /// without it they run against the in-process mock cluster.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Offered load of the end-to-end runs, records/s; 0 feeds as fast as
    /// possible (throughput; latency then measures the backlog).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// librdkafka properties for the end-to-end clients, KEY=VALUE, repeatable.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = crate::kafka::parse_property)]
    kafka_config: Vec<(String, String)>,
    /// Only the in-process measurement.
    #[arg(long)]
    in_process_only: bool,
    /// Guarantee of the topic-to-topic run.
    #[arg(long, value_enum, default_value = "exactly-once")]
    guarantee: crate::topology::Guarantee,
    /// The workers' --batch-size.
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    /// The workers' --commit-interval.
    #[arg(long, value_parser = super::args::duration, default_value = "100ms")]
    commit_interval: std::time::Duration,
    /// PostgreSQL for the windowed run (iot-windows into a scratch table,
    /// dropped afterwards); without it that run is skipped.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!("{}", bench::inprocess::run(args.records).await?);
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
    let reg = registry::spawn_preloaded(&schemas::embedded()).await?;
    let config = RegistryConfig::new(&reg.url(), None)?;
    let client = RegistryClient::new(config.clone())?;
    let kafka = KafkaConfig {
        bootstrap,
        properties: args.kafka_config.clone(),
    };
    let setup = e2e::Setup {
        kafka: &kafka,
        mock: mock.as_ref(),
        codec: Arc::new(AvroCodec::new(&config)?),
        registry: &client,
        records: args.e2e_records,
        partitions: args.partitions,
        rate: args.rate,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        batch_size: args.batch_size.max(1),
        commit_interval: args.commit_interval,
        guarantee: args.guarantee,
    };
    let load = match args.rate {
        0 => "fed as fast as possible".to_string(),
        r => format!("offered {r} records/s"),
    };
    println!(
        "end to end through the {broker}, {} partitions, {load}, commits every {} records or {:?}:",
        args.partitions, args.batch_size, args.commit_interval
    );
    let ceiling = e2e::passthrough(&setup).await?;
    println!("{ceiling}");
    let sluice = e2e::topology(&setup).await?;
    println!("{sluice}");
    println!(
        "{} topology at {:.0} % of the pass-through ceiling",
        args.guarantee,
        100.0 * sluice.rate() / ceiling.rate()
    );
    match &args.database_url {
        Some(url) => {
            let pool = crate::db::connect(url).await?;
            crate::db::migrate(&pool).await?;
            let windows = bench::windows::windows(&setup, pool).await?;
            println!("{windows}");
            println!(
                "windowed topology into PostgreSQL at {:.2}× the topic-to-topic rate",
                windows.rate() / sluice.rate()
            );
        }
        None => {
            println!("(set DATABASE_URL or --database-url for the windowed run into PostgreSQL)")
        }
    }
    reg.stop().await?;
    Ok(())
}
