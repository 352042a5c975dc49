//! What flows through a topology: records as consumed (`Input`), as the
//! operators see them (`Item`), as produced (`Output`); what one input
//! record made for the sinks and stateful operators (`Emitted`); and why a
//! record did not make it through (`Failure`).

use std::{any::Any, sync::Arc};

use crate::avro::CodecError;

/// Whose fault an operator failure is; both send the record to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The record broke a validation rule.
    Validation,
    /// A user operator returned an error for this record.
    Operator,
    /// An inner join found no table row for this record.
    JoinMiss,
}

/// An operator's refusal of one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operator}: {message}")]
pub struct OpError {
    pub operator: String,
    pub kind: FailureKind,
    pub message: String,
}

/// A record flowing through the operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub key: Option<Vec<u8>>,
    pub value: T,
    /// Event time in milliseconds since the epoch (the record timestamp
    /// unless an extractor says otherwise).
    pub timestamp_ms: i64,
}

impl<T> Item<T> {
    pub fn new(key: Option<Vec<u8>>, value: T, timestamp_ms: i64) -> Self {
        Item {
            key,
            value,
            timestamp_ms,
        }
    }

    /// The same key and time with another value.
    pub fn with<U>(self, value: U) -> Item<U> {
        Item {
            key: self.key,
            value,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// A record as consumed.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: i64,
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: i64,
}

/// Where a result goes: a sink, or a stateful operator (which runs where
/// the unit commits), by its index in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Sink(u32),
    Operator(u32),
}

/// What a sink takes: an encoded record for a topic, or a value of the
/// sink's own (a row, or whatever its declaration prepared).
pub enum Payload {
    Record(Output),
    Value(Box<dyn Any + Send>),
}

impl Payload {
    /// Takes the value out if it is a `T`, leaving an empty one behind
    /// (which allocates nothing).
    pub fn take<T: 'static>(&mut self) -> Option<T> {
        match self {
            Payload::Value(v) if v.is::<T>() => std::mem::replace(v, Box::new(()))
                .downcast()
                .ok()
                .map(|b| *b),
            _ => None,
        }
    }

    /// Takes the value out, whatever it is.
    pub fn take_any(&mut self) -> Option<Box<dyn Any + Send>> {
        match self {
            Payload::Value(v) => Some(std::mem::replace(v, Box::new(()))),
            Payload::Record(_) => None,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Record(o) => f.debug_tuple("Record").field(o).finish(),
            Payload::Value(_) => f.write_str("Value(..)"),
        }
    }
}

/// One result of an input record, for a sink or a stateful operator.
#[derive(Debug)]
pub struct Emitted {
    pub to: Target,
    pub payload: Payload,
}

/// One column value of a row for a table sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Float(f64),
    /// Milliseconds since the epoch, for a timestamp column.
    TimeMs(i64),
    Null,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Text(s) => f.write_str(s),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) => write!(f, "{x:.2}"),
            Cell::TimeMs(ms) => match chrono::DateTime::from_timestamp_millis(*ms) {
                Some(t) => write!(f, "{}", t.format("%H:%M:%S%.3f")),
                None => write!(f, "{ms} ms"),
            },
            Cell::Null => f.write_str("null"),
        }
    }
}

/// A schema the registry must give before the record can be handled; the
/// runtime asks for it and handles the record again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The writer schema of the input record.
    Writer,
    /// The latest schema of a sink topic's `<topic>-value`.
    Sink(Arc<str>),
}

/// Why a record did not make it through.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot decode: {0}")]
    Decode(CodecError),
    #[error("{0}")]
    Operator(OpError),
    #[error("cannot encode: {0}")]
    Encode(CodecError),
    /// Not a failure of the record: a schema is not cached yet.
    #[error("waiting for a schema from the registry ({0:?})")]
    Missing(Missing),
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Failure::Operator(e)
    }
}

impl Failure {
    /// Retrying may help (the registry is down): keep the record, back off.
    /// Otherwise the record goes to the dead-letter topic.
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Decode(e) | Failure::Encode(e) => e.is_retryable(),
            Failure::Operator(_) => false,
            Failure::Missing(_) => true,
        }
    }

    /// The reason label for metrics and the `sluice.error.kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Decode(e) | Failure::Encode(e) => e.kind(),
            Failure::Operator(OpError {
                kind: FailureKind::Validation,
                ..
            }) => "validation",
            Failure::Operator(OpError {
                kind: FailureKind::JoinMiss,
                ..
            }) => "join_miss",
            Failure::Operator(_) => "operator",
            Failure::Missing(_) => "registry_unavailable",
        }
    }

    /// The writer schema id, when one was read.
    pub fn schema_id(&self) -> Option<u32> {
        match self {
            Failure::Decode(
                CodecError::UnknownSchema { id, .. }
                | CodecError::Corrupt { id, .. }
                | CodecError::Incompatible { id, .. },
            ) => Some(*id),
            _ => None,
        }
    }
}
