//! Observable counters and gauges over the workers' `Stats`.

use std::sync::atomic::Ordering;

use opentelemetry::{KeyValue, metrics::Meter};

use super::Topologies;
use crate::stats::Stats;

fn counter(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    topologies: &Topologies,
    read: fn(&Stats) -> u64,
) {
    let t = topologies.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                obs.observe(read(s), &[KeyValue::new("topology", topology.clone())]);
            }
        })
        .build();
}

/// A counter with one more label, read from a list of (label value, count).
fn labelled(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    topologies: &Topologies,
    label: &'static str,
    read: fn(&Stats) -> Vec<(&'static str, u64)>,
) {
    let t = topologies.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                for (value, n) in read(s) {
                    obs.observe(
                        n,
                        &[
                            KeyValue::new("topology", topology.clone()),
                            KeyValue::new(label, value),
                        ],
                    );
                }
            }
        })
        .build();
}

/// A counter labelled with the topic it counts records of.
fn per_topic(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    topologies: &Topologies,
    read: fn(&Stats) -> (&str, u64),
) {
    let t = topologies.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                let (topic, n) = read(s);
                obs.observe(
                    n,
                    &[
                        KeyValue::new("topology", topology.clone()),
                        KeyValue::new("topic", topic.to_string()),
                    ],
                );
            }
        })
        .build();
}

pub(super) fn register(meter: &Meter, topologies: &Topologies) {
    per_topic(
        meter,
        "sluice.records.in",
        "Records consumed from the source topic",
        topologies,
        |s| (&s.source, s.records_in.load(Ordering::Relaxed)),
    );
    let t = topologies.clone();
    meter
        .u64_observable_counter("sluice.records.out")
        .with_description(
            "Records produced to each sink topic (rows, for a topology writing only tables), counted once committed",
        )
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                let by_topic = s.outputs_by_topic();
                let label = |topic: &str| {
                    [
                        KeyValue::new("topology", topology.clone()),
                        KeyValue::new("topic", topic.to_string()),
                    ]
                };
                if by_topic.is_empty() {
                    obs.observe(s.records_out.load(Ordering::Relaxed), &label(&s.sink));
                }
                for (topic, n) in by_topic {
                    obs.observe(n, &label(&topic));
                }
            }
        })
        .build();
    counter(
        meter,
        "sluice.commits",
        "Batches committed (Kafka transactions, offset commits or PostgreSQL transactions)",
        topologies,
        |s| s.commits.load(Ordering::Relaxed),
    );
    counter(
        meter,
        "sluice.aborts",
        "Batches aborted (transaction aborted or store commit failed) and re-read",
        topologies,
        |s| s.aborts.load(Ordering::Relaxed),
    );
    labelled(
        meter,
        "sluice.late.records",
        "Records later than their windows' grace period, sent to the late topic, by reason, counted once committed",
        topologies,
        "reason",
        |s| vec![("window_closed", s.late.load(Ordering::Relaxed))],
    );
    counter(
        meter,
        "sluice.window.rows.written",
        "Window rows merged into PostgreSQL (or the in-memory store)",
        topologies,
        |s| s.window_rows.load(Ordering::Relaxed),
    );
    labelled(
        meter,
        "sluice.dead_letters",
        "Records sent to the dead-letter topic, by reason, counted once committed",
        topologies,
        "reason",
        |s| s.dead_letters_by_kind().into_iter().collect(),
    );
    labelled(
        meter,
        "sluice.rebalances",
        "Partition assignments and revocations this worker went through",
        topologies,
        "kind",
        |s| {
            vec![
                ("assign", s.assigns.load(Ordering::Relaxed)),
                ("revoke", s.revokes.load(Ordering::Relaxed)),
            ]
        },
    );
    labelled(
        meter,
        "sluice.schema.cache",
        "Records whose schemas were cached (hit) or had to be fetched from the registry (miss)",
        topologies,
        "result",
        |s| {
            vec![
                ("hit", s.schema_hits.load(Ordering::Relaxed)),
                ("miss", s.schema_misses.load(Ordering::Relaxed)),
            ]
        },
    );
    let t = topologies.clone();
    meter
        .u64_observable_gauge("sluice.windows.open")
        .with_description("What stateful operators hold in memory: open windows, store keys")
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                obs.observe(
                    s.open_windows.load(Ordering::Relaxed),
                    &[KeyValue::new("topology", topology.clone())],
                );
            }
        })
        .build();
    counter(
        meter,
        "sluice.store.restored.records",
        "Changelog records read back into key-value stores when their partitions were assigned",
        topologies,
        |s| s.restored_records.load(Ordering::Relaxed),
    );
    let t = topologies.clone();
    meter
        .f64_observable_counter("sluice.store.restore.seconds")
        .with_description("Time spent reading changelogs back into key-value stores")
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                let us = s.restore_micros.load(Ordering::Relaxed);
                obs.observe(
                    us as f64 / 1e6,
                    &[KeyValue::new("topology", topology.clone())],
                );
            }
        })
        .build();
    let t = topologies.clone();
    meter
        .i64_observable_gauge("sluice.consumer.lag")
        .with_description("Records behind the end of each assigned partition")
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                for ((topic, partition), lag) in s.lag() {
                    obs.observe(
                        lag,
                        &[
                            KeyValue::new("topology", topology.clone()),
                            KeyValue::new("topic", topic),
                            KeyValue::new("partition", i64::from(partition)),
                        ],
                    );
                }
            }
        })
        .build();
}
