//! Windowed aggregation declared on a stream: `window(spec)` then
//! `aggregate(name, key, value)`. The chain emits one `Reading` per record —
//! a key, a value and its event time — and the sink's window stage folds the
//! readings into per-window aggregates.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{
    BuildError, Declared, Emitted, Item,
    ops::Ops,
    processor::ChainProcessor,
    stream::{Chain, Stream},
};
use crate::{
    avro::Reader,
    window::{Aggregate, Columns, Combined, ValueType, WindowError, WindowSpec},
};

/// One column of a window's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Text(String),
    Int(i64),
}

impl From<String> for KeyValue {
    fn from(s: String) -> Self {
        KeyValue::Text(s)
    }
}

impl From<&str> for KeyValue {
    fn from(s: &str) -> Self {
        KeyValue::Text(s.to_string())
    }
}

impl From<i64> for KeyValue {
    fn from(n: i64) -> Self {
        KeyValue::Int(n)
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Text(s) => f.write_str(s),
            KeyValue::Int(n) => write!(f, "{n}"),
        }
    }
}

/// A window's key: one value per key column of its table, in order.
pub type WindowKey = Vec<KeyValue>;

/// What a key extractor may return: a value, or a tuple of up to four.
pub trait IntoKey {
    /// How many key columns it fills.
    const COLUMNS: usize;
    fn into_key(self) -> WindowKey;
}

impl<A: Into<KeyValue>> IntoKey for A {
    const COLUMNS: usize = 1;
    fn into_key(self) -> WindowKey {
        vec![self.into()]
    }
}

macro_rules! tuple_key {
    ($n:expr; $($t:ident),+) => {
        impl<$($t: Into<KeyValue>),+> IntoKey for ($($t,)+) {
            const COLUMNS: usize = $n;
            #[allow(non_snake_case)]
            fn into_key(self) -> WindowKey {
                let ($($t,)+) = self;
                vec![$($t.into()),+]
            }
        }
    };
}
tuple_key!(2; A, B);
tuple_key!(3; A, B, C);
tuple_key!(4; A, B, C, D);

/// One value to fold into the windows of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub key: WindowKey,
    pub value: f64,
    pub event_ms: i64,
}

/// A stream whose records are grouped into event-time windows.
pub struct WindowedStream<S, T, O> {
    stream: Stream<S, T, O>,
    spec: WindowSpec,
}

type Extract<T> = Arc<dyn Fn(&T) -> (WindowKey, f64) + Send + Sync>;

/// A window's empty aggregate.
pub type MakeAggregate = Arc<dyn Fn() -> Combined + Send + Sync>;

/// A windowed aggregation, ready for its sink.
pub struct Aggregated<S, T, O> {
    windowed: WindowedStream<S, T, O>,
    name: String,
    key_columns: usize,
    extract: Extract<T>,
    make: MakeAggregate,
    user_columns: Vec<(&'static str, ValueType)>,
}

impl<S: 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Groups records into windows by their event time (see `event_time`).
    pub fn window(self, spec: WindowSpec) -> WindowedStream<S, T, O> {
        WindowedStream { stream: self, spec }
    }
}

impl<S: 'static, T: 'static, O: Ops<S, T>> WindowedStream<S, T, O> {
    /// Aggregates `value` per key and window; the sink's table says which
    /// aggregates it keeps (count, sum, min, max and avg for `Stats`).
    pub fn aggregate<K: IntoKey>(
        self,
        name: &str,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        value: impl Fn(&T) -> f64 + Send + Sync + 'static,
    ) -> Aggregated<S, T, O> {
        Aggregated {
            windowed: self,
            name: name.to_string(),
            key_columns: K::COLUMNS,
            extract: Arc::new(move |t| (key(t).into_key(), value(t))),
            make: Arc::new(Combined::default),
            user_columns: Vec::new(),
        }
    }
}

impl<S, T, O> Aggregated<S, T, O> {
    /// Keeps a user-defined aggregate `A` of the values beside count, sum,
    /// min and max; its `Columns` become columns of the window table
    /// (`TableSpec::columns_of::<A>()`) or what a topic's records are made
    /// of (`Combined::user::<A>()`).
    pub fn with<A: Aggregate<f64> + Columns + Sync>(mut self) -> Self {
        self.make = Arc::new(Combined::of::<A>);
        self.user_columns = A::columns();
        self
    }
}

fn describe(spec: &WindowSpec) -> String {
    let h = |d| humantime::format_duration(d).to_string();
    let kind = match spec.kind {
        crate::window::WindowKind::Tumbling { size } => format!("tumbling {}", h(size)),
        crate::window::WindowKind::Hopping { size, advance } => {
            format!("hopping {} every {}", h(size), h(advance))
        }
        crate::window::WindowKind::Session { gap } => format!("session, gap {}", h(gap)),
    };
    format!("window({kind}, grace {})", h(spec.grace))
}

/// A windowed chain, checked: what a window sink takes.
pub struct DeclaredWindows {
    pub declared: Declared,
    pub spec: WindowSpec,
    /// How many values the key extractor gives per reading.
    pub key_columns: usize,
    pub make: MakeAggregate,
    /// The user-defined aggregate's columns (none without one).
    pub user_columns: Vec<(&'static str, ValueType)>,
}

impl<S, T, O> Aggregated<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
    O: Ops<S, T>,
{
    /// Checks the chain and the window; `aggregates` names what the sink
    /// keeps, for the listing. Late records go to `<source>.late`.
    pub fn readings(self, aggregates: &str) -> Result<DeclaredWindows, BuildError> {
        let spec = self.windowed.spec;
        let mut stream = self.windowed.stream;
        let bad_window = |e: WindowError| BuildError::BadWindow {
            topology: stream.builder.name.clone(),
            reason: e.to_string(),
        };
        spec.kind.validate().map_err(bad_window)?;
        stream.operators.push(describe(&spec));
        let mut outputs = aggregates.to_string();
        for (c, _) in &self.user_columns {
            outputs.push_str(", ");
            outputs.push_str(c);
        }
        stream
            .operators
            .push(format!("aggregate({}: {outputs})", self.name));
        let (description, reader, ops, _) = stream.finish(&[])?;
        let description = super::Description {
            late: Some(format!("{}.late", description.source)),
            ..description
        };
        let extract = self.extract;
        let chain: Chain<S, Emitted> = Arc::new(move |item, out| {
            ops.run(item, &mut |t: Item<T>| {
                let (key, value) = extract(&t.value);
                out(Item {
                    key: t.key,
                    value: Emitted::Reading(Reading {
                        key,
                        value,
                        event_ms: t.timestamp_ms,
                    }),
                    timestamp_ms: t.timestamp_ms,
                })
            })
        });
        Ok(DeclaredWindows {
            declared: Declared {
                description,
                processor: Arc::new(ChainProcessor::new(Reader::new(reader), chain)),
            },
            spec,
            key_columns: self.key_columns,
            make: self.make,
            user_columns: self.user_columns,
        })
    }
}
