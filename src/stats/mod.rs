//! What the workers count and report, read by the metrics endpoint and the
//! demo: counters per topology (`Stats`), readiness (`health`) and duration
//! histograms (`timings`). Below both the runtime and the metrics, which
//! only meet here.

mod health;
pub mod recent;
mod repeats;
pub mod tables;
pub mod timings;

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

pub use health::{Health, fatal_error, log_client_error, log_librdkafka, log_producer_error};
pub use recent::{Quantiles, Recent};
pub use tables::TableStats;
pub use timings::Timings;

/// Live counters of one topology, read by the demo's status line and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_letters: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    /// Records later than their windows' grace, sent to the late topic.
    pub late: AtomicU64,
    /// Window rows merged into the store.
    pub window_rows: AtomicU64,
    /// Windows held in memory, as of the last commit.
    pub open_windows: AtomicU64,
    /// Partition assignments and revocations seen.
    pub assigns: AtomicU64,
    pub revokes: AtomicU64,
    /// Records handled with every schema cached, and those that waited for the registry.
    pub schema_hits: AtomicU64,
    pub schema_misses: AtomicU64,
    /// The topics records come from and go to, for metric labels.
    pub source: String,
    pub sink: String,
    /// Whether the worker can do its job (`/readyz`).
    pub health: Health,
    dlq_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    /// Records committed to each output topic.
    out_by_topic: Mutex<BTreeMap<String, u64>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Records each sink and each stateful operator took (by their index
    /// in the topology), counted once committed.
    sink_records: Mutex<Vec<u64>>,
    operator_records: Mutex<Vec<u64>>,
    /// Dead letters by the operator that refused the record.
    refused_by: Mutex<BTreeMap<String, u64>>,
    /// The source partitions this process's members own.
    owned: Mutex<std::collections::BTreeSet<i32>>,
    /// Processing latency (ms) of the sampled records, and commit durations (ms).
    pub recent_latency: Recent,
    pub recent_commits: Recent,
    /// End-to-end latency (ms) of the sampled records: timestamp to commit.
    pub recent_e2e: Recent,
    /// The tables its joins read.
    pub tables: Mutex<Vec<std::sync::Arc<TableStats>>>,
    /// What its stateful operators are restoring, while they do.
    pub restoring: Mutex<Option<String>>,
    /// Changelog records read back into stores on assignment, and the
    /// time (µs) that reading took.
    pub restored_records: AtomicU64,
    pub restore_micros: AtomicU64,
}

impl Stats {
    /// The counters of a topology reading `source` and writing `sink`.
    pub fn new(source: &str, sink: &str) -> Stats {
        Stats {
            source: source.to_string(),
            sink: sink.to_string(),
            ..Stats::default()
        }
    }

    /// Why the topology cannot do its job now (`/readyz`): its worker's
    /// health, then a table its joins wait for, then stores being restored.
    pub fn not_ready(&self) -> Option<String> {
        self.health.not_ready().or_else(|| {
            let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            (tables.iter().find_map(|t| t.restoring())).or_else(|| {
                self.restoring
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
        })
    }

    /// Says (`Some`) or clears (`None`) what its stores are restoring.
    pub fn set_restoring(&self, what: Option<String>) {
        *self.restoring.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// The tables its joins read, once (a worker started afresh adds them again).
    pub fn add_table(&self, table: std::sync::Arc<TableStats>) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if !tables.iter().any(|t| t.name == table.name) {
            tables.push(table);
        }
    }

    /// Counts a record taken, giving how many were taken before it.
    pub fn record_in(&self) -> u64 {
        self.records_in.fetch_add(1, Ordering::Relaxed)
    }

    pub fn count_dead_letters(&self, kind: &'static str, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
        *self
            .dlq_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += n;
    }

    /// `n` records committed to `topic`.
    pub fn count_outputs(&self, topic: &str, n: u64) {
        let mut m = self.out_by_topic.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(topic) {
            Some(c) => *c += n,
            None => {
                m.insert(topic.to_string(), n);
            }
        }
    }

    /// Records committed per output topic.
    pub fn outputs_by_topic(&self) -> BTreeMap<String, u64> {
        self.out_by_topic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn dead_letters_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.dlq_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_string(), partition), lag);
    }

    pub fn clear_lag(&self, topic: &str, partition: i32) {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
    }

    /// Consumer lag per assigned partition, as librdkafka last reported it.
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Source partitions assigned to (`true`) or revoked from a member here.
    pub fn own(&self, partitions: &[i32], owned: bool) {
        let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            if owned {
                o.insert(*p);
            } else {
                o.remove(p);
            }
        }
    }

    pub fn owned(&self) -> Vec<i32> {
        let o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        o.iter().copied().collect()
    }

    /// Adds committed counts per sink and per stateful operator.
    pub fn count_nodes(&self, sinks: &[u64], operators: &[u64]) {
        add_all(&self.sink_records, sinks);
        add_all(&self.operator_records, operators);
    }

    /// Records taken by each sink, by its index.
    pub fn sink_records(&self) -> Vec<u64> {
        self.sink_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records taken by each stateful operator, by its index.
    pub fn operator_records(&self) -> Vec<u64> {
        self.operator_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `n` records refused by `operator` (committed as dead letters).
    pub fn count_refused(&self, operator: &str, n: u64) {
        let mut m = self.refused_by.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(operator) {
            Some(c) => *c += n,
            None => {
                m.insert(operator.to_string(), n);
            }
        }
    }

    pub fn refused_by_operator(&self) -> BTreeMap<String, u64> {
        self.refused_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn total_lag(&self) -> i64 {
        self.lag().values().sum()
    }
}

fn add_all(counts: &Mutex<Vec<u64>>, add: &[u64]) {
    if add.iter().all(|&n| n == 0) {
        return;
    }
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() < add.len() {
        c.resize(add.len(), 0);
    }
    for (c, n) in c.iter_mut().zip(add) {
        *c += n;
    }
}
