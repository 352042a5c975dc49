//! Duration histograms a worker records: processing latency (record
//! timestamp to output queued) and end-to-end latency (record timestamp to
//! the commit that made its outputs visible, as Kafka Streams' KIP-613
//! metrics), one record in `SAMPLE`; batch and commit durations, the parts
//! of a transactional commit, PostgreSQL writes and rebalances.

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
    e2e: Histogram<f64>,
    commit_part: Histogram<f64>,
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
            e2e: histogram(
                meter,
                "sluice.e2e.latency",
                "Record timestamp to the commit that made its outputs visible, for one record in 16",
            ),
            commit_part: histogram(
                meter,
                "sluice.commit.part.duration",
                "One part of a transactional commit (part: begin, flush, send_offsets, commit)",
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

    pub fn e2e_ms(&self, ms: i64) {
        self.e2e.record(ms.max(0) as f64 / 1000.0, &self.attrs);
    }

    /// The parts of a transactional commit, each under its `part` label.
    pub fn commit_parts(&self, p: &crate::commit::CommitParts) {
        let topology = self.attrs[0].clone();
        for (part, d) in [
            ("begin", p.begin),
            ("flush", p.flush),
            ("send_offsets", p.send_offsets),
            ("commit", p.commit),
        ] {
            self.commit_part.record(
                d.as_secs_f64(),
                &[topology.clone(), KeyValue::new("part", part)],
            );
        }
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
