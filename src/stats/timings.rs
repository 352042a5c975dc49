//! Duration histograms a worker records: processing latency (event time to
//! output, one record in `SAMPLE`), batch and commit durations, PostgreSQL
//! writes and rebalances.

use std::time::Duration;

use opentelemetry::{
    KeyValue,
    metrics::{Histogram, Meter},
};

/// Every this many records one latency is recorded: a histogram update
/// costs more than the rest of a record's bookkeeping.
pub const SAMPLE: u64 = 16;

/// Seconds, from a millisecond to five minutes.
const BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone)]
pub struct Timings {
    attrs: [KeyValue; 1],
    latency: Histogram<f64>,
    batch: Histogram<f64>,
    commit: Histogram<f64>,
    postgres: Histogram<f64>,
    rebalance: Histogram<f64>,
}

impl std::fmt::Debug for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timings")
    }
}

fn histogram(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(BOUNDS.to_vec())
        .build()
}

impl Timings {
    pub fn new(meter: &Meter, topology: &str) -> Timings {
        Timings {
            attrs: [KeyValue::new("topology", topology.to_string())],
            latency: histogram(
                meter,
                "sluice.processing.latency",
                "Event time (record timestamp) to output queued, for one record in 16",
            ),
            batch: histogram(
                meter,
                "sluice.batch.duration",
                "First record of a batch to its commit",
            ),
            commit: histogram(
                meter,
                "sluice.commit.duration",
                "Committing one batch (transaction or store commit)",
            ),
            postgres: histogram(
                meter,
                "sluice.postgres.write.duration",
                "One PostgreSQL transaction of window rows and offsets",
            ),
            rebalance: histogram(
                meter,
                "sluice.rebalance.duration",
                "Handling one rebalance: committing before a revoke, or claiming an assignment",
            ),
        }
    }

    /// Histograms that go nowhere (no metrics endpoint).
    pub fn disabled() -> Timings {
        use opentelemetry::metrics::MeterProvider;
        Timings::new(
            &opentelemetry::metrics::noop::NoopMeterProvider::new().meter("sluice"),
            "",
        )
    }

    pub fn latency_ms(&self, ms: i64) {
        self.latency.record(ms.max(0) as f64 / 1000.0, &self.attrs);
    }

    pub fn batch(&self, d: Duration) {
        self.batch.record(d.as_secs_f64(), &self.attrs);
    }

    pub fn commit(&self, d: Duration) {
        self.commit.record(d.as_secs_f64(), &self.attrs);
    }

    pub fn postgres(&self, d: Duration) {
        self.postgres.record(d.as_secs_f64(), &self.attrs);
    }

    pub fn rebalance(&self, d: Duration) {
        self.rebalance.record(d.as_secs_f64(), &self.attrs);
    }
}
