//! Running topologies as consumer-group workers: per member, one loop that
//! consumes and runs the consuming side of the graph (`worker`), and one
//! task thread that drives the commit protocol (`committer`) over the
//! member's unit of work (`task`: stateful operators, sinks, letters, and
//! the keeper of the input positions, `keeper`). The consumer's context
//! handles rebalances (`context`). `Workers` runs every member of every
//! topology of a process and starts one afresh after a fatal client error.

mod backoff;
mod changes;
mod chunk;
mod committer;
mod context;
mod keeper;
mod open;
mod participant;
mod refused;
mod restore;
mod seek;
mod shared;
mod tally;
mod task;
pub mod trace;
mod unit;
mod worker;

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinSet};

pub use keeper::{Committed, KafkaKeeper, Progress};

pub use crate::commit::{Claim, CommitError, DeadLetter, Group, Keeper, Outbox, Position, letters};
pub use open::{OpenError, pieces};
pub use participant::{Participant, Rewind, WriteError, Written};
pub use task::{Parts, Task, TaskOperator, TaskSink};
pub use unit::Unit;
pub use worker::run_member;

use backoff::Backoff;

use crate::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    sink::Databases,
    stats::{Stats, Timings},
    topology::{Guarantee, Topology},
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
    /// The databases topologies that write tables commit in, by name.
    pub databases: Databases,
    /// Where duration histograms go (the metrics endpoint's meter).
    pub meter: Option<opentelemetry::metrics::Meter>,
    /// Samples where records' latency goes (the benchmark's breakdown).
    pub trace: Option<Arc<trace::Trace>>,
    /// Tables already read by the process (`Workers` starts them once for
    /// all its members); a member reads any other for itself.
    pub tables: crate::table::Tables,
    /// The process's key-value stores, published for queries.
    pub stores: crate::state::Stores,
    /// `host:port` where other workers and clients reach this worker's
    /// queries (`/stores`); it rides in each member's `client.id`, so the
    /// group's description says where a partition's owner answers.
    pub advertised: Option<String>,
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
            client_id: Some(match &self.advertised {
                Some(addr) => format!("{instance}@{addr}"),
                None => instance.to_string(),
            }),
        }
    }

    /// The consumer group a topology's members join.
    pub fn group_of(&self, d: &crate::topology::Description) -> String {
        self.group_id.clone().unwrap_or_else(|| d.group_id.clone())
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
            databases: Databases::new(),
            meter: None,
            trace: None,
            tables: crate::table::Tables::default(),
            stores: crate::state::Stores::default(),
            advertised: None,
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
    /// Configuration: the topology writes to a database it was not given.
    #[error(
        "topology {topology} writes tables to database {database:?}, but none was given to run it with"
    )]
    NoDatabase { topology: String, database: String },
    /// The Kafka client cannot go on (fenced, or a broker error it treats
    /// as final): a new one, starting from the committed positions, can.
    #[error("topology {topology}: the Kafka client stopped for good ({reason})")]
    Fatal { topology: String, reason: String },
    /// Configuration: a co-partitioned table's topic has another partition
    /// count than the source, so its partitions do not match the member's.
    #[error(
        "topology {topology}: table {table} has {table_partitions} partitions but its source {source_topic} has {source_partitions}; a co-partitioned table needs the source's partition count (give {table} {source_partitions} partitions, or declare it with global_table to read it whole)"
    )]
    CoPartitioning {
        topology: String,
        table: String,
        table_partitions: i32,
        source_topic: String,
        source_partitions: i32,
    },
    /// The member's task cannot be opened for good (a bad property or table).
    #[error("topology {topology}: {source}")]
    Open {
        topology: String,
        #[source]
        source: OpenError,
    },
}

/// Runs one member of a topology's group until `shutdown` resolves.
pub async fn run_topology(
    topology: &Topology,
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &RunOptions,
    stats: Arc<Stats>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let d = &topology.description;
    if let Some(db) = topology.database()
        && opts.databases.get(db).is_none()
    {
        return Err(RuntimeError::NoDatabase {
            topology: d.name.clone(),
            database: db.to_string(),
        });
    }
    let timings = opts.timings(&d.name);
    run_member(topology, kafka, codec, opts, stats, timings, shutdown).await
}

/// What a topology's members will ask of the brokers (`kafka::access`).
pub fn access_needs(topology: &Topology, opts: &RunOptions) -> crate::kafka::access::Needs {
    let d = &topology.description;
    let instance = member_instance(&opts.instance_id, 0, opts.threads);
    crate::kafka::access::Needs {
        topology: d.name.clone(),
        // The source first, as the group check reads it.
        topics: d.topics(),
        group: opts.group_of(d),
        transactional_id: topology.transactional(opts.guarantee).then(|| {
            crate::kafka::access::TransactionalId {
                id: worker::transactional_id(d, &instance),
                prefix: worker::transactional_id(d, ""),
            }
        }),
    }
}

/// Each member of a process needs a transactional id of its own.
fn member_instance(instance: &str, thread: usize, threads: usize) -> String {
    if threads > 1 {
        format!("{instance}-{thread}")
    } else {
        instance.to_string()
    }
}

/// Topologies running in background tasks of this process.
pub struct Workers {
    pub stats: Vec<(String, Arc<Stats>)>,
    stop: watch::Sender<bool>,
    /// Tables stop after the workers, whose joins may wait for them.
    _tables_stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), RuntimeError>>,
}

impl Workers {
    pub fn spawn(
        topologies: Vec<Topology>,
        kafka: &KafkaConfig,
        codec: Arc<AvroCodec>,
        opts: &RunOptions,
    ) -> Workers {
        // A re-keying topology runs as its parts: each its own members.
        let topologies: Vec<Topology> = topologies.into_iter().flat_map(Topology::units).collect();
        let (stop, stopped) = watch::channel(false);
        let (tables_stop, tables_stopped) = watch::channel(false);
        let mut opts = opts.clone();
        for t in &topologies {
            opts.tables
                .start(&t.read_tables, kafka, &codec, &tables_stopped);
        }
        let opts = &opts;
        let mut tasks = JoinSet::new();
        let mut stats = Vec::new();
        let threads = opts.threads.max(1);
        for topology in topologies {
            let d = &topology.description;
            // What its outputs are counted as where it writes no topic.
            let sink = match (d.writes().first(), topology.tables().first()) {
                (Some(topic), _) => topic.clone(),
                (None, Some(crate::sink::Table::Windows(t))) => {
                    format!("postgres:{}", t.table.as_str())
                }
                (None, Some(crate::sink::Table::Rows(t))) => {
                    format!("postgres:{}", t.table.as_str())
                }
                (None, None) => String::new(),
            };
            let s = Arc::new(Stats::new(&d.source, &sink));
            stats.push((topology.description.name.clone(), s.clone()));
            for thread in 0..threads {
                let mut opts = opts.clone();
                opts.instance_id = member_instance(&opts.instance_id, thread, threads);
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
        Workers {
            stats,
            stop,
            _tables_stop: tables_stop,
            tasks,
        }
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
