//! The tables topologies join against: restore progress, rows, records
//! read and skipped, and the joins' misses and lookups older than the
//! history kept. Labelled by topology and table (a table shared by two
//! topologies shows under both).

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::{KeyValue, metrics::Meter};

use super::Topologies;
use crate::stats::TableStats;

fn each(topologies: &Topologies, mut f: impl FnMut(&TableStats, &[KeyValue])) {
    for (topology, s) in topologies.iter() {
        let tables = s.tables.lock().unwrap_or_else(|p| p.into_inner());
        for t in tables.iter() {
            let labels = [
                KeyValue::new("topology", topology.clone()),
                KeyValue::new("table", t.name.clone()),
            ];
            f(t, &labels);
        }
    }
}

fn gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    t: &Topologies,
    read: fn(&TableStats) -> &AtomicU64,
) {
    let t = t.clone();
    meter
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |obs| each(&t, |s, l| obs.observe(read(s).load(Ordering::Relaxed), l)))
        .build();
}

fn counter(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    t: &Topologies,
    read: fn(&TableStats) -> &AtomicU64,
) {
    let t = t.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |obs| each(&t, |s, l| obs.observe(read(s).load(Ordering::Relaxed), l)))
        .build();
}

/// What a table's stats field says: (metric, description, field).
type Metric = (&'static str, &'static str, fn(&TableStats) -> &AtomicU64);

const GAUGES: [Metric; 3] = [
    (
        "sluice.table.restore.read",
        "Offsets of the table's topic read of those it had at start (joins wait until all are)",
        |s| &s.restore_read,
    ),
    (
        "sluice.table.restore.size",
        "Offsets the table's topic had at start, summed over partitions",
        |s| &s.restore_total,
    ),
    (
        "sluice.table.keys",
        "Keys the table holds (with a row, or a deletion within its history)",
        |s| &s.keys,
    ),
];

const COUNTERS: [Metric; 6] = [
    (
        "sluice.table.records",
        "Records of the table's topic read since start",
        |s| &s.records,
    ),
    (
        "sluice.table.undecodable",
        "Records of the table's topic skipped: no key, or a value that does not decode",
        |s| &s.undecodable,
    ),
    (
        "sluice.join.misses",
        "Records an inner join found no row for (dropped or dead-lettered, as declared)",
        |s| &s.join_misses,
    ),
    (
        "sluice.join.expired_lookups",
        "Lookups older than the table's history, joined with the oldest row kept",
        |s| &s.expired_lookups,
    ),
    (
        "sluice.table.probes",
        "End offsets asked of the brokers so that joins see every row produced before their records were fetched",
        |s| &s.probes,
    ),
    (
        "sluice.join.wait.microseconds",
        "Time joins waited for their table to be read up to such an end, µs",
        |s| &s.join_wait_us,
    ),
];

pub(super) fn register(meter: &Meter, t: &Topologies) {
    for (name, description, read) in GAUGES {
        gauge(meter, name, description, t, read);
    }
    for (name, description, read) in COUNTERS {
        counter(meter, name, description, t, read);
    }
}
