//! Processed records on their way from the worker's loop to its sender
//! thread: each input record's results and dead letter, in the order read,
//! and — where the task may write letters of its own (late records, a
//! stateful operator's refusals) — the record's key, value and headers,
//! copied into one buffer per chunk. Handed over a few
//! hundred at a time, so that the channel costs little per record.

use std::ops::Range;

use super::letters::{DeadLetter, RawHeader, Source, SourceHeaders};
use super::trace::Sample;
use crate::topology::Emitted;

#[derive(Default)]
pub struct Chunk {
    emitted: Vec<Emitted>,
    records: Vec<Record>,
    /// Input keys and values, when kept.
    bytes: Vec<u8>,
    /// Handed over because nothing more was ready to read: the sender may
    /// commit at once instead of waiting for the interval.
    pub drained: bool,
    /// The sampled records' steps so far (see `trace`).
    pub traced: Vec<Sample>,
    /// When it was handed over: its records were fetched before.
    pub handed: Option<std::time::Instant>,
}

/// One input record: `emitted[start..end]` and perhaps a dead letter.
struct Record {
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    start: usize,
    end: usize,
    dead: Option<DeadLetter>,
    input: Option<Kept>,
}

/// An input record as kept: ranges into `bytes`, and its headers.
struct Kept {
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Vec<RawHeader>,
}

/// An input record's key, value and headers.
pub type Whole<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Vec<RawHeader>);

/// One input record as the loop read it.
pub struct Read<'a> {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    /// Key, value and headers, when the sink needs them.
    pub input: Option<Whole<'a>>,
}

impl Chunk {
    /// Input records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Holds one input record's results; takes `emitted`'s contents.
    pub fn push(&mut self, read: Read<'_>, emitted: &mut Vec<Emitted>, dead: Option<DeadLetter>) {
        let start = self.emitted.len();
        self.emitted.append(emitted);
        let input = read.input.map(|(key, value, headers)| Kept {
            key: key.map(|k| self.keep(k)),
            value: value.map(|v| self.keep(v)),
            headers,
        });
        self.records.push(Record {
            partition: read.partition,
            offset: read.offset,
            timestamp_ms: read.timestamp_ms,
            start,
            end: self.emitted.len(),
            dead,
            input,
        });
    }

    fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// Drops the records of partitions handed to another member: not
    /// committed, they are read again by their new owner.
    pub fn forget(&mut self, revoked: impl Fn(i32) -> bool) {
        self.records.retain(|r| !revoked(r.partition));
        self.traced.retain(|s| !revoked(s.partition));
        if self.records.is_empty() {
            self.emitted.clear();
            self.bytes.clear();
        }
    }

    /// Drops the records, keeping the capacity.
    pub fn clear(&mut self) {
        self.drained = false;
        self.handed = None;
        self.traced.clear();
        self.records.clear();
        self.emitted.clear();
        self.bytes.clear();
    }

    /// Hands each record in order to `f`, with its results to take
    /// from, until `f` says stop (false).
    pub fn each(&mut self, topic: &str, mut f: impl FnMut(usize, Held<'_>) -> bool) {
        // Records' ranges are in order and disjoint, with gaps where
        // records were forgotten.
        let mut rest: &mut [Emitted] = &mut self.emitted;
        let mut at = 0;
        for (i, r) in self.records.iter().enumerate() {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
            let (mine, tail) = tail.split_at_mut(r.end - r.start);
            rest = tail;
            at = r.end;
            let slice = |range: &Option<Range<usize>>| range.clone().map(|x| &self.bytes[x]);
            let (key, value, headers) = match &r.input {
                Some(k) => (slice(&k.key), slice(&k.value), &k.headers[..]),
                None => (None, None, &[][..]),
            };
            let held = Held {
                source: Source {
                    topic,
                    partition: r.partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key,
                    value,
                    headers: SourceHeaders::Copied(headers),
                },
                dead: r.dead.as_ref(),
                emitted: mine,
            };
            if !f(i, held) {
                return;
            }
        }
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

/// One input record's results, to be taken.
pub struct Held<'a> {
    pub source: Source<'a>,
    pub dead: Option<&'a DeadLetter>,
    pub emitted: &'a mut [Emitted],
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::topology::{Output, Payload, Target};

    fn out(n: u8) -> Emitted {
        Emitted {
            to: Target::Sink(0),
            payload: Payload::Record(Output {
                topic: Arc::from("t"),
                key: None,
                value: vec![n],
                timestamp_ms: 0,
            }),
        }
    }

    /// (partition, offset, results) of each record.
    fn seen(p: &mut Chunk) -> Vec<(i32, i64, usize)> {
        let mut v = Vec::new();
        p.each("in", |_, h| {
            v.push((h.source.partition, h.source.offset, h.emitted.len()));
            true
        });
        v
    }

    fn read(partition: i32, offset: i64) -> Read<'static> {
        Read {
            partition,
            offset,
            timestamp_ms: 0,
            input: None,
        }
    }

    #[test]
    fn first_offsets_of_each_partition_from_a_record_on() {
        let mut p = Chunk::default();
        p.push(read(1, 10), &mut vec![out(1)], None);
        p.push(read(0, 5), &mut vec![out(2), out(3)], None);
        p.push(read(1, 11), &mut vec![], None);
        assert_eq!(p.len(), 3);
        assert_eq!(p.first_offsets(0), vec![(1, 10), (0, 5)]);
        assert_eq!(p.first_offsets(1), vec![(0, 5), (1, 11)]);
        let emitted: Vec<usize> = seen(&mut p).into_iter().map(|s| s.2).collect();
        assert_eq!(emitted, vec![1, 2, 0]);
    }

    #[test]
    fn forgetting_revoked_partitions_keeps_the_others_in_order() {
        let mut p = Chunk::default();
        p.push(read(1, 10), &mut vec![out(1)], None);
        p.push(read(0, 5), &mut vec![out(2)], None);
        p.push(read(1, 11), &mut vec![out(3)], None);
        p.push(read(2, 7), &mut vec![out(4)], None);
        p.forget(|partition| partition == 1);
        assert_eq!(seen(&mut p), vec![(0, 5, 1), (2, 7, 1)]);
        let mut values: Vec<Vec<u8>> = Vec::new();
        p.each("in", |_, h| {
            for e in h.emitted.iter() {
                if let Payload::Record(o) = &e.payload {
                    values.push(o.value.clone());
                }
            }
            true
        });
        assert_eq!(values, vec![vec![2], vec![4]]);
        p.forget(|_| true);
        assert!(p.is_empty() && p.emitted.is_empty());
    }

    #[test]
    fn kept_inputs_come_back_whole() {
        let mut p = Chunk::default();
        let headers = vec![("h".to_string(), Some(vec![0, 255]))];
        p.push(
            Read {
                partition: 0,
                offset: 3,
                timestamp_ms: 9,
                input: Some((Some(b"k"), None, headers.clone())),
            },
            &mut vec![],
            None,
        );
        p.push(
            Read {
                partition: 0,
                offset: 4,
                timestamp_ms: 9,
                input: Some((None, Some(b"value"), vec![])),
            },
            &mut vec![],
            None,
        );
        let mut held = Vec::new();
        p.each("in", |_, h| {
            held.push((
                h.source.key.map(<[u8]>::to_vec),
                h.source.value.map(<[u8]>::to_vec),
                h.source.headers.to_raw(),
            ));
            true
        });
        assert_eq!(held[0], (Some(b"k".to_vec()), None, headers));
        assert_eq!(held[1], (None, Some(b"value".to_vec()), vec![]));
    }
}
