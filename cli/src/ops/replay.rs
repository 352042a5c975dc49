//! Copying chosen dead letters back to their source topic, exactly once:
//! the copies and the replay's own consumer-group offsets on the letters
//! topic commit in one transaction per batch, so a replay run twice copies
//! nothing twice, and one that fails half-way copies nothing of the batch
//! it was in. A copy is the original record — key, value (null stays null),
//! headers without sluice's — plus `sluice.replayed.from`, to the partition
//! it came from; a copy that fails again goes back to the dead-letter topic
//! with that header, since workers keep a record's headers.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::Consumer,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{BaseProducer, BaseRecord, Producer},
};

use super::{
    NO_REASON, OpsError, REPLAYED_FROM,
    read::{ReadOptions, Reader, Start, header},
    view,
};
use sluice::{kafka::KafkaConfig, runtime::letters};

const CALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only letters of these reasons (`sluice.error.kind`); all when empty.
    pub reasons: Vec<String>,
    /// Only letters whose record timestamp is at or after / before these (ms).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Say what would be copied; copy and commit nothing.
    pub dry_run: bool,
    /// Copy letters of earlier copies too (`sluice.replayed.from`): by
    /// default a copy that failed again is left, so that replays do not
    /// go round in a loop.
    pub include_replayed: bool,
    /// The replay's consumer group: where it left off.
    pub group: String,
    /// Letters per transaction.
    pub batch: usize,
}

/// The group a replay of these reasons uses unless told otherwise: a
/// replay of other reasons has its own progress.
pub fn default_group(topic: &str, reasons: &[String]) -> String {
    let mut r = reasons.to_vec();
    r.sort();
    r.dedup();
    let which = if r.is_empty() {
        "all".to_string()
    } else {
        r.join("+")
    };
    format!("sluice-replay.{topic}.{which}")
}

/// One letter copied (or, in a dry run, to be).
#[derive(Debug, Clone)]
pub struct Copied {
    pub letter: (i32, i64),
    pub reason: String,
    pub to_topic: String,
    pub to_partition: Option<i32>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Report {
    pub copied: BTreeMap<String, u64>,
    /// Letters read but not chosen, by why: their reason, out of the time
    /// range, or not a sluice letter. The group is past them.
    pub passed_over: BTreeMap<String, u64>,
}

/// Runs the replay; `copied` hears of each copy once it is committed.
/// Blocking.
pub fn replay(
    kafka: &KafkaConfig,
    topic: &str,
    opts: &ReplayOptions,
    mut copied: impl FnMut(&Copied),
) -> Result<Report, OpsError> {
    let read = ReadOptions {
        start: Start::Committed,
        follow: false,
        committed: true,
        group: Some(opts.group.clone()),
    };
    let mut reader = Reader::open(kafka, topic, &read)?;
    let producer: Option<BaseProducer> = if opts.dry_run {
        None
    } else {
        // The group names the transactional id: two replays of one group
        // at once fence each other instead of copying twice.
        let p: BaseProducer = kafka.producer(Some(&opts.group)).create()?;
        p.init_transactions(CALL)?;
        Some(p)
    };
    let mut report = Report::default();
    let mut done = false;
    while !done {
        let mut batch: Vec<Copied> = Vec::new();
        let mut next: HashMap<i32, i64> = HashMap::new();
        // Beginning is local to the producer: a batch that reads nothing
        // aborts it without a word to the brokers.
        if let Some(p) = &producer {
            p.begin_transaction()?;
        }
        while batch.len() < opts.batch.max(1) {
            let Some(m) = reader.next_record()? else {
                done = true;
                break;
            };
            next.insert(m.partition(), m.offset() + 1);
            let Some(c) = choose(&m, opts, &mut report) else {
                continue;
            };
            if let Some(p) = &producer {
                send(p, &m, &c, topic)?;
            }
            batch.push(c);
        }
        if let Some(p) = &producer {
            let committed = if next.is_empty() {
                p.abort_transaction(CALL).map_err(OpsError::from)
            } else {
                commit(p, &reader, topic, &next)
            };
            if let Err(e) = committed {
                let _ = p.abort_transaction(CALL);
                return Err(e);
            }
        }
        for c in &batch {
            *report.copied.entry(c.reason.clone()).or_default() += 1;
            copied(c);
        }
    }
    Ok(report)
}

/// The copy a letter makes, if it is chosen.
fn choose(m: &OwnedMessage, opts: &ReplayOptions, report: &mut Report) -> Option<Copied> {
    let mut pass = |why: String| {
        *report.passed_over.entry(why).or_default() += 1;
        None
    };
    let Some(source) = header(m, letters::TOPIC) else {
        return pass(format!("not a sluice letter (no {})", letters::TOPIC));
    };
    if !opts.include_replayed && header(m, REPLAYED_FROM).is_some() {
        return pass("failed again after a replay (--include-replayed copies it)".into());
    }
    let reason = header(m, letters::KIND).unwrap_or(NO_REASON);
    if !opts.reasons.is_empty() && !opts.reasons.iter().any(|r| r == reason) {
        return pass(format!("reason {reason}"));
    }
    let ts = view::timestamp_ms(m);
    let before = opts.since_ms.is_some_and(|s| ts.is_some_and(|t| t < s));
    let after = opts.until_ms.is_some_and(|u| ts.is_some_and(|t| t >= u));
    if before || after {
        return pass("outside --since/--until".into());
    }
    Some(Copied {
        letter: (m.partition(), m.offset()),
        reason: reason.to_string(),
        to_topic: source.to_string(),
        to_partition: header(m, letters::PARTITION).and_then(|p| p.parse().ok()),
    })
}

fn send(p: &BaseProducer, m: &OwnedMessage, c: &Copied, topic: &str) -> Result<(), OpsError> {
    let from = format!("{topic}/{}/{}", c.letter.0, c.letter.1);
    let mut headers = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for h in h.iter().filter(|h| !h.key.starts_with("sluice.")) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers = headers.insert(Header {
        key: REPLAYED_FROM,
        value: Some(from.as_bytes()),
    });
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&c.to_topic).headers(headers);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(v) = m.payload() {
        record = record.payload(v);
    }
    if let Some(part) = c.to_partition {
        record = record.partition(part);
    }
    if let Some(ts) = view::timestamp_ms(m) {
        record = record.timestamp(ts);
    }
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                p.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn commit(
    p: &BaseProducer,
    reader: &Reader,
    topic: &str,
    next: &HashMap<i32, i64>,
) -> Result<(), OpsError> {
    let mut tpl = TopicPartitionList::new();
    for (part, o) in next {
        tpl.add_partition_offset(topic, *part, Offset::Offset(*o))?;
    }
    let group = reader
        .consumer()
        .group_metadata()
        .ok_or_else(|| OpsError::Kafka(KafkaError::Global(RDKafkaErrorCode::InvalidGroupId)))?;
    p.send_offsets_to_transaction(&tpl, &group, CALL)?;
    p.commit_transaction(CALL)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_choice_of_reasons_has_its_own_group() {
        let g = |r: &[&str]| {
            default_group(
                "t.dlq",
                &r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(g(&[]), "sluice-replay.t.dlq.all");
        assert_eq!(g(&["b", "a", "b"]), "sluice-replay.t.dlq.a+b");
    }
}
