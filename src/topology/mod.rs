//! Declaring what a topology does: a typed graph from a source topic
//! through operators — stateless ones fused into one function per segment,
//! fan-outs, branches and merges, stateful operators that own stores — to
//! one or more sinks. `build` checks the whole graph and gives a
//! `Topology`; running it is the runtime's. Nothing here opens a client.
//!
//! ```ignore
//! let t = topology("iot-events");
//! let [alerts, windows] = t.source::<SensorReading>("iot_sensor_data").fan_out();
//! alerts.flat_map("rules", alerts_of).to_topic("iot-alerts");
//! windows.window(spec).aggregate("stats", key, Stats::default, fold).finals()
//!     .map("record", record).to_topic("iot-window-aggregates");
//! t.build()?
//! ```

mod build;
pub mod clock;
pub mod describe;
mod graph;
pub mod ops;
mod processor;
mod settings;
mod split;
mod stream;
mod windowed;

use std::{fmt, sync::Arc};

pub use crate::record::{
    Cell, Emitted, Failure, FailureKind, Input, Item, Missing, OpError, Output, Payload, Target,
};
pub use describe::{Description, Domain, NodeKind, SinkDesc, StoreDesc};
pub use graph::{Ctx, Side};
pub(crate) use graph::{Slot, push, slot};
pub use ops::Ops;
pub(crate) use processor::encode_for;
pub use processor::{Processor, fetch_missing};
pub use settings::Settings;
pub use split::Split;
pub(crate) use stream::refused;
pub use stream::{Downstream, Ended, Stream};
pub(crate) use windowed::item_of as windowed_item;
pub use windowed::{IntoKey, KeyValue, WindowKey, Windowed, WindowedStream, WindowedTable};

use crate::{operator::OperatorSpec, sink::OpenSink};

/// Delivery guarantee of the outputs that commit with the input offsets in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Outputs, dead letters and input offsets commit in one Kafka transaction.
    ExactlyOnce,
    /// Outputs are flushed before offsets commit; a crash may repeat some.
    AtLeastOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exactly-once" => Ok(Guarantee::ExactlyOnce),
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            other => Err(format!(
                "unknown guarantee {other:?}: use exactly-once or at-least-once"
            )),
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        })
    }
}

/// A declaration that does not make a topology; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("topology name {0:?} must be non-empty and use only letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("topology {topology}: topic name {topic:?} is not a valid Kafka topic name")]
    BadTopic { topology: String, topic: String },
    #[error(
        "topology {topology}: it writes to {topic}, which is also its source; that would loop forever"
    )]
    Loop { topology: String, topic: String },
    #[error("topology {topology}: the Avro schema for topic {topic} does not parse: {reason}")]
    BadSchema {
        topology: String,
        topic: String,
        reason: String,
    },
    #[error("topology {topology}: two different Avro schemas are declared for topic {topic}")]
    SchemaClash { topology: String, topic: String },
    #[error("topology {topology}: bad window: {reason}")]
    BadWindow { topology: String, reason: String },
    #[error("topology {topology}: bad table: {reason}")]
    BadTable { topology: String, reason: String },
    #[error("topology {topology}: split {split}: {reason}")]
    BadSplit {
        topology: String,
        split: String,
        reason: String,
    },
    #[error(
        "topology {topology}: merged streams must both come before any stateful operator, or both after one"
    )]
    MergeSides { topology: String },
    #[error("topology {0}: it has no source; start it with .source::<T>(topic)")]
    NoSource(String),
    #[error(
        "topology {0}: it reads a second source; a topology reads one topic (declare another topology for the other)"
    )]
    TwoSources(String),
    #[error("topology {0}: it has no sink; end a stream with .to_topic(...) or another sink")]
    NoSink(String),
    #[error(
        "topology {topology}: stream(s) after {nodes} go nowhere; end each with a sink (or filter what you do not want)"
    )]
    Dangling { topology: String, nodes: String },
    #[error(
        "topology {topology}: its sinks write to databases {first:?} and {second:?}; one unit commits in one database, so split it into two topologies"
    )]
    TwoDatabases {
        topology: String,
        first: String,
        second: String,
    },
    #[error(
        "topology {topology}: {operator} rebuilds its state by reading its input again, so it must be fed from the source directly, not after another stateful operator"
    )]
    RebuildAfterState { topology: String, operator: String },
    #[error(
        "topology {topology}: its windows share each partition's event time, so they must have the same out-of-order allowance and idle timeout"
    )]
    WindowClocks { topology: String },
    #[error("topology {topology}: two stores are named {store}")]
    StoreTwice { topology: String, store: String },
    #[error(
        "topology {topology}: two re-keying steps are named {name}; the name makes the repartition topic's, so give each its own"
    )]
    RekeyTwice { topology: String, name: String },
}

/// Kafka's rule: 1–249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Starts a topology declaration.
pub fn topology(name: &str) -> Builder {
    Builder {
        graph: graph::Graph::new(name),
    }
}

/// A topology being declared. Its streams share it: declare sources and
/// sinks through them, then `build`.
pub struct Builder {
    graph: graph::Shared,
}

