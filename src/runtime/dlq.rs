//! Dead-letter records: the original key and value bytes, with headers that
//! say what went wrong and where the record came from.

use std::sync::Arc;

use crate::topology::{Failure, Output};

pub const KIND: &str = "sluice.error.kind";
pub const MESSAGE: &str = "sluice.error.message";
pub const TOPIC: &str = "sluice.source.topic";
pub const PARTITION: &str = "sluice.source.partition";
pub const OFFSET: &str = "sluice.source.offset";
pub const TIMESTAMP: &str = "sluice.source.timestamp";
pub const TOPOLOGY: &str = "sluice.topology";
pub const SCHEMA_ID: &str = "sluice.schema.id";

/// Where a failed record was read.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// A record bound for the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record: Output,
    pub headers: Vec<(&'static str, String)>,
}

pub fn dead_letter(
    dlq_topic: &Arc<str>,
    topology: &str,
    origin: Origin<'_>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    failure: &Failure,
) -> DeadLetter {
    let mut headers = vec![
        (KIND, failure.kind().to_string()),
        (MESSAGE, failure.to_string()),
        (TOPIC, origin.topic.to_string()),
        (PARTITION, origin.partition.to_string()),
        (OFFSET, origin.offset.to_string()),
        (TIMESTAMP, origin.timestamp_ms.to_string()),
        (TOPOLOGY, topology.to_string()),
    ];
    if let Some(id) = failure.schema_id() {
        headers.push((SCHEMA_ID, id.to_string()));
    }
    DeadLetter {
        record: Output {
            topic: dlq_topic.clone(),
            key: key.map(<[u8]>::to_vec),
            value: value.unwrap_or_default().to_vec(),
            timestamp_ms: origin.timestamp_ms,
        },
        headers,
    }
}
