//! The unit of commit: outputs, dead letters and input offsets since the last
//! commit. Exactly-once puts them in one Kafka transaction; at-least-once
//! flushes outputs before committing offsets. The consumer context has the
//! sender commit in-flight work before partitions are revoked, so a
//! rebalance hands over only committed positions.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::SyncSender,
    },
    time::Duration,
};

use rdkafka::{
    ClientContext, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    message::{DeliveryResult, Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer, ProducerContext},
};

use super::{Stats, sender::Work};
use crate::{kafka::KafkaConfig, topology::Guarantee, topology::Output};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a blocking librdkafka call without stalling other tasks on this thread.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Remembers the first failed delivery since the last commit. Delivery
/// reports are served on this worker's own thread (BaseProducer), so a flush
/// returns as soon as the last one arrives.
pub struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
    topology: String,
    stats: Arc<Stats>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        super::health::log_librdkafka(&self.topology, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::health::log_client_error(&self.stats.health, &self.topology, error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.clone());
        }
    }
}

impl Deliveries {
    fn new(topology: &str, stats: &Arc<Stats>) -> Self {
        Self {
            failed: Mutex::default(),
            topology: topology.to_string(),
            stats: stats.clone(),
        }
    }

    fn fail(&self, e: KafkaError) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(e);
    }

    fn take_failure(&self) -> Option<KafkaError> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

type TxnProducer = BaseProducer<Deliveries>;

