//! Kafka as the test driver keeps it: topics as lists of records per
//! partition, a producer whose records become visible when its unit
//! commits (as a read_committed reader sees them), and the group's
//! committed offsets with their metadata.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::ConsumerGroupMetadata,
    error::{KafkaError, KafkaResult},
};

use crate::{
    runtime::{Committed, DeadLetter, Group, Outbox},
    state::{Change, Changelogs, ReadError},
    topology::Output,
};

/// A record as the driver's topics hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: i64,
}

#[derive(Default)]
pub struct Inner {
    /// Committed records by topic.
    pub topics: HashMap<String, Vec<Record>>,
    /// The group's committed offsets: partition → (offset, metadata).
    pub offsets: BTreeMap<i32, (i64, String)>,
    /// Transactions committed, and aborted.
    pub commits: u64,
    pub aborts: u64,
    /// Commits still to take effect and then report a failure, as a
    /// `commit_transaction` does that times out after the coordinator
    /// took it (runtime tests).
    pub ambiguous_commits: u32,
}

/// The driver's Kafka, shared by its producer, keeper and changelogs.
#[derive(Clone, Default)]
pub struct Memory(pub Arc<Mutex<Inner>>);

impl Memory {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The unit's producer: records wait until the unit commits.
pub struct MemoryOutbox {
    pub kafka: Memory,
    pending: Vec<(String, Record)>,
}

impl MemoryOutbox {
    pub fn new(kafka: Memory) -> Self {
        MemoryOutbox {
            kafka,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, topic: &str, r: Record) {
        self.pending.push((topic.to_string(), r));
    }

    fn publish(&mut self) {
        let mut k = self.kafka.lock();
        for (topic, r) in self.pending.drain(..) {
            k.topics.entry(topic).or_default().push(r);
        }
    }
}

impl Outbox for MemoryOutbox {
    fn send(&mut self, out: &Output) -> KafkaResult<()> {
        let r = Record {
            partition: None,
            key: out.key.clone(),
            value: Some(out.value.clone()),
            headers: Vec::new(),
            timestamp_ms: out.timestamp_ms,
        };
        self.push(&out.topic, r);
        Ok(())
    }

    fn send_letter(&mut self, d: &DeadLetter) -> KafkaResult<()> {
        let mut headers = d.original.clone();
        headers.extend(
            d.headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec()))),
        );
        let r = Record {
            partition: None,
            key: d.key.clone(),
            value: d.value.clone(),
            headers,
            timestamp_ms: d.timestamp_ms,
        };
        self.push(&d.topic, r);
        Ok(())
    }

    fn send_to(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> KafkaResult<()> {
        let r = Record {
            partition: Some(partition),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
            timestamp_ms,
        };
        self.push(topic, r);
        Ok(())
    }

    fn flush(&mut self) -> KafkaResult<()> {
        self.publish();
        Ok(())
    }

    fn commit(&mut self, offsets: &TopicPartitionList, _: &dyn Group) -> KafkaResult<()> {
        self.publish();
        let mut k = self.kafka.lock();
        for e in offsets.elements() {
            if let Offset::Offset(o) = e.offset() {
                k.offsets
                    .insert(e.partition(), (o, e.metadata().to_string()));
            }
        }
        k.commits += 1;
        if k.ambiguous_commits > 0 {
            k.ambiguous_commits -= 1;
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        Ok(())
    }

    fn abort(&mut self) {
        if !self.pending.is_empty() {
            self.kafka.lock().aborts += 1;
        }
        self.pending.clear();
    }

    fn poison(&mut self, _: KafkaError) {}
}

/// The group, as the driver's single member sees it.
pub struct MemoryGroup;

impl Group for MemoryGroup {
    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        None
    }

    fn commit_offsets(&self, _: &TopicPartitionList, _: bool) -> KafkaResult<()> {
        Ok(())
    }
}

impl Committed for Memory {
    fn committed(&self, tpl: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        let k = self.lock();
        let mut out = TopicPartitionList::new();
        for e in tpl.elements() {
            let (offset, metadata) = match k.offsets.get(&e.partition()) {
                Some((o, m)) => (Offset::Offset(*o), m.clone()),
                None => (Offset::Invalid, String::new()),
            };
            out.add_partition_offset(e.topic(), e.partition(), offset)?;
            if let Some(mut p) = out.find_partition(e.topic(), e.partition()) {
                p.set_metadata(metadata);
            }
        }
        Ok(out)
    }
}

impl Changelogs for Memory {
    fn read(&mut self, topic: &str, partition: i32) -> Result<Vec<Change>, ReadError> {
        let k = self.lock();
        Ok(k.topics
            .get(topic)
            .into_iter()
            .flatten()
            .filter(|r| r.partition == Some(partition))
            .filter_map(|r| {
                Some(Change {
                    key: r.key.clone()?,
                    value: r.value.clone(),
                })
            })
            .collect())
    }
}
