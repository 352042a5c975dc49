//! Open windows per key: partial aggregates since the last flush, finality
//! when the watermark passes a window's end plus grace, and late records.

use std::{collections::HashMap, hash::Hash, marker::PhantomData};

use super::{Aggregate, Window, WindowSpec};

/// A record that arrived after its window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub window: Window,
    pub watermark_ms: i64,
}

/// What changed in a window since the last flush: merge it into the stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<K, A> {
    pub key: K,
    pub window: Window,
    pub partial: A,
    /// True once the watermark has passed the window's end plus grace.
    pub is_final: bool,
}

/// A window that turned final (its row may have had no new records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed<K> {
    pub key: K,
    pub window: Window,
}

struct Open<A> {
    partial: A,
    dirty: bool,
}

pub struct WindowState<K, V, A> {
    spec: WindowSpec,
    open: HashMap<(K, Window), Open<A>>,
    _values: PhantomData<fn(V)>,
}

impl<K, V, A> WindowState<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregate<V>,
{
    pub fn new(spec: WindowSpec) -> Self {
        Self {
            spec,
            open: HashMap::new(),
            _values: PhantomData,
        }
    }

    /// Adds a value to every window of `event_ms` that is still open at
    /// `watermark_ms`; each window it is too late for is reported.
    pub fn add(&mut self, key: &K, event_ms: i64, value: &V, watermark_ms: i64) -> Vec<Late> {
        let mut late = Vec::new();
        for window in self.spec.kind.windows_for(event_ms) {
            if self.spec.closes_at(window) <= watermark_ms {
                late.push(Late {
                    window,
                    watermark_ms,
                });
                continue;
            }
            let entry = self
                .open
                .entry((key.clone(), window))
                .or_insert_with(|| Open {
                    partial: A::default(),
                    dirty: false,
                });
            entry.partial.add(value);
            entry.dirty = true;
        }
        late
    }

    /// Takes the partial aggregates changed since the last flush, marking the
    /// ones the watermark has closed as final and forgetting them.
    pub fn flush(&mut self, watermark_ms: i64) -> (Vec<Update<K, A>>, Vec<Closed<K>>) {
        let spec = self.spec;
        let mut updates = Vec::new();
        let mut closed = Vec::new();
        self.open.retain(|(key, window), open| {
            let is_final = spec.closes_at(*window) <= watermark_ms;
            if open.dirty {
                updates.push(Update {
                    key: key.clone(),
                    window: *window,
                    partial: std::mem::take(&mut open.partial),
                    is_final,
                });
                open.dirty = false;
            } else if is_final {
                closed.push(Closed {
                    key: key.clone(),
                    window: *window,
                });
            }
            !is_final
        });
        (updates, closed)
    }

    /// Takes the whole aggregates of the windows the watermark has closed,
    /// forgetting them; the others keep accumulating. For sinks that emit a
    /// window once, when final, instead of merging partials.
    pub fn take_final(&mut self, watermark_ms: i64) -> Vec<Update<K, A>> {
        let spec = self.spec;
        let mut finals = Vec::new();
        self.open.retain(|(key, window), open| {
            let is_final = spec.closes_at(*window) <= watermark_ms;
            if is_final {
                finals.push(Update {
                    key: key.clone(),
                    window: *window,
                    partial: std::mem::take(&mut open.partial),
                    is_final,
                });
            }
            !is_final
        });
        finals
    }

    /// Windows still open, for memory bounds and metrics.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}
