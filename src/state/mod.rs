//! State stores owned by stateful operators. A store holds one
//! partition's state in memory and remembers what changed since the last
//! commit; where it is kept between runs is its choice:
//!
//! - `KeyValueStore` (get, put, delete, range): every commit writes each
//!   changed key's latest value (or a tombstone) to a compacted changelog
//!   topic, `<group>-<store>-changelog`, partition for partition with the
//!   input, in the unit's Kafka transaction; a partition taken over is
//!   restored by reading its changelog to the end before any record.
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

use rdkafka::error::KafkaError;

/// One record of a changelog: a key's value, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// `None`: deleted (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// Reads changelogs, for restoring stores on assignment.
pub trait Changelogs {
    /// Every committed record of `topic`'s `partition`, from its beginning
    /// to its end as of now, in order.
    fn read(&mut self, topic: &str, partition: i32) -> Result<Vec<Change>, KafkaError>;
}
