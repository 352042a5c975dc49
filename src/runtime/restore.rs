//! Reading a store's changelog partition back, from its beginning to its
//! end as committed (read_committed stops at the last stable offset: a
//! dead owner's open transaction is not part of the state), for restoring
//! the store when the partition is assigned.

use std::time::{Duration, Instant};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
};

use crate::{
    kafka::{KafkaConfig, QuietReader},
    state::{Change, Changelogs, ReadError},
};

/// How long a restore may go without reading anything before it fails
/// (and the claim is retried).
const STALLED: Duration = Duration::from_secs(60);

pub struct KafkaChangelogs {
    kafka: KafkaConfig,
    group: String,
    reader: Option<BaseConsumer<QuietReader>>,
}

impl KafkaChangelogs {
    pub fn new(kafka: &KafkaConfig, group: &str) -> Self {
        KafkaChangelogs {
            kafka: kafka.clone(),
            group: format!("{group}-restore"),
            reader: None,
        }
    }

    fn reader(&mut self) -> Result<&BaseConsumer<QuietReader>, KafkaError> {
        if self.reader.is_none() {
            self.reader = Some(
                self.kafka
                    .reader(&self.group)
                    // A partition read to its end leaves a fetch parked at
                    // the broker for fetch.wait.max.ms (500 ms by default),
                    // and the next partition's offsets queue behind it on
                    // the connection: 1 s a partition, for empty ones too.
                    .set("fetch.wait.max.ms", "10")
                    .create_with_context(QuietReader)?,
            );
        }
        Ok(self.reader.as_ref().expect("just created"))
    }
}

impl Changelogs for KafkaChangelogs {
    fn read(&mut self, topic: &str, partition: i32) -> Result<Vec<Change>, ReadError> {
        Ok(self.read_all(topic, partition)?)
    }
}

impl KafkaChangelogs {
    fn read_all(&mut self, topic: &str, partition: i32) -> Result<Vec<Change>, KafkaError> {
        let reader = self.reader()?;
        let (low, high) = reader.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high <= low {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        reader.assign(&tpl)?;
        let mut changes = Vec::new();
        let mut last_progress = Instant::now();
        let read = loop {
            match reader.poll(Duration::from_millis(200)) {
                None if last_progress.elapsed() > STALLED => {
                    break Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::OperationTimedOut,
                    ));
                }
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Ok(()),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => break Err(e),
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    if let Some(key) = m.key() {
                        changes.push(Change {
                            key: key.to_vec(),
                            value: m.payload().map(<[u8]>::to_vec),
                        });
                    }
                    if m.offset() + 1 >= high {
                        break Ok(());
                    }
                }
            }
        };
        let _ = reader.unassign();
        read.map(|()| changes)
    }
}
