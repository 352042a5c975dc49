//! Which partitions a windowed worker owns, shared between the worker loop
//! and the consumer's rebalance callback. Assignment is deferred: the
//! callback only notes the partitions; the loop claims them in the store
//! (fencing their previous owner) and then assigns them at the stored
//! offsets, so no record is read before its position is known. Revocation
//! drops the partition's uncommitted state at once: its new owner re-reads
//! from the last commit, and this worker can never write it again.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use rdkafka::{
    ClientContext, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol},
    types::RDKafkaRespErr,
};
use tokio::sync::Notify;

use crate::{
    runtime::{Stats, tally::Tally, txn::record_lag},
    topology::WindowKey,
    window::{Stats as Agg, Watermarks, WindowSpec, WindowState},
};

/// A claimed partition.
pub struct Part {
    pub epoch: i64,
    /// The next offset to process; -1 until the first record when nothing
    /// was ever committed.
    pub next: i64,
    /// The highest watermark this partition's windows were flushed with:
    /// windows closed here stay closed, whatever other partitions do.
    pub floor: i64,
    pub state: WindowState<WindowKey, f64, Agg>,
    /// Late and dead letters since the last commit; dropped with the
    /// partition's state, as its next owner reads them again.
    pub tally: Tally,
}

pub struct Owned {
    pub parts: BTreeMap<i32, Part>,
    /// Handed to this worker, not yet claimed.
    pub to_claim: BTreeSet<i32>,
    /// Partitions librdkafka has assigned (fetching, or paused while re-claimed).
    pub assigned: BTreeSet<i32>,
    pub marks: Watermarks,
    /// Eager (non-cooperative) rebalancing assigns the whole set at once.
    pub eager: bool,
    pub spec: WindowSpec,
}

impl Owned {
    pub fn new(spec: WindowSpec) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Owned {
            parts: BTreeMap::new(),
            to_claim: BTreeSet::new(),
            assigned: BTreeSet::new(),
            marks: Watermarks::new(ms(spec.out_of_order), ms(spec.idle_timeout)),
            eager: false,
            spec,
        }
    }

    /// Forgets everything uncommitted and queues every owned partition to be
    /// claimed again (after a failed commit).
    pub fn reclaim_all(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        for p in parts.keys() {
            self.marks.forget(*p);
        }
        self.to_claim.extend(parts.into_keys());
    }

    fn drop_partition(&mut self, p: i32) {
        self.parts.remove(&p);
        self.to_claim.remove(&p);
        self.assigned.remove(&p);
        self.marks.forget(p);
    }
}

pub struct WindowContext {
    pub topology: String,
    pub source: String,
    pub owned: Arc<Mutex<Owned>>,
    pub stats: Arc<Stats>,
    /// Wakes the worker loop when partitions arrive to be claimed.
    pub wake: Arc<Notify>,
    /// Shutting down: assignments are accepted as they come (nothing will
    /// be read), so that leaving the group never waits on a claim.
    pub closing: AtomicBool,
}

impl WindowContext {
    pub fn lock(&self) -> MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for WindowContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.health.observe(&self.topology, &statistics);
        record_lag(&self.stats, statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::runtime::health::log_librdkafka(&self.topology, level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::runtime::health::log_client_error(&self.stats.health, &self.topology, error, reason);
    }
}

impl ConsumerContext for WindowContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut owned = self.lock();
        match err {
            // Nothing to claim (an empty incremental assignment is common),
            // or nothing will be read: librdkafka waits for the assign call.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if partitions.is_empty() || self.closing.load(Ordering::Relaxed) =>
            {
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::debug!(topology = %self.topology, error = %e, "assign while closing failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(topology = %self.topology, ?partitions, "partitions assigned; claiming them");
                owned.eager = !cooperative;
                owned.to_claim.extend(partitions);
                self.stats.assigns.fetch_add(1, Ordering::Relaxed);
                self.stats.health.assigned(&self.topology);
                self.wake.notify_one();
                // The assign call follows once they are claimed.
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(topology = %self.topology, error = ?err, "rebalance error; giving up the assignment");
                }
                tracing::info!(topology = %self.topology, ?partitions, "partitions revoked; dropping their uncommitted windows");
                self.stats.revokes.fetch_add(1, Ordering::Relaxed);
                let all: Vec<i32> = if cooperative {
                    partitions
                } else {
                    owned
                        .assigned
                        .iter()
                        .chain(&owned.to_claim)
                        .copied()
                        .collect()
                };
                for p in all {
                    owned.drop_partition(p);
                    self.stats.clear_lag(&self.source, p);
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(topology = %self.topology, error = %e, "unassign failed");
                }
            }
        }
    }
}
