//! The last minute of a duration, for the console: a bounded ring of
//! samples with the time each was taken, and their quantiles over a span.
//! The histograms in `timings` are what Prometheus scrapes; this answers
//! "p99 over the last minute" without a Prometheus.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Samples kept at the most: a minute of one latency sample in 16 at
/// ~4 000 records/s; older ones go first at higher rates.
const KEPT: usize = 16_384;

#[derive(Debug, Default)]
pub struct Recent {
    samples: Mutex<VecDeque<(Instant, f64)>>,
}

/// Quantiles of the samples taken within a span.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Recent {
    pub fn record(&self, value: f64) {
        self.record_at(Instant::now(), value);
    }

    pub fn record_at(&self, at: Instant, value: f64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() == KEPT {
            s.pop_front();
        }
        s.push_back((at, value));
    }

    /// Of the samples taken in the `span` before `now`; `None` if there are none.
    pub fn quantiles(&self, now: Instant, span: Duration) -> Option<Quantiles> {
        let mut values: Vec<f64> = {
            let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            s.iter()
                .filter(|(at, _)| now.saturating_duration_since(*at) <= span)
                .map(|&(_, v)| v)
                .collect()
        };
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Quantiles {
            count: values.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: values[values.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_cover_only_the_span() {
        let r = Recent::default();
        let now = Instant::now();
        let old = now - Duration::from_secs(120);
        r.record_at(old, 10_000.0);
        for v in 1..=100 {
            r.record_at(now - Duration::from_millis(v), v as f64);
        }
        let q = r.quantiles(now, Duration::from_secs(60)).unwrap();
        assert_eq!(q.count, 100);
        assert_eq!(q.p50, 51.0);
        assert_eq!(q.p99, 99.0);
        assert_eq!(q.max, 100.0);
        assert_eq!(
            r.quantiles(now + Duration::from_secs(600), Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let r = Recent::default();
        let now = Instant::now();
        for v in 0..(KEPT + 10) {
            r.record_at(now, v as f64);
        }
        let q = r.quantiles(now, Duration::from_secs(1)).unwrap();
        assert_eq!(q.count, KEPT);
        assert_eq!(q.max, (KEPT + 9) as f64);
    }
}
