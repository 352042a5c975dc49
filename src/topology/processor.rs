//! The type-erased form of a declared topology that the runtime drives:
//! bytes in, encoded outputs or a failure for the dead-letter topic out.

use std::{
    marker::PhantomData,
    sync::{Arc, OnceLock},
};

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};

use super::{FailureKind, Item, OpError, ops::Ops};
use crate::avro::{AvroCodec, CodecError, Reader, SinkSchema};

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

/// What one input record produced, for the topology's sink: records for a
/// topic, readings for a window stage, or rows for a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    Record(Output),
    Reading(super::Reading),
    Row(Vec<Cell>),
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

/// Why a record did not make it through.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot decode: {0}")]
    Decode(CodecError),
    #[error("{0}")]
    Operator(OpError),
    #[error("cannot encode: {0}")]
    Encode(CodecError),
}

impl Failure {
    /// Retrying may help (the registry is down): keep the record, back off.
    /// Otherwise the record goes to the dead-letter topic.
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Decode(e) | Failure::Encode(e) => e.is_retryable(),
            Failure::Operator(_) => false,
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
            Failure::Operator(_) => "operator",
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

/// Decodes an input's value with the reader schema, waiting for the registry if needed.
pub(super) async fn decode_value<S: DeserializeOwned>(
    codec: &AvroCodec,
    reader: &Reader,
    input: Input<'_>,
) -> Result<S, Failure> {
    let bytes = input.value.unwrap_or_default();
    let (_, value) = codec
        .decode::<S>(bytes, reader)
        .await
        .map_err(Failure::Decode)?;
    Ok(value)
}

/// A declared chain with its types erased: bytes in, what the sink takes
/// out, or a failure for the dead-letter topic.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Appends what one input record produced to `out`.
    async fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure>;

    /// The same without waiting, when every schema involved is cached (the
    /// steady state); `None` means "call `process`", and nothing was added.
    fn process_cached(
        &self,
        _codec: &AvroCodec,
        _input: Input<'_>,
        _out: &mut Vec<Emitted>,
    ) -> Option<Result<(), Failure>> {
        None
    }
}

pub(super) struct TypedProcessor<S, T, O> {
    reader: Reader,
    ops: O,
    types: PhantomData<fn(S) -> T>,
    sink: Arc<str>,
    /// The sink's schema as the first codec resolved it.
    sink_schema: OnceLock<SinkSchema>,
    /// The chain sets its own keys: the input key is not copied in.
    sets_key: bool,
}

impl<S, T, O> TypedProcessor<S, T, O> {
    pub(super) fn new(reader: apache_avro::Schema, ops: O, sink: &str) -> Self {
        Self {
            reader: Reader::new(reader),
            ops,
            types: PhantomData,
            sink: sink.into(),
            sink_schema: OnceLock::new(),
            sets_key: false,
        }
    }

    pub(super) fn with_key_set(self, sets_key: bool) -> Self {
        Self { sets_key, ..self }
    }

    fn item(&self, input: Input<'_>, value: S) -> Item<S> {
        Item {
            key: if self.sets_key {
                None
            } else {
                input.key.map(<[u8]>::to_vec)
            },
            value,
            timestamp_ms: input.timestamp_ms,
        }
    }

    /// `codec.encode_cached`, without its look-up by topic once resolved.
    fn encode_cached(&self, codec: &AvroCodec, value: &T) -> Option<Result<Vec<u8>, CodecError>>
    where
        T: Serialize,
    {
        if let Some(s) = self.sink_schema.get()
            && s.is_from(codec)
        {
            return Some(s.encode(value));
        }
        let schema = codec.sink_schema(&self.sink)?;
        let encoded = schema.encode(value);
        let _ = self.sink_schema.set(schema);
        Some(encoded)
    }
}

