//! State stores owned by stateful operators. A store holds one
//! partition's state in memory and remembers what changed since the last
//! commit; where it is kept between runs is its choice:
//!
//! - `KeyValueStore` (get, put, delete, range): every commit writes each
//!   changed key's latest value (or a tombstone) to a compacted changelog
//!   topic, `<group>-<store>-changelog`, partition for partition with the
//!   input, in the unit's Kafka transaction; a partition taken over is
//!   restored by reading its changelog to the end before any record. A
//!   unit that commits in a database keeps the changes there instead, in
//!   the transaction that stores its positions (a Kafka changelog could
//!   not commit with them), under the same name (`StoreLog`).
//! - the window store (`window::WindowState`: get, put, delete, range by
//!   key and time) is rebuilt by reading input again, or is a database
//!   table itself (see `operator::window`).
//! - `VersionedTable`: each key's rows (bytes) over time, read from a
//!   table's topic (not a changelog of ours) and looked up by event time.

pub mod kv;
pub mod versioned;
pub mod view;

pub use kv::KeyValueStore;
pub use versioned::{Lookup, VersionedTable};
pub use view::{Queryable, Stores, View, Where};

/// One record of a changelog: a key's value, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// `None`: deleted (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// Why a store's changes could not be read back (Kafka's or a
/// database's error); retrying may help.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Reads changelogs, for restoring stores on assignment.
pub trait Changelogs {
    /// Every committed change of changelog `log`'s `partition`, from its
    /// beginning to its end as of now, in order.
    fn read(&mut self, log: &str, partition: i32) -> Result<Vec<Change>, ReadError>;
}

/// Where a unit's stores write their changes at commit.
pub trait ChangeWriter {
    /// `changes` of changelog `log`'s `partition`, into the open unit.
    fn write(
        &mut self,
        log: &str,
        partition: i32,
        changes: &[Change],
    ) -> Result<(), rdkafka::error::KafkaError>;
}

/// Where a database keeps the stores of the units that commit in it: read
/// back on claim, written in the unit's transaction.
pub trait StoreLog: Changelogs + ChangeWriter {}

impl<T: Changelogs + ChangeWriter> StoreLog for T {}
