//! Per-partition watermarks. A partition's watermark is the highest event
//! time it has delivered minus the allowed out-of-orderness; the operator's
//! is the minimum over partitions that are not idle. When every partition
//! is idle, the watermark follows the wall clock, so windows still close
//! on a quiet stream instead of waiting for the next record forever.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_event_ms: i64,
    last_seen_wall_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Watermarks {
    out_of_order_ms: i64,
    idle_timeout_ms: i64,
    partitions: BTreeMap<i32, Partition>,
    /// Never moves back, whatever partitions come and go.
    current: i64,
}

impl Watermarks {
    pub fn new(out_of_order_ms: i64, idle_timeout_ms: i64) -> Self {
        Watermarks {
            out_of_order_ms,
            idle_timeout_ms,
            partitions: BTreeMap::new(),
            current: i64::MIN,
        }
    }

    /// Restores a watermark stored with committed offsets.
    pub fn restore(&mut self, watermark_ms: i64) {
        self.current = self.current.max(watermark_ms);
    }

    /// A partition taken over with the watermark stored at its last commit
    /// (`i64::MIN`: none). Until it delivers records or turns idle, it holds
    /// the operator's watermark at that point, so a partition that is slow
    /// to start does not find its windows already closed.
    pub fn restore_partition(&mut self, partition: i32, watermark_ms: i64, wall_ms: i64) {
        self.partitions.insert(
            partition,
            Partition {
                max_event_ms: watermark_ms.saturating_add(self.out_of_order_ms),
                last_seen_wall_ms: wall_ms,
            },
        );
    }

    /// Lets the next `advance` recompute the watermark from the partitions,
    /// lower than before if a slower partition joined. Callers keep their
    /// own per-partition floor so closed windows stay closed.
    pub fn reset_current(&mut self) {
        self.current = i64::MIN;
    }

    /// A record with event time `event_ms` arrived on `partition` at `wall_ms`.
    pub fn observe(&mut self, partition: i32, event_ms: i64, wall_ms: i64) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            max_event_ms: event_ms,
            last_seen_wall_ms: wall_ms,
        });
        p.max_event_ms = p.max_event_ms.max(event_ms);
        p.last_seen_wall_ms = wall_ms;
    }

    /// The partition was revoked: it no longer holds the watermark back.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The operator's watermark at wall-clock time `wall_ms`.
    pub fn advance(&mut self, wall_ms: i64) -> i64 {
        let active = self
            .partitions
            .values()
            .filter(|p| wall_ms - p.last_seen_wall_ms < self.idle_timeout_ms)
            .map(|p| p.max_event_ms)
            .min();
        let candidate = match active {
            Some(min_event) => min_event.saturating_sub(self.out_of_order_ms),
            // All idle (or none assigned yet): event time is taken to keep
            // pace with the wall clock since the last record.
            None if !self.partitions.is_empty() => {
                let newest = self
                    .partitions
                    .values()
                    .map(|p| p.max_event_ms)
                    .max()
                    .unwrap_or(i64::MIN);
                let quiet_since = self
                    .partitions
                    .values()
                    .map(|p| p.last_seen_wall_ms)
                    .max()
                    .unwrap_or(wall_ms);
                newest
                    .saturating_add(wall_ms - quiet_since)
                    .saturating_sub(self.out_of_order_ms)
            }
            None => i64::MIN,
        };
        self.current = self.current.max(candidate);
        self.current
    }

    pub fn current(&self) -> i64 {
        self.current
    }
}
