//! Where a task's stores read and write their changes: the changelog
//! topics, through the unit's producer (a Kafka unit), or the keeper's
//! database (a unit that commits there: a Kafka changelog could not commit
//! with its positions). Restores are timed and counted here, wherever the
//! changes are kept.

use std::{sync::atomic::Ordering::Relaxed, time::Instant};

use rdkafka::error::KafkaError;

use crate::{
    commit::Outbox,
    state::{Change, ChangeWriter, Changelogs, ReadError},
    stats::Stats,
};

/// Changes as records of the changelog topics, in the unit's producer.
pub struct ToTopics<'a> {
    pub out: &'a mut dyn Outbox,
    /// The records' timestamp.
    pub now_ms: i64,
}

impl ChangeWriter for ToTopics<'_> {
    fn write(&mut self, log: &str, partition: i32, changes: &[Change]) -> Result<(), KafkaError> {
        for c in changes {
            (self.out).send_to(
                log,
                partition,
                Some(&c.key),
                c.value.as_deref(),
                self.now_ms,
            )?;
        }
        Ok(())
    }
}

/// A restore's reads, counted in the member's statistics.
pub struct Counted<'a> {
    pub from: &'a mut dyn Changelogs,
    pub stats: &'a Stats,
}

impl Changelogs for Counted<'_> {
    fn read(&mut self, log: &str, partition: i32) -> Result<Vec<Change>, ReadError> {
        let started = Instant::now();
        let read = self.from.read(log, partition);
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.restore_micros.fetch_add(us, Relaxed);
        if let Ok(changes) = &read {
            (self.stats.restored_records).fetch_add(changes.len() as u64, Relaxed);
        }
        read
    }
}
