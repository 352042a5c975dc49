//! Declaring what a topology does: a typed builder from a source topic
//! through operators (and, for windowed topologies, a window and an
//! aggregate), checked and type-erased into a `Declared` chain. Where the
//! results go is the sink's part (`sink`), which finishes the declaration
//! into a `Topology`; running it is the runtime's. Nothing here knows
//! either.

pub mod clock;
pub mod ops;
mod processor;
mod stream;
mod windowed;

use std::fmt;

pub use ops::Ops;
pub use processor::{Cell, Emitted, Failure, Input, Output, Processor};
pub use stream::{Item, Stream};
pub use windowed::{
    Aggregated, IntoKey, KeyValue, MakeAggregate, Reading, WindowKey, WindowedStream,
};

/// Whose fault an operator failure is; both send the record to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The record broke a validation rule.
    Validation,
    /// A user operator returned an error for this record.
    Operator,
}

/// An operator's refusal of one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operator}: {message}")]
pub struct OpError {
    pub operator: String,
    pub kind: FailureKind,
    pub message: String,
}

/// Delivery guarantee of a topic sink.
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

/// What a topology reads, does and writes, for listing and topic creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub source: String,
    pub operators: Vec<String>,
    /// Where results go, as listed (`processed-user-login`,
    /// `postgres:sensor_window_aggregates`).
    pub sinks: Vec<String>,
    /// The topics the sink writes.
    pub writes: Vec<String>,
    pub dead_letter: String,
    /// Where records later than a window's grace go (windowed topologies).
    pub late: Option<String>,
    pub group_id: String,
}

impl Description {
    /// Every topic this topology touches.
    pub fn topics(&self) -> Vec<String> {
        let mut t = vec![self.source.clone()];
        t.extend(self.writes.iter().cloned());
        t.push(self.dead_letter.clone());
        t.extend(self.late.iter().cloned());
        t
    }
}

/// A checked chain with its types erased, waiting for its sink.
#[derive(Clone)]
pub struct Declared {
    pub description: Description,
    pub processor: std::sync::Arc<dyn Processor>,
}

impl fmt::Debug for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.description.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("topology name {0:?} must be non-empty and use only letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("topology {topology}: topic name {topic:?} is not a valid Kafka topic name")]
    BadTopic { topology: String, topic: String },
    #[error("topology {topology}: sink topic {topic} is also its source; that would loop forever")]
    Loop { topology: String, topic: String },
    #[error(
        "topology {topology}: no reader schema for topic {topic}; add schemas/{topic}.avsc or pass one"
    )]
    NoSchema { topology: String, topic: String },
    #[error("topology {topology}: bad window: {reason}")]
    BadWindow { topology: String, reason: String },
    #[error("topology {topology}: bad table for its window aggregates: {reason}")]
    BadTable { topology: String, reason: String },
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
        name: name.to_string(),
        group_id: None,
        dead_letter: None,
    }
}

pub struct Builder {
    name: String,
    group_id: Option<String>,
    dead_letter: Option<String>,
}

impl Builder {
    /// Consumer group id; defaults to `sluice-<name>`.
    pub fn group_id(mut self, id: &str) -> Self {
        self.group_id = Some(id.to_string());
        self
    }

    /// Dead-letter topic; defaults to `<source>.dlq`.
    pub fn dead_letter_topic(mut self, topic: &str) -> Self {
        self.dead_letter = Some(topic.to_string());
        self
    }

    /// Reads Avro values of `topic`, decoded with the reader schema from
    /// `schemas/<topic>.avsc`.
    pub fn source<T>(self, topic: &str) -> Stream<T, T, ops::Source>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let reader = crate::schemas::for_topic(topic);
        Stream::source(self, topic, reader)
    }

    /// Reads Avro values of `topic`, decoded with the given reader schema.
    pub fn source_with_schema<T>(
        self,
        topic: &str,
        reader: apache_avro::Schema,
    ) -> Stream<T, T, ops::Source>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        Stream::source(self, topic, Some(reader))
    }
}
