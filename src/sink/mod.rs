//! Where a topology's results go. A `Sink` only writes, flushes and
//! aborts: it takes results into the open unit (a topic sink hands them to
//! the unit's producer; a table sink keeps them), and at commit it hands
//! what it kept to the unit (a table sink stages its statements in the
//! transaction of its database). The runtime decides when to commit and
//! commits everything the unit wrote with the input positions, in one
//! place (`runtime::task`).
//!
//! A sink's declaration is a builder method on `Stream` (`to_topic`,
//! `to_table`, `to_postgres`) that prepares each record for the sink (on
//! the side that processes it: encoding, a row) and an `OpenSink` that
//! opens the sink for each group member. A database (`Database`: where
//! tables live and input positions are kept with them) is looked up by
//! name when the topology runs: PostgreSQL (`postgres`), or this process's
//! memory (`memory`).
//!
//! The sinks: a Kafka topic (`topic`), a table of window aggregates
//! (`window_table`), a row per record (`rows`).

pub mod memory;
pub mod peek;
pub mod postgres;
pub mod query;
pub mod rows;
pub mod table;
pub mod topic;
pub mod window_table;

use std::{any::Any, collections::BTreeMap, fmt, sync::Arc};

pub use rows::{RowSpec, ToTable};
pub use table::{AggregateColumn, KeyColumn, Merge, SqlType, TableName, TableSpec};
pub use topic::ToTopic;
pub use window_table::ToPostgres;

use crate::{
    avro::AvroCodec,
    commit::{Keeper, Outbox},
    operator::At,
    topology::Payload,
};

/// What a sink writes into: the unit's producer (topics), and what the
/// unit's keeper staged for its database, if the unit commits in one.
pub struct UnitWriter<'a> {
    pub kafka: &'a mut dyn Outbox,
    pub staged: Option<&'a mut dyn Any>,
}

impl UnitWriter<'_> {
    /// The database's staging area, if it is a `T`.
    pub fn staged<T: 'static>(&mut self) -> Option<&mut T> {
        self.staged.as_mut()?.downcast_mut()
    }
}

/// A sink of one group member, run where the unit commits (its calls may
/// block).
pub trait Sink: Send {
    /// Takes one result of the input record read at `at` into the unit.
    fn write(
        &mut self,
        payload: &mut Payload,
        at: At,
        unit: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError>;

    /// Hands what it kept to the unit, which commits next; gives the
    /// number of results it handed over (rows, for the counters).
    fn flush(&mut self, _unit: &mut UnitWriter<'_>) -> Result<u64, SinkError> {
        Ok(0)
    }

    /// Drops what it kept of the unit.
    fn abort(&mut self) {}

    /// These partitions are no longer this member's: forget their results.
    fn release(&mut self, _partitions: &[i32]) {}
}

/// Opens a sink for each group member: the type-erased part of a sink's
/// declaration.
pub trait OpenSink: Send + Sync + 'static {
    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError>;

    /// A topic whose writer schema must be looked up before the sink runs
    /// where the unit commits (its records are encoded there, after a
    /// stateful operator).
    fn schema_topic(&self) -> Option<&str> {
        None
    }

    /// Whether it takes at most one result per input record (a row keyed
    /// by its record): a record that makes more is a dead letter.
    fn one_per_record(&self) -> bool {
        false
    }

    /// The table it writes, if it writes one (for reading it back).
    fn table(&self) -> Option<Table> {
        None
    }
}

/// A table a sink writes, by its shape.
#[derive(Debug, Clone)]
pub enum Table {
    Windows(Arc<TableSpec>),
    Rows(Arc<RowSpec>),
}

/// What opening a sink may need.
pub struct SinkEnv<'a> {
    pub topology: &'a str,
    pub group: &'a str,
    pub source: &'a str,
    /// The database the unit commits in, if any.
    pub database: Option<&'a Arc<dyn Database>>,
    pub codec: &'a Arc<AvroCodec>,
}

impl SinkEnv<'_> {
    /// The unit's database, or an error naming the sink that needs one.
    pub fn database(&self, sink: &str) -> Result<&Arc<dyn Database>, SinkError> {
        self.database.ok_or_else(|| {
            SinkError::config(
                sink,
                format!(
                    "topology {} writes to a database, but none was given to run it with",
                    self.topology
                ),
            )
        })
    }
}

/// A sink's failure: whose it is, whether retrying may help, and its
/// cause (a sink's own error type).
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {source}")]
pub struct SinkError {
    pub sink: String,
    pub retryable: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl SinkError {
    pub fn new(
        sink: impl Into<String>,
        retryable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError {
            sink: sink.into(),
            retryable,
            source: Box::new(source),
        }
    }

    /// A configuration mistake (a bad table, no database): final.
    pub fn config(sink: impl Into<String>, message: String) -> Self {
        Self::new(sink, false, Message(message))
    }

    /// The Kafka error behind it, if that is what it is.
    pub fn kafka(&self) -> Option<&rdkafka::error::KafkaError> {
        self.source.downcast_ref()
    }
}

/// Where tables live and the input positions are kept with them, in one
/// transaction per unit.
pub trait Database: Send + Sync + 'static {
    /// The keeper of the positions of `group` reading `topic`.
    fn keeper(&self, group: &str, topic: &str) -> Box<dyn Keeper>;

    /// A sink merging window aggregates into `spec`'s table.
    fn window_table(&self, spec: Arc<TableSpec>) -> Result<Box<dyn Sink>, SinkError> {
        Err(SinkError::config(
            spec.table.as_str(),
            format!("{} keeps no window tables", self.describe()),
        ))
    }

    /// A sink storing a row per record in `spec`'s table.
    fn row_table(&self, spec: Arc<RowSpec>) -> Result<Box<dyn Sink>, SinkError> {
        Err(SinkError::config(
            spec.table.as_str(),
            format!("{} keeps no row tables", self.describe()),
        ))
    }

    /// For logs: what and where it is (never with a password).
    fn describe(&self) -> String;

    /// For `/readyz`: whether it answers.
    fn ready_check(&self) -> Option<Arc<dyn crate::metrics::ReadyCheck>> {
        None
    }

    /// What the console shows of its tables.
    fn peek(&self) -> Option<&dyn peek::Peek> {
        None
    }

    fn as_any(&self) -> &dyn Any;
}

/// The databases a process runs topologies with, by the names their
/// declarations use (`DEFAULT_DATABASE` unless they say otherwise).
#[derive(Clone, Default)]
pub struct Databases(BTreeMap<String, Arc<dyn Database>>);

/// The name a table sink uses unless its declaration gives another.
pub const DEFAULT_DATABASE: &str = "default";

impl Databases {
    pub fn new() -> Self {
        Self::default()
    }

    /// `db` under `name`.
    pub fn with(mut self, name: &str, db: Arc<dyn Database>) -> Self {
        self.0.insert(name.to_string(), db);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Database>> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Database>)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Databases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v.describe())))
            .finish()
    }
}
