//! Windowed aggregation declared on a stream: `window(spec)` then
//! `aggregate(key, value)` then `to_postgres(table)`. The runtime folds the
//! values into per-window `Stats` and merges them into the table, storing
//! its input offsets in the same SQL transaction.

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::{
    BuildError, Description, Failure, Input, Item, Topology,
    ops::Ops,
    processor::decode_value,
    stream::{Chain, Stream},
};
use crate::{
    avro::{AvroCodec, Reader},
    sink::postgres::TableName,
    window::{WindowError, WindowSpec},
};

/// A row's key: the table's `device_id` and `sensor_type` columns.
pub type WindowKey = (String, String);

/// One value to fold into the windows of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub key: WindowKey,
    pub value: f64,
    pub event_ms: i64,
}

/// The type-erased windowed topology the runtime drives.
#[async_trait]
pub trait WindowProcessor: Send + Sync + 'static {
    /// Appends the readings of one input record to `out`.
    async fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Reading>,
    ) -> Result<(), Failure>;

    /// The same without waiting when the writer schema is cached; `None`
    /// means "call `process`", and nothing was added.
    fn process_cached(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Reading>,
    ) -> Option<Result<(), Failure>>;

    fn spec(&self) -> WindowSpec;

    /// The table the aggregates are merged into.
    fn table(&self) -> &str;
}

/// A stream whose records are grouped into event-time windows.
pub struct WindowedStream<S, T, O> {
    stream: Stream<S, T, O>,
    spec: WindowSpec,
}

type Extract<T> = Arc<dyn Fn(&T) -> (WindowKey, f64) + Send + Sync>;

/// A windowed aggregation, ready for its sink.
pub struct Aggregated<S, T, O> {
    windowed: WindowedStream<S, T, O>,
    name: String,
    extract: Extract<T>,
}

impl<S: 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Groups records into windows by their event time (see `event_time`).
    pub fn window(self, spec: WindowSpec) -> WindowedStream<S, T, O> {
        WindowedStream { stream: self, spec }
    }
}

impl<S: 'static, T: 'static, O: Ops<S, T>> WindowedStream<S, T, O> {
    /// count, sum, min, max and avg of `value` per key and window.
    pub fn aggregate(
        self,
        name: &str,
        key: impl Fn(&T) -> WindowKey + Send + Sync + 'static,
        value: impl Fn(&T) -> f64 + Send + Sync + 'static,
    ) -> Aggregated<S, T, O> {
        Aggregated {
            windowed: self,
            name: name.to_string(),
            extract: Arc::new(move |t| (key(t), value(t))),
        }
    }
}

fn describe(spec: &WindowSpec) -> String {
    let h = |d| humantime::format_duration(d).to_string();
    let kind = match spec.kind {
        crate::window::WindowKind::Tumbling { size } => format!("tumbling {}", h(size)),
        crate::window::WindowKind::Hopping { size, advance } => {
            format!("hopping {} every {}", h(size), h(advance))
        }
    };
    format!("window({kind}, grace {})", h(spec.grace))
}

impl<S, T, O> Aggregated<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
    O: Ops<S, T>,
{
    /// Merges the aggregates into `table` (shaped like
    /// `sensor_window_aggregates`), exactly once, and finishes the declaration.
    pub fn to_postgres(self, table: &str) -> Result<Topology, BuildError> {
        let spec = self.windowed.spec;
        let mut stream = self.windowed.stream;
        let bad_window = |e: WindowError| BuildError::BadWindow {
            topology: stream.builder.name.clone(),
            reason: e.to_string(),
        };
        spec.kind.validate().map_err(bad_window)?;
        if TableName::parse(table).is_err() {
            return Err(BuildError::BadTable {
                topology: stream.builder.name.clone(),
                table: table.to_string(),
            });
        }
        stream.operators.push(describe(&spec));
        stream.operators.push(format!(
            "aggregate({}: count, sum, min, max, avg)",
            self.name
        ));
        let (description, reader, ops, _) = stream.finish(&[])?;
        let description = Description {
            sinks: vec![format!("postgres:{table}")],
            late: Some(format!("{}.late", description.source)),
            ..description
        };
        let extract = self.extract;
        let chain: Chain<S, Reading> = Arc::new(move |item, out| {
            ops.run(item, &mut |t: Item<T>| {
                let (key, value) = extract(&t.value);
                out(Item {
                    key: t.key,
                    value: Reading {
                        key,
                        value,
                        event_ms: t.timestamp_ms,
                    },
                    timestamp_ms: t.timestamp_ms,
                })
            })
        });
        Ok(Topology {
            description,
            body: super::Body::Windows(Arc::new(TypedWindows {
                reader: Reader::new(reader),
                chain,
                spec,
                table: table.to_string(),
            })),
        })
    }
}

struct TypedWindows<S> {
    reader: Reader,
    chain: Chain<S, Reading>,
    spec: WindowSpec,
    table: String,
}

impl<S: DeserializeOwned + Send + Sync + 'static> TypedWindows<S> {
    fn run(&self, value: S, input: Input<'_>, out: &mut Vec<Reading>) -> Result<(), Failure> {
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
            // All or nothing per input record.
            out.truncate(start);
            Failure::Operator(e)
        })
    }
}

#[async_trait]
impl<S: DeserializeOwned + Send + Sync + 'static> WindowProcessor for TypedWindows<S> {
    async fn process(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Reading>,
    ) -> Result<(), Failure> {
        let value = decode_value::<S>(codec, &self.reader, input).await?;
        self.run(value, input, out)
    }

    fn process_cached(
        &self,
        codec: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Reading>,
    ) -> Option<Result<(), Failure>> {
        let bytes = input.value.unwrap_or_default();
        match codec.decode_cached::<S>(bytes, &self.reader)? {
            Ok((_, v)) => Some(self.run(v, input, out)),
            Err(e) => Some(Err(Failure::Decode(e))),
        }
    }

    fn spec(&self) -> WindowSpec {
        self.spec
    }

    fn table(&self) -> &str {
        &self.table
    }
}
