//! Event-time windows as a stateful operator. Each partition's windows
//! live in an in-memory window store (`window::WindowState`); a record
//! folds into every window of its key that is still open by its
//! partition's event time, and is late for the others. Before every
//! commit the operator emits, by mode:
//!
//! - `Finals`: each window once, whole, when final. The store is rebuilt
//!   after a restart by reading input again from the first record still in
//!   an open window (the committed offset), rather than from a changelog
//!   (Kafka Streams' way): no second topic to create and compact and no
//!   write per update, at the cost of re-reading at most a window plus its
//!   grace of input. Windows closed before the restart stay closed at the
//!   restored event time, so none is emitted twice.
//! - `Deltas`: each window's change since the last commit, for a table
//!   that merges them (the table is the state: nothing needs rebuilding).

use std::{any::Any, collections::BTreeMap, sync::Arc, time::Duration};

use super::{Assigned, At, OpCtx, Operator, OperatorEnv, OperatorError, OperatorSpec};
use crate::{
    topology::{Failure, Item, Slot, StoreDesc, Windowed},
    window::{Fold, Window, WindowSpec, WindowState},
};

/// What changed in a window since the last commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta<K, A> {
    /// The window's records since the last commit, folded.
    Changed {
        key: K,
        window: Window,
        partial: A,
        is_final: bool,
    },
    /// The window turned final with nothing new.
    Closed { key: K, window: Window },
}

/// Where the windows go.
pub enum Mode<K, A> {
    Finals(Slot<Windowed<K, A>>),
    Deltas(Slot<Delta<K, A>>),
}

impl<K, A> Clone for Mode<K, A> {
    fn clone(&self) -> Self {
        match self {
            Mode::Finals(s) => Mode::Finals(s.clone()),
            Mode::Deltas(s) => Mode::Deltas(s.clone()),
        }
    }
}

/// A windowed aggregation's declaration.
pub struct WindowSpecOp<T, K, A> {
    pub(crate) name: String,
    pub(crate) spec: WindowSpec,
    pub(crate) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(crate) fold: Fold<T, A>,
    pub(crate) mode: Mode<K, A>,
}

impl<T, K, A> WindowSpecOp<T, K, A> {
    fn finals(&self) -> bool {
        matches!(self.mode, Mode::Finals(_))
    }
}

impl<T, K, A> OperatorSpec for WindowSpecOp<T, K, A>
where
    T: Send + 'static,
    K: Clone + Eq + std::hash::Hash + Send + 'static,
    A: Send + 'static,
{
    fn stores(&self) -> Vec<StoreDesc> {
        vec![StoreDesc {
            name: self.name.clone(),
            kept: if self.finals() {
                "windows in memory, rebuilt by reading their input again".into()
            } else {
                "changes in memory, merged into the table at each commit".into()
            },
            changelog: false,
        }]
    }

    fn rebuilds_from_input(&self) -> bool {
        self.finals()
    }

    fn sends_late(&self) -> bool {
        true
    }

    fn clock(&self) -> Option<(Duration, Duration)> {
        Some((self.spec.out_of_order, self.spec.idle_timeout))
    }

    fn open(&self, _: &OperatorEnv<'_>) -> Box<dyn Operator> {
        Box::new(WindowOp {
            spec: self.spec,
            key: self.key.clone(),
            fold: self.fold.clone(),
            mode: self.mode.clone(),
            parts: BTreeMap::new(),
        })
    }
}

struct Part<K, T, A> {
    state: WindowState<K, T, A>,
}

/// A windowed aggregation of one group member.
pub struct WindowOp<T, K, A> {
    spec: WindowSpec,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    fold: Fold<T, A>,
    mode: Mode<K, A>,
    parts: BTreeMap<i32, Part<K, T, A>>,
}

impl<T, K, A> WindowOp<T, K, A>
where
    T: Send + 'static,
    K: Clone + Eq + std::hash::Hash + Send + 'static,
    A: Send + 'static,
{
    fn part(&mut self, partition: i32) -> &mut Part<K, T, A> {
        let (spec, fold) = (self.spec, &self.fold);
        self.parts.entry(partition).or_insert_with(|| Part {
            state: WindowState::with_fold(spec, fold.clone()),
        })
    }
}

impl<T, K, A> Operator for WindowOp<T, K, A>
where
    T: Send + 'static,
    K: Clone + Eq + std::hash::Hash + Send + 'static,
    A: Send + 'static,
{
    fn assigned(&mut self, p: Assigned<'_>) -> Result<(), OperatorError> {
        // Rebuilt from input (finals) or held by the table (deltas).
        self.parts.remove(&p.claim.partition);
        self.part(p.claim.partition);
        Ok(())
    }

    fn process(
        &mut self,
        at: At,
        item: Box<dyn Any + Send>,
        ctx: &mut OpCtx<'_>,
    ) -> Result<(), Failure> {
        let Ok(item) = item.downcast::<Item<T>>() else {
            return Ok(());
        };
        let key = (self.key)(&item.value);
        let event_ms = item.timestamp_ms;
        ctx.clock.observe(at.partition, event_ms, ctx.wall_ms);
        let watermark = ctx.clock.watermark(at.partition, ctx.wall_ms);
        let part = self.part(at.partition);
        let missed = part
            .state
            .add_at(&key, event_ms, &item.value, watermark, at.offset);
        ctx.late.extend(missed);
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut OpCtx<'_>) -> Result<(), Failure> {
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for p in partitions {
            let floor = ctx.clock.watermark(p, ctx.wall_ms);
            let mode = self.mode.clone();
            let part = self.part(p);
            match mode {
                Mode::Finals(out) => {
                    for u in part.state.take_final(floor) {
                        let w = Windowed {
                            key: u.key,
                            window: u.window,
                            value: u.partial,
                        };
                        ctx.emit_to(&out, crate::topology::windowed_item(w))?;
                    }
                }
                Mode::Deltas(out) => {
                    let (updates, closed) = part.state.flush(floor);
                    for u in updates {
                        let at = u.window.end_ms - 1;
                        let d = Delta::Changed {
                            key: u.key,
                            window: u.window,
                            partial: u.partial,
                            is_final: u.is_final,
                        };
                        ctx.emit_to(&out, Item::new(None, d, at))?;
                    }
                    for c in closed {
                        let at = c.window.end_ms - 1;
                        let d = Delta::Closed {
                            key: c.key,
                            window: c.window,
                        };
                        ctx.emit_to(&out, Item::new(None, d, at))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn resume_offset(&self, partition: i32) -> Option<i64> {
        match self.mode {
            Mode::Finals(_) => self.parts.get(&partition)?.state.first_open_offset(),
            Mode::Deltas(_) => None,
        }
    }

    fn abort(&mut self) {
        self.parts.clear();
    }

    fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
        }
    }

    fn ticking(&self) -> bool {
        !self.parts.is_empty()
    }

    fn held(&self) -> u64 {
        self.parts
            .values()
            .map(|p| p.state.open_windows() as u64)
            .sum()
    }
}
