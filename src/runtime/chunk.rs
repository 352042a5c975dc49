//! Processed records on their way from the worker's loop to its sender
//! thread: each input record's outputs and dead letter, in the order read.
//! Handed over a few hundred at a time, so that the channel costs little
//! per record.

use super::dlq::DeadLetter;
use crate::topology::Output;

#[derive(Default)]
pub struct Chunk {
    outputs: Vec<Output>,
    records: Vec<Record>,
}

/// One input record's results: `outputs[start..end]` and perhaps a dead letter.
struct Record {
    partition: i32,
    offset: i64,
    start: usize,
    end: usize,
    dead: Option<DeadLetter>,
}

impl Chunk {
    /// Input records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Holds one input record's results; takes `outputs`' contents.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        outputs: &mut Vec<Output>,
        dead: Option<DeadLetter>,
    ) {
        let start = self.outputs.len();
        self.outputs.append(outputs);
        self.records.push(Record {
            partition,
            offset,
            start,
            end: self.outputs.len(),
            dead,
        });
    }

    /// Drops the records of partitions handed to another member: not
    /// committed, they are read again by their new owner.
    pub fn forget(&mut self, revoked: impl Fn(i32) -> bool) {
        self.records.retain(|r| !revoked(r.partition));
        if self.records.is_empty() {
            self.outputs.clear();
        }
    }

    /// Drops the records, keeping the capacity.
    pub fn clear(&mut self) {
        self.records.clear();
        self.outputs.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in order: (partition, offset, dead letter, outputs).
    pub fn iter(&self) -> impl Iterator<Item = Held<'_>> {
        self.records.iter().map(|r| Held {
            partition: r.partition,
            offset: r.offset,
            dead: r.dead.as_ref(),
            outputs: &self.outputs[r.start..r.end],
        })
    }

    /// Where each partition's first record in `records[from..]` is.
    pub fn first_offsets(&self, from: usize) -> Vec<(i32, i64)> {
        let mut first: Vec<(i32, i64)> = Vec::new();
        for r in self.records.iter().skip(from) {
            if !first.iter().any(|(p, _)| *p == r.partition) {
                first.push((r.partition, r.offset));
            }
        }
        first
    }
}

/// One input record's results.
pub struct Held<'a> {
    pub partition: i32,
    pub offset: i64,
    pub dead: Option<&'a DeadLetter>,
    pub outputs: &'a [Output],
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn out(n: u8) -> Output {
        Output {
            topic: Arc::from("t"),
            key: None,
            value: vec![n],
            timestamp_ms: 0,
        }
    }

    #[test]
    fn first_offsets_of_each_partition_from_a_record_on() {
        let mut p = Chunk::default();
        p.push(1, 10, &mut vec![out(1)], None);
        p.push(0, 5, &mut vec![out(2), out(3)], None);
        p.push(1, 11, &mut vec![], None);
        assert_eq!(p.len(), 3);
        assert_eq!(p.first_offsets(0), vec![(1, 10), (0, 5)]);
        assert_eq!(p.first_offsets(1), vec![(0, 5), (1, 11)]);
        let outputs: Vec<usize> = p.iter().map(|h| h.outputs.len()).collect();
        assert_eq!(outputs, vec![1, 2, 0]);
    }

    #[test]
    fn forgetting_revoked_partitions_keeps_the_others_in_order() {
        let mut p = Chunk::default();
        p.push(1, 10, &mut vec![out(1)], None);
        p.push(0, 5, &mut vec![out(2)], None);
        p.push(1, 11, &mut vec![out(3)], None);
        p.push(2, 7, &mut vec![out(4)], None);
        p.forget(|partition| partition == 1);
        let kept: Vec<(i32, i64, Vec<u8>)> = p
            .records
            .iter()
            .map(|r| {
                let values = p.outputs[r.start..r.end]
                    .iter()
                    .flat_map(|o| o.value.clone())
                    .collect();
                (r.partition, r.offset, values)
            })
            .collect();
        assert_eq!(kept, vec![(0, 5, vec![2]), (2, 7, vec![4])]);
        p.forget(|_| true);
        assert!(p.is_empty() && p.outputs.is_empty());
    }
}