impl Builder {
    /// Consumer group id; defaults to `sluice-<name>`.
    pub fn group_id(self, id: &str) -> Self {
        self.graph.borrow_mut().group_id = Some(id.to_string());
        self
    }

    /// Dead-letter topic; defaults to `<source>.dlq`.
    pub fn dead_letter_topic(self, topic: &str) -> Self {
        self.graph.borrow_mut().dead_letter = Some(topic.to_string());
        self
    }

    /// Reads Avro values of `topic` into `T`, with `T`'s schema as the
    /// reader schema (registered under `<topic>-value` at start).
    pub fn source<T>(&self, topic: &str) -> Stream<T, T, ops::Source>
    where
        T: crate::avro::AvroSchema + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.source_with_schema(topic, T::SCHEMA)
    }

    /// Reads Avro values of `topic` with the given reader schema.
    pub fn source_with_schema<T>(&self, topic: &str, schema: &str) -> Stream<T, T, ops::Source>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        source_on(&self.graph, topic, schema)
    }

    /// A table over the compacted topic `topic` that every member reads
    /// whole (Kafka Streams' `GlobalKTable`): Avro values into `V` (`V`'s
    /// schema registered under `<topic>-value`), keys as the topic has
    /// them, a record without a value deleting its key's row. Joins look
    /// rows up by event time within `table::DEFAULT_RETENTION` (24 h) of
    /// the newest record; `global_table_with` sets another.
    pub fn global_table<V>(&self, topic: &str) -> crate::table::Table<V>
    where
        V: crate::avro::AvroSchema + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.global_table_with(topic, V::SCHEMA, crate::table::DEFAULT_RETENTION)
    }

    /// A global table with the given reader schema and history retention.
    pub fn global_table_with<V>(
        &self,
        topic: &str,
        schema: &str,
        retention: std::time::Duration,
    ) -> crate::table::Table<V>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.declare_table(topic, schema, retention, false)
    }

    /// A co-partitioned table over the compacted `topic` (Kafka Streams'
    /// `KTable`): each member reads only the partitions of it that match
    /// the source partitions it owns, from the beginning whenever it is
    /// assigned one. The topic must have the source's partition count and
    /// be keyed as the source is (the join's key of a record lies in the
    /// record's partition); a worker refuses to start otherwise.
    pub fn table<V>(&self, topic: &str) -> crate::table::Table<V>
    where
        V: crate::avro::AvroSchema + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.table_with(topic, V::SCHEMA, crate::table::DEFAULT_RETENTION)
    }

    /// A co-partitioned table with the given reader schema and history retention.
    pub fn table_with<V>(
        &self,
        topic: &str,
        schema: &str,
        retention: std::time::Duration,
    ) -> crate::table::Table<V>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.declare_table(topic, schema, retention, true)
    }

    fn declare_table<V>(
        &self,
        topic: &str,
        schema: &str,
        retention: std::time::Duration,
        co_partitioned: bool,
    ) -> crate::table::Table<V>
    where
        V: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let mut g = self.graph.borrow_mut();
        let parsed = match apache_avro::Schema::parse_str(schema) {
            Ok(s) => s,
            Err(e) => {
                let topology = g.name.clone();
                g.fail(BuildError::BadSchema {
                    topology,
                    topic: topic.to_string(),
                    reason: e.to_string(),
                });
                apache_avro::Schema::Null
            }
        };
        if !valid_topic(topic) {
            let topology = g.name.clone();
            g.fail(BuildError::BadTopic {
                topology,
                topic: topic.to_string(),
            });
        }
        g.schema(topic, schema);
        let decl = Arc::new(crate::table::TableDecl::<V>::new(
            topic,
            crate::avro::Reader::new(parsed),
            retention,
            co_partitioned,
        ));
        if !g.tables.iter().any(|t| t.topic() == topic) {
            g.tables.push(decl.clone());
        }
        crate::table::Table::new(decl)
    }

    /// Checks the whole declaration and builds the topology.
    pub fn build(self) -> Result<Topology, BuildError> {
        build::build(self.graph)
    }
}

/// Declares `topic` the source of `graph` (one per graph).
pub(crate) fn source_on<T>(
    graph: &graph::Shared,
    topic: &str,
    schema: &str,
) -> Stream<T, T, ops::Source>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let mut g = graph.borrow_mut();
    let name = g.name.clone();
    let parsed = match apache_avro::Schema::parse_str(schema) {
        Ok(s) => s,
        Err(e) => {
            g.fail(BuildError::BadSchema {
                topology: name.clone(),
                topic: topic.to_string(),
                reason: e.to_string(),
            });
            apache_avro::Schema::Null
        }
    };
    if g.source.is_some() {
        g.fail(BuildError::TwoSources(name));
    }
    g.schema(topic, schema);
    let root = graph::slot::<T>();
    let key_needed = Arc::new(std::sync::OnceLock::new());
    let processor = processor::SourceProcessor::new(
        crate::avro::Reader::new(parsed),
        root.clone(),
        key_needed.clone(),
    );
    let node = g.node(
        NodeKind::Source,
        format!("source {topic}"),
        Vec::new(),
        Side::Loop,
    );
    if g.source.is_none() {
        g.source = Some(graph::SourceDecl {
            topic: topic.to_string(),
            processor: Arc::new(processor),
        });
    }
    drop(g);
    let mut s = Stream::start(graph.clone(), root, node, Side::Loop);
    s.key_needed = Some(key_needed);
    s
}

