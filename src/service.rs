//! Running a set of topologies as a service until a shutdown future
//! resolves: the topics they need (changelogs always; the rest if asked),
//! their schemas registered, their databases connected and migrated, the
//! metrics and health server, the brokers asked whether they let the
//! workers in, the workers, and a graceful stop that commits in-flight
//! work and leaves the groups. What a user's `main` (through `sluice-cli`)
//! and the demo call.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    avro::{AvroCodec, ClientError, CodecError, RegistryClient, RegistryConfig},
    console::{self, Console},
    kafka::{self, Created, KafkaConfig, SetupError, TopicSpec},
    metrics::{Metrics, MetricsError, Refused},
    runtime::{RunOptions, RuntimeError, Workers},
    sink::{DEFAULT_DATABASE, postgres::Postgres},
    topology::Topology,
};

/// Partitions and replication of the topics a service creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: i32,
    pub replication: i32,
    pub min_insync_replicas: Option<i32>,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            partitions: 6,
            replication: 1,
            min_insync_replicas: None,
        }
    }
}

/// How to run a set of topologies.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub run: RunOptions,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; none: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// Create the topologies' missing topics first, like this.
    pub create_topics: Option<TopicSettings>,
    /// Changelog topics are always created when missing, like this (their
    /// partitions follow their sources').
    pub internal_topics: TopicSettings,
    /// PostgreSQL, connected and migrated at start and run as the database
    /// named `DEFAULT_DATABASE` (unless `run.databases` has one).
    pub database_url: Option<String>,
    /// How long a graceful stop waits for in-flight work to commit.
    pub shutdown_timeout: Duration,
    /// Links the console shows (name, URL): the brokers' dashboard, say.
    pub console_links: Vec<(String, String)>,
    /// `host:port` where others reach this worker's queries (`/stores`);
    /// none: the metrics address as bound (127.0.0.1 for 0.0.0.0).
    pub advertised_addr: Option<String>,
}

impl Config {
    pub fn new(kafka: KafkaConfig, registry: RegistryConfig) -> Config {
        Config {
            kafka,
            registry,
            run: RunOptions::default(),
            metrics_addr: None,
            create_topics: None,
            internal_topics: TopicSettings::default(),
            database_url: None,
            shutdown_timeout: Duration::from_secs(30),
            console_links: Vec::new(),
            advertised_addr: None,
        }
    }
}

/// Why a service stopped, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration does not fit the topologies; the user's to fix.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Topics(#[from] SetupError),
    #[error("registering the schemas at start-up: {0}")]
    Schemas(ClientError),
    #[error("schema registry: {0}")]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// How often a refused worker asks the brokers again (an ACL may be granted).
const RECHECK: Duration = Duration::from_secs(30);

