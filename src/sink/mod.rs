//! Where a topology's results go, and the commit protocol every sink speaks.
//!
//! A `Sink` is a participant in a two-phase commit with the input: the
//! runtime hands it each input record's results (which open a unit), then
//! commits the unit together with the input positions it covers, or aborts
//! it and reads those records again. A store that keeps the input positions
//! itself (PostgreSQL) also claims partitions when they are assigned, which
//! fences their previous owner, and says where reading resumes.
//!
//! A `SinkSpec` is a sink's declaration: it finishes a topology (the builder
//! methods `to_topic`, `to_postgres`, in `kafka` and `postgres`) and opens
//! one sink per consumer-group member when the topology runs. A new sink is
//! one type implementing `Sink`, its spec, and one builder method.
//!
//! The sinks: a Kafka topic, transactionally (`kafka`); and, behind the
//! window stage (`window`), which folds readings into event-time windows,
//! a PostgreSQL table of window aggregates (`postgres`) or the same in
//! memory (`memory`).

pub mod kafka;
pub mod letters;
pub mod memory;
pub mod offsets;
pub mod postgres;
pub mod query;
pub mod rows;
mod rows_pg;
pub mod table;
pub mod window;
pub mod window_topic;

use std::{fmt, sync::Arc};

use rdkafka::{
    TopicPartitionList, consumer::ConsumerGroupMetadata, error::KafkaError,
    message::BorrowedHeaders,
};

pub use letters::DeadLetter;
pub use table::{AggregateColumn, KeyColumn, Merge, SqlType, TableName, TableSpec};

use crate::{
    kafka::KafkaConfig,
    stats::{Stats, Timings},
    topology::{Declared, Description, Emitted, Guarantee, Processor},
};

/// A declared topology with its sink: what the runtime runs.
#[derive(Clone)]
pub struct Topology {
    pub description: Description,
    pub processor: Arc<dyn Processor>,
    pub sink: Arc<dyn SinkSpec>,
}

impl Topology {
    /// Finishes a declaration with its sink.
    pub fn new(declared: Declared, sink: Arc<dyn SinkSpec>) -> Topology {
        let mut description = declared.description;
        description.sinks = vec![sink.describe()];
        description.writes = sink.topics();
        Topology {
            description,
            processor: declared.processor,
            sink,
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.description.fmt(f)
    }
}

/// A sink's declaration; opens one sink per group member.
pub trait SinkSpec: Send + Sync + 'static {
    /// How `sluice topologies` lists it: a topic, or `postgres:<table>`.
    fn describe(&self) -> String;
    /// The topics it writes, to create them.
    fn topics(&self) -> Vec<String>;
    /// What it guarantees, in words.
    fn guarantee(&self) -> &'static str;
    /// Whether it needs a window store (`SinkEnv::stores`).
    fn needs_store(&self) -> bool {
        false
    }
    /// Whether its members write in Kafka transactions (and so need their
    /// transactional id) under this guarantee.
    fn transactional(&self, _guarantee: crate::topology::Guarantee) -> bool {
        false
    }
    /// The window table it writes, if it writes one (for reading it back).
    fn table(&self) -> Option<Arc<TableSpec>> {
        None
    }
    /// The row table it writes, if it writes one.
    fn rows(&self) -> Option<Arc<rows::RowSpec>> {
        None
    }
    /// The sink for one member of the topology's consumer group.
    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError>;
}

/// Where tables (window aggregates, rows) are kept: PostgreSQL, or this
/// process's memory (the demo without a database).
#[derive(Clone)]
pub enum Stores {
    Postgres(sqlx::PgPool),
    Memory(Arc<memory::MemoryTables>),
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stores::Postgres(_) => "Stores::Postgres",
            Stores::Memory(_) => "Stores::Memory",
        })
    }
}

/// What opening a sink may need, from the worker that runs it.
pub struct SinkEnv<'a> {
    pub topology: &'a str,
    pub source: &'a str,
    pub group: &'a str,
    pub dead_letter: &'a str,
    pub late: Option<&'a str>,
    pub kafka: &'a KafkaConfig,
    pub guarantee: Guarantee,
    /// Names this member's transactional producer.
    pub transactional_id: &'a str,
    pub stores: Option<&'a Stores>,
    /// For sinks that encode what they write themselves (final windows).
    pub codec: &'a Arc<crate::avro::AvroCodec>,
    pub stats: Arc<Stats>,
    pub timings: Timings,
}

/// Where an input record was read, and what it carried (for the letters a
/// window stage writes itself: late records).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: SourceHeaders<'a>,
}

/// An input record's headers: as consumed, or as a chunk keeps them.
#[derive(Clone, Copy)]
pub enum SourceHeaders<'a> {
    Borrowed(Option<&'a BorrowedHeaders>),
    Copied(&'a [letters::RawHeader]),
}

impl SourceHeaders<'_> {
    pub fn to_raw(self) -> Vec<letters::RawHeader> {
        match self {
            SourceHeaders::Borrowed(h) => copy_headers(h),
            SourceHeaders::Copied(h) => h.to_vec(),
        }
    }
}

/// The input a unit covers: per partition, its first offset and the next
/// one to read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unit {
    spans: Vec<(i32, i64, i64)>,
    records: usize,
}

