//! The input a unit covers: per partition, its first offset and the next
//! one to read.

use rdkafka::{TopicPartitionList, error::KafkaError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unit {
    spans: Vec<(i32, i64, i64)>,
    records: usize,
}

impl Unit {
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        match self.spans.iter_mut().find(|(p, _, _)| *p == partition) {
            Some((_, _, next)) => *next = offset + 1,
            None => self.spans.push((partition, offset, offset + 1)),
        }
        self.records += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Input records in the unit.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Per partition, the offset after the unit's last record.
    pub fn next_offsets(&self) -> Vec<(i32, i64)> {
        self.spans.iter().map(|&(p, _, next)| (p, next)).collect()
    }

    /// Per partition, the unit's first offset: where to read again from.
    pub fn first_offsets(&self) -> Vec<(i32, i64)> {
        self.spans.iter().map(|&(p, first, _)| (p, first)).collect()
    }

    /// The positions to commit, as Kafka takes them.
    pub fn offsets(&self, topic: &str) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _, next) in &self.spans {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(next))?;
        }
        Ok(tpl)
    }

    pub fn clear(&mut self) {
        self.spans.clear();
        self.records = 0;
    }
}
