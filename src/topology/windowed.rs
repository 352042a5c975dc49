//! Windowed aggregation declared on a stream: `window(spec)`, then
//! `aggregate(name, key, init, fold)` — any key and any aggregate type —
//! then where the windows go: `finals()`, a stream of each window once,
//! whole, when the partition's event time passes its end plus grace; or a
//! window table (`to_postgres`, in `sink`), into which every commit merges
//! what changed. The windows are a stateful operator (`operator::window`).

use std::sync::Arc;

use super::{
    BuildError, Item, Stream,
    ops::{Ops, Source},
};
use crate::{
    operator::window::{Mode, WindowSpecOp},
    window::{Fold, Window, WindowSpec},
};

/// One column of a window table's key.
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

/// A window table's key: one value per key column, in order.
pub type WindowKey = Vec<KeyValue>;

/// A key that fills a window table's key columns: a value, or a tuple of up to four.
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

/// A window's result: its key, bounds and aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Windowed<K, A> {
    pub key: K,
    pub window: Window,
    pub value: A,
}

/// A stream whose records are grouped into event-time windows.
pub struct WindowedStream<S, T, O> {
    stream: Stream<S, T, O>,
    spec: WindowSpec,
}

/// A windowed aggregation, waiting to be told where its windows go.
pub struct WindowedTable<S, T, O, K, A> {
    pub(crate) stream: Stream<S, T, O>,
    pub(crate) spec: WindowSpec,
    pub(crate) name: String,
    pub(crate) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(crate) fold: Fold<T, A>,
}

impl<S: 'static, T: 'static, O: Ops<S, T>> Stream<S, T, O> {
    /// Groups records into windows by their event time (see `event_time`).
    pub fn window(self, spec: WindowSpec) -> WindowedStream<S, T, O> {
        WindowedStream { stream: self, spec }
    }
}

impl<S: 'static, T: 'static, O: Ops<S, T>> WindowedStream<S, T, O> {
    /// Folds the records of each key and window into an `A`: it starts as
    /// `init()`, and `fold` adds each record.
    pub fn aggregate<K, A: 'static>(
        self,
        name: &str,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, &T) + Send + Sync + 'static,
    ) -> WindowedTable<S, T, O, K, A> {
        WindowedTable {
            stream: self.stream,
            spec: self.spec,
            name: name.to_string(),
            key: Arc::new(key),
            fold: Fold::new(init, fold),
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
        crate::window::WindowKind::Session { gap } => format!("session, gap {}", h(gap)),
    };
    format!("{kind}, grace {}", h(spec.grace))
}

impl<S, T, O, K, A> WindowedTable<S, T, O, K, A>
where
    S: 'static,
    T: Send + 'static,
    O: Ops<S, T>,
    K: Clone + Eq + std::hash::Hash + Send + 'static,
    A: Send + 'static,
{
    /// How two aggregates of one key combine: needed by session windows,
    /// whose sessions join when a record bridges them.
    pub fn merge(mut self, merge: impl Fn(&mut A, &A) + Send + Sync + 'static) -> Self {
        self.fold = self.fold.with_merge(merge);
        self
    }

    /// Checks the window; the label the operator is listed with.
    pub(crate) fn check(&self) -> Option<BuildError> {
        let bad = |reason: String| BuildError::BadWindow {
            topology: self.stream.topology_name(),
            reason,
        };
        if let Err(e) = self.spec.kind.validate() {
            return Some(bad(e.to_string()));
        }
        if self.spec.is_session() && self.fold.merge.is_none() {
            return Some(bad(
                "session windows join when a record bridges two sessions: declare how their aggregates combine with .merge(...)".into(),
            ));
        }
        None
    }

    /// Each window once, whole, when final: a stream of `Windowed` results
    /// (timestamped at the window's last millisecond), to map and send to
    /// any sink. Open windows live in memory; after a restart they are
    /// rebuilt by reading their records again (the committed offset is
    /// the first record still in an open window), so nothing is emitted twice.
    pub fn finals(self) -> Stream<Windowed<K, A>, Windowed<K, A>, Source> {
        let out = super::slot::<Windowed<K, A>>();
        self.attach(Mode::Finals(out.clone()), out)
    }

    /// Each window's change since the last commit (its partial aggregate,
    /// and whether it is final), for a table that merges them.
    pub(crate) fn deltas(
        self,
    ) -> Stream<crate::operator::window::Delta<K, A>, crate::operator::window::Delta<K, A>, Source>
    {
        let out = super::slot();
        self.attach(Mode::Deltas(out.clone()), out)
    }

    fn attach<U: 'static>(self, mode: Mode<K, A>, out: super::Slot<U>) -> Stream<U, U, Source> {
        if let Some(e) = self.check() {
            self.stream.graph().borrow_mut().fail(e);
        }
        let label = format!(
            "window({}) → aggregate({}){}",
            describe(&self.spec),
            self.name,
            match mode {
                Mode::Finals(_) => " → finals",
                Mode::Deltas(_) => "",
            }
        );
        let spec = Arc::new(WindowSpecOp {
            name: self.name,
            spec: self.spec,
            key: self.key,
            fold: self.fold,
            mode,
        });
        self.stream.into_operator(spec, label, out)
    }
}

/// A window as an `Item`: its result, keyed by nothing (set a key with
/// `key_by`), at the window's last millisecond.
pub(crate) fn item_of<K, A>(w: Windowed<K, A>) -> Item<Windowed<K, A>> {
    let at = w.window.end_ms - 1;
    Item {
        key: None,
        value: w,
        timestamp_ms: at,
    }
}