/// Runs `topologies` with `config` until `shutdown` resolves, then stops
/// them gracefully; an error if they cannot start or a worker fails.
pub async fn serve(
    topologies: Vec<Topology>,
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    tokio::pin!(shutdown);
    let run = &config.run;
    if run.group_id.is_some() && topologies.len() != 1 {
        return Err(ServiceError::Config(
            "a consumer group id given for the run needs exactly one topology: each topology is its own consumer group".into(),
        ));
    }
    if run.batch_size == 0 || run.threads == 0 {
        return Err(ServiceError::Config(
            "the batch size and the members per topology must be at least 1".into(),
        ));
    }
    if let (Some(_), Some(t)) = (
        &run.group_id,
        topologies
            .iter()
            .find(|t| !t.description.repartitions.is_empty()),
    ) {
        return Err(ServiceError::Config(format!(
            "topology {} re-keys through repartition topics named after its declared group ({}); a group id given for the run would not rename them: declare the group in the topology (.group_id) instead",
            t.description.name, t.description.group_id
        )));
    }
    let topologies: Vec<Topology> = match &run.group_id {
        Some(g) => topologies.into_iter().map(|t| t.in_group(g)).collect(),
        None => topologies,
    };
    // Each sub-topology runs as members of its own, in the same group.
    let topologies: Vec<Topology> = topologies.into_iter().flat_map(Topology::units).collect();
    for t in &topologies {
        let given = |db: &str| {
            run.databases.get(db).is_some()
                || (db == DEFAULT_DATABASE && config.database_url.is_some())
        };
        if let Some(db) = t.database()
            && !given(db)
        {
            return Err(RuntimeError::NoDatabase {
                topology: t.description.name.clone(),
                database: db.to_string(),
            }
            .into());
        }
    }
    let kafka = config.kafka.clone();
    kafka
        .check_protocol(run.group_protocol)
        .map_err(ServiceError::Config)?;
    tracing::info!(bootstrap = %kafka.bootstrap, properties = ?kafka.redacted(), "connecting to Kafka");

    let client = RegistryClient::new(config.registry.clone()).map_err(ServiceError::Schemas)?;
    if !register(&client, &topologies, &mut shutdown).await? {
        return Ok(());
    }
    let codec = Arc::new(AvroCodec::new(&config.registry)?);

    let wanted: Vec<&str> = topologies.iter().filter_map(|t| t.database()).collect();
    if let Some(url) = &config.database_url
        && config.run.databases.get(DEFAULT_DATABASE).is_none()
        && wanted.contains(&DEFAULT_DATABASE)
    {
        match connect_retrying(url, &mut shutdown).await? {
            Some(pool) => {
                let db = Postgres::new(pool);
                config.run.databases = config.run.databases.clone().with(DEFAULT_DATABASE, db);
            }
            None => return Ok(()),
        }
    }
    if let Some(settings) = config.create_topics {
        create_topics(&kafka, &topologies, settings).await?;
    }
    let tables = config.create_topics.is_some();
    create_changelogs(&kafka, &topologies, config.internal_topics, tables).await?;

    let mut metrics = Metrics::new()?;
    metrics.require(crate::metrics::registry_check(client.clone()));
    for (_, db) in config.run.databases.iter() {
        if let Some(check) = db.ready_check() {
            metrics.require(check);
        }
    }
    let refused = Refused::default();
    metrics.require(refused.check());
    config.run.meter = Some(metrics.meter());
    let metrics = Arc::new(metrics);
    let queries = crate::query::Queries::new(config.run.stores.clone(), kafka.clone());
    let console = Console::new(console::Sources {
        kafka: kafka.clone(),
        codec: codec.clone(),
        databases: config.run.databases.clone(),
        instance: config.run.instance_id.clone(),
        metrics: metrics.clone(),
        links: config.console_links.clone(),
        protocol: config.run.group_protocol.to_string(),
        queries: queries.clone(),
    });
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let routes = console.router().merge(queries.router());
            let (bound, task) = crate::metrics::spawn_with(addr, metrics.clone(), routes, async {
                let _ = metrics_stopped.await;
            })
            .await?;
            tracing::info!("the console: http://{}/", console_addr(bound));
            let advertised =
                (config.advertised_addr.clone()).unwrap_or_else(|| console_addr(bound).to_string());
            tracing::info!(%advertised, "serving queries of the stores at /stores");
            queries.set_address(advertised.clone());
            config.run.advertised = Some(advertised);
            Some(task)
        }
        None => None,
    };
    let stop_serving = || async {
        let _ = stop_metrics.send(());
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
    };

    let needs: Vec<_> = topologies
        .iter()
        .map(|t| crate::runtime::access_needs(t, &config.run))
        .collect();
    if !wait_for_access(&kafka, needs, &refused, &mut shutdown).await? {
        stop_serving().await;
        return Ok(());
    }
    let watched = topologies.clone();
    let mut workers = Workers::spawn(topologies, &kafka, codec, &config.run);
    metrics.observe_topologies(workers.stats.clone());
    console.watch(&watched, &workers.stats);
    tokio::select! {
        _ = &mut shutdown => {}
        e = workers.failure() => {
            stop_serving().await;
            return Err(e.into());
        }
    }
    let stats = workers.stats.clone();
    workers.stop(config.shutdown_timeout).await?;
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
    stop_serving().await;
    Ok(())
}

/// Where a browser reaches a server bound to `addr` (0.0.0.0 is this host).
pub fn console_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), addr.port()),
        _ => addr,
    }
}

/// Every topology's schemas, each topic once.
pub fn schemas_of(topologies: &[Topology]) -> Vec<crate::schemas::SchemaFile> {
    let mut all: Vec<(String, String)> = Vec::new();
    for t in topologies.iter().flat_map(Topology::parts) {
        for s in t.schemas() {
            if !all.iter().any(|(topic, _)| *topic == s.0) {
                all.push(s.clone());
            }
        }
    }
    crate::schemas::files(&all)
}

