//! Letters: records that did not become results, written with their
//! original key, value (null stays null) and headers, followed by sluice's
//! headers saying what went wrong and where the record came from. Dead
//! letters go to `<source>.dlq`, records too late for their window to
//! `<source>.late`. The runtime sends them, once, in the unit.

use std::sync::Arc;

use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message};

use crate::{record::Failure, window::Late};

/// Where an input record was read, and what it carried (for its letters).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: SourceHeaders<'a>,
}

/// An input record's headers: in the message as consumed (read only when
/// a letter needs them), or as a chunk keeps them.
#[derive(Clone, Copy)]
pub enum SourceHeaders<'a> {
    Borrowed(&'a BorrowedMessage<'a>),
    Copied(&'a [RawHeader]),
}

impl SourceHeaders<'_> {
    pub fn to_raw(self) -> Vec<RawHeader> {
        match self {
            // librdkafka parses a message's headers on every call when it
            // has none (a buffer allocated and freed each time): asked
            // here, for a letter, not for every record read.
            SourceHeaders::Borrowed(m) => copy_headers(m.headers()),
            SourceHeaders::Copied(h) => h.to_vec(),
        }
    }
}

/// An input record's headers as they came.
pub fn copy_headers(headers: Option<&BorrowedHeaders>) -> Vec<RawHeader> {
    use rdkafka::message::Headers;
    headers
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

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
    /// The operator that refused the record, when one did (for metrics).
    pub operator: Option<Arc<str>>,
}

/// A record a processor refused (undecodable, invalid, an operator's error).
pub fn dead_letter(
    dlq_topic: &Arc<str>,
    topology: &str,
    source: &Source<'_>,
    failure: &Failure,
) -> DeadLetter {
    let mut letter = rejected(
        dlq_topic,
        topology,
        source,
        failure.kind(),
        failure.to_string(),
    );
    if let Some(id) = failure.schema_id() {
        letter.headers.push((SCHEMA_ID, id.to_string()));
    }
    if let Failure::Operator(e) = failure {
        letter.operator = Some(Arc::from(e.operator.as_str()));
    }
    letter
}

/// A record whose windows had all closed (or some of them, with hopping
/// windows), for the late topic.
pub fn late_record(
    late_topic: &Arc<str>,
    topology: &str,
    source: &Source<'_>,
    missed: &[Late],
) -> DeadLetter {
    let first = missed[0];
    let event_ms = first.event_ms;
    let message = format!(
        "event time {event_ms} ms is too late for {} window(s), first [{}, {}) ms: the watermark was {} ms, past its end plus grace",
        missed.len(),
        first.window.start_ms,
        first.window.end_ms,
        first.watermark_ms
    );
    let mut letter = rejected(late_topic, topology, source, "late", message);
    letter.headers.extend([
        (WINDOW_START, first.window.start_ms.to_string()),
        (WINDOW_END, first.window.end_ms.to_string()),
        (WATERMARK, first.watermark_ms.to_string()),
    ]);
    letter
}

/// A letter of any kind for `topic`.
pub fn rejected(
    topic: &Arc<str>,
    topology: &str,
    source: &Source<'_>,
    kind: &'static str,
    message: String,
) -> DeadLetter {
    let headers = vec![
        (KIND, kind.to_string()),
        (MESSAGE, message),
        (TOPIC, source.topic.to_string()),
        (PARTITION, source.partition.to_string()),
        (OFFSET, source.offset.to_string()),
        (TIMESTAMP, source.timestamp_ms.to_string()),
        (TOPOLOGY, topology.to_string()),
    ];
    DeadLetter {
        kind,
        topic: topic.clone(),
        key: source.key.map(<[u8]>::to_vec),
        value: source.value.map(<[u8]>::to_vec),
        timestamp_ms: source.timestamp_ms,
        original: source.headers.to_raw(),
        headers,
        operator: None,
    }
}
