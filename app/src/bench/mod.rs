//! `sluice bench`: throughput and latency figures, in-process and through a
//! broker, against a raw librdkafka pass-through as the ceiling.

pub mod compare;
pub mod cpu;
pub mod e2e;
pub mod floor;
pub mod inprocess;
pub mod readings;
pub mod rounds;
pub mod runtime;
pub mod table;
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
        Figures {
            name: name.to_string(),
            records: lat.len() as u64,
            elapsed,
            latency: Some((quantile(&lat, 0.50), quantile(&lat, 0.99))),
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

/// The `q` quantile (0–1) of `sorted`, ascending; the default when empty.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

/// The topology's latency p50 and p99 as multiples of others' (a run's
/// figures where it had a latency run).
pub fn latency_ratios(of: Option<&Figures>, to: &[(&str, Option<&Figures>)]) -> Option<String> {
    let (p50, p99) = of?.latency?;
    let parts: Vec<String> = to
        .iter()
        .filter_map(|(name, f)| {
            let (b50, b99) = (*f)?.latency?;
            let x = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-6);
            Some(format!(
                "{name}: p50 ×{:.2}, p99 ×{:.2}",
                x(p50, b50),
                x(p99, b99)
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("sluice's topology against {}", parts.join("; ")))
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

    #[test]
    fn latency_ratios_name_each_baseline() {
        let f = |p50, p99| Figures {
            name: "x".into(),
            records: 1,
            elapsed: Duration::from_secs(1),
            latency: Some((Duration::from_millis(p50), Duration::from_millis(p99))),
        };
        let (sluice, floor) = (f(20, 100), f(10, 25));
        let line = latency_ratios(
            Some(&sluice),
            &[("the floor", Some(&floor)), ("none", None)],
        );
        assert_eq!(
            line.as_deref(),
            Some("sluice's topology against the floor: p50 ×2.00, p99 ×4.00")
        );
        assert_eq!(latency_ratios(None, &[("the floor", Some(&floor))]), None);
    }
}
