//! Where a unit commits: the input positions, with everything the unit
//! wrote to the same place, atomically. Kafka keeps them as the group's
//! committed offsets, sent in the unit's transaction (`KafkaKeeper`); a
//! database keeps them in its own table, in the transaction its sinks
//! staged their statements in (see `sink::postgres`, `sink::memory`).
//!
//! A keeper that keeps positions itself, or a topology whose state must
//! be restored, claims partitions on assignment before a record of them
//! is read: the claim says where reading resumes, the event time so far,
//! and the epoch that fences the partition's previous owner.

use std::{any::Any, time::Duration};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata},
    error::{KafkaError, KafkaResult},
};

use super::letters::DeadLetter;
use crate::{kafka::KafkaConfig, topology::Output};

/// A partition taken over: where to read from, the event time so far, and
/// the epoch that commits must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub partition: i32,
    /// `None`: nothing committed yet, read from the beginning.
    pub next_offset: Option<i64>,
    pub watermark_ms: i64,
    pub epoch: i64,
    /// Records below this offset were processed before (their outputs and
    /// letters sent): reading resumes earlier only to rebuild state. -1: none.
    pub processed: i64,
}

impl Claim {
    /// A partition whose positions are the group's: nothing known here.
    pub fn fresh(partition: i32) -> Claim {
        Claim {
            partition,
            next_offset: None,
            watermark_ms: i64::MIN,
            epoch: 0,
            processed: -1,
        }
    }
}

/// Where a partition's reading continues, and its event time, after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    /// The offset after the last record processed.
    pub next_offset: i64,
    /// Where reading resumes after a restart: `next_offset`, or earlier,
    /// the first record still needed to rebuild state.
    pub resume_offset: i64,
    pub watermark_ms: i64,
    /// The ownership epoch the partition was claimed with.
    pub epoch: i64,
}

/// The consumer group, as a commit needs it: its metadata (for offsets
/// sent in a transaction) or a plain offset commit.
pub trait Group {
    /// `None` before the member first joined.
    fn metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Commits offsets to the group, synchronously or not.
    fn commit_offsets(&self, offsets: &TopicPartitionList, sync: bool) -> KafkaResult<()>;
}

/// The unit's producer: every record the unit writes to Kafka (outputs,
/// letters, changelogs) goes through it, and commits with the unit.
pub trait Outbox: Send {
    fn send(&mut self, out: &Output) -> KafkaResult<()>;
    /// A letter: the original key, value and headers, then sluice's headers.
    fn send_letter(&mut self, d: &DeadLetter) -> KafkaResult<()>;
    /// A record to a given partition (a changelog's is its input's).
    fn send_to(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> KafkaResult<()>;
    /// Waits until everything sent is acknowledged; an error if any failed.
    fn flush(&mut self) -> KafkaResult<()>;
    /// Commits what was sent with the input `offsets`: in one transaction,
    /// or (no transactions) acknowledged, then the offsets committed.
    fn commit(&mut self, offsets: &TopicPartitionList, group: &dyn Group) -> KafkaResult<()>;
    /// Drops what was sent: aborts the transaction (or forgets unconfirmed deliveries).
    fn abort(&mut self);
    /// Makes the next flush or commit fail: a record could not be queued.
    fn poison(&mut self, e: KafkaError);
}

/// Why a unit did not commit, or partitions could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Kafka refused or is unreachable; retrying may help.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Letters or topic outputs could not be delivered before a database commit.
    #[error("records for Kafka not delivered before the database commit: {0}")]
    Letters(KafkaError),
    /// Another worker has claimed the partition since: let go of it.
    #[error("partition {partition} was claimed by another worker; nothing was written")]
    Fenced { partition: i32 },
    /// The database's own error; retrying may help.
    #[error("{0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// A store could not be restored from its changelog.
    #[error(transparent)]
    Restore(#[from] crate::operator::OperatorError),
}

/// Where a topology's units commit, for one group member.
pub trait Keeper: Send {
    /// Whether partitions are claimed before they are read.
    fn claims(&self) -> bool;

    /// Takes over `partitions`, fencing their previous owner.
    fn claim(&mut self, partitions: &[i32], group: &dyn Group) -> Result<Vec<Claim>, CommitError>;

    /// Where the unit's database sinks stage their writes.
    fn staged(&mut self) -> Option<&mut dyn Any> {
        None
    }

    /// Commits the positions with everything the unit sent and staged.
    fn commit(
        &mut self,
        positions: &[Position],
        out: &mut dyn Outbox,
        group: &dyn Group,
    ) -> Result<(), CommitError>;

    /// Drops the unit: what was staged, and what was sent.
    fn abort(&mut self, out: &mut dyn Outbox);

    /// Whether the group's committed offsets are its own (else the runtime
    /// commits them too, only so that Kafka's tools show the lag).
    fn owns_group_offsets(&self) -> bool;

    /// A name for the commit-duration metric.
    fn domain(&self) -> &'static str;
}

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
impl Committed for BaseConsumer {
    fn committed(&self, tpl: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        crate::kafka::blocking(|| self.committed_offsets(tpl, TIMEOUT))
    }
}

/// Positions as the group's committed offsets, in the unit's transaction.
pub struct KafkaKeeper {
    source: String,
    /// Reads the group's committed offsets on claims. Only topologies
    /// with state claim.
    committed: Option<Box<dyn Committed>>,
    /// Whether the metadata carries progress (event time, processed-up-to).
    progress: bool,
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
        let committed = match stateful {
            true => {
                let reader: BaseConsumer = kafka.consumer(group).create()?;
                Some(Box::new(reader) as Box<dyn Committed>)
            }
            false => None,
        };
        Ok(Self::with(source, committed))
    }

    /// Over offsets read by `committed` (claims, progress) or none.
    pub fn with(source: &str, committed: Option<Box<dyn Committed>>) -> Self {
        KafkaKeeper {
            source: source.to_string(),
            progress: committed.is_some(),
            committed,
        }
    }
}

impl Keeper for KafkaKeeper {
    fn claims(&self) -> bool {
        self.committed.is_some()
    }

    fn claim(&mut self, partitions: &[i32], _: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        let Some(reader) = &self.committed else {
            return Ok(partitions.iter().map(|&p| Claim::fresh(p)).collect());
        };
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.source, p);
        }
        let committed = reader.committed(tpl)?;
        let mut claims = Vec::new();
        for e in committed.elements_for_topic(&self.source) {
            let progress = Progress::parse(e.metadata());
            let next_offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if next_offset.is_some() && progress.is_none() && !e.metadata().is_empty() {
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
            if self.progress
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
