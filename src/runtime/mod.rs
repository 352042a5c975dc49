//! Running topologies as consumer-group workers: one consumer and one
//! (transactional) producer per topology, batches committed as a unit.

mod chunk;
mod dlq;
pub mod failpoint;
pub mod health;
mod refused;
mod sender;
mod tally;
mod txn;
mod windowed;
mod worker;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinSet};

pub use dlq::{
    KIND as DLQ_KIND, MESSAGE as DLQ_MESSAGE, OFFSET as DLQ_OFFSET, PARTITION as DLQ_PARTITION,
    SCHEMA_ID as DLQ_SCHEMA_ID, TIMESTAMP as DLQ_TIMESTAMP, TOPIC as DLQ_TOPIC,
    TOPOLOGY as DLQ_TOPOLOGY,
};
pub use txn::{blocking, serve_deliveries};
pub use windowed::run_windows;
pub use worker::run_topic;

use crate::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    metrics::Timings,
    sink::WindowStores,
    topology::{Body, Guarantee, Topology},
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub guarantee: Guarantee,
    /// Commit after this many input records…
    pub batch_size: usize,
    /// …or this long after the first uncommitted one, whichever comes first.
    pub commit_interval: Duration,
    /// Names this worker's transactional producer. Give each worker a stable
    /// one (e.g. a pod name) so a restarted worker fences its predecessor at once.
    pub instance_id: String,
    /// Consumer group id, when not the topology's own.
    pub group_id: Option<String>,
    /// The consumer group protocol.
    pub group_protocol: crate::kafka::GroupProtocol,
    /// Whether `instance_id` is stable across restarts (set by the user):
    /// then, with the classic protocol, each member is a static one
    /// (`group.instance.id`), and a restarted worker takes its old place
    /// without a rebalance.
    pub static_membership: bool,
    /// Group members per topology in this process (Kafka Streams'
    /// num.stream.threads): each has its own consumer and producer, and the
    /// partitions spread over them as over separate processes.
    pub threads: usize,
    /// Where windowed topologies keep their aggregates and offsets.
    pub windows: Option<WindowStores>,
    /// Where duration histograms go (the metrics endpoint's meter).
    pub meter: Option<opentelemetry::metrics::Meter>,
}

impl RunOptions {
    /// How a member named `instance` joins its group. Static membership
    /// only with the classic protocol: under KIP-848 a static member killed
    /// without leaving keeps its name until its session times out, and
    /// librdkafka treats the restarted member's rejoin as a fatal error
    /// (UNRELEASED_INSTANCE_ID) instead of waiting.
    fn membership(&self, instance: &str) -> crate::kafka::Membership {
        use crate::kafka::GroupProtocol;
        let stable = self.static_membership && self.group_protocol == GroupProtocol::Classic;
        crate::kafka::Membership {
            protocol: self.group_protocol,
            instance: stable.then(|| instance.to_string()),
        }
    }

    fn timings(&self, topology: &str) -> Timings {
        match &self.meter {
            Some(m) => Timings::new(m, topology),
            None => Timings::disabled(),
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            guarantee: Guarantee::ExactlyOnce,
            batch_size: 50_000,
            commit_interval: Duration::from_millis(100),
            instance_id: default_instance_id(),
            group_id: None,
            group_protocol: crate::kafka::GroupProtocol::Classic,
            static_membership: false,
            threads: 1,
            windows: None,
            meter: None,
        }
    }
}

/// host-pid: unique per process; stable ids are better set explicitly.
pub fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_string());
    format!("{host}-{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Bad configuration (the user's to fix): retrying will not help.
    #[error("topology {topology}: cannot create Kafka client: {source}")]
    Client {
        topology: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A bug: a worker task panicked.
    #[error("a worker crashed: {0}")]
    Crashed(String),
    #[error("workers did not finish within the shutdown timeout of {0:?}")]
    ShutdownTimeout(Duration),
    /// Configuration: a windowed topology needs a store.
    #[error(
        "topology {0} writes window aggregates to PostgreSQL: set DATABASE_URL (or --database-url), or choose other topologies with --topology"
    )]
    NoStore(String),
    /// The Kafka client cannot go on (fenced, or a broker error it treats
    /// as final): a new one, starting from the committed positions, can.
    #[error("topology {topology}: the Kafka client stopped for good ({reason})")]
    Fatal { topology: String, reason: String },
    #[error("topology {topology}: {source}")]
    Store {
        topology: String,
        #[source]
        source: crate::sink::postgres::SinkError,
    },
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Doubling waits from 100 ms up to 10 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        d
    }

    /// The consumed message; on a consume error, logs, waits and gives
    /// `None`; a fatal one ends the worker, to be started afresh.
    async fn received<M>(
        &mut self,
        msg: rdkafka::error::KafkaResult<M>,
        topology: &str,
    ) -> Result<Option<M>, RuntimeError> {
        match msg {
            Ok(m) => {
                *self = Backoff::new();
                Ok(Some(m))
            }
            Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                Err(RuntimeError::Fatal {
                    topology: topology.to_string(),
                    reason: e.to_string(),
                })
            }
            // Transport failures are logged once per outage (`health`).
            Err(e) => {
                let wait = self.next();
                tracing::debug!(%topology, error = %e, retry_in = ?wait, "consume failed");
                tokio::time::sleep(wait).await;
                Ok(None)
            }
        }
    }
}

