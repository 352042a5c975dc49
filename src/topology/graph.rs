//! The graph a declaration builds: typed segments joined at fan-outs,
//! branches, merges, stateful operators and sinks. Each segment compiles
//! into one closure (its operators inlined, see `ops`) that pushes what it
//! makes into the next segment's slot; a stateful operator or a sink is a
//! result addressed to it (`Emitted`), collected per input record. The
//! builder's state is shared by every stream of one declaration, as
//! Kafka Streams' `StreamsBuilder` is; `build` checks it whole.

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, OnceLock},
};

use super::{
    BuildError, Emitted, Failure, Item,
    describe::{NodeDesc, NodeKind, SinkDesc},
};
use crate::{avro::AvroCodec, operator::OperatorSpec, sink::OpenSink};

/// What a segment pushes its results through.
pub struct Ctx<'a> {
    pub codec: &'a AvroCodec,
    /// The current input record's results, in order.
    pub out: &'a mut Vec<Emitted>,
}

/// A compiled segment: takes one item and runs it through to the next.
pub(crate) type Push<T> = Arc<dyn Fn(Item<T>, &mut Ctx<'_>) -> Result<(), Failure> + Send + Sync>;

/// Where a segment's compiled closure goes once the segment ends: its
/// upstream holds the slot before the segment is finished.
pub(crate) type Slot<T> = Arc<OnceLock<Push<T>>>;

pub(crate) fn slot<T>() -> Slot<T> {
    Arc::new(OnceLock::new())
}

/// Pushes into a slot; an empty one (never, once built) drops the item.
pub(crate) fn push<T>(slot: &Slot<T>, item: Item<T>, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
    match slot.get() {
        Some(p) => p(item, ctx),
        None => Ok(()),
    }
}

pub(crate) type NodeId = usize;

/// Which thread runs a segment: the loop that consumes (stateless work,
/// in parallel with the commit), or the task thread where the unit
/// commits (anything downstream of a stateful operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Loop,
    Task,
}

pub(crate) struct SourceDecl {
    pub topic: String,
    pub processor: Arc<dyn super::processor::Processor>,
}

pub(crate) struct SinkDecl {
    pub open: Arc<dyn OpenSink>,
    pub desc: SinkDesc,
}

pub(crate) struct OperatorDecl {
    pub node: NodeId,
    pub spec: Arc<dyn OperatorSpec>,
    /// The operator's input comes straight from the consumer's side, with
    /// no stateful operator before it.
    pub fed_by_loop: bool,
}

/// A segment that must be finished before the graph is complete.
struct Open {
    node: NodeId,
    filled: Box<dyn Fn() -> bool>,
}

/// The declaration so far, shared by its streams.
pub(crate) struct Graph {
    pub name: String,
    pub group_id: Option<String>,
    pub dead_letter: Option<String>,
    pub source: Option<SourceDecl>,
    pub nodes: Vec<NodeDesc>,
    pub sinks: Vec<SinkDecl>,
    pub operators: Vec<OperatorDecl>,
    open: Vec<Open>,
    pub errors: Vec<BuildError>,
    /// (topic, Avro schema) to register as `<topic>-value` before running.
    pub schemas: Vec<(String, String)>,
    /// The tables its joins read.
    pub tables: Vec<Arc<dyn crate::table::TableSource>>,
    /// Sink topics that keep each key's latest record.
    pub compacted: Vec<String>,
    /// Repartition topics its sinks write (`Stream::group_by`).
    pub repartitions: Vec<String>,
    /// The sub-topologies reading them, declared through its streams.
    pub subs: Vec<Shared>,
    /// For a sub-topology: the re-keying step whose topic it reads.
    pub rekeyed_by: Option<String>,
}

pub(crate) type Shared = Rc<RefCell<Graph>>;

impl Graph {
    pub fn new(name: &str) -> Shared {
        Rc::new(RefCell::new(Graph {
            name: name.to_string(),
            group_id: None,
            dead_letter: None,
            source: None,
            nodes: Vec::new(),
            sinks: Vec::new(),
            operators: Vec::new(),
            open: Vec::new(),
            errors: Vec::new(),
            schemas: Vec::new(),
            tables: Vec::new(),
            compacted: Vec::new(),
            repartitions: Vec::new(),
            subs: Vec::new(),
            rekeyed_by: None,
        }))
    }

    /// Adds a node below `parents`.
    pub fn node(
        &mut self,
        kind: NodeKind,
        label: String,
        parents: Vec<NodeId>,
        side: Side,
    ) -> NodeId {
        self.nodes.push(NodeDesc {
            kind,
            label,
            parents,
            side,
        });
        self.nodes.len() - 1
    }

    /// A segment starting at `node` that must end somewhere.
    pub fn expect<T: 'static>(&mut self, node: NodeId, slot: &Slot<T>) {
        let s = slot.clone();
        self.open.push(Open {
            node,
            filled: Box::new(move || s.get().is_some()),
        });
    }

    /// The nodes whose streams were left without a sink.
    pub fn dangling(&self) -> Vec<NodeId> {
        self.open
            .iter()
            .filter(|o| !(o.filled)())
            .map(|o| o.node)
            .collect()
    }

    pub fn fail(&mut self, e: BuildError) {
        self.errors.push(e);
    }

    /// Registers `schema` for `topic`, refusing two different ones.
    pub fn schema(&mut self, topic: &str, schema: &str) {
        match self.schemas.iter().find(|(t, _)| t == topic) {
            Some((_, s)) if s == schema => {}
            Some(_) => {
                let e = BuildError::SchemaClash {
                    topology: self.name.clone(),
                    topic: topic.to_string(),
                };
                self.fail(e)
            }
            None => self.schemas.push((topic.to_string(), schema.to_string())),
        }
    }
}
