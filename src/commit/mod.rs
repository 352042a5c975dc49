//! What a unit commits through, and what every participant of the commit
//! shares: the claim on a partition, the positions a commit stores, the
//! unit's producer (`Outbox`), where the unit commits (`Keeper`) and the
//! dead letters. The runtime drives it (`runtime::task`); sinks, stores
//! and the Kafka producer implement it.
//!
//! A keeper that keeps positions itself, or a topology whose state must
//! be restored, claims partitions on assignment before a record of them
//! is read: the claim says where reading resumes, the event time so far,
//! and the epoch that fences the partition's previous owner.

pub mod letters;

use std::{any::Any, time::Duration};

use rdkafka::{
    TopicPartitionList,
    consumer::ConsumerGroupMetadata,
    error::{KafkaError, KafkaResult},
};

pub use letters::DeadLetter;

use crate::record::Output;

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
    /// The parts of the last commit, when it was a transaction.
    fn commit_parts(&self) -> Option<CommitParts> {
        None
    }
}

/// How long the parts of the last transactional commit took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitParts {
    /// `begin_transaction`, before the unit's first record.
    pub begin: Duration,
    /// Waiting until every record sent is acknowledged.
    pub flush: Duration,
    /// `send_offsets_to_transaction`.
    pub send_offsets: Duration,
    /// `commit_transaction`: the markers written.
    pub commit: Duration,
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
    #[error("{0}")]
    Restore(Box<dyn std::error::Error + Send + Sync>),
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

    /// Where the unit's stores are kept when this keeper keeps them (a
    /// database's, in the transaction of the positions); `None`: in
    /// changelog topics, written through the unit's producer.
    fn stores(&mut self) -> Option<&mut dyn crate::state::StoreLog> {
        None
    }

    /// Commits the positions with everything the unit sent and staged.
    fn commit(
        &mut self,
        positions: &[Position],
        out: &mut dyn Outbox,
        group: &dyn Group,
    ) -> Result<(), CommitError>;

    /// Whether, after an abort, reading resumes where this keeper says
    /// (the partitions are claimed again) rather than at the unit's first
    /// records: a commit that failed may have committed all the same (a
    /// timed-out `commit_transaction` that the coordinator completed), and
    /// only the keeper knows.
    fn rereads_after_abort(&self) -> bool {
        false
    }

    /// Drops the unit: what was staged, and what was sent.
    fn abort(&mut self, out: &mut dyn Outbox);

    /// Whether the group's committed offsets are its own (else the runtime
    /// commits them too, only so that Kafka's tools show the lag).
    fn owns_group_offsets(&self) -> bool;

    /// A name for the commit-duration metric.
    fn domain(&self) -> &'static str;
}
