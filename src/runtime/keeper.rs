//! Where a unit commits when Kafka keeps its positions: as the group's
//! committed offsets, sent in the unit's transaction (`KafkaKeeper`). A
//! database keeps them in its own table, in the transaction its sinks
//! staged their statements in (see `sink::postgres`, `sink::memory`).

use std::time::Duration;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, KafkaResult},
};

use crate::{
    commit::{Claim, CommitError, Group, Keeper, Outbox, Position},
    kafka::KafkaConfig,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// What an offset commit's metadata says of a partition: the offset it
/// was processed up to, and its event time. Written when the committed
/// offset may trail what was processed (state rebuilt from input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub processed: i64,
    pub watermark_ms: i64,
}

impl Progress {
    pub fn to_metadata(self) -> String {
        format!(
            "sluice:1 processed={} watermark={}",
            self.processed, self.watermark_ms
        )
    }

    pub fn parse(metadata: &str) -> Option<Progress> {
        let rest = metadata.strip_prefix("sluice:1 ")?;
        let mut processed = None;
        let mut watermark_ms = None;
        for field in rest.split(' ') {
            match field.split_once('=')? {
                ("processed", v) => processed = v.parse().ok(),
                ("watermark", v) => watermark_ms = v.parse().ok(),
                _ => {}
            }
        }
        Some(Progress {
            processed: processed?,
            watermark_ms: watermark_ms?,
        })
    }
}

/// Reads a group's committed offsets (with their metadata).
pub trait Committed: Send {
    fn committed(&self, tpl: TopicPartitionList) -> KafkaResult<TopicPartitionList>;
}

/// A consumer of the group that never joins it: it only reads the group's
/// committed offsets (waiting for any pending transactional commit).
impl Committed for BaseConsumer<crate::kafka::QuietReader> {
    fn committed(&self, tpl: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        crate::kafka::blocking(|| self.committed_offsets(tpl, TIMEOUT))
    }
}

/// Positions as the group's committed offsets, in the unit's transaction.
pub struct KafkaKeeper {
    source: String,
    /// Reads the group's committed offsets (stable ones: a pending
    /// transactional commit is waited for) on claims.
    committed: Option<Box<dyn Committed>>,
    /// How to make that reader when it is first needed.
    reader: Option<(KafkaConfig, String)>,
    /// Partitions are claimed on assignment, and the metadata carries
    /// progress (event time, processed-up-to): topologies with state.
    stateful: bool,
}

impl KafkaKeeper {
    /// `stateful`: partitions are claimed (state restored, or rebuilt
    /// from the committed offset with the progress in its metadata).
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        source: &str,
        stateful: bool,
    ) -> KafkaResult<Self> {
        let mut keeper = Self::with(source, None, stateful);
        keeper.reader = Some((kafka.clone(), group.to_string()));
        if stateful {
            keeper.reader()?;
        }
        Ok(keeper)
    }

    /// Over offsets read by `committed`.
    pub fn with(source: &str, committed: Option<Box<dyn Committed>>, stateful: bool) -> Self {
        KafkaKeeper {
            source: source.to_string(),
            committed,
            reader: None,
            stateful,
        }
    }

    fn reader(&mut self) -> KafkaResult<&dyn Committed> {
        if self.committed.is_none()
            && let Some((kafka, group)) = &self.reader
        {
            // Quiet: it stays connected through an outage, which the
            // member's own consumer reports once (`stats::health`);
            // librdkafka's default logging would add every failed connect.
            let reader: BaseConsumer<crate::kafka::QuietReader> = kafka
                .consumer(group)
                .create_with_context(crate::kafka::QuietReader)?;
            self.committed = Some(Box::new(reader));
        }
        self.committed.as_deref().ok_or(KafkaError::ClientCreation(
            "no reader of the group's committed offsets".into(),
        ))
    }
}

impl Keeper for KafkaKeeper {
    fn claims(&self) -> bool {
        self.stateful
    }

    fn rereads_after_abort(&self) -> bool {
        true
    }

    fn claim(&mut self, partitions: &[i32], _: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        let source = self.source.clone();
        let progress = self.stateful;
        let reader = self.reader()?;
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&source, p);
        }
        let committed = reader.committed(tpl)?;
        let mut claims = Vec::new();
        for e in committed.elements_for_topic(&source) {
            let progress = progress.then(|| Progress::parse(e.metadata())).flatten();
            let next_offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if self.stateful
                && next_offset.is_some()
                && progress.is_none()
                && !e.metadata().is_empty()
            {
                tracing::warn!(
                    partition = e.partition(),
                    metadata = e.metadata(),
                    "committed offset without sluice's metadata; reading on from it"
                );
            }
            claims.push(Claim {
                partition: e.partition(),
                next_offset,
                watermark_ms: progress.map_or(i64::MIN, |p| p.watermark_ms),
                epoch: 0,
                // Without metadata, everything below the committed offset
                // was processed (and is in the changelogs).
                processed: progress.map_or(next_offset.unwrap_or(-1), |p| p.processed),
            });
        }
        Ok(claims)
    }

    fn commit(
        &mut self,
        positions: &[Position],
        out: &mut dyn Outbox,
        group: &dyn Group,
    ) -> Result<(), CommitError> {
        let mut tpl = TopicPartitionList::new();
        for p in positions.iter().filter(|p| p.next_offset >= 0) {
            tpl.add_partition_offset(&self.source, p.partition, Offset::Offset(p.resume_offset))?;
            if self.stateful
                && let Some(mut e) = tpl.find_partition(&self.source, p.partition)
            {
                let progress = Progress {
                    processed: p.next_offset,
                    watermark_ms: p.watermark_ms,
                };
                e.set_metadata(progress.to_metadata());
            }
        }
        out.commit(&tpl, group)?;
        Ok(())
    }

    fn abort(&mut self, out: &mut dyn Outbox) {
        out.abort();
    }

    fn owns_group_offsets(&self) -> bool {
        true
    }

    fn domain(&self) -> &'static str {
        "kafka"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_the_metadata() {
        let p = Progress {
            processed: 1234,
            watermark_ms: -5,
        };
        assert_eq!(Progress::parse(&p.to_metadata()), Some(p));
        assert_eq!(Progress::parse(""), None);
        assert_eq!(Progress::parse("someone else's"), None);
        assert_eq!(Progress::parse("sluice:1 processed=x watermark=1"), None);
    }
}
