//! `sluice run`, `sluice topics create` and `sluice topologies`: flags in,
//! the engine's service out (`sluice::service`).

use std::time::Duration;

use clap::Args;

use super::args::{KafkaArgs, RegistryArgs, WindowArgs, duration};
use crate::Catalog;
use sluice::{
    runtime::{self, RunOptions},
    service::{self, Config, TopicSettings},
    topology::Guarantee,
};

#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Partitions of created topics (the most workers that can share a topology).
    #[arg(long, env = "SLUICE_TOPIC_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of created topics.
    #[arg(long, env = "SLUICE_TOPIC_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// min.insync.replicas of created topics (leave unset for the broker default).
    #[arg(long, env = "SLUICE_TOPIC_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
}

impl TopicArgs {
    fn settings(&self) -> TopicSettings {
        TopicSettings {
            partitions: self.partitions,
            replication: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        }
    }
}

#[derive(Debug, Args)]
pub struct TopicsCreateArgs {
    /// Topologies whose topics to create (repeatable); default: all.
    #[arg(long = "topology", value_name = "NAME")]
    topologies: Vec<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    topics: TopicArgs,
}

pub async fn topics_create(catalog: &Catalog, args: TopicsCreateArgs) -> anyhow::Result<()> {
    let selected = catalog.select(&args.topologies, &crate::Settings::default())?;
    let kafka = args.kafka.config()?;
    service::create_topics(&kafka, &selected, args.topics.settings()).await?;
    service::create_changelogs(&kafka, &selected, args.topics.settings(), true).await?;
    Ok(())
}

pub fn list(catalog: &Catalog) -> anyhow::Result<()> {
    for topology in catalog.all()? {
        // Sub-topologies after it: what reads its repartition topics.
        for unit in topology.units() {
            print!("{}", unit.description);
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topologies to run (repeatable); default: all.
    #[arg(long = "topology", value_name = "NAME")]
    topologies: Vec<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Delivery guarantee for topic sinks.
    #[arg(
        long,
        env = "SLUICE_GUARANTEE",
        value_parser = super::args::guarantee(),
        default_value = "exactly-once"
    )]
    guarantee: Guarantee,
    /// Consumer group id (default: sluice-<topology>); only with a single topology.
    #[arg(long, env = "SLUICE_GROUP_ID")]
    group_id: Option<String>,
    /// This worker's stable name (e.g. the pod name); names its transactional
    /// producer so a restarted worker fences its predecessor at once.
    /// With it, each member is a static one (group.instance.id, KIP-345).
    #[arg(long, env = "SLUICE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Consumer group protocol: classic (any Kafka), or consumer (KIP-848,
    /// Kafka 4.0 or later: the broker assigns partitions, no stop-the-world
    /// rebalances).
    #[arg(long, env = "SLUICE_GROUP_PROTOCOL", default_value = "classic", value_parser = super::args::group_protocol())]
    group_protocol: sluice::kafka::GroupProtocol,
    /// Consumer-group members per topology in this process, each with its
    /// own consumer and producer (like Kafka Streams' num.stream.threads);
    /// partitions spread over them as over separate workers.
    #[arg(long, env = "SLUICE_THREADS", default_value_t = 1)]
    threads: usize,
    /// Commit after this many input records…
    #[arg(long, env = "SLUICE_BATCH_SIZE", default_value_t = 50_000)]
    batch_size: usize,
    /// …or this long after the first uncommitted one.
    #[arg(long, env = "SLUICE_COMMIT_INTERVAL", value_parser = duration, default_value = "100ms")]
    commit_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for in-flight work to commit.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", value_parser = duration, default_value = "30s")]
    shutdown_timeout: Duration,
    /// Where to serve the console (/), /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    metrics_addr: std::net::SocketAddr,
    /// HOST:PORT where other workers and `sluice state` reach this one's
    /// queries (`/stores`), when not the metrics address (behind NAT, in a
    /// container, or bound to 0.0.0.0 on another host: give a name others
    /// resolve). Default: the metrics address, 127.0.0.1 for 0.0.0.0.
    #[arg(long, env = "SLUICE_ADVERTISED_ADDR", value_parser = super::args::host_port)]
    advertised_addr: Option<String>,
    /// A link the console shows beside its figures, NAME=URL (repeatable;
    /// in the environment, comma-separated): e.g. the brokers' dashboard
    /// where Prometheus scrapes them.
    #[arg(long = "console-link", env = "SLUICE_CONSOLE_LINKS", value_delimiter = ',', value_parser = super::args::link())]
    console_links: Vec<(String, String)>,
    /// Create missing topics before starting.
    #[arg(long)]
    create_topics: bool,
    /// PostgreSQL for windowed topologies (migrations are applied at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(flatten)]
    topics: TopicArgs,
    #[command(flatten)]
    windows: WindowArgs,
}

pub async fn run(catalog: &Catalog, args: RunArgs) -> anyhow::Result<()> {
    // First, so that an early SIGTERM is a graceful stop too.
    let shutdown = super::shutdown_signal();
    let selected = catalog.select(&args.topologies, &args.windows.settings()?)?;
    if args.group_id.is_some() && selected.len() != 1 {
        anyhow::bail!(
            "--group-id needs exactly one --topology: each topology is its own consumer group"
        );
    }
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if args.threads == 0 {
        anyhow::bail!(
            "--threads must be at least 1 (members of each topology's group in this process)"
        );
    }
    if let (Some(t), None) = (
        selected.iter().find(|t| t.database().is_some()),
        &args.database_url,
    ) {
        anyhow::bail!(
            "topology {} writes to PostgreSQL (window aggregates or rows): set DATABASE_URL (or --database-url), or choose other topologies with --topology",
            t.description.name
        );
    }
    let kafka = args.kafka.config()?;
    if let Err(e) = kafka.check_protocol(args.group_protocol) {
        anyhow::bail!("{e} (--kafka-config, --group-protocol)");
    }
    let mut config = Config::new(kafka.clone(), args.registry.config()?);
    config.run = RunOptions {
        guarantee: args.guarantee,
        batch_size: args.batch_size,
        commit_interval: args.commit_interval,
        static_membership: args.instance_id.is_some(),
        instance_id: args
            .instance_id
            .unwrap_or_else(runtime::default_instance_id),
        group_id: args.group_id,
        group_protocol: kafka.effective_protocol(args.group_protocol),
        threads: args.threads,
        ..RunOptions::default()
    };
    config.metrics_addr = Some(args.metrics_addr);
    config.console_links = args.console_links;
    config.advertised_addr = args.advertised_addr;
    config.create_topics = args.create_topics.then(|| args.topics.settings());
    config.internal_topics = args.topics.settings();
    config.database_url = args.database_url;
    config.shutdown_timeout = args.shutdown_timeout;
    crate::memory::spawn_trimmer();
    service::serve(selected, config, shutdown)
        .await
        .map_err(|e| match e {
            service::ServiceError::Metrics(m) => {
                anyhow::anyhow!("{m} (--metrics-addr)")
            }
            other => other.into(),
        })
}
