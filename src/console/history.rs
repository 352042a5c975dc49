//! The console's memory of the last minutes: every topology's counters
//! sampled every two seconds, which gives the rates on the graph and the
//! charts over time, also to a page opened late.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use serde::Serialize;

use crate::stats::Stats;

pub const EVERY: Duration = Duration::from_secs(2);
/// Five minutes of samples.
const KEPT: usize = 150;
/// Rates are over this many samples (10 s).
const RATE_OVER: usize = 5;

/// One topology's counters at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub t: i64,
    #[serde(rename = "in")]
    pub records_in: u64,
    pub out: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub commits: u64,
    pub lag: i64,
    pub by_reason: BTreeMap<String, u64>,
    #[serde(skip)]
    pub sinks: Vec<u64>,
    #[serde(skip)]
    pub operators: Vec<u64>,
}

impl Sample {
    pub fn of(stats: &Stats, t: i64) -> Sample {
        Sample {
            t,
            records_in: stats.records_in.load(Relaxed),
            out: stats.records_out.load(Relaxed),
            dead_letters: stats.dead_letters.load(Relaxed),
            late: stats.late.load(Relaxed),
            commits: stats.commits.load(Relaxed),
            lag: stats.total_lag(),
            by_reason: stats
                .dead_letters_by_kind()
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            sinks: stats.sink_records(),
            operators: stats.operator_records(),
        }
    }
}

/// Per second, between two samples.
fn rate(new: u64, old: u64, ms: i64) -> f64 {
    if ms <= 0 {
        return 0.0;
    }
    new.saturating_sub(old) as f64 * 1000.0 / ms as f64
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    #[serde(rename = "in")]
    pub records_in: f64,
    pub out: f64,
    pub dead_letters: f64,
    pub late: f64,
    #[serde(skip)]
    pub sinks: Vec<f64>,
    #[serde(skip)]
    pub operators: Vec<f64>,
}

/// The samples of every topology, oldest first.
#[derive(Default)]
pub struct History {
    topologies: BTreeMap<String, VecDeque<Sample>>,
}

impl History {
    pub fn sample(&mut self, topologies: &[(String, Arc<Stats>)], t: i64) {
        for (name, stats) in topologies {
            let h = self.topologies.entry(name.clone()).or_default();
            if h.len() == KEPT {
                h.pop_front();
            }
            h.push_back(Sample::of(stats, t));
        }
    }

    pub fn of(&self, topology: &str) -> Vec<Sample> {
        self.topologies
            .get(topology)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Rates from the sample `RATE_OVER` back to `now` (zero before two samples).
    pub fn rates(&self, topology: &str, now: &Sample) -> Rates {
        let Some(h) = self.topologies.get(topology) else {
            return Rates::default();
        };
        let Some(old) = h.iter().rev().nth(RATE_OVER.min(h.len().saturating_sub(1))) else {
            return Rates::default();
        };
        let ms = now.t - old.t;
        let each = |new: &[u64], old: &[u64]| -> Vec<f64> {
            new.iter()
                .enumerate()
                .map(|(i, n)| rate(*n, old.get(i).copied().unwrap_or(0), ms))
                .collect()
        };
        Rates {
            records_in: rate(now.records_in, old.records_in, ms),
            out: rate(now.out, old.out, ms),
            dead_letters: rate(now.dead_letters, old.dead_letters, ms),
            late: rate(now.late, old.late, ms),
            sinks: each(&now.sinks, &old.sinks),
            operators: each(&now.operators, &old.operators),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_last_ten_seconds() {
        let stats = Arc::new(Stats::default());
        let all = vec![("t".to_string(), stats.clone())];
        let mut h = History::default();
        for i in 0..10i64 {
            stats.records_in.fetch_add(100, Relaxed);
            stats.count_nodes(&[50], &[]);
            h.sample(&all, i * 2000);
        }
        let now = Sample::of(&stats, 20_000);
        let r = h.rates("t", &now);
        // Five samples back from the newest: the one taken at 8 000 ms.
        assert_eq!(r.records_in, (1000 - 500) as f64 * 1000.0 / 12_000.0);
        assert_eq!(r.sinks, vec![(500 - 250) as f64 * 1000.0 / 12_000.0]);
        assert_eq!(h.of("t").len(), 10);
        assert_eq!(h.rates("other", &now).records_in, 0.0);
    }

    #[test]
    fn it_keeps_five_minutes() {
        let stats = Arc::new(Stats::default());
        let all = vec![("t".to_string(), stats)];
        let mut h = History::default();
        for i in 0..(KEPT as i64 + 7) {
            h.sample(&all, i);
        }
        let kept = h.of("t");
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].t, 7);
    }
}
