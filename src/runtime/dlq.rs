//! Dead-letter records: the original key, value (null stays null) and
//! headers, followed by sluice's headers that say what went wrong and where
//! the record came from.

use std::sync::Arc;

use crate::{topology::Failure, window::Late};

pub const KIND: &str = "sluice.error.kind";
pub const MESSAGE: &str = "sluice.error.message";
pub const TOPIC: &str = "sluice.source.topic";
pub const PARTITION: &str = "sluice.source.partition";
pub const OFFSET: &str = "sluice.source.offset";
pub const TIMESTAMP: &str = "sluice.source.timestamp";
pub const TOPOLOGY: &str = "sluice.topology";
pub const SCHEMA_ID: &str = "sluice.schema.id";
/// On late records: the first window the record missed, and the watermark then.
pub const WINDOW_START: &str = "sluice.window.start";
pub const WINDOW_END: &str = "sluice.window.end";
pub const WATERMARK: &str = "sluice.watermark";

/// Where a failed record was read, and what it carried.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub headers: Option<&'a rdkafka::message::BorrowedHeaders>,
}

/// A header as it came: any bytes, or none.
pub type RawHeader = (String, Option<Vec<u8>>);

/// A record bound for the dead-letter (or late) topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The reason label (`sluice.error.kind`), counted once committed.
    pub kind: &'static str,
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone: a null value stays null.
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: i64,
    /// The original record's headers, sent first.
    pub original: Vec<RawHeader>,
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
    let mut letter = rejected(
        dlq_topic,
        topology,
        origin,
        (key, value),
        failure.kind(),
        failure.to_string(),
    );
    if let Some(id) = failure.schema_id() {
        letter.headers.push((SCHEMA_ID, id.to_string()));
    }
    letter
}

/// A record whose windows had all closed (or some of them, with hopping
/// windows), for the late topic.
pub fn late_record(
    late_topic: &Arc<str>,
    topology: &str,
    origin: Origin<'_>,
    (key, value): (Option<&[u8]>, Option<&[u8]>),
    event_ms: i64,
    missed: &[Late],
) -> DeadLetter {
    let first = missed[0];
    let message = format!(
        "event time {event_ms} ms is too late for {} window(s), first [{}, {}) ms: the watermark was {} ms, past its end plus grace",
        missed.len(),
        first.window.start_ms,
        first.window.end_ms,
        first.watermark_ms
    );
    let mut letter = rejected(late_topic, topology, origin, (key, value), "late", message);
    letter.headers.extend([
        (WINDOW_START, first.window.start_ms.to_string()),
        (WINDOW_END, first.window.end_ms.to_string()),
        (WATERMARK, first.watermark_ms.to_string()),
    ]);
    letter
}

pub(super) fn rejected(
    topic: &Arc<str>,
    topology: &str,
    origin: Origin<'_>,
    (key, value): (Option<&[u8]>, Option<&[u8]>),
    kind: &'static str,
    message: String,
) -> DeadLetter {
    let headers = vec![
        (KIND, kind.to_string()),
        (MESSAGE, message),
        (TOPIC, origin.topic.to_string()),
        (PARTITION, origin.partition.to_string()),
        (OFFSET, origin.offset.to_string()),
        (TIMESTAMP, origin.timestamp_ms.to_string()),
        (TOPOLOGY, topology.to_string()),
    ];
    DeadLetter {
        kind,
        topic: topic.clone(),
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        timestamp_ms: origin.timestamp_ms,
        original: origin.headers.map(copy_headers).unwrap_or_default(),
        headers,
    }
}

fn copy_headers(headers: &rdkafka::message::BorrowedHeaders) -> Vec<RawHeader> {
    use rdkafka::message::Headers;
    headers
        .iter()
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect()
}
