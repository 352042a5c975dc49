//! The typed stream builder. Operators compose into one nested type per
//! segment (see `ops`), pushing items downstream without allocating per
//! stage; a segment ends where the stream fans out, branches, merges,
//! reaches a stateful operator or a sink, and compiles into one closure.

use std::{any::Any, fmt::Display, marker::PhantomData, sync::Arc};

use super::{
    Emitted, Failure, Item, OpError, Payload, Target,
    describe::NodeKind,
    graph::{Ctx, NodeId, Shared, Side, Slot, push, slot},
    ops::{EventTime, Filter, FlatMap, KeyBy, Map, Ops, Source, TryMap, Validate},
};

/// A stream of `T`, made from the `S` items its segment receives by the
/// operators `O`.
pub struct Stream<S, T, O> {
    pub(super) graph: Shared,
    /// Where this segment's compiled closure goes.
    pub(super) slot: Slot<S>,
    /// The last node described.
    pub(super) tail: NodeId,
    pub(super) side: Side,
    /// For the source's segment: whether the input key is needed (no
    /// `key_by` replaces it first), told to the processor once known.
    pub(super) key_needed: Option<Arc<std::sync::OnceLock<bool>>>,
    pub(super) sets_key: bool,
    ops: O,
    types: PhantomData<fn(S) -> T>,
}

/// Where a stateful operator's results flow on (`OpCtx::emit`).
pub struct Downstream<T>(pub(crate) Slot<T>);

impl<T> Clone for Downstream<T> {
    fn clone(&self) -> Self {
        Downstream(self.0.clone())
    }
}

/// A stream whose declaration is complete; `build` checks the whole
/// topology it belongs to.
pub struct Ended {
    pub(super) graph: Shared,
}

impl<S: 'static> Stream<S, S, Source> {
    pub(super) fn start(graph: Shared, slot: Slot<S>, tail: NodeId, side: Side) -> Self {
        graph.borrow_mut().expect(tail, &slot);
        Stream {
            graph,
            slot,
            tail,
            side,
            key_needed: None,
            sets_key: false,
            ops: Source,
            types: PhantomData,
        }
    }
}

