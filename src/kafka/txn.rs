//! The unit's producer (`commit::Outbox`): exactly-once puts a unit's
//! records and its input offsets in one Kafka transaction; at-least-once
//! waits for every record to be acknowledged, then commits the offsets to
//! the group. It only sends; the runtime decides when to commit.
//!
//! Exactly-once alternates two transactional producers, one transaction
//! each in turn. After a commit returns, the coordinator still writes the
//! transaction's markers; a producer that starts its next transaction
//! meanwhile has its AddPartitionsToTxn refused (CONCURRENT_TRANSACTIONS)
//! and librdkafka retries it after a fixed 20 ms, whatever
//! `retry.backoff.ms` says: every unit that came right after a commit
//! waited those 20 ms, most of the median latency at a steady rate. The
//! other producer's last transaction completed a unit ago. Order holds:
//! a unit's records are all acknowledged before its commit, so the next
//! unit's come after them in every partition, and its offsets after
//! them in the group's log. Only one transaction is open at a time; both
//! ids are fenced at start.

use std::time::{Duration, Instant};

use rdkafka::{
    TopicPartitionList,
    error::{KafkaError, KafkaResult},
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
    types::RDKafkaErrorCode,
};

use super::deliveries::{Deliveries, abort_serving_reports, serve_deliveries};
use crate::{
    commit::{CommitParts, DeadLetter, Group, Outbox},
    kafka::{KafkaConfig, blocking},
    topology::Output,
};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

type TxnProducer = BaseProducer<Deliveries>;

pub struct Txn {
    kafka: KafkaConfig,
    topology: String,
    transactional_id: Option<String>,
    /// Two transactional producers taking turns (see above), or one.
    producers: Vec<TxnProducer>,
    current: usize,
    open: bool,
    sent: u64,
    /// The producer failed for good and could not be replaced yet: it is
    /// replaced before anything else is sent.
    broken: bool,
    /// How long the open transaction's begin took, and the last commit's parts.
    began: Duration,
    parts: Option<CommitParts>,
}

impl Txn {
    /// A transactional producer when given an id (fencing any earlier one
    /// with that id), else an idempotent one.
    pub fn new(
        kafka: &KafkaConfig,
        transactional_id: Option<&str>,
        topology: &str,
    ) -> KafkaResult<Self> {
        let producers = Self::ids(transactional_id)
            .iter()
            .map(|id| Self::producer(kafka, id.as_deref(), Deliveries::new(topology)))
            .collect::<KafkaResult<Vec<_>>>()?;
        Ok(Self {
            kafka: kafka.clone(),
            topology: topology.to_string(),
            transactional_id: transactional_id.map(str::to_string),
            producers,
            current: 0,
            open: false,
            sent: 0,
            broken: false,
            began: Duration::ZERO,
            parts: None,
        })
    }

    /// The producers' transactional ids: the given one and a second
    /// (same prefix, for ACLs), or none.
    fn ids(transactional_id: Option<&str>) -> Vec<Option<String>> {
        match transactional_id {
            Some(id) => vec![Some(id.to_string()), Some(format!("{id}-b"))],
            None => vec![None],
        }
    }

    /// The producer of the current (or next) transaction.
    fn now(&self) -> &TxnProducer {
        &self.producers[self.current]
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
        // report per record cost the worker a tenth of its time.
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

    /// Replaces a producer that failed for good (fencing its transactional
    /// id anew); an error while the brokers cannot do that yet.
    fn replace(&mut self) -> KafkaResult<()> {
        let context = Deliveries::new(&self.topology);
        let id = Self::ids(self.transactional_id.as_deref()).swap_remove(self.current);
        let producer = Self::producer(&self.kafka, id.as_deref(), context)?;
        self.producers[self.current] = producer;
        self.broken = false;
        self.open = false;
        tracing::info!(topology = %self.topology, "producer replaced");
        Ok(())
    }

    fn begin(&mut self) -> KafkaResult<()> {
        if self.broken {
            blocking(|| self.replace())?;
        }
        if self.transactional_id.is_some() && !self.open {
            let started = Instant::now();
            self.now().begin_transaction()?;
            self.began = started.elapsed();
            self.open = true;
        }
        Ok(())
    }

    /// Queues a record for this unit.
    pub fn send(&mut self, out: &Output) -> KafkaResult<()> {
        let value = Some(out.value.as_slice());
        self.send_raw(
            &out.topic,
            out.key.as_deref(),
            value,
            out.timestamp_ms,
            None,
        )
    }

    /// Queues a letter: the original key, value (a null one stays null) and
    /// headers, then sluice's own headers.
    pub fn send_letter(&mut self, d: &DeadLetter) -> KafkaResult<()> {
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
        let (key, value) = (d.key.as_deref(), d.value.as_deref());
        self.send_raw(&d.topic, key, value, d.timestamp_ms, Some(h))
    }

    fn send_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> KafkaResult<()> {
        self.send_raw_to(topic, None, key, value, timestamp_ms, headers)
    }

    fn send_raw_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> KafkaResult<()> {
        self.begin()?;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).timestamp(timestamp_ms);
        if let Some(p) = partition {
            record = record.partition(p);
        }
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
            match self.now().send(record) {
                Ok(()) => {
                    // Serving delivery reports now and then keeps the queue
                    // short; every record would cost more than it saves.
                    self.sent += 1;
                    if self.sent.is_multiple_of(256) {
                        self.now().poll(Duration::ZERO);
                    }
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Bounded memory: wait for the queue to drain a little.
                    record = r;
                    let producer = self.now();
                    let queued = producer.in_flight_count();
                    let deadline = std::time::Instant::now() + Duration::from_millis(10);
                    serve_deliveries(producer, || producer.in_flight_count() < queued, deadline);
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
        let idle = || self.now().in_flight_count() == 0;
        if serve_deliveries(self.now(), idle, deadline) {
            Ok(())
        } else {
            Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut))
        }
    }