#[async_trait]
impl<S, T, O> Processor for TypedProcessor<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Serialize + Send + Sync + 'static,
    O: Ops<S, T>,
{
    fn process_cached(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Option<Result<(), Failure>> {
        super::clock::start_record();
        let bytes = input.value.unwrap_or_default();
        let value = match codec.decode_cached::<S>(bytes, &self.reader)? {
            Ok((_, v)) => v,
            Err(e) => return Some(Err(Failure::Decode(e))),
        };
        let item = self.item(input, value);
        let start = out.len();
        let mut uncached = false;
        let mut encode_error = None;
        let chained = self.ops.run(item, &mut |t: Item<T>| {
            match self.encode_cached(codec, &t.value) {
                Some(Ok(value)) => out.push(Emitted::Record(Output {
                    topic: self.sink.clone(),
                    key: t.key,
                    value,
                    timestamp_ms: t.timestamp_ms,
                })),
                Some(Err(e)) => encode_error = encode_error.take().or(Some(e)),
                None => uncached = true,
            }
            Ok(())
        });
        let failure = match (chained, encode_error) {
            (Err(op), _) => Some(Failure::Operator(op)),
            (Ok(()), Some(e)) => Some(Failure::Encode(e)),
            (Ok(()), None) => None,
        };
        if uncached && failure.is_none() {
            out.truncate(start);
            return None;
        }
        match failure {
            // All or nothing per input record.
            Some(f) => {
                out.truncate(start);
                Some(Err(f))
            }
            None => Some(Ok(())),
        }
    }

    async fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        super::clock::start_record();
        let value = decode_value::<S>(codec, &self.reader, input).await?;
        let item = self.item(input, value);
        let mut results: Vec<Item<T>> = Vec::with_capacity(1);
        self.ops
            .run(item, &mut |t: Item<T>| {
                results.push(t);
                Ok(())
            })
            .map_err(Failure::Operator)?;
        let start = out.len();
        for item in results {
            let encoded = codec.encode(&self.sink, &item.value).await;
            match encoded {
                Ok(value) => out.push(Emitted::Record(Output {
                    topic: self.sink.clone(),
                    key: item.key,
                    value,
                    timestamp_ms: item.timestamp_ms,
                })),
                Err(e) => {
                    // All or nothing per input record.
                    out.truncate(start);
                    return Err(Failure::Encode(e));
                }
            }
        }
        Ok(())
    }
}

/// A chain whose last stage makes what the sink takes itself (readings,
/// rows): decode, then the chain, all or nothing per input record.
pub(super) struct ChainProcessor<S> {
    reader: Reader,
    chain: super::stream::Chain<S, Emitted>,
    /// Refuse an input record that makes more than one result.
    at_most_one: bool,
}

impl<S> ChainProcessor<S> {
    pub(super) fn new(reader: Reader, chain: super::stream::Chain<S, Emitted>) -> Self {
        Self {
            reader,
            chain,
            at_most_one: false,
        }
    }

    pub(super) fn at_most_one(self) -> Self {
        Self {
            at_most_one: true,
            ..self
        }
    }
}

impl<S: DeserializeOwned + Send + Sync + 'static> ChainProcessor<S> {
    fn run(&self, value: S, input: Input<'_>, out: &mut Vec<Emitted>) -> Result<(), Failure> {
        let start = out.len();
        let item = Item {
            key: input.key.map(<[u8]>::to_vec),
            value,
            timestamp_ms: input.timestamp_ms,
        };
        (self.chain)(item, &mut |r| {
            out.push(r.value);
            Ok(())
        })
        .map_err(|e| {
            out.truncate(start);
            Failure::Operator(e)
        })?;
        let made = out.len() - start;
        if self.at_most_one && made > 1 {
            out.truncate(start);
            return Err(Failure::Operator(super::OpError {
                operator: "row".into(),
                kind: super::FailureKind::Operator,
                message: format!(
                    "made {made} rows from one record; a row table takes at most one per input record (its key is the record's partition and offset)"
                ),
            }));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: DeserializeOwned + Send + Sync + 'static> Processor for ChainProcessor<S> {
    async fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        let value = decode_value::<S>(codec, &self.reader, input).await?;
        self.run(value, input, out)
    }

    fn process_cached(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Option<Result<(), Failure>> {
        let bytes = input.value.unwrap_or_default();
        match codec.decode_cached::<S>(bytes, &self.reader)? {
            Ok((_, v)) => Some(self.run(v, input, out)),
            Err(e) => Some(Err(Failure::Decode(e))),
        }
    }
}