impl<S: 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    fn then<U, O2>(self, label: String, stage: impl FnOnce(O) -> O2) -> Stream<S, U, O2> {
        let tail = {
            let mut g = self.graph.borrow_mut();
            let side = self.side;
            g.node(NodeKind::Operator, label, vec![self.tail], side)
        };
        Stream {
            graph: self.graph,
            slot: self.slot,
            tail,
            side: self.side,
            key_needed: self.key_needed,
            sets_key: self.sets_key,
            ops: stage(self.ops),
            types: PhantomData,
        }
    }

    /// Keeps the records for which `keep` is true; the rest are dropped on purpose.
    pub fn filter<F>(self, name: &str, keep: F) -> Stream<S, T, Filter<O, F, T>>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        self.then(format!("filter({name})"), |prev| Filter {
            prev,
            keep,
            flowing: PhantomData,
        })
    }

    pub fn map<U: 'static, F>(self, name: &str, f: F) -> Stream<S, U, Map<O, F, T>>
    where
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        self.then(format!("map({name})"), |prev| Map {
            prev,
            f,
            flowing: PhantomData,
        })
    }

    /// Zero or more records per record.
    pub fn flat_map<U: 'static, I, F>(self, name: &str, f: F) -> Stream<S, U, FlatMap<O, F, T>>
    where
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        self.then(format!("flat_map({name})"), |prev| FlatMap {
            prev,
            f,
            flowing: PhantomData,
        })
    }

    /// A fallible map: an `Err` sends the input record to the dead-letter topic.
    pub fn try_map<U: 'static, Er: Display + 'static, F>(
        self,
        name: &str,
        f: F,
    ) -> Stream<S, U, TryMap<O, F, T, Er>>
    where
        F: Fn(T) -> Result<U, Er> + Send + Sync + 'static,
    {
        self.then(format!("try_map({name})"), |prev| TryMap {
            prev,
            f,
            name: name.to_string(),
            flowing: PhantomData,
        })
    }

    /// Checks a rule: an `Err` sends the record to the dead-letter topic as a
    /// validation failure with the message as its reason.
    pub fn validate<Er: Display + 'static, F>(
        self,
        name: &str,
        rule: F,
    ) -> Stream<S, T, Validate<O, F, T, Er>>
    where
        F: Fn(&T) -> Result<(), Er> + Send + Sync + 'static,
    {
        self.then(format!("validate({name})"), |prev| Validate {
            prev,
            rule,
            name: name.to_string(),
            flowing: PhantomData,
        })
    }

    /// Sets the record key (and so the output partition) from the value.
    pub fn key_by<F>(self, name: &str, key: F) -> Stream<S, T, KeyBy<O, F, T>>
    where
        F: Fn(&T) -> String + Send + Sync + 'static,
    {
        let mut keyed = self.then(format!("key_by({name})"), |prev| KeyBy {
            prev,
            key,
            flowing: PhantomData,
        });
        keyed.sets_key = true;
        keyed
    }

    /// Takes the record's event time from its value (by default it is the
    /// Kafka record timestamp); windows and output timestamps use it.
    pub fn event_time<F>(self, name: &str, time_ms: F) -> Stream<S, T, EventTime<O, F, T>>
    where
        F: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        self.then(format!("event_time({name})"), |prev| EventTime {
            prev,
            time_ms,
            flowing: PhantomData,
        })
    }

    /// Runs the segment on one item, without the rest of the graph; for
    /// tests and benchmarks of operators.
    pub fn apply(&self, item: Item<S>) -> Result<Vec<Item<T>>, Failure> {
        let mut out = Vec::new();
        self.ops.run(item, &mut |t| {
            out.push(t);
            Ok(())
        })?;
        Ok(out)
    }

    /// Ends the segment: each result goes to `end`.
    pub(crate) fn seal<E>(self, end: E) -> (Shared, NodeId, Side)
    where
        E: Fn(Item<T>, &mut Ctx<'_>) -> Result<(), Failure> + Send + Sync + 'static,
    {
        if let Some(k) = &self.key_needed {
            let _ = k.set(!self.sets_key);
        }
        let ops = self.ops;
        let compiled: super::graph::Push<S> =
            Arc::new(move |item, ctx| ops.run(item, &mut |t| end(t, ctx)));
        let _ = self.slot.set(compiled);
        (self.graph, self.tail, self.side)
    }

    /// Ends the segment in a new node of `kind` whose children start from
    /// fresh streams of `T` on the same side.
    fn seal_into(
        self,
        kind: NodeKind,
        label: String,
        end: impl Fn(Item<T>, &mut Ctx<'_>) -> Result<(), Failure> + Send + Sync + 'static,
    ) -> (Shared, NodeId, Side) {
        let (graph, tail, side) = self.seal(end);
        let node = graph.borrow_mut().node(kind, label, vec![tail], side);
        (graph, node, side)
    }

    /// Sends every record to each of `N` streams (a fan-out): each may go
    /// on to its own operators and sinks, and all of them commit in one unit.
    pub fn fan_out<const N: usize>(self) -> [Stream<T, T, Source>; N]
    where
        T: Clone + Send,
    {
        let slots: [Slot<T>; N] = std::array::from_fn(|_| slot());
        let targets = slots.clone();
        let (graph, node, side) =
            self.seal_into(NodeKind::FanOut, format!("fan-out({N})"), move |t, ctx| {
                if let Some((last, rest)) = targets.split_last() {
                    for s in rest {
                        push(s, t.clone(), ctx)?;
                    }
                    push(last, t, ctx)?;
                }
                Ok(())
            });
        slots.map(|s| Stream::start(graph.clone(), s, node, side))
    }

    /// Starts a split: records go to the first branch whose predicate they
    /// meet (Kafka Streams' `split`), and are dropped if they meet none,
    /// unless a default branch takes them.
    pub fn split(self, name: &str) -> super::split::Split<S, T, O>
    where
        T: Send,
    {
        super::split::Split::new(self, name)
    }

    /// One stream of the records of both: they must be of the same type,
    /// and be processed on the same side (both before any stateful
    /// operator, or both after one).
    pub fn merge<S2: 'static, O2: Ops<S2, T>>(
        self,
        other: Stream<S2, T, O2>,
    ) -> Stream<T, T, Source> {
        let merged: Slot<T> = slot();
        if self.side != other.side {
            let e = super::BuildError::MergeSides {
                topology: self.graph.borrow().name.clone(),
            };
            self.graph.borrow_mut().fail(e);
        }
        let into = merged.clone();
        let (graph, a, side) = self.seal(move |t, ctx| push(&into, t, ctx));
        let into = merged.clone();
        let (_, b, _) = other.seal(move |t, ctx| push(&into, t, ctx));
        let node = graph
            .borrow_mut()
            .node(NodeKind::Merge, "merge".into(), vec![a, b], side);
        Stream::start(graph, merged, node, side)
    }

    /// Ends the segment in a stateful operator (see `operator`), which
    /// receives each result, boxed, where the unit commits; its own
    /// results flow on from `output`.
    pub(crate) fn into_operator<U: 'static>(
        self,
        spec: Arc<dyn crate::operator::OperatorSpec>,
        label: String,
        output: Slot<U>,
    ) -> Stream<U, U, Source>
    where
        T: Send,
    {
        let fed_by_loop = self.side == Side::Loop;
        let index = self.graph.borrow().operators.len() as u32;
        let (graph, tail, _) = self.seal(move |t, ctx| {
            ctx.out.push(Emitted {
                to: Target::Operator(index),
                payload: Payload::Value(Box::new(t) as Box<dyn Any + Send>),
            });
            Ok(())
        });
        let node = {
            let mut g = graph.borrow_mut();
            let node = g.node(NodeKind::Stateful, label, vec![tail], Side::Task);
            g.operators.push(super::graph::OperatorDecl {
                node,
                spec,
                fed_by_loop,
            });
            node
        };
        Stream::start(graph, output, node, Side::Task)
    }

    /// Ends the segment in a stateful operator of your own: `make` gets the
    /// stream its results flow on through (`OpCtx::emit` into it) and gives
    /// the operator's declaration (see `operator`).
    /// Notes a table the graph reads (a join's).
    pub(crate) fn graph_tables(&self, table: Arc<dyn crate::table::TableSource>) {
        let mut g = self.graph.borrow_mut();
        if !g.tables.iter().any(|t| t.topic() == table.topic()) {
            g.tables.push(table);
        }
    }

    pub fn process_with<U: 'static>(
        self,
        label: &str,
        make: impl FnOnce(Downstream<U>) -> Arc<dyn crate::operator::OperatorSpec>,
    ) -> Stream<U, U, Source>
    where
        T: Send,
    {
        let out = slot::<U>();
        let spec = make(Downstream(out.clone()));
        self.into_operator(spec, label.to_string(), out)
    }

    /// Ends the stream in a sink: `prepare` makes what the sink writes
    /// from each record (on the side the record is processed on).
    pub(crate) fn into_sink<P>(
        self,
        open: Arc<dyn crate::sink::OpenSink>,
        desc: super::describe::SinkDesc,
        prepare: P,
    ) -> Ended
    where
        P: Fn(Item<T>, &mut Ctx<'_>) -> Result<Payload, Failure> + Send + Sync + 'static,
    {
        let index = self.graph.borrow().sinks.len() as u32;
        let label = desc.label.clone();
        let (graph, tail, side) = self.seal(move |t, ctx| {
            let payload = prepare(t, ctx)?;
            ctx.out.push(Emitted {
                to: Target::Sink(index),
                payload,
            });
            Ok(())
        });
        {
            let mut g = graph.borrow_mut();
            g.node(NodeKind::Sink, label, vec![tail], side);
            g.sinks.push(super::graph::SinkDecl { open, desc });
        }
        Ended { graph }
    }

    /// The topology's name, for messages.
    pub(crate) fn topology_name(&self) -> String {
        self.graph.borrow().name.clone()
    }

    pub(crate) fn graph(&self) -> &Shared {
        &self.graph
    }
}

/// An operator's refusal of one record, as a failure.
pub(crate) fn refused(operator: &str, kind: super::FailureKind, message: String) -> Failure {
    Failure::Operator(OpError {
        operator: operator.to_string(),
        kind,
        message,
    })
}

impl Ended {
    /// Checks the topology this stream belongs to and builds it.
    pub fn build(self) -> Result<super::Topology, super::BuildError> {
        super::build::build(self.graph)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