    /// Waits for every record sent so far; an error if any failed. For
    /// producers outside a transaction whose offsets are stored elsewhere.
    pub fn flush(&mut self) -> KafkaResult<()> {
        blocking(|| self.drain_deliveries())?;
        match self.now().context().take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes the next flush fail: a record could not even be queued.
    pub fn poison(&self, e: KafkaError) {
        self.now().context().fail(e);
    }

    /// Whether a transaction is open (records sent since the last commit).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Commits what was sent with the input `offsets`; blocks.
    pub fn commit(&mut self, offsets: &TopicPartitionList, group: &dyn Group) -> KafkaResult<()> {
        if self.transactional_id.is_some() {
            self.begin()?;
            // Only missing before the consumer first joined its group.
            let meta = group
                .metadata()
                .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::InvalidGroupId))?;
            let started = Instant::now();
            self.drain_deliveries()?;
            let flushed = Instant::now();
            self.now()
                .send_offsets_to_transaction(offsets, &meta, TXN_TIMEOUT)?;
            let sent = Instant::now();
            crate::failpoint::hit("before-txn-commit");
            self.now().commit_transaction(TXN_TIMEOUT)?;
            crate::failpoint::hit("after-txn-commit");
            self.parts = Some(CommitParts {
                begin: self.began,
                flush: flushed - started,
                send_offsets: sent - flushed,
                commit: sent.elapsed(),
            });
            self.open = false;
            self.current = (self.current + 1) % self.producers.len();
        } else {
            self.flush()?;
            group.commit_offsets(offsets, true)?;
        }
        Ok(())
    }

    /// Drops what was sent: aborts the transaction (or forgets unconfirmed
    /// deliveries). A producer in a fatal state is replaced.
    pub fn abort(&mut self) {
        if self.open {
            let aborted = blocking(|| abort_serving_reports(self.now(), TXN_TIMEOUT));
            self.open = false;
            if let Err(e) = aborted {
                tracing::warn!(topology = %self.topology, error = %e, "abort failed; replacing the producer");
                self.broken = true;
            }
        }
        if self.broken
            && let Err(e) = blocking(|| self.replace())
        {
            // Replaced before the next record is sent, then.
            tracing::warn!(topology = %self.topology, error = %e, "cannot replace the producer yet; will again before the next send");
        }
        self.now().context().take_failure();
    }
}

impl Outbox for Txn {
    fn send(&mut self, out: &Output) -> KafkaResult<()> {
        Txn::send(self, out)
    }

    fn send_letter(&mut self, d: &DeadLetter) -> KafkaResult<()> {
        Txn::send_letter(self, d)
    }

    fn send_to(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> KafkaResult<()> {
        self.send_raw_to(topic, Some(partition), key, value, timestamp_ms, None)
    }

    fn flush(&mut self) -> KafkaResult<()> {
        Txn::flush(self)
    }

    fn commit(&mut self, offsets: &TopicPartitionList, group: &dyn Group) -> KafkaResult<()> {
        Txn::commit(self, offsets, group)
    }

    fn abort(&mut self) {
        Txn::abort(self)
    }

    fn poison(&mut self, e: KafkaError) {
        Txn::poison(self, e)
    }

    fn commit_parts(&self) -> Option<CommitParts> {
        self.parts
    }
}
