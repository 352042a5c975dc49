//! Where a record's latency goes: for one input record in `every`, the
//! wall-clock time of each step the runtime takes it through — fetched,
//! processed, handed to the task thread, written to the producer, its
//! unit's commit begun, the unit's deliveries acknowledged, committed.
//! Off unless a `Trace` is given (the benchmark gives one); a sampled
//! record costs a few clock reads, the others one branch.
//!
//! Delivery is the unit's, not the record's: per-record delivery reports
//! are off (they cost the worker a tenth of its time), so the runtime
//! learns that a record was acknowledged when the commit's flush returns.

use crate::commit::CommitParts;
use std::{
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

/// One sampled record's steps, µs since the epoch (0: not reached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub partition: i32,
    pub offset: i64,
    /// The input record's timestamp, ms.
    pub record_ms: i64,
    pub fetched_us: i64,
    pub processed_us: i64,
    pub handed_us: i64,
    pub written_us: i64,
    pub commit_begun_us: i64,
    pub delivered_us: i64,
    pub committed_us: i64,
}

/// The steps of [`Sample`], in order, as written and read back.
pub const STEPS: [&str; 7] = [
    "fetched",
    "processed",
    "handed",
    "written",
    "commit begun",
    "delivered",
    "committed",
];

impl Sample {
    fn fields(&self) -> [i64; 10] {
        [
            self.partition as i64,
            self.offset,
            self.record_ms,
            self.fetched_us,
            self.processed_us,
            self.handed_us,
            self.written_us,
            self.commit_begun_us,
            self.delivered_us,
            self.committed_us,
        ]
    }

    /// The steps' times, µs, in the order of [`STEPS`].
    pub fn steps(&self) -> [i64; 7] {
        let f = self.fields();
        [f[3], f[4], f[5], f[6], f[7], f[8], f[9]]
    }

    /// One line: the fields separated by spaces.
    pub fn line(&self) -> String {
        self.fields().map(|f| f.to_string()).join(" ")
    }

    /// A line written by [`Sample::line`].
    pub fn parse(line: &str) -> Option<Sample> {
        let f: Vec<i64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [partition, offset, record_ms, a, b, c, d, e, g, h] = f[..] else {
            return None;
        };
        Some(Sample {
            partition: i32::try_from(partition).ok()?,
            offset,
            record_ms,
            fetched_us: a,
            processed_us: b,
            handed_us: c,
            written_us: d,
            commit_begun_us: e,
            delivered_us: g,
            committed_us: h,
        })
    }
}

/// The committed samples of a run, kept up to a bound.
#[derive(Debug)]
pub struct Trace {
    every: u64,
    kept: Mutex<Vec<Sample>>,
}

/// At most this many samples are kept: a long run samples its start.
const KEPT: usize = 1 << 20;

impl Trace {
    /// Samples one record in `every` (at least 1).
    pub fn new(every: u64) -> Trace {
        Trace {
            every: every.max(1),
            kept: Mutex::new(Vec::new()),
        }
    }

    /// Whether the `n`th record read (from 1) is sampled.
    pub fn samples(&self, n: u64) -> bool {
        n.is_multiple_of(self.every)
    }

    /// Keeps committed samples.
    pub fn keep(&self, samples: impl IntoIterator<Item = Sample>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let room = KEPT.saturating_sub(kept.len());
        kept.extend(samples.into_iter().take(room));
    }

    /// A unit committed: its samples' last steps are known. Begun is when
    /// the commit started; the parts, where the outbox measured them, say
    /// when its deliveries were in (the end of the flush).
    pub fn committed(&self, unit: &mut Vec<Sample>, begun_us: i64, parts: Option<CommitParts>) {
        let now = now_us();
        let delivered = match parts {
            Some(p) => now - (p.send_offsets + p.commit).as_micros() as i64,
            None => now,
        };
        for s in unit.iter_mut() {
            s.commit_begun_us = begun_us;
            s.delivered_us = delivered.max(begun_us);
            s.committed_us = now;
        }
        self.keep(unit.drain(..));
    }

    /// Every sample kept so far.
    pub fn taken(&self) -> Vec<Sample> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Now, µs since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reads_back_as_written() {
        let s = Sample {
            partition: 3,
            offset: 42,
            record_ms: 1_700_000_000_000,
            fetched_us: 1,
            processed_us: 2,
            handed_us: 3,
            written_us: 4,
            commit_begun_us: 5,
            delivered_us: 6,
            committed_us: 7,
        };
        assert_eq!(Sample::parse(&s.line()), Some(s));
        assert_eq!(s.steps(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Sample::parse("1 2 3"), None);
        assert_eq!(Sample::parse("1 2 3 4 5 6 7 8 9 x"), None);
    }

    #[test]
    fn one_in_every_is_sampled_and_the_kept_are_bounded() {
        let t = Trace::new(4);
        assert_eq!((1..=12).filter(|&n| t.samples(n)).count(), 3);
        t.keep(std::iter::repeat_n(Sample::default(), KEPT + 5));
        assert_eq!(t.taken().len(), KEPT);
    }
}
