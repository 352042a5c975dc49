//! The consumer's context: rebalances, statistics (lag, readiness) and
//! librdkafka's logs. On revocation the sender thread commits everything
//! handed to it before the partitions go (or, if they were lost, drops it);
//! on assignment, a sink that keeps the positions itself must claim the
//! partitions first, so their assignment waits: the sender claims them and
//! then assigns them at the stored offsets, and no record is read before
//! its position is known.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
    mpsc::SyncSender,
};

use rdkafka::{
    ClientContext, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol},
    error::KafkaError,
    types::RDKafkaRespErr,
};

use super::committer::Work;
use crate::{
    kafka::blocking,
    stats::{Stats, Timings, log_client_error, log_librdkafka},
};

pub struct MemberContext {
    pub topology: String,
    source: String,
    work: SyncSender<Work>,
    /// Assignments wait for the sink's claim.
    deferred: bool,
    /// Shutting down: assignments are accepted as they come (nothing will
    /// be read), so that leaving the group never waits on a claim.
    pub closing: AtomicBool,
    /// Partitions revoked since the loop last looked: it drops what it
    /// holds of them, which their new owner reads again.
    revoked: Mutex<Vec<i32>>,
    revoked_due: AtomicBool,
    /// Partitions revoked and not assigned again: a record of one that
    /// was already fetched is not this member's to process (its new owner
    /// reads it from the committed offset), and committing it here would
    /// move the offset past what the new owner has processed.
    disowned: Mutex<Vec<i32>>,
    any_disowned: AtomicBool,
    pub stats: Arc<Stats>,
    pub timings: Timings,
}

impl MemberContext {
    pub fn new(
        topology: &str,
        source: &str,
        work: SyncSender<Work>,
        deferred: bool,
        stats: Arc<Stats>,
        timings: Timings,
    ) -> Self {
        Self {
            topology: topology.to_string(),
            source: source.to_string(),
            work,
            deferred,
            closing: AtomicBool::new(false),
            revoked: Mutex::default(),
            revoked_due: AtomicBool::new(false),
            disowned: Mutex::default(),
            any_disowned: AtomicBool::new(false),
            stats,
            timings,
        }
    }

    /// The partitions revoked since the last call, if any.
    pub fn take_revoked(&self) -> Option<Vec<i32>> {
        // Checked after every poll: a plain load while nothing is due.
        if !self.revoked_due.load(Ordering::Acquire)
            || !self.revoked_due.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        Some(std::mem::take(
            &mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Whether `partition` was revoked and is not this member's again.
    pub fn disowns(&self, partition: i32) -> bool {
        // Checked per record: a plain load while none is.
        self.any_disowned.load(Ordering::Acquire)
            && self
                .disowned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&partition)
    }

    fn own(&self, partitions: &[i32], owned: bool) {
        let mut d = self.disowned.lock().unwrap_or_else(|p| p.into_inner());
        if owned {
            d.retain(|p| !partitions.contains(p));
        } else {
            for p in partitions {
                if !d.contains(p) {
                    d.push(*p);
                }
            }
        }
        self.any_disowned.store(!d.is_empty(), Ordering::Release);
    }

    fn assigned(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, eager: bool) {
        self.stats.health.assigned(&self.topology);
        self.stats.assigns.fetch_add(1, Ordering::Relaxed);
        let partitions: Vec<i32> = partitions(tpl, &self.source);
        self.own(&partitions, true);
        self.stats.own(&partitions, true);
        if !self.deferred || partitions.is_empty() || self.closing.load(Ordering::Relaxed) {
            tracing::info!(topology = %self.topology, ?partitions, "partitions assigned");
            if let Err(e) = assign(consumer, tpl, eager) {
                tracing::warn!(topology = %self.topology, error = %e, "assign failed");
            }
            return;
        }
        tracing::info!(topology = %self.topology, ?partitions, "partitions assigned; claiming them");
        // The sender claims them and then makes the assign call.
        let claim = Work::Claim { partitions, eager };
        if blocking(|| self.work.send(claim)).is_err() {
            // The sender has stopped: nothing will be read.
            let _ = assign(consumer, tpl, eager);
        }
    }

    fn revoked(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
        lost: bool,
        eager: bool,
    ) {
        let started = std::time::Instant::now();
        self.stats.revokes.fetch_add(1, Ordering::Relaxed);
        let revoked = partitions(tpl, &self.source);
        if lost {
            tracing::warn!(topology = %self.topology, partitions = ?revoked, "partitions lost (the group session timed out); dropping in-flight work");
        } else {
            tracing::info!(topology = %self.topology, partitions = ?revoked, "partitions revoked; committing in-flight work");
        }
        // The sender commits what it was handed (or drops it, if lost);
        // once it has stopped (the worker leaving) there is nothing left.
        let (done, committed) = std::sync::mpsc::sync_channel(1);
        let revoke = Work::Revoke {
            revoked: revoked.clone(),
            lost,
            done,
        };
        if blocking(|| self.work.send(revoke)).is_ok() {
            let _ = blocking(|| committed.recv());
        }
        self.own(&revoked, false);
        self.stats.own(&revoked, false);
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(&revoked);
        self.revoked_due.store(true, Ordering::Release);
        for p in &revoked {
            self.stats.clear_lag(&self.source, *p);
        }
        let r = if eager {
            consumer.unassign()
        } else {
            consumer.incremental_unassign(tpl)
        };
        if let Err(e) = r {
            tracing::warn!(topology = %self.topology, error = %e, "unassign failed");
        }
        self.timings.rebalance(started.elapsed());
    }
}

fn partitions(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Assigns `tpl`: incrementally, or the whole set under an eager protocol.
pub fn assign<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tpl: &TopicPartitionList,
    eager: bool,
) -> Result<(), KafkaError> {
    if eager {
        consumer.assign(tpl)
    } else {
        consumer.incremental_assign(tpl)
    }
}

impl ClientContext for MemberContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.health.observe(&self.topology, &statistics);
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.stats.set_lag(&topic, partition, p.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(&self.topology, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.stats.health, &self.topology, error, reason);
    }
}

impl ConsumerContext for MemberContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let eager = !matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assigned(consumer, tpl, eager)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                self.revoked(consumer, tpl, lost, eager)
            }
            other => {
                tracing::warn!(topology = %self.topology, error = ?other, "rebalance error; giving up the assignment");
                self.revoked(consumer, tpl, true, eager)
            }
        }
    }
}
