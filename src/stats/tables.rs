//! What a table a topology joins against reports: how far its restore
//! went (for `/readyz` and the metrics), its rows, and the lookups that
//! missed or were older than its history. One per table a process reads,
//! shared by the topologies that join against it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct TableStats {
    /// The table's topic.
    pub name: String,
    /// Read to the end it had at start: joins may begin.
    pub restored: AtomicBool,
    /// Offsets read of those to restore, summed over partitions.
    pub restore_read: AtomicU64,
    pub restore_total: AtomicU64,
    /// Keys held (with a row or a recent deletion).
    pub keys: AtomicU64,
    /// Table records read since start, and those that did not decode.
    pub records: AtomicU64,
    pub undecodable: AtomicU64,
    /// Lookups older than the history kept (joined with the oldest row).
    pub expired_lookups: AtomicU64,
    /// Records an inner join found no row for.
    pub join_misses: AtomicU64,
    /// End-offset probes made, and the time joins waited for one, µs.
    pub probes: AtomicU64,
    pub join_wait_us: AtomicU64,
}

impl TableStats {
    pub fn new(name: &str) -> TableStats {
        TableStats {
            name: name.to_string(),
            ..TableStats::default()
        }
    }

    /// Why joins wait, while the table is restored.
    pub fn restoring(&self) -> Option<String> {
        (!self.restored.load(Ordering::Relaxed)).then(|| {
            format!(
                "restoring table {}: {} of {}",
                self.name,
                self.restore_read.load(Ordering::Relaxed),
                self.restore_total.load(Ordering::Relaxed)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restoring_says_how_far_until_restored() {
        let t = TableStats::new("iot-devices");
        t.restore_total.store(5000, Ordering::Relaxed);
        t.restore_read.store(1200, Ordering::Relaxed);
        assert_eq!(
            t.restoring().as_deref(),
            Some("restoring table iot-devices: 1200 of 5000")
        );
        t.restored.store(true, Ordering::Relaxed);
        assert_eq!(t.restoring(), None);
    }
}
