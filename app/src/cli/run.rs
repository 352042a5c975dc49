//! `sluice run`, `sluice topics create` and `sluice topologies`.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use clap::Args;

use super::args::{KafkaArgs, RegistryArgs, WindowArgs, duration};
use crate::topologies::{self, Settings};
use sluice::{
    avro::{AvroCodec, ClientError, RegistryClient},
    kafka::{self, Created, TopicSpec},
    runtime::{self, RunOptions, Workers},
    schemas,
    sink::{Stores, Topology},
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

/// Picks topologies by name; all of them when none is named.
pub fn select(names: &[String], settings: &Settings) -> anyhow::Result<Vec<Topology>> {
    Ok(topologies::select(names, settings)?)
}

pub async fn create_topics(
    kafka: &kafka::KafkaConfig,
    topologies: &[Topology],
    t: &TopicArgs,
) -> anyhow::Result<()> {
    let mut specs: Vec<TopicSpec> = Vec::new();
    for topology in topologies {
        for name in topology.description.topics() {
            if !specs.iter().any(|s| s.name == name) {
                specs.push(TopicSpec {
                    name,
                    partitions: t.partitions,
                    replication: t.replication_factor,
                    min_insync_replicas: t.min_insync_replicas,
                });
            }
        }
    }
    for (name, what) in kafka::create_topics(kafka, &specs).await? {
        match what {
            Created::Created => tracing::info!(topic = %name, "topic created"),
            Created::AlreadyExisted => tracing::info!(topic = %name, "topic exists; left alone"),
        }
    }
    Ok(())
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

pub async fn topics_create(args: TopicsCreateArgs) -> anyhow::Result<()> {
    let selected = select(&args.topologies, &Settings::default())?;
    create_topics(&args.kafka.config()?, &selected, &args.topics).await
}

pub fn list() -> anyhow::Result<()> {
    for topology in select(&[], &Settings::default())? {
        let d = &topology.description;
        println!("{}", d.name);
        println!("  source:      {}", d.source);
        println!("  operators:   {}", d.operators.join(" → "));
        println!("  sinks:       {}", d.sinks.join(", "));
        println!("  dead letter: {}", d.dead_letter);
        if let Some(late) = &d.late {
            println!("  late:        {late}");
        }
        println!("  group:       {}", d.group_id);
        println!("  guarantee:   {}", topology.sink.guarantee());
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
    group_protocol: kafka::GroupProtocol,
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
    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    metrics_addr: std::net::SocketAddr,
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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // First, so that an early SIGTERM is a graceful stop too.
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let selected = select(&args.topologies, &args.windows.settings()?)?;
    if args.group_id.is_some() && selected.len() != 1 {
        bail!("--group-id needs exactly one --topology: each topology is its own consumer group");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1 (members of each topology's group in this process)");
    }
    let windowed = selected.iter().find(|t| t.sink.needs_store());
    if let (Some(t), None) = (windowed, &args.database_url) {
        bail!(runtime::RuntimeError::NoStore(t.description.name.clone()));
    }
    let kafka = args.kafka.config()?;
    if let Err(e) = kafka.check_protocol(args.group_protocol) {
        bail!(e);
    }
    tracing::info!(bootstrap = %kafka.bootstrap, properties = ?kafka.redacted(), "connecting to Kafka");
    if args.create_topics {
        create_topics(&kafka, &selected, &args.topics).await?;
    }
    let registry = args.registry.config()?;
    let client = RegistryClient::new(registry.clone())?;
    let mut wait = Duration::from_millis(200);
    loop {
        match super::schemas::register_all(&client, &schemas::embedded()).await {
            Ok(lines) => {
                lines.iter().for_each(|l| tracing::info!("{l}"));
                break;
            }
            // Down for now: wait for it rather than exit into a restart loop.
            Err(e) if matches!(e.downcast_ref(), Some(ClientError::Unavailable { .. })) => {
                tracing::warn!(error = %e, retry_in = ?wait, "schema registry unreachable; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.context("registering the schemas at start-up")),
        }
    }
    let codec = Arc::new(AvroCodec::new(&registry)?);
    let stores = match (windowed, &args.database_url) {
        (Some(_), Some(url)) => match connect_retrying(url, &mut shutdown).await? {
            Some(pool) => Some(Stores::Postgres(pool)),
            None => return Ok(()),
        },
        _ => None,
    };
    let mut metrics = sluice::metrics::Metrics::new()?;
    metrics.require(sluice::metrics::registry_check(client.clone()));
    if let Some(Stores::Postgres(pool)) = &stores {
        metrics.require(sluice::metrics::postgres_check(pool.clone()));
    }
    let refused = sluice::metrics::Refused::default();
    metrics.require(refused.check());
    let opts = RunOptions {
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
        stores,
        meter: Some(metrics.meter()),
    };
    let metrics = Arc::new(metrics);
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = sluice::metrics::spawn(args.metrics_addr, metrics.clone(), async {
        let _ = metrics_stopped.await;
    })
    .await?;
    let needs: Vec<_> = selected
        .iter()
        .map(|t| runtime::access_needs(t, &opts))
        .collect();
    if !wait_for_access(&kafka, needs, &refused, &mut shutdown).await? {
        let _ = stop_metrics.send(());
        let _ = metrics_task.await;
        return Ok(());
    }
    let mut workers = Workers::spawn(selected, &kafka, codec, &opts);
    crate::memory::spawn_trimmer();
    metrics.observe_topologies(workers.stats.clone());
    tokio::select! {
        _ = &mut shutdown => {}
        e = workers.failure() => return Err(e.into()),
    }
    let stats = workers.stats.clone();
    workers.stop(args.shutdown_timeout).await?;
    for (name, s) in stats {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::info!(
            topology = %name,
            records_in = s.records_in.load(Relaxed),
            records_out = s.records_out.load(Relaxed),
            dead_letters = s.dead_letters.load(Relaxed),
            commits = s.commits.load(Relaxed),
            aborts = s.aborts.load(Relaxed),
            "totals of this run"
        );
    }
    tracing::info!("all workers committed and left their groups");
    let _ = stop_metrics.send(());
    let _ = metrics_task.await;
    Ok(())
}

/// How often a refused worker asks the brokers again (an ACL may be granted).
const RECHECK: Duration = Duration::from_secs(30);

/// Asks the brokers whether they let the workers in; while they refuse,
/// says why once, shows it on `/readyz` and asks again now and then, so
/// that a refused worker neither exits into a restart loop nor starts
/// clients that retry for ever. `false` if shut down meanwhile.
async fn wait_for_access(
    kafka: &kafka::KafkaConfig,
    needs: Vec<kafka::access::Needs>,
    refused: &sluice::metrics::Refused,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<bool> {
    let mut told: Option<kafka::access::Refusal> = None;
    refused.set(Some(
        "asking the brokers whether they let the workers in".into(),
    ));
    loop {
        let (k, n) = (kafka.clone(), needs.clone());
        let asked = tokio::task::spawn_blocking(move || kafka::access::check(&k, &n));
        let answer = tokio::select! {
            _ = &mut *shutdown => return Ok(false),
            a = asked => a?,
        };
        match answer {
            Ok(()) => {
                if told.is_some() {
                    tracing::info!("Kafka lets the workers in now; starting them");
                }
                refused.set(None);
                return Ok(true);
            }
            Err(r) => {
                if told.as_ref() != Some(&r) {
                    tracing::error!(
                        refused = r.kind(),
                        "{r}; not starting the workers, asking again every {}s",
                        RECHECK.as_secs()
                    );
                }
                refused.set(Some(format!("refused: {r}")));
                told = Some(r);
                tokio::select! {
                    _ = &mut *shutdown => return Ok(false),
                    _ = tokio::time::sleep(RECHECK) => {}
                }
            }
        }
    }
}

/// Connects and migrates, waiting out a database that is not up yet;
/// `None` if shut down meanwhile.
async fn connect_retrying(
    url: &str,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<Option<sqlx::PgPool>> {
    url.parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| {
        anyhow::anyhow!(
            "DATABASE_URL is not a PostgreSQL URL ({e}); write postgres://user:password@host:5432/database"
        )
    })?;
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = async {
            let pool = sluice::db::connect(url).await?;
            sluice::db::migrate(&pool).await?;
            Ok::<_, sluice::db::DbError>(pool)
        };
        match attempt.await {
            Ok(pool) => return Ok(Some(pool)),
            Err(e @ sluice::db::DbError::Migrate(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "PostgreSQL unreachable; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
