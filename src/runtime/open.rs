//! Opening a group member's task: its keeper (Kafka, or the topology's
//! database), its producer, its sinks and its stateful operators.

use std::sync::Arc;

use rdkafka::error::KafkaError;

use super::{
    KafkaKeeper, Keeper, RunOptions,
    restore::KafkaChangelogs,
    task::{Parts, Task, TaskOperator, TaskSink},
};
use crate::{
    avro::AvroCodec,
    kafka::{KafkaConfig, Txn},
    operator::{EventClock, OperatorEnv},
    sink::{SinkEnv, SinkError},
    stats::{Stats, Timings},
    topology::{Domain, Topology},
};

/// Why a member's task could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The topology commits in a database the process was not given.
    #[error(
        "topology {topology} writes to database {database:?}, which was not given to run it with"
    )]
    NoDatabase { topology: String, database: String },
}

impl OpenError {
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenError::Kafka(KafkaError::ClientCreation(_)) => false,
            OpenError::Kafka(_) => true,
            OpenError::Sink(e) => e.retryable,
            OpenError::NoDatabase { .. } => false,
        }
    }
}

pub(super) struct Env<'a> {
    pub kafka: &'a KafkaConfig,
    pub codec: &'a Arc<AvroCodec>,
    pub opts: &'a RunOptions,
    pub group: &'a str,
    /// This member's transactional id.
    pub transactional_id: &'a str,
    pub stats: Arc<Stats>,
    pub timings: Timings,
    pub tables: &'a crate::table::Tables,
}

pub(super) fn open(topology: &Topology, env: &Env<'_>) -> Result<Task, OpenError> {
    let d = &topology.description;
    let database = match &d.commit {
        Domain::Kafka => None,
        Domain::Database(name) => {
            Some(
                env.opts
                    .databases
                    .get(name)
                    .ok_or_else(|| OpenError::NoDatabase {
                        topology: d.name.clone(),
                        database: name.clone(),
                    })?,
            )
        }
    };
    let keeper: Box<dyn Keeper> = match database {
        Some(db) => db.keeper(env.group, &d.source),
        None => Box::new(KafkaKeeper::new(
            env.kafka,
            env.group,
            &d.source,
            !topology.operators.is_empty(),
        )?),
    };
    let id = topology
        .transactional(env.opts.guarantee)
        .then_some(env.transactional_id);
    let out = Box::new(Txn::new(env.kafka, id, &d.name)?);
    let (sinks, operators, clock) = pieces(
        topology,
        env.group,
        database,
        env.codec,
        env.tables,
        &env.opts.stores,
    )?;
    Ok(Task::new(Parts {
        topology: d.name.clone(),
        source: d.source.clone(),
        dead_letter: d.dead_letter.as_str().into(),
        late: d.late.as_deref().map(Into::into),
        codec: env.codec.clone(),
        keeper,
        out,
        sinks,
        operators,
        clock,
        changelogs: Box::new(KafkaChangelogs::new(env.kafka, env.group)),
        wall_ms: Arc::new(crate::topology::clock::wall_clock_ms),
        stats: env.stats.clone(),
        timings: env.timings.clone(),
    }))
}

/// A task's sinks, operators and event-time clock.
pub type Pieces = (Vec<TaskSink>, Vec<TaskOperator>, Option<EventClock>);

/// A task's sinks, operators and event-time clock, opened for a member of
/// `group` committing in `database` (if the topology writes to one).
pub fn pieces(
    topology: &Topology,
    group: &str,
    database: Option<&Arc<dyn crate::sink::Database>>,
    codec: &Arc<AvroCodec>,
    tables: &crate::table::Tables,
    stores: &crate::state::Stores,
) -> Result<Pieces, SinkError> {
    let d = &topology.description;
    let sink_env = SinkEnv {
        topology: &d.name,
        group,
        source: &d.source,
        database,
        codec,
    };
    let sinks = topology
        .sinks
        .iter()
        .zip(&d.sinks)
        .map(|(open, desc)| {
            Ok(TaskSink {
                sink: open.open(&sink_env)?,
                one_per_record: open.one_per_record(),
                database: desc.domain != Domain::Kafka,
            })
        })
        .collect::<Result<Vec<_>, SinkError>>()?;
    let op_env = OperatorEnv {
        topology: &d.name,
        group,
        source: &d.source,
        stores,
        tables,
    };
    let operators = topology
        .operators
        .iter()
        .map(|spec| TaskOperator {
            op: spec.open(&op_env),
            rebuilds: spec.rebuilds_from_input(),
        })
        .collect();
    let clock = topology
        .operators
        .iter()
        .find_map(|o| o.clock())
        .map(|(ooo, idle)| {
            let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            EventClock::new(ms(ooo), ms(idle))
        });
    Ok((sinks, operators, clock))
}
