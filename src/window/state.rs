//! Open windows per key: partial aggregates since the last flush, finality
//! when the watermark passes a window's end plus grace, and late records.
//! Session windows grow with each record and merge when one bridges two.

use std::{collections::HashMap, hash::Hash};

use super::{Aggregate, Fold, Window, WindowSpec};

/// A record that arrived after its window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub window: Window,
    pub watermark_ms: i64,
    /// The record's event time.
    pub event_ms: i64,
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
    /// The first input offset folded into the window (to re-read from).
    first_offset: i64,
}

pub struct WindowState<K, V, A> {
    spec: WindowSpec,
    open: HashMap<(K, Window), Open<A>>,
    /// Session windows only: each key's open sessions.
    sessions: HashMap<K, Vec<Window>>,
    agg: Fold<V, A>,
}

impl<K, V: 'static, A: 'static> WindowState<K, V, A>
where
    K: Eq + Hash + Clone,
{
    /// Windows of an `Aggregate`.
    pub fn new(spec: WindowSpec) -> Self
    where
        A: Aggregate<V>,
    {
        Self::with_fold(spec, Fold::of())
    }

    /// Windows folding values with `agg` (sessions merge with its `merge`;
    /// without one, a record that bridges two sessions folds into the
    /// later one only, so declarations of sessions require it).
    pub fn with_fold(spec: WindowSpec, agg: Fold<V, A>) -> Self {
        Self {
            spec,
            open: HashMap::new(),
            sessions: HashMap::new(),
            agg,
        }
    }

    /// Adds a value to every window of `event_ms` that is still open at
    /// `watermark_ms`; each window it is too late for is reported.
    pub fn add(&mut self, key: &K, event_ms: i64, value: &V, watermark_ms: i64) -> Vec<Late> {
        self.add_at(key, event_ms, value, watermark_ms, i64::MAX)
    }

    /// `add`, for the record at input `offset`.
    pub fn add_at(
        &mut self,
        key: &K,
        event_ms: i64,
        value: &V,
        watermark_ms: i64,
        offset: i64,
    ) -> Vec<Late> {
        if self.spec.is_session() {
            return self.add_to_session(key, event_ms, value, watermark_ms, offset);
        }
        let mut late = Vec::new();
        let (init, fold) = (&self.agg.init, &self.agg.fold);
        for window in self.spec.kind.windows_for(event_ms) {
            if self.spec.closes_at(window) <= watermark_ms {
                late.push(Late {
                    window,
                    watermark_ms,
                    event_ms,
                });
                continue;
            }
            let entry = self
                .open
                .entry((key.clone(), window))
                .or_insert_with(|| Open {
                    partial: init(),
                    dirty: false,
                    first_offset: offset,
                });
            fold(&mut entry.partial, value);
            entry.dirty = true;
            entry.first_offset = entry.first_offset.min(offset);
        }
        late
    }

    /// The record's own session, merged with every open session of its key
    /// it overlaps; late if even the merged session is closed (Kafka
    /// Streams' rule: an old record that extends an open session is not late).
    fn add_to_session(
        &mut self,
        key: &K,
        event_ms: i64,
        value: &V,
        watermark_ms: i64,
        offset: i64,
    ) -> Vec<Late> {
        let mut merged = self.spec.kind.windows_for(event_ms)[0];
        let overlaps = |w: &Window| w.start_ms <= merged.end_ms && merged.start_ms <= w.end_ms;
        let absorbed: Vec<Window> = self
            .sessions
            .get(key)
            .map(|open| open.iter().copied().filter(overlaps).collect())
            .unwrap_or_default();
        for w in &absorbed {
            merged.start_ms = merged.start_ms.min(w.start_ms);
            merged.end_ms = merged.end_ms.max(w.end_ms);
        }
        if self.spec.closes_at(merged) <= watermark_ms {
            // Nothing is recorded of a late record's key.
            return vec![Late {
                window: merged,
                watermark_ms,
                event_ms,
            }];
        }
        let open = self.sessions.entry(key.clone()).or_default();
        open.retain(|w| !absorbed.contains(w));
        open.push(merged);
        let mut session = Open {
            partial: (self.agg.init)(),
            dirty: true,
            first_offset: offset,
        };
        for w in absorbed {
            if let Some(o) = self.open.remove(&(key.clone(), w)) {
                match &self.agg.merge {
                    Some(merge) => merge(&mut session.partial, &o.partial),
                    None => session.partial = o.partial,
                }
                session.first_offset = session.first_offset.min(o.first_offset);
            }
        }
        (self.agg.fold)(&mut session.partial, value);
        self.open.insert((key.clone(), merged), session);
        Vec::new()
    }

    /// The first input offset still in an open window.
    pub fn first_open_offset(&self) -> Option<i64> {
        self.open.values().map(|o| o.first_offset).min()
    }

    fn forget_session(sessions: &mut HashMap<K, Vec<Window>>, key: &K, window: Window) {
        if let Some(open) = sessions.get_mut(key) {
            open.retain(|w| *w != window);
            if open.is_empty() {
                sessions.remove(key);
            }
        }
    }

    /// Takes the partial aggregates changed since the last flush, marking the
    /// ones the watermark has closed as final and forgetting them.
    pub fn flush(&mut self, watermark_ms: i64) -> (Vec<Update<K, A>>, Vec<Closed<K>>) {
        let spec = self.spec;
        let mut updates = Vec::new();
        let mut closed = Vec::new();
        let sessions = &mut self.sessions;
        let make = &self.agg.init;
        self.open.retain(|(key, window), open| {
            let is_final = spec.closes_at(*window) <= watermark_ms;
            if is_final {
                Self::forget_session(sessions, key, *window);
            }
            if open.dirty {
                updates.push(Update {
                    key: key.clone(),
                    window: *window,
                    partial: std::mem::replace(&mut open.partial, make()),
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
        let sessions = &mut self.sessions;
        let make = &self.agg.init;
        self.open.retain(|(key, window), open| {
            let is_final = spec.closes_at(*window) <= watermark_ms;
            if is_final {
                Self::forget_session(sessions, key, *window);
                finals.push(Update {
                    key: key.clone(),
                    window: *window,
                    partial: std::mem::replace(&mut open.partial, make()),
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

    /// The open window's aggregate of `key`, if any.
    pub fn get(&self, key: &K, window: Window) -> Option<&A> {
        self.open.get(&(key.clone(), window)).map(|o| &o.partial)
    }

    /// Sets an open window's aggregate (a window store's put; an operator
    /// of your own may keep windows of its own making). It changes with
    /// the next flush.
    pub fn put(&mut self, key: K, window: Window, value: A) {
        let first_offset = self
            .open
            .get(&(key.clone(), window))
            .map_or(i64::MAX, |o| o.first_offset);
        self.open.insert(
            (key, window),
            Open {
                partial: value,
                dirty: true,
                first_offset,
            },
        );
    }

    /// Forgets an open window, giving its aggregate.
    pub fn delete(&mut self, key: &K, window: Window) -> Option<A> {
        Self::forget_session(&mut self.sessions, key, window);
        self.open.remove(&(key.clone(), window)).map(|o| o.partial)
    }

    /// The open windows of `key` that start in [from_ms, to_ms), oldest first.
    pub fn range(&self, key: &K, from_ms: i64, to_ms: i64) -> Vec<(Window, &A)> {
        let mut out: Vec<(Window, &A)> = self
            .open
            .iter()
            .filter(|((k, w), _)| k == key && w.start_ms >= from_ms && w.start_ms < to_ms)
            .map(|((_, w), o)| (*w, &o.partial))
            .collect();
        out.sort_by_key(|(w, _)| *w);
        out
    }
}
