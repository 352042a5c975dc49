//! The consuming side of a topology, type-erased for the runtime: bytes in,
//! decoded with the source's reader schema, through the stateless part of
//! the graph; out come encoded records, rows and values for stateful
//! operators, or a failure for the dead-letter topic. All or nothing per
//! input record. It never waits: a schema not cached yet is reported as
//! `Missing`, and the runtime asks the registry and hands the record in again.

use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use super::{
    Emitted, Failure, Input, Item, Missing,
    graph::{Ctx, Slot, push},
};
use crate::avro::{AvroCodec, Reader};

/// A topology's consuming side.
pub trait Processor: Send + Sync + 'static {
    /// Appends what one input record produced to `out`; on an error
    /// nothing is added.
    fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure>;

    /// The source's reader schema, to prepare for a writer schema the
    /// codec has not met.
    fn reader(&self) -> &Reader;
}

/// Asks the registry for what `missing` names, so the record can be
/// handled again; the error is the record's failure if it cannot.
pub async fn fetch_missing(
    codec: &AvroCodec,
    processor: &dyn Processor,
    input: Input<'_>,
    missing: &Missing,
) -> Result<(), Failure> {
    match missing {
        Missing::Writer => codec
            .prepare_reader(input.value.unwrap_or_default(), processor.reader())
            .await
            .map_err(Failure::Decode),
        Missing::Sink(topic) => codec
            .resolve_sink(topic)
            .await
            .map(|_| ())
            .map_err(Failure::Encode),
    }
}

pub(super) struct SourceProcessor<S> {
    reader: Reader,
    root: Slot<S>,
    /// False once the graph sets its own keys before reading them: the
    /// input key is then not copied in.
    key_needed: Arc<OnceLock<bool>>,
}

impl<S> SourceProcessor<S> {
    pub(super) fn new(reader: Reader, root: Slot<S>, key_needed: Arc<OnceLock<bool>>) -> Self {
        Self {
            reader,
            root,
            key_needed,
        }
    }
}

impl<S: DeserializeOwned + Send + Sync + 'static> Processor for SourceProcessor<S> {
    fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        super::clock::start_record();
        let bytes = input.value.unwrap_or_default();
        let value = match codec.decode_cached::<S>(bytes, &self.reader) {
            Some(Ok((_, v))) => v,
            Some(Err(e)) => return Err(Failure::Decode(e)),
            None => return Err(Failure::Missing(Missing::Writer)),
        };
        let key = match self.key_needed.get() {
            Some(false) => None,
            _ => input.key.map(<[u8]>::to_vec),
        };
        let item = Item {
            key,
            value,
            timestamp_ms: input.timestamp_ms,
        };
        let start = out.len();
        let mut ctx = Ctx { codec, out };
        let done = push(&self.root, item, &mut ctx);
        if done.is_err() {
            out.truncate(start);
        }
        done
    }

    fn reader(&self) -> &Reader {
        &self.reader
    }
}

/// Encodes `value` for `topic` with the schema cached in `cache` (the
/// codec's look-up by topic is skipped once resolved); `Missing` until the
/// registry gave it.
pub(crate) fn encode_for<T: serde::Serialize>(
    codec: &AvroCodec,
    topic: &Arc<str>,
    cache: &OnceLock<crate::avro::SinkSchema>,
    value: &T,
) -> Result<Vec<u8>, Failure> {
    if let Some(s) = cache.get()
        && s.is_from(codec)
    {
        return s.encode(value).map_err(Failure::Encode);
    }
    let Some(schema) = codec.sink_schema(topic) else {
        return Err(Failure::Missing(Missing::Sink(topic.clone())));
    };
    let encoded = schema.encode(value).map_err(Failure::Encode);
    let _ = cache.set(schema);
    encoded
}
