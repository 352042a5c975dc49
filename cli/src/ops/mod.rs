//! The operator's tools behind `sluice tail` and `sluice dlq`: reading any
//! topic record by record (`read`), showing a record with its value decoded
//! through the registry, whatever its schema id (`view`), summing up a
//! dead-letter topic (`inspect`) and copying chosen letters back to their
//! source exactly once (`replay`).

pub mod inspect;
pub mod read;
pub mod replay;

/// Records as JSON, values decoded through the registry (the library's,
/// which the console shares).
pub use sluice::avro::view;

/// Letters without `sluice.error.kind` (not written by sluice).
pub const NO_REASON: &str = "(no sluice.error.kind)";

/// `topic/partition/offset` of the letter a record was copied from.
pub const REPLAYED_FROM: &str = "sluice.replayed.from";

/// Why a tool could not do its job; all but `Kafka` are the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The brokers or the client failed; retrying may help.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist (or this user may not describe it)")]
    NoTopic(String),
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    NoPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
}