/// The repartition topic of `Stream::group_by(name, …)`: Kafka Streams' naming.
pub fn repartition_topic(group: &str, name: &str) -> String {
    format!("{group}-{name}-repartition")
}

/// Declares the repartition topic `graph` writes for its re-keying step
/// `name`, and the sub-topology that reads it (in the same group, named
/// `<topology>.<name>`): the topic, and the sub-topology's source stream.
pub(crate) fn repartition<T>(
    graph: &graph::Shared,
    name: &str,
    schema: &str,
) -> (String, Stream<T, T, ops::Source>)
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let mut g = graph.borrow_mut();
    let group = g
        .group_id
        .clone()
        .unwrap_or_else(|| format!("sluice-{}", g.name));
    let topic = repartition_topic(&group, name);
    if g.repartitions.contains(&topic) {
        let topology = g.name.clone();
        g.fail(BuildError::RekeyTwice {
            topology,
            name: name.to_string(),
        });
    }
    g.repartitions.push(topic.clone());
    let sub = graph::Graph::new(&format!("{}.{name}", g.name));
    sub.borrow_mut().group_id = Some(group);
    sub.borrow_mut().rekeyed_by = Some(name.to_string());
    g.subs.push(sub.clone());
    drop(g);
    let stream = source_on(&sub, &topic, schema);
    (topic, stream)
}

/// A checked topology: what the runtime runs.
#[derive(Clone)]
pub struct Topology {
    pub description: Description,
    pub(crate) processor: Arc<dyn Processor>,
    pub(crate) sinks: Vec<Arc<dyn OpenSink>>,
    pub(crate) operators: Vec<Arc<dyn OperatorSpec>>,
    /// (topic, Avro schema) registered as `<topic>-value` before it runs.
    pub schemas: Vec<(String, String)>,
    /// The tables its joins read, started by the runtime before its members.
    pub(crate) read_tables: Vec<Arc<dyn crate::table::TableSource>>,
    /// The sub-topologies after its repartition topics (`Stream::group_by`):
    /// members of the same group, each committing its own unit.
    pub(crate) subs: Vec<Topology>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.description.fmt(f)
    }
}

impl Topology {
    /// The database its unit commits in, if not Kafka.
    pub fn database(&self) -> Option<&str> {
        match &self.description.commit {
            Domain::Database(d) => Some(d),
            Domain::Kafka => None,
        }
    }

    /// Whether its members write in Kafka transactions (and so need a
    /// transactional id) under `guarantee`.
    pub fn transactional(&self, guarantee: Guarantee) -> bool {
        self.description.commit == Domain::Kafka && guarantee == Guarantee::ExactlyOnce
    }

    /// The same topology in another consumer group (its changelogs follow;
    /// its repartition topics keep their declared names).
    pub fn in_group(mut self, group: &str) -> Topology {
        self.description.group_id = group.to_string();
        self.subs = self.subs.into_iter().map(|s| s.in_group(group)).collect();
        self
    }

    /// This topology and its sub-topologies, by reference (`units` gives
    /// them to run).
    pub fn parts(&self) -> Vec<&Topology> {
        let mut out = vec![self];
        out.extend(self.sub_topologies());
        out
    }

    /// The sub-topologies that read its repartition topics, and theirs.
    pub fn sub_topologies(&self) -> Vec<&Topology> {
        let mut out = Vec::new();
        for s in &self.subs {
            out.push(s);
            out.extend(s.sub_topologies());
        }
        out
    }

    /// What runs: this topology's first part and each sub-topology, each
    /// a group member of its own in the same group.
    pub fn units(self) -> Vec<Topology> {
        let mut first = self;
        let subs = std::mem::take(&mut first.subs);
        let mut out = vec![first];
        for s in subs {
            out.extend(s.units());
        }
        out
    }

    /// The schemas it registers, with the sink's and source's topics.
    pub fn schemas(&self) -> &[(String, String)] {
        &self.schemas
    }

    /// Its consuming side (decode and the stateless operators).
    pub fn processor(&self) -> &Arc<dyn Processor> {
        &self.processor
    }

    /// The same topology with another consuming side, which must address
    /// the same sinks and operators (benchmarks wrap it, or replace it with
    /// one that copies bytes).
    pub fn with_processor(mut self, processor: Arc<dyn Processor>) -> Topology {
        self.processor = processor;
        self
    }

    /// The tables its sinks write.
    pub fn tables(&self) -> Vec<crate::sink::Table> {
        self.sinks.iter().filter_map(|s| s.table()).collect()
    }
}

/// The changelog topic of a store: Kafka Streams' naming.
pub fn changelog_topic(group: &str, store: &str) -> String {
    format!("{group}-{store}-changelog")
}
