//! The typed stream builder. Operators compose into one nested type per
//! topology (see `ops`), pushing items downstream without allocating per stage.

use std::{fmt::Display, marker::PhantomData, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

use super::{
    BuildError, Builder, Declared, Description, OpError,
    ops::{EventTime, Filter, FlatMap, KeyBy, Map, Ops, Source, TryMap, Validate},
    processor::TypedProcessor,
    valid_topic,
};

/// A record flowing through the operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub key: Option<Vec<u8>>,
    pub value: T,
    /// Event time in milliseconds since the epoch (the record timestamp
    /// unless an extractor says otherwise).
    pub timestamp_ms: i64,
}

pub type Emit<'a, T> = &'a mut dyn FnMut(Item<T>) -> Result<(), OpError>;
/// A chain with its types erased, where a processor must not depend on it.
pub(crate) type Chain<S, T> =
    Arc<dyn for<'a> Fn(Item<S>, Emit<'a, T>) -> Result<(), OpError> + Send + Sync>;

/// A stream of `T` read from a source of `S`, through the operators `O`.
pub struct Stream<S, T, O> {
    pub(super) builder: Builder,
    source: String,
    reader: Option<apache_avro::Schema>,
    pub(super) operators: Vec<String>,
    /// A `key_by` replaces the input key, and no operator reads keys, so the
    /// runtime need not copy the input key into the chain at all.
    pub(super) sets_key: bool,
    ops: O,
    types: PhantomData<fn(S) -> T>,
}

impl<S> Stream<S, S, Source>
where
    S: DeserializeOwned + Send + Sync + 'static,
{
    pub(super) fn source(
        builder: Builder,
        topic: &str,
        reader: Option<apache_avro::Schema>,
    ) -> Self {
        Stream {
            builder,
            source: topic.to_string(),
            reader,
            operators: Vec::new(),
            sets_key: false,
            ops: Source,
            types: PhantomData,
        }
    }
}

impl<S: 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    fn then<U, O2>(self, description: String, stage: impl FnOnce(O) -> O2) -> Stream<S, U, O2> {
        let mut operators = self.operators;
        operators.push(description);
        Stream {
            builder: self.builder,
            source: self.source,
            reader: self.reader,
            operators,
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

    /// Runs the chain on one item; for tests and benchmarks of operators.
    pub fn apply(&self, item: Item<S>) -> Result<Vec<Item<T>>, OpError> {
        let mut out = Vec::new();
        self.ops.run(item, &mut |t| {
            out.push(t);
            Ok(())
        })?;
        Ok(out)
    }
}

impl<S: DeserializeOwned + Send + Sync + 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Checks the graph ending in `sinks` (topics) and yields its
    /// description, reader schema and operator chain.
    pub(super) fn finish(
        self,
        sinks: &[&str],
    ) -> Result<(Description, apache_avro::Schema, O, bool), BuildError> {
        let name = self.builder.name.clone();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(BuildError::BadName(name));
        }
        let dead_letter = self
            .builder
            .dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.source));
        for t in [self.source.as_str(), dead_letter.as_str()]
            .into_iter()
            .chain(sinks.iter().copied())
        {
            if !valid_topic(t) {
                return Err(BuildError::BadTopic {
                    topology: name,
                    topic: t.to_string(),
                });
            }
        }
        if let Some(looping) = sinks
            .iter()
            .copied()
            .chain([dead_letter.as_str()])
            .find(|t| *t == self.source)
        {
            return Err(BuildError::Loop {
                topology: name,
                topic: looping.to_string(),
            });
        }
        let reader = self.reader.ok_or_else(|| BuildError::NoSchema {
            topology: name.clone(),
            topic: self.source.clone(),
        })?;
        let description = Description {
            group_id: self
                .builder
                .group_id
                .clone()
                .unwrap_or_else(|| format!("sluice-{name}")),
            name,
            source: self.source,
            operators: self.operators,
            sinks: sinks.iter().map(|t| t.to_string()).collect(),
            writes: sinks.iter().map(|t| t.to_string()).collect(),
            dead_letter,
            late: None,
        };
        Ok((description, reader, self.ops, self.sets_key))
    }

    /// The chain with each result made into a row by `row` (what a table
    /// sink takes): one row at most per input record, since a row is keyed
    /// by the record's partition and offset. A row `row` refuses is the
    /// record's validation failure; `columns` names them, for the listing.
    pub fn rows_of<Er: Display + 'static>(
        mut self,
        columns: &str,
        row: impl Fn(&T) -> Result<Vec<super::Cell>, Er> + Send + Sync + 'static,
    ) -> Result<Declared, BuildError>
    where
        T: Send + Sync,
    {
        let operator = format!("row({columns})");
        self.operators.push(operator.clone());
        let (description, reader, ops, _) = self.finish(&[])?;
        let chain: Chain<S, super::Emitted> = Arc::new(move |item, out| {
            ops.run(item, &mut |t: Item<T>| {
                let cells = row(&t.value).map_err(|e| OpError {
                    operator: operator.clone(),
                    kind: super::FailureKind::Validation,
                    message: e.to_string(),
                })?;
                out(Item {
                    key: t.key,
                    value: super::Emitted::Row(cells),
                    timestamp_ms: t.timestamp_ms,
                })
            })
        });
        Ok(Declared {
            description,
            processor: Arc::new(
                super::processor::ChainProcessor::new(crate::avro::Reader::new(reader), chain)
                    .at_most_one(),
            ),
        })
    }
}

impl<S, T, O> Stream<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Serialize + Send + Sync + 'static,
    O: Ops<S, T>,
{
    /// The chain with its results encoded as Avro records for `topic`
    /// (the latest schema of `<topic>-value`): what a topic sink takes.
    pub fn records_for(self, topic: &str) -> Result<Declared, BuildError> {
        let (description, reader, ops, sets_key) = self.finish(&[topic])?;
        let processor = TypedProcessor::new(reader, ops, topic).with_key_set(sets_key);
        Ok(Declared {
            description,
            processor: Arc::new(processor),
        })
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