/// Serves delivery reports until `done()` or `deadline`, without spinning;
/// false on the deadline. rdkafka's `BaseProducer::poll(t)` does not return
/// when a report arrives but polls until `t` has passed, and its last
/// millisecond is a busy loop (the time left rounds down to 0 ms, a
/// non-blocking poll): draining with `poll(1 ms)` spun the whole time. On
/// tansu that was a tenth of the worker's CPU, taken from the two cores the
/// broker needed to acknowledge the very records being waited for.
pub fn serve_deliveries<C: ProducerContext>(
    producer: &BaseProducer<C>,
    done: impl Fn() -> bool,
    deadline: std::time::Instant,
) -> bool {
    loop {
        // One event (a batch of reports) per call, without waiting; keep on
        // while they come, then sleep a little.
        let before = producer.in_flight_count();
        producer.poll(Duration::ZERO);
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        if producer.in_flight_count() == before {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

pub struct Txn {
    kafka: KafkaConfig,
    topology: String,
    stats: Arc<Stats>,
    transactional_id: Option<String>,
    producer: TxnProducer,
    open: bool,
    /// The one topic a worker consumes.
    source: String,
    /// partition → (first offset in this unit, next offset to commit).
    offsets: BTreeMap<i32, (i64, i64)>,
    pub records: usize,
    /// When the first record of this unit was taken.
    pub started: Option<std::time::Instant>,
    sent: u64,
}

impl Txn {
    pub fn new(
        kafka: &KafkaConfig,
        guarantee: Guarantee,
        instance: &str,
        (topology, source): (&str, &str),
        stats: Arc<Stats>,
    ) -> KafkaResult<Self> {
        let transactional_id = (guarantee == Guarantee::ExactlyOnce).then(|| instance.to_string());
        let context = || Deliveries::new(topology, &stats);
        let producer = Self::producer(kafka, transactional_id.as_deref(), context())?;
        Ok(Self {
            kafka: kafka.clone(),
            topology: topology.to_string(),
            stats: stats.clone(),
            transactional_id,
            producer,
            open: false,
            source: source.to_string(),
            offsets: BTreeMap::new(),
            records: 0,
            started: None,
            sent: 0,
        })
    }

    fn producer(
        kafka: &KafkaConfig,
        transactional_id: Option<&str>,
        context: Deliveries,
    ) -> KafkaResult<TxnProducer> {
        let mut config = kafka.producer(transactional_id);
        // Only failures need a report: a failed record fails the commit (in a
        // transaction) or is remembered by `Deliveries` (at-least-once), and
        // waiting for acknowledgements counts records still in flight. A
        // report per record cost the worker a tenth of its time on tansu.
        if config.get("delivery.report.only.error").is_none() {
            config.set("delivery.report.only.error", "true");
        }
        let producer: TxnProducer = config.create_with_context(context)?;
        if transactional_id.is_some() {
            // Fences any earlier producer with this id and aborts its open transaction.
            blocking(|| producer.init_transactions(TXN_TIMEOUT))?;
        }
        Ok(producer)
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    fn begin(&mut self) -> KafkaResult<()> {
        if self.transactional_id.is_some() && !self.open {
            self.producer.begin_transaction()?;
            self.open = true;
        }
        Ok(())
    }

    /// Queues a record for this unit.
    pub fn send(&mut self, out: &Output, headers: &[(&str, String)]) -> KafkaResult<()> {
        let headers = (!headers.is_empty()).then(|| {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            h
        });
        let value = Some(out.value.as_slice());
        self.send_raw(
            &out.topic,
            out.key.as_deref(),
            value,
            out.timestamp_ms,
            headers,
        )
    }

    /// Queues a dead letter: the original key, value (a null one stays
    /// null) and headers, then sluice's own headers.
    pub fn send_dead_letter(&mut self, d: &super::dlq::DeadLetter) -> KafkaResult<()> {
        let mut h = OwnedHeaders::new_with_capacity(d.original.len() + d.headers.len());
        for (k, v) in &d.original {
            h = h.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        for (k, v) in &d.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        self.send_raw(
            &d.topic,
            d.key.as_deref(),
            d.value.as_deref(),
            d.timestamp_ms,
            Some(h),
        )
    }

    fn send_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> KafkaResult<()> {
        self.begin()?;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).timestamp(timestamp_ms);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    // Serving delivery reports now and then keeps the queue
                    // short; every record would cost more than it saves.
                    self.sent += 1;
                    if self.sent.is_multiple_of(256) {
                        self.producer.poll(Duration::ZERO);
                    }
                    return Ok(());
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    // Bounded memory: wait for the queue to drain a little.
                    record = r;
                    let queued = self.producer.in_flight_count();
                    let deadline = std::time::Instant::now() + Duration::from_millis(10);
                    serve_deliveries(
                        &self.producer,
                        || self.producer.in_flight_count() < queued,
                        deadline,
                    );
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every queued record is acknowledged. rdkafka's `flush`
    /// polls in 100 ms steps, which would add up to 100 ms to every commit;
    /// this returns as soon as the last report arrives.
    fn drain_deliveries(&self) -> KafkaResult<()> {
        let deadline = std::time::Instant::now() + TXN_TIMEOUT;
        let idle = || self.producer.in_flight_count() == 0;
        if serve_deliveries(&self.producer, idle, deadline) {
            Ok(())
        } else {
            Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ))
        }
    }

    /// Waits for every record sent so far; an error if any failed. For
    /// producers outside a transaction whose offsets are stored elsewhere.
    pub fn flush(&mut self) -> KafkaResult<()> {
        blocking(|| self.drain_deliveries())?;
        match self.producer.context().take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes the next flush fail: a record could not even be queued.
    pub fn poison(&self, e: KafkaError) {
        self.producer.context().fail(e);
    }

    /// Per partition, the offset after the last record in this unit.
    pub fn next_offsets(&self) -> Vec<(i32, i64)> {
        self.offsets
            .iter()
            .map(|(&p, &(_, next))| (p, next))
            .collect()
    }

    /// Marks an input record as done in this unit.
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        self.offsets
            .entry(partition)
            .and_modify(|(_, next)| *next = offset + 1)
            .or_insert((offset, offset + 1));
        self.records += 1;
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    /// Commits everything since the last commit; blocks (the sender thread).
    pub fn commit_now<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
    ) -> KafkaResult<()> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, (_, next)) in &self.offsets {
            tpl.add_partition_offset(&self.source, *partition, Offset::Offset(*next))?;
        }
        if self.transactional_id.is_some() {
            self.begin()?;
            // Only missing before the consumer first joined its group.
            let meta = consumer.group_metadata().ok_or(KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::InvalidGroupId,
            ))?;
            self.drain_deliveries()?;
            self.producer
                .send_offsets_to_transaction(&tpl, &meta, TXN_TIMEOUT)?;
            self.producer.commit_transaction(TXN_TIMEOUT)?;
            self.open = false;
        } else {
            self.drain_deliveries()?;
            if let Some(e) = self.producer.context().take_failure() {
                return Err(e);
            }
            consumer.commit(&tpl, CommitMode::Sync)?;
        }
        self.offsets.clear();
        self.records = 0;
        self.started = None;
        Ok(())
    }

    /// Drops the unit after a failed commit: aborts the transaction (or
    /// forgets unconfirmed deliveries) and returns where each partition must
    /// be re-read from. A producer in a fatal state is replaced.
    pub fn abort(&mut self) -> Vec<(i32, i64)> {
        if self.open {
            let aborted = blocking(|| abort_serving_reports(&self.producer));
            self.open = false;
            if let Err(e) = aborted {
                tracing::warn!(error = %e, "abort failed; replacing the producer");
                let context = Deliveries::new(&self.topology, &self.stats);
                match Self::producer(&self.kafka, self.transactional_id.as_deref(), context) {
                    Ok(p) => self.producer = p,
                    Err(e) => tracing::error!(error = %e, "cannot recreate producer; will retry"),
                }
            }
        }
        self.producer.context().take_failure();
        self.records = 0;
        self.started = None;
        std::mem::take(&mut self.offsets)
            .into_iter()
            .map(|(p, (first, _))| (p, first))
            .collect()
    }
}

