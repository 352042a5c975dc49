//! Per-partition stream time. A partition's watermark is the highest event
//! time it has delivered minus the allowed out-of-orderness, and its windows
//! close by that watermark alone: keys live on one partition, so the same
//! input gives the same windows and the same late records however the
//! partitions interleave — live, from a backlog, after a restart or a
//! rebalance (Kafka Streams' stream time). A partition quiet for the idle
//! timeout has its watermark follow the wall clock from its last record, so
//! its windows still close on a quiet stream. A watermark never moves back.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_event_ms: i64,
    last_seen_wall_ms: i64,
    /// The highest watermark given out (or restored): never lower.
    floor: i64,
}

#[derive(Debug, Clone)]
pub struct Watermarks {
    out_of_order_ms: i64,
    idle_timeout_ms: i64,
    partitions: BTreeMap<i32, Partition>,
}

impl Watermarks {
    pub fn new(out_of_order_ms: i64, idle_timeout_ms: i64) -> Self {
        Watermarks {
            out_of_order_ms,
            idle_timeout_ms,
            partitions: BTreeMap::new(),
        }
    }

    /// A partition taken over with the watermark stored at its last commit
    /// (`i64::MIN`: none); `wall_ms` starts its idle clock.
    pub fn restore(&mut self, partition: i32, watermark_ms: i64, wall_ms: i64) {
        self.partitions.insert(
            partition,
            Partition {
                max_event_ms: watermark_ms.saturating_add(self.out_of_order_ms),
                last_seen_wall_ms: wall_ms,
                floor: watermark_ms,
            },
        );
    }

    /// A record with event time `event_ms` arrived on `partition` at `wall_ms`.
    pub fn observe(&mut self, partition: i32, event_ms: i64, wall_ms: i64) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            max_event_ms: event_ms,
            last_seen_wall_ms: wall_ms,
            floor: i64::MIN,
        });
        p.max_event_ms = p.max_event_ms.max(event_ms);
        p.last_seen_wall_ms = wall_ms;
    }

    /// The partition is no longer this worker's.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// `partition`'s watermark at wall-clock time `wall_ms` (`i64::MIN`
    /// before it has delivered or been restored).
    pub fn watermark(&mut self, partition: i32, wall_ms: i64) -> i64 {
        let (ooo, idle) = (self.out_of_order_ms, self.idle_timeout_ms);
        let Some(p) = self.partitions.get_mut(&partition) else {
            return i64::MIN;
        };
        let quiet = wall_ms - p.last_seen_wall_ms;
        let event = if quiet >= idle {
            // Idle: event time is taken to keep pace with the wall clock
            // since the last record.
            p.max_event_ms.saturating_add(quiet)
        } else {
            p.max_event_ms
        };
        p.floor = p.floor.max(event.saturating_sub(ooo));
        p.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn each_partition_keeps_its_own_watermark() {
        let mut wm = Watermarks::new(2 * S, 10 * S);
        wm.observe(0, 100 * S, 0);
        wm.observe(1, 40 * S, 0);
        assert_eq!(wm.watermark(0, 0), 98 * S);
        assert_eq!(
            wm.watermark(1, 0),
            38 * S,
            "a slow partition holds only itself back"
        );
        assert_eq!(wm.watermark(2, 0), i64::MIN);
        // Never moves back when a partition delivers old data.
        wm.observe(0, 50 * S, S);
        assert_eq!(wm.watermark(0, S), 98 * S);
    }

    #[test]
    fn an_idle_partition_follows_the_wall_clock() {
        let mut wm = Watermarks::new(0, 5 * S);
        wm.observe(0, 30 * S, 1000 * S);
        assert_eq!(wm.watermark(0, 1004 * S), 30 * S, "not idle yet");
        assert_eq!(wm.watermark(0, 1010 * S), 40 * S, "10 s quiet: 10 s on");
        wm.observe(0, 31 * S, 1011 * S);
        assert_eq!(wm.watermark(0, 1011 * S), 40 * S, "never back");
    }

    #[test]
    fn a_restored_watermark_is_the_floor() {
        let mut wm = Watermarks::new(0, 30 * S);
        wm.restore(3, 80 * S, 0);
        wm.observe(3, 20 * S, 0);
        assert_eq!(wm.watermark(3, 0), 80 * S);
        wm.forget(3);
        assert_eq!(wm.watermark(3, 0), i64::MIN);
    }
}
