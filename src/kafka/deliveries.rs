//! The producer side of librdkafka that every Kafka writer here needs:
//! delivery reports (only failures are reported), waiting for them without
//! spinning, and aborting a transaction while they are served.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rdkafka::{
    ClientContext,
    error::{KafkaError, KafkaResult},
    message::DeliveryResult,
    producer::{BaseProducer, Producer, ProducerContext},
};

use crate::stats::{log_librdkafka, log_producer_error};

/// Remembers the first failed delivery since the last commit. Delivery
/// reports are served on the sender's own thread (BaseProducer), so a drain
/// returns as soon as the last one arrives.
pub struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
    topology: String,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(&self.topology, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_producer_error(&self.topology, error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.fail(e.clone());
        }
    }
}

impl Deliveries {
    pub fn new(topology: &str) -> Self {
        Self {
            failed: Mutex::default(),
            topology: topology.to_string(),
        }
    }

    pub fn fail(&self, e: KafkaError) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(e);
    }

    pub fn take_failure(&self) -> Option<KafkaError> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Serves delivery reports until `done()` or `deadline`, without spinning;
/// false on the deadline. rdkafka's `BaseProducer::poll(t)` does not return
/// when a report arrives but polls until `t` has passed, and its last
/// millisecond is a busy loop (the time left rounds down to 0 ms, a
/// non-blocking poll): draining with `poll(1 ms)` spun the whole time, a
/// tenth of the worker's CPU, taken from the cores the broker needed to
/// acknowledge the very records being waited for.
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

/// Aborts the open transaction. librdkafka's abort waits until the reports
/// of the records still in flight have been served, and serving them is this
/// thread's job: without a second thread polling meanwhile, every abort with
/// records in flight waited out the whole transaction timeout, failed, and
/// cost the worker its producer.
pub fn abort_serving_reports<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                // Non-blocking: `poll(t)` spins through its last millisecond.
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let aborted = producer.abort_transaction(timeout);
        done.store(true, Ordering::Relaxed);
        aborted
    })
}