/// Registers the topologies' schemas, waiting for a registry that is not
/// up yet; false if shut down meanwhile.
async fn register(
    client: &RegistryClient,
    topologies: &[Topology],
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<bool, ServiceError> {
    let files = schemas_of(topologies);
    let mut wait = Duration::from_millis(200);
    loop {
        match client.register_all(&files).await {
            Ok(lines) => {
                lines.iter().for_each(|l| tracing::info!("{l}"));
                return Ok(true);
            }
            // Down for now: wait for it rather than exit into a restart loop.
            Err(e @ ClientError::Unavailable { .. }) => {
                tracing::warn!(error = %e, retry_in = ?wait, "schema registry unreachable; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return Ok(false),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(ServiceError::Schemas(e)),
        }
    }
}

/// Creates the topologies' topics that do not exist yet.
pub async fn create_topics(
    kafka: &KafkaConfig,
    topologies: &[Topology],
    settings: TopicSettings,
) -> Result<(), SetupError> {
    let mut specs: Vec<TopicSpec> = Vec::new();
    let repartitions: Vec<&String> = (topologies.iter())
        .flat_map(|t| &t.description.repartitions)
        .collect();
    for topology in topologies {
        let changelogs = topology.description.changelogs();
        // Created with the source's partition count (`create_changelogs`).
        let follows = |name: &String| {
            changelogs.contains(name)
                || topology.description.co_partitioned.contains(name)
                || repartitions.contains(&name)
        };
        for name in topology.description.topics() {
            if !specs.iter().any(|s| s.name == name) && !follows(&name) {
                // A table's topic keeps each key's latest row.
                let compact = topology.description.tables.contains(&name)
                    || topology.description.compacted.contains(&name);
                specs.push(TopicSpec {
                    name,
                    partitions: settings.partitions,
                    replication: settings.replication,
                    min_insync_replicas: settings.min_insync_replicas,
                    compact,
                });
            }
        }
    }
    report(kafka::create_topics(kafka, &specs).await?);
    Ok(())
}

/// Creates the stores' compacted changelog topics, the repartition topics
/// and the co-partitioned tables' topics that do not exist yet, each with
/// its source's partition count (a store's partition is its input's, a
/// table's must match it, a repartition topic is read as its source would
/// be); the tables' only with `tables` (the topics are the user's).
/// Repartition topics first: a sub-topology's changelogs follow its source,
/// which is one of them.
pub async fn create_changelogs(
    kafka: &KafkaConfig,
    topologies: &[Topology],
    settings: TopicSettings,
    tables: bool,
) -> Result<(), ServiceError> {
    let mut specs: Vec<TopicSpec> = Vec::new();
    for t in topologies
        .iter()
        .filter(|t| !t.description.repartitions.is_empty())
    {
        let (k, s) = (kafka.clone(), t.description.source.clone());
        let partitions = kafka::blocking(|| kafka::partitions_of(&k, &s))?;
        for name in &t.description.repartitions {
            specs.push(TopicSpec {
                name: name.clone(),
                partitions: partitions.unwrap_or(settings.partitions),
                replication: settings.replication,
                min_insync_replicas: settings.min_insync_replicas,
                compact: false,
            });
        }
    }
    if !specs.is_empty() {
        report(kafka::create_topics(kafka, &std::mem::take(&mut specs)).await?);
    }
    for t in topologies {
        let mut changelogs = t.description.changelogs();
        if tables {
            changelogs.extend(t.description.co_partitioned.iter().cloned());
        }
        if changelogs.is_empty() {
            continue;
        }
        let source = t.description.source.clone();
        let (k, s) = (kafka.clone(), source.clone());
        let partitions = kafka::blocking(|| kafka::partitions_of(&k, &s))?;
        let partitions = partitions.unwrap_or(settings.partitions);
        for name in changelogs {
            specs.push(TopicSpec {
                name,
                partitions,
                replication: settings.replication,
                min_insync_replicas: settings.min_insync_replicas,
                compact: true,
            });
        }
    }
    if !specs.is_empty() {
        report(kafka::create_topics(kafka, &specs).await?);
    }
    Ok(())
}

fn report(created: Vec<(String, Created)>) {
    for (name, what) in created {
        match what {
            Created::Created => tracing::info!(topic = %name, "topic created"),
            Created::AlreadyExisted => tracing::debug!(topic = %name, "topic exists; left alone"),
        }
    }
}

/// Asks the brokers whether they let the workers in; while they refuse,
/// says why once, shows it on `/readyz` and asks again now and then, so
/// that a refused worker neither exits into a restart loop nor starts
/// clients that retry for ever. `false` if shut down meanwhile.
async fn wait_for_access(
    kafka: &KafkaConfig,
    needs: Vec<kafka::access::Needs>,
    refused: &Refused,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<bool, ServiceError> {
    let mut told: Option<kafka::access::Refusal> = None;
    refused.set(Some(
        "asking the brokers whether they let the workers in".into(),
    ));
    loop {
        let (k, n) = (kafka.clone(), needs.clone());
        let asked = tokio::task::spawn_blocking(move || kafka::access::check(&k, &n));
        let answer = tokio::select! {
            _ = &mut *shutdown => return Ok(false),
            a = asked => a.map_err(|e| ServiceError::Config(format!("the access check crashed: {e}")))?,
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
pub async fn connect_retrying(
    url: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<sqlx::PgPool>, ServiceError> {
    url.parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| {
        ServiceError::Config(format!(
            "the database URL is not a PostgreSQL URL ({e}); write postgres://user:password@host:5432/database"
        ))
    })?;
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = async {
            let pool = crate::db::connect(url).await?;
            crate::db::migrate(&pool).await?;
            Ok::<_, crate::db::DbError>(pool)
        };
        match attempt.await {
            Ok(pool) => return Ok(Some(pool)),
            Err(e @ crate::db::DbError::Migrate(_)) => return Err(e.into()),
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
