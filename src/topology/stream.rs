//! The typed operator chain. Operators compose into one closure per
//! topology, pushing items downstream without allocating per stage.

use std::{fmt::Display, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

use super::{
    Body, BuildError, Builder, Description, FailureKind, OpError, Topology,
    processor::TypedProcessor, valid_topic,
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
pub(crate) type Chain<S, T> =
    Arc<dyn for<'a> Fn(Item<S>, Emit<'a, T>) -> Result<(), OpError> + Send + Sync>;

/// A stream of `T` read from a source of `S`.
pub struct Stream<S, T> {
    pub(super) builder: Builder,
    source: String,
    reader: Option<apache_avro::Schema>,
    pub(super) operators: Vec<String>,
    /// A `key_by` replaces the input key, and no operator reads keys, so the
    /// runtime need not copy the input key into the chain at all.
    pub(super) sets_key: bool,
    chain: Chain<S, T>,
}

impl<S> Stream<S, S>
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
            chain: Arc::new(|item, out| out(item)),
        }
    }
}

impl<S: 'static, T: 'static> Stream<S, T> {
    fn then<U: 'static>(
        self,
        description: String,
        stage: impl Fn(Item<T>, Emit<'_, U>) -> Result<(), OpError> + Send + Sync + 'static,
    ) -> Stream<S, U> {
        let prev = self.chain;
        let mut operators = self.operators;
        operators.push(description);
        Stream {
            builder: self.builder,
            source: self.source,
            reader: self.reader,
            operators,
            sets_key: self.sets_key,
            chain: Arc::new(move |item, out| prev(item, &mut |t| stage(t, &mut *out))),
        }
    }

    /// Keeps the records for which `keep` is true; the rest are dropped on purpose.
    pub fn filter(
        self,
        name: &str,
        keep: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Stream<S, T> {
        self.then(format!("filter({name})"), move |item, out| {
            if keep(&item.value) { out(item) } else { Ok(()) }
        })
    }

    pub fn map<U: 'static>(
        self,
        name: &str,
        f: impl Fn(T) -> U + Send + Sync + 'static,
    ) -> Stream<S, U> {
        self.then(format!("map({name})"), move |item, out| {
            out(Item {
                key: item.key,
                value: f(item.value),
                timestamp_ms: item.timestamp_ms,
            })
        })
    }

    /// Zero or more records per record.
    pub fn flat_map<U: 'static, I: IntoIterator<Item = U>>(
        self,
        name: &str,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Stream<S, U> {
        self.then(format!("flat_map({name})"), move |item, out| {
            for value in f(item.value) {
                out(Item {
                    key: item.key.clone(),
                    value,
                    timestamp_ms: item.timestamp_ms,
                })?;
            }
            Ok(())
        })
    }

    /// A fallible map: an `Err` sends the input record to the dead-letter topic.
    pub fn try_map<U: 'static, E: Display>(
        self,
        name: &str,
        f: impl Fn(T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Stream<S, U> {
        let op = name.to_string();
        self.then(format!("try_map({name})"), move |item, out| {
            match f(item.value) {
                Ok(value) => out(Item {
                    key: item.key,
                    value,
                    timestamp_ms: item.timestamp_ms,
                }),
                Err(e) => Err(OpError {
                    operator: op.clone(),
                    kind: FailureKind::Operator,
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Checks a rule: an `Err` sends the record to the dead-letter topic as a
    /// validation failure with the message as its reason.
    pub fn validate<E: Display>(
        self,
        name: &str,
        rule: impl Fn(&T) -> Result<(), E> + Send + Sync + 'static,
    ) -> Stream<S, T> {
        let op = name.to_string();
        self.then(format!("validate({name})"), move |item, out| {
            match rule(&item.value) {
                Ok(()) => out(item),
                Err(e) => Err(OpError {
                    operator: op.clone(),
                    kind: FailureKind::Validation,
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Sets the record key (and so the output partition) from the value.
    pub fn key_by(
        self,
        name: &str,
        key: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Stream<S, T> {
        let mut keyed = self.then(format!("key_by({name})"), move |mut item, out| {
            item.key = Some(key(&item.value).into_bytes());
            out(item)
        });
        keyed.sets_key = true;
        keyed
    }

    /// Takes the record's event time from its value (by default it is the
    /// Kafka record timestamp); windows and output timestamps use it.
    pub fn event_time(
        self,
        name: &str,
        time_ms: impl Fn(&T) -> i64 + Send + Sync + 'static,
    ) -> Stream<S, T> {
        self.then(format!("event_time({name})"), move |mut item, out| {
            item.timestamp_ms = time_ms(&item.value);
            out(item)
        })
    }

    /// Runs the chain on one item; for tests and benchmarks of operators.
    pub fn apply(&self, item: Item<S>) -> Result<Vec<Item<T>>, OpError> {
        let mut out = Vec::new();
        (self.chain)(item, &mut |t| {
            out.push(t);
            Ok(())
        })?;
        Ok(out)
    }
}

impl<S: DeserializeOwned + Send + Sync + 'static, T: 'static> Stream<S, T> {
    /// Checks the graph ending in `sinks` (topics) and yields its
    /// description, reader schema and operator chain.
    pub(super) fn finish(
        self,
        sinks: &[&str],
    ) -> Result<(Description, apache_avro::Schema, Chain<S, T>, bool), BuildError> {
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
            dead_letter,
            late: None,
        };
        Ok((description, reader, self.chain, self.sets_key))
    }
}

impl<S, T> Stream<S, T>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Serialize + Send + Sync + 'static,
{
    /// Writes Avro values to `topic` with the latest schema of `<topic>-value`,
    /// and finishes the declaration.
    pub fn to_topic(self, topic: &str) -> Result<Topology, BuildError> {
        let (description, reader, chain, sets_key) = self.finish(&[topic])?;
        let processor = TypedProcessor::new(reader, chain, topic).with_key_set(sets_key);
        Ok(Topology {
            description,
            body: Body::Topic(Arc::new(processor)),
        })
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