/// Aborts the open transaction. librdkafka's abort waits until the reports
/// of the records still in flight have been served, and serving them is this
/// thread's job: without a second thread polling meanwhile, every abort with
/// records in flight waited out the whole transaction timeout, failed, and
/// cost the worker its producer.
fn abort_serving_reports(producer: &TxnProducer) -> KafkaResult<()> {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                // Non-blocking: `poll(t)` spins through its last millisecond.
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let aborted = producer.abort_transaction(TXN_TIMEOUT);
        done.store(true, Ordering::Relaxed);
        aborted
    })
}

/// The consumer's context: has the sender commit before revocation, and
/// records lag.
pub struct WorkerContext {
    pub topology: String,
    source: String,
    work: SyncSender<Work>,
    /// Partitions revoked since the loop last looked: it drops what it
    /// holds of them, which their new owner reads again.
    revoked: Mutex<Vec<i32>>,
    revoked_due: AtomicBool,
    pub stats: Arc<Stats>,
    pub timings: crate::metrics::Timings,
}

impl WorkerContext {
    pub fn new(
        topology: &str,
        source: &str,
        work: SyncSender<Work>,
        stats: Arc<Stats>,
        timings: crate::metrics::Timings,
    ) -> Self {
        Self {
            topology: topology.to_string(),
            source: source.to_string(),
            work,
            revoked: Mutex::default(),
            revoked_due: AtomicBool::new(false),
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
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.health.observe(&self.topology, &statistics);
        record_lag(&self.stats, statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        super::health::log_librdkafka(&self.topology, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::health::log_client_error(&self.stats.health, &self.topology, error, reason);
    }
}

/// Consumer lag per partition from librdkafka's statistics.
pub(super) fn record_lag(stats: &Stats, statistics: Statistics) {
    for (topic, t) in statistics.topics {
        for (partition, p) in t.partitions {
            if partition >= 0 && p.consumer_lag >= 0 {
                stats.set_lag(&topic, partition, p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let started = std::time::Instant::now();
            self.stats.revokes.fetch_add(1, Ordering::Relaxed);
            // Lost (the session timed out): a commit would be refused, and
            // waiting for the refusal holds up the rejoin.
            let lost = consumer.assignment_lost();
            if lost {
                tracing::warn!(topology = %self.topology, partitions = tpl.count(), "partitions lost (the group session timed out); dropping in-flight work");
            } else {
                tracing::info!(topology = %self.topology, partitions = tpl.count(), "partitions revoked; committing in-flight work");
            }
            let revoked: Vec<i32> = tpl
                .elements_for_topic(&self.source)
                .iter()
                .map(|e| e.partition())
                .collect();
            // The sender commits what it was handed; once it has stopped
            // (the worker leaving) there is nothing left to commit.
            let (done, committed) = std::sync::mpsc::sync_channel(1);
            let revoke = Work::Revoke {
                revoked: revoked.clone(),
                lost,
                done,
            };
            if blocking(|| self.work.send(revoke)).is_ok() {
                let _ = blocking(|| committed.recv());
            }
            self.revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(revoked);
            self.revoked_due.store(true, Ordering::Release);
            for elem in tpl.elements() {
                self.stats.clear_lag(elem.topic(), elem.partition());
            }
            self.timings.rebalance(started.elapsed());
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.stats.health.assigned(&self.topology);
            self.stats.assigns.fetch_add(1, Ordering::Relaxed);
            let parts: Vec<String> = tpl
                .elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect();
            tracing::info!(topology = %self.topology, partitions = ?parts, "partitions assigned");
        }
    }
}
