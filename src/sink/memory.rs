//! Window aggregates kept in this process, with the same merge rules and
//! all-or-nothing commits as the PostgreSQL sink; for running without a
//! database (the demo) and for showing the latest windows live.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{
    WindowStore,
    postgres::{Claim, ClosedRow, Position, Row, SinkError},
};
use crate::window::{Aggregate, Stats, Window};

/// One row of the in-memory table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub device_id: String,
    pub sensor_type: String,
    pub window: Window,
    pub stats: Stats,
    pub is_final: bool,
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<(String, String, Window), (Stats, bool)>,
    /// (group, topic, partition) → (next offset or -1, watermark, epoch)
    offsets: HashMap<(String, String, i32), (i64, i64, i64)>,
}

#[derive(Default)]
pub struct MemoryWindows {
    inner: Mutex<Inner>,
}

impl MemoryWindows {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store as one consumer group reading one topic sees it.
    pub fn scoped(self: &Arc<Self>, group: &str, topic: &str) -> Scoped {
        Scoped {
            windows: self.clone(),
            group: group.to_string(),
            topic: topic.to_string(),
        }
    }

    /// The `n` rows with the latest windows, newest first.
    pub fn latest(&self, n: usize) -> Vec<StoredRow> {
        let inner = self.lock();
        let mut rows: Vec<StoredRow> = inner
            .rows
            .iter()
            .map(|((d, s, w), (stats, f))| StoredRow {
                device_id: d.clone(),
                sensor_type: s.clone(),
                window: *w,
                stats: *stats,
                is_final: *f,
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.window.start_ms, &a.device_id, &a.sensor_type).cmp(&(
                a.window.start_ms,
                &b.device_id,
                &b.sensor_type,
            ))
        });
        rows.truncate(n);
        rows
    }

    /// Rows marked final.
    pub fn finals(&self) -> usize {
        self.lock().rows.values().filter(|(_, f)| *f).count()
    }

    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Scoped {
    windows: Arc<MemoryWindows>,
    group: String,
    topic: String,
}

#[async_trait]
impl WindowStore for Scoped {
    async fn claim(&self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        let mut inner = self.windows.lock();
        Ok(partitions
            .iter()
            .map(|&p| {
                let e = inner
                    .offsets
                    .entry((self.group.clone(), self.topic.clone(), p))
                    .or_insert((-1, i64::MIN, 0));
                e.2 += 1;
                Claim {
                    partition: p,
                    next_offset: (e.0 >= 0).then_some(e.0),
                    watermark_ms: e.1,
                    epoch: e.2,
                }
            })
            .collect())
    }

    async fn commit(
        &self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
    ) -> Result<(), SinkError> {
        let mut inner = self.windows.lock();
        let key = |p: &Position| (self.group.clone(), self.topic.clone(), p.partition);
        // Check every epoch before changing anything: all or nothing.
        if let Some(lost) = positions
            .iter()
            .find(|p| inner.offsets.get(&key(p)).map(|o| o.2) != Some(p.epoch))
        {
            return Err(SinkError::Fenced {
                partition: lost.partition,
            });
        }
        for r in rows {
            let e = inner
                .rows
                .entry((r.device_id.clone(), r.sensor_type.clone(), r.window))
                .or_insert((Stats::default(), false));
            e.0.merge(&r.partial);
            e.1 |= r.is_final;
        }
        for (d, s, w) in closed {
            if let Some(e) = inner.rows.get_mut(&(d.clone(), s.clone(), *w)) {
                e.1 = true;
            }
        }
        for p in positions {
            if let Some(o) = inner.offsets.get_mut(&key(p)) {
                o.0 = p.next_offset;
                o.1 = o.1.max(p.watermark_ms);
            }
        }
        Ok(())
    }
}