/// Live counters of one topology, read by the demo's status line and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_letters: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    /// Records later than their windows' grace, sent to the late topic.
    pub late: AtomicU64,
    /// Window rows merged into the store.
    pub window_rows: AtomicU64,
    /// Windows held in memory, as of the last commit.
    pub open_windows: AtomicU64,
    /// Partition assignments and revocations seen.
    pub assigns: AtomicU64,
    pub revokes: AtomicU64,
    /// Records handled with every schema cached, and those that waited for the registry.
    pub schema_hits: AtomicU64,
    pub schema_misses: AtomicU64,
    /// The topics records come from and go to, for metric labels.
    pub source: String,
    pub sink: String,
    /// Whether the worker can do its job (`/readyz`).
    pub health: health::Health,
    /// When the first record was taken (the benchmark's clock starts there).
    pub first_record: std::sync::OnceLock<std::time::Instant>,
    dlq_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Stats {
    pub fn for_topology(d: &crate::topology::Description) -> Stats {
        Stats {
            source: d.source.clone(),
            sink: d.sinks.first().cloned().unwrap_or_default(),
            ..Stats::default()
        }
    }

    /// Counts a record taken, giving how many were taken before it.
    pub fn record_in(&self) -> u64 {
        let n = self.records_in.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            let _ = self.first_record.set(std::time::Instant::now());
        }
        n
    }

    pub fn count_dead_letters(&self, kind: &'static str, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
        *self
            .dlq_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += n;
    }

    pub fn dead_letters_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.dlq_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_string(), partition), lag);
    }

    fn clear_lag(&self, topic: &str, partition: i32) {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
    }

    /// Consumer lag per assigned partition, as librdkafka last reported it.
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn total_lag(&self) -> i64 {
        self.lag().values().sum()
    }
}

/// Runs one topology of either kind until `shutdown` resolves.
pub async fn run_topology(
    topology: &Topology,
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &RunOptions,
    stats: Arc<Stats>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let d = &topology.description;
    match &topology.body {
        Body::Topic(p) => {
            let timings = opts.timings(&d.name);
            run_topic(d, p.as_ref(), kafka, codec, opts, stats, timings, shutdown).await
        }
        Body::Windows(p) => {
            let stores = opts
                .windows
                .as_ref()
                .ok_or_else(|| RuntimeError::NoStore(d.name.clone()))?;
            let group = opts.group_id.as_deref().unwrap_or(&d.group_id);
            let store =
                stores
                    .open(p.table(), group, &d.source)
                    .map_err(|source| RuntimeError::Store {
                        topology: d.name.clone(),
                        source,
                    })?;
            let timings = opts.timings(&d.name);
            let parts = windowed::Parts {
                processor: p.clone(),
                store,
                stats,
                timings,
            };
            run_windows(d, parts, kafka, codec, opts, shutdown).await
        }
    }
}

/// Topologies running in background tasks of this process.
pub struct Workers {
    pub stats: Vec<(String, Arc<Stats>)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), RuntimeError>>,
}

impl Workers {
    pub fn spawn(
        topologies: Vec<Topology>,
        kafka: &KafkaConfig,
        codec: Arc<AvroCodec>,
        opts: &RunOptions,
    ) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut stats = Vec::new();
        let threads = opts.threads.max(1);
        for topology in topologies {
            let s = Arc::new(Stats::for_topology(&topology.description));
            stats.push((topology.description.name.clone(), s.clone()));
            for thread in 0..threads {
                let mut opts = opts.clone();
                if threads > 1 {
                    // Each member needs a transactional id of its own.
                    opts.instance_id = format!("{}-{thread}", opts.instance_id);
                }
                let (kafka, codec, s, topology, mut stopped) = (
                    kafka.clone(),
                    codec.clone(),
                    s.clone(),
                    topology.clone(),
                    stopped.clone(),
                );
                tasks.spawn(async move {
                    let mut backoff = Backoff::new();
                    loop {
                        let mut watch = stopped.clone();
                        let shutdown = async move {
                            let _ = watch.wait_for(|s| *s).await;
                        };
                        let run =
                            run_topology(&topology, &kafka, codec.clone(), &opts, s.clone(), shutdown);
                        match run.await {
                            // Uncommitted work is read again by the new client.
                            Err(e @ RuntimeError::Fatal { .. }) if !*stopped.borrow() => {
                                let wait = backoff.next();
                                tracing::warn!(error = %e, retry_in = ?wait, "starting the worker afresh");
                                tokio::select! {
                                    _ = stopped.wait_for(|s| *s) => return Ok(()),
                                    _ = tokio::time::sleep(wait) => {}
                                }
                            }
                            done => return done,
                        }
                    }
                });
            }
        }
        Workers { stats, stop, tasks }
    }

    /// Resolves when a worker ends on its own, which only an error makes it do.
    pub async fn failure(&mut self) -> RuntimeError {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(Err(e))) => return e,
                Some(Ok(Ok(()))) => continue,
                Some(Err(join)) => {
                    return RuntimeError::Crashed(join.to_string());
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Asks every worker to commit and leave its group, waiting up to `grace`.
    pub async fn stop(mut self, grace: Duration) -> Result<(), RuntimeError> {
        let _ = self.stop.send(true);
        let all = async {
            while let Some(done) = self.tasks.join_next().await {
                match done {
                    Ok(r) => r?,
                    Err(join) => return Err(RuntimeError::Crashed(join.to_string())),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(grace, all).await {
            Ok(r) => r,
            Err(_) => Err(RuntimeError::ShutdownTimeout(grace)),
        }
    }
}
