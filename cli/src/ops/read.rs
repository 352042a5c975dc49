//! Reading a topic from chosen positions to its end (or on, following it),
//! read_committed unless told otherwise.

use std::{collections::BTreeSet, time::Duration};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Message, OwnedMessage},
};

use super::OpsError;
use sluice::kafka::KafkaConfig;

const CALL: Duration = Duration::from_secs(10);

/// Where each partition starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Beginning,
    /// The last N records of each partition (`tail`'s default).
    Last(i64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
    /// Only these partitions, from these offsets.
    Offsets(Vec<(i32, i64)>),
    /// Where the reader's group left off; the beginning where it has not.
    Committed,
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub start: Start,
    /// Wait for new records at the end instead of stopping there.
    pub follow: bool,
    /// read_committed (the default): records of aborted transactions, and
    /// of open ones, are not shown.
    pub committed: bool,
    /// A consumer group (for `Start::Committed`); a throw-away one otherwise.
    pub group: Option<String>,
}

/// Records of one topic, in each partition's order.
pub struct Reader {
    consumer: BaseConsumer<Quiet>,
    pub topic: String,
    /// Partitions not yet read to their end.
    open: BTreeSet<i32>,
    follow: bool,
    /// Every partition of the topic, whether read or not.
    pub partitions: Vec<i32>,
}

impl Reader {
    pub fn open(kafka: &KafkaConfig, topic: &str, opts: &ReadOptions) -> Result<Reader, OpsError> {
        let mut config = kafka.client();
        let group = opts
            .group
            .clone()
            .unwrap_or_else(|| format!("sluice-tail-{}", uuid::Uuid::new_v4()));
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set(
                "isolation.level",
                if opts.committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        let consumer: BaseConsumer<Quiet> = config.create_with_context(Quiet)?;
        let md = consumer.fetch_metadata(Some(topic), CALL)?;
        let t = md
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| OpsError::NoTopic(topic.to_string()))?;
        let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        let mut tpl = TopicPartitionList::new();
        match &opts.start {
            Start::Beginning => {
                for p in &partitions {
                    tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
                }
            }
            Start::Last(n) => {
                for p in &partitions {
                    let (low, high) = consumer.fetch_watermarks(topic, *p, CALL)?;
                    tpl.add_partition_offset(topic, *p, Offset::Offset((high - n).max(low)))?;
                }
            }
            Start::Time(ms) => {
                let mut times = TopicPartitionList::new();
                for p in &partitions {
                    times.add_partition_offset(topic, *p, Offset::Offset(*ms))?;
                }
                tpl = consumer.offsets_for_times(times, CALL)?;
            }
            Start::Offsets(at) => {
                for (p, o) in at {
                    if !partitions.contains(p) {
                        return Err(OpsError::NoPartition {
                            topic: topic.to_string(),
                            partition: *p,
                            count: partitions.len(),
                        });
                    }
                    tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
                }
            }
            Start::Committed => {
                let mut all = TopicPartitionList::new();
                for p in &partitions {
                    all.add_partition(topic, *p);
                }
                let committed = consumer.committed_offsets(all, CALL)?;
                for p in &partitions {
                    let at = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    tpl.add_partition_offset(topic, *p, at)?;
                }
            }
        }
        // A time after the last record gives the end: nothing to read there.
        let open = tpl.elements().iter().map(|e| e.partition()).collect();
        consumer.assign(&tpl)?;
        Ok(Reader {
            consumer,
            topic: topic.to_string(),
            open,
            follow: opts.follow,
            partitions,
        })
    }

    /// The next record; `None` once every partition is read to its end
    /// (never, when following). Blocking: call from a blocking thread.
    pub fn next_record(&mut self) -> Result<Option<OwnedMessage>, OpsError> {
        loop {
            if self.open.is_empty() && !self.follow {
                return Ok(None);
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Ok(m)) => return Ok(Some(m.detach())),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.open.remove(&p);
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The consumer, for the replay's transactional offsets.
    pub fn consumer(&self) -> &BaseConsumer<Quiet> {
        &self.consumer
    }
}

/// The end of a partition reaches the error callback too, which rdkafka's
/// default context logs as an error: a tool reading to the end says nothing
/// of it, and of librdkafka's retries only at debug (a refusal or an outage
/// ends in the call's own error).
pub use sluice::kafka::QuietReader as Quiet;

/// A header's value as text, if it is there and UTF-8.
pub fn header<'a>(m: &'a impl Message, key: &str) -> Option<&'a str> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    h.iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Reads on a blocking thread (librdkafka's poll blocks), handing records
/// over a bounded channel; dropping the receiver stops the reading.
pub fn spawn(
    kafka: KafkaConfig,
    topic: String,
    opts: ReadOptions,
) -> (
    tokio::sync::mpsc::Receiver<OwnedMessage>,
    tokio::task::JoinHandle<Result<(), OpsError>>,
) {
    let (records, rx) = tokio::sync::mpsc::channel(256);
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = Reader::open(&kafka, &topic, &opts)?;
        while let Some(m) = reader.next_record()? {
            if records.blocking_send(m).is_err() {
                break;
            }
        }
        Ok(())
    });
    (rx, reading)
}
