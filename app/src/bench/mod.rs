//! `sluice bench`: throughput and latency figures, in-process and through a
//! broker, against a raw librdkafka pass-through as the ceiling.

pub mod compare;
pub mod cpu;
pub mod e2e;
pub mod inprocess;
pub mod readings;
pub mod rounds;
pub mod runtime;
pub mod windows;

use std::{fmt, time::Duration};

/// What one benchmark measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: String,
    pub records: u64,
    pub elapsed: Duration,
    /// p50 and p99; none where latency would only measure a backlog.
    pub latency: Option<(Duration, Duration)>,
}

impl Figures {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// From per-record latencies (any order).
    pub fn from_latencies(name: &str, elapsed: Duration, mut lat: Vec<Duration>) -> Figures {
        lat.sort_unstable();
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Figures {
            name: name.to_string(),
            records: lat.len() as u64,
            elapsed,
            latency: Some((pick(0.50), pick(0.99))),
        }
    }

    /// Throughput only.
    pub fn throughput(name: &str, records: u64, elapsed: Duration) -> Figures {
        Figures {
            name: name.to_string(),
            records,
            elapsed,
            latency: None,
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<44} {:>9} records {:>8.2} s {:>12.0} records/s",
            self.name,
            self.records,
            self.elapsed.as_secs_f64(),
            self.rate(),
        )?;
        match self.latency {
            Some((p50, p99)) => write!(f, "   p50 {p50:>10.3?}   p99 {p99:>10.3?}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let lat: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let f = Figures::from_latencies("x", Duration::from_secs(2), lat);
        assert_eq!(
            f.latency,
            Some((Duration::from_millis(51), Duration::from_millis(100)))
        );
        assert_eq!(f.rate(), 50.0);
    }
}
