//! Records processed while the previous unit commits in the background.
//!
//! A transactional producer cannot send while its transaction commits, and a
//! commit is several round trips to the broker (about a tenth of the
//! worker's time on tansu). Rather than stand idle, the worker goes on
//! consuming and processing, holds the results here, and sends them into
//! the next unit once the commit is through; or drops them, and reads them
//! again, when it failed.

use super::{
    dlq::DeadLetter,
    refused::{SendFailure, send_results},
    txn::Txn,
};
use crate::topology::Output;

#[derive(Default)]
pub struct Pending {
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

impl Pending {
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

    /// Drops everything, giving where each partition must be read again from.
    pub fn discard(&mut self) -> Vec<(i32, i64)> {
        let mut from: Vec<(i32, i64)> = Vec::new();
        for r in &self.records {
            if !from.iter().any(|(p, _)| *p == r.partition) {
                from.push((r.partition, r.offset));
            }
        }
        self.records.clear();
        self.outputs.clear();
        from
    }

    /// Sends the held records into `txn`, in the order they were read, and
    /// gives the number of outputs sent. On an error the records not yet
    /// sent stay held, so that `discard` says where to read again from; the
    /// error names the record that failed.
    pub fn send_into(&mut self, txn: &mut Txn) -> Result<u64, (SendFailure, (i32, i64))> {
        let mut sent = 0;
        let mut done = 0;
        let result = (|| {
            for r in &self.records {
                send_results(txn, r.dead.as_ref(), &self.outputs[r.start..r.end])
                    .map_err(|f| (f, (r.partition, r.offset)))?;
                txn.consumed(r.partition, r.offset);
                sent += (r.end - r.start) as u64;
                done += 1;
            }
            Ok(())
        })();
        self.records.drain(..done);
        if self.records.is_empty() {
            self.outputs.clear();
        }
        result.map(|()| sent)
    }
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
    fn discard_gives_the_first_held_offset_of_each_partition() {
        let mut p = Pending::default();
        p.push(1, 10, &mut vec![out(1)], None);
        p.push(0, 5, &mut vec![out(2), out(3)], None);
        p.push(1, 11, &mut vec![], None);
        assert_eq!(p.len(), 3);
        assert_eq!(p.discard(), vec![(1, 10), (0, 5)]);
        assert_eq!(p.len(), 0);
        assert!(p.outputs.is_empty());
    }

    #[test]
    fn forgetting_revoked_partitions_keeps_the_others_in_order() {
        let mut p = Pending::default();
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
        assert!(p.len() == 0 && p.outputs.is_empty());
    }
}