impl Unit {
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        match self.spans.iter_mut().find(|(p, _, _)| *p == partition) {
            Some((_, _, next)) => *next = offset + 1,
            None => self.spans.push((partition, offset, offset + 1)),
        }
        self.records += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Input records in the unit.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Per partition, the offset after the unit's last record.
    pub fn next_offsets(&self) -> Vec<(i32, i64)> {
        self.spans.iter().map(|&(p, _, next)| (p, next)).collect()
    }

    /// Per partition, the unit's first offset: where to read again from.
    pub fn first_offsets(&self) -> Vec<(i32, i64)> {
        self.spans.iter().map(|&(p, first, _)| (p, first)).collect()
    }

    /// The positions to commit, as Kafka takes them.
    pub fn offsets(&self, topic: &str) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _, next) in &self.spans {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(next))?;
        }
        Ok(tpl)
    }

    pub fn clear(&mut self) {
        self.spans.clear();
        self.records = 0;
    }
}

/// The consumer group, as a sink needs it at commit: its metadata (for
/// offsets sent in a transaction) or a plain offset commit.
pub trait Group {
    /// `None` before the member first joined.
    fn metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Commits offsets to the group, synchronously or not.
    fn commit_offsets(&self, offsets: &TopicPartitionList, sync: bool) -> Result<(), KafkaError>;
}

/// A partition taken over: where to read from, the watermark so far, and
/// the epoch that commits must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub partition: i32,
    /// `None`: nothing committed yet, read from the beginning.
    pub next_offset: Option<i64>,
    pub watermark_ms: i64,
    pub epoch: i64,
    /// Records below this offset were processed before (their letters
    /// sent): reading resumes earlier only to rebuild open windows. -1: none.
    pub processed: i64,
}

/// What writing one input record's results added to the unit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Records for the sink (counted once the unit commits).
    pub outputs: u64,
    /// The record was too late for its window and went to the late topic.
    pub late: bool,
}

/// After an abort: where to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewind {
    /// Seek these partitions back to these offsets.
    To(Vec<(i32, i64)>),
    /// The store decides: claim these partitions again, then seek to what it says.
    Claim(Vec<i32>),
}

/// A commit participant, run on the worker's sender thread (its calls may
/// block).
pub trait Sink: Send {
    /// Whether this sink keeps the input positions itself and claims
    /// partitions on assignment (else they are the group's offsets).
    fn keeps_positions(&self) -> bool {
        false
    }

    /// Whether the group's committed offsets are its own (else, for a sink
    /// that keeps positions, the runtime mirrors them there to show lag).
    fn owns_group_offsets(&self) -> bool {
        false
    }

    /// Whether it needs each input record's key, value and headers (to
    /// write letters of its own).
    fn needs_input(&self) -> bool {
        false
    }

    /// Takes over partitions, fencing their previous owner.
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        Ok(partitions
            .iter()
            .map(|&partition| Claim {
                partition,
                next_offset: None,
                watermark_ms: i64::MIN,
                epoch: 0,
                processed: -1,
            })
            .collect())
    }

    /// Takes one input record's results (and dead letter) into the unit.
    fn write(
        &mut self,
        source: &Source<'_>,
        emitted: &[Emitted],
        dead: Option<&DeadLetter>,
    ) -> Result<Written, WriteError>;

    /// Commits the unit with the input positions it covers; gives the
    /// outputs it wrote at commit (window rows), or `None` when there was
    /// nothing to commit.
    fn commit(&mut self, unit: &Unit, group: &dyn Group) -> Result<Option<u64>, SinkError>;

    /// Drops the unit.
    fn abort(&mut self, unit: &Unit) -> Rewind;

    /// These partitions are no longer this member's: forget them.
    fn release(&mut self, _partitions: &[i32]) {}

    /// Whether a commit is due although no input came (windows closing by
    /// the clock).
    fn wants_commit(&mut self) -> bool {
        false
    }
}

/// A record a sink could not take into its unit.
#[derive(Debug)]
pub struct WriteError {
    pub error: KafkaError,
    /// The refused record was a dead letter, not an output.
    pub of_dead_letter: bool,
    pub topic: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configuration mistake (bad properties, a bad table name): final.
    #[error("{0}")]
    Config(String),
    /// Kafka refused or is unreachable; retrying may help.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// PostgreSQL is unreachable or refused the write; retrying may help.
    #[error("PostgreSQL write failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Another worker has claimed the partition since: this one must let go
    /// of it and re-read what it still owns.
    #[error("partition {partition} was claimed by another worker; nothing was written")]
    Fenced { partition: i32 },
    /// The registry could not give the schema a sink writes with.
    #[error("schema registry: {0}")]
    Registry(crate::avro::CodecError),
    /// Letters (late records, dead letters) could not be delivered first.
    #[error("late or dead-letter records not delivered: {0}")]
    Letters(KafkaError),
}

impl SinkError {
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            SinkError::Config(_) | SinkError::Kafka(KafkaError::ClientCreation(_))
        ) && !matches!(self, SinkError::Registry(e) if !e.is_retryable())
    }
}

/// An input record's headers as they came.
pub fn copy_headers(headers: Option<&BorrowedHeaders>) -> Vec<letters::RawHeader> {
    use rdkafka::message::Headers;
    headers
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}
