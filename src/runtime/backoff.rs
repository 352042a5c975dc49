//! Doubling waits between retries, and what a consume error means.

use std::time::Duration;

use super::RuntimeError;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Doubling waits from 100 ms up to 10 s.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    pub fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        d
    }

    /// The consumed message; on a consume error, logs, waits and gives
    /// `None`; a fatal one ends the worker, to be started afresh.
    ///
    /// A connection failure is news, not a failed read: librdkafka
    /// reconnects by itself, and a consumer queues one such error per
    /// broker connection and retry while the brokers are away. Waiting on
    /// each made a worker that had ridden out an outage sleep through that
    /// backlog, 10 s an error, long after the brokers were back. Other
    /// errors wait, briefly, so a persistent one cannot spin the loop.
    pub async fn received<M>(
        &mut self,
        msg: rdkafka::error::KafkaResult<M>,
        topology: &str,
    ) -> Result<Option<M>, RuntimeError> {
        match msg {
            Ok(m) => {
                *self = Backoff::new();
                Ok(Some(m))
            }
            Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                Err(RuntimeError::Fatal {
                    topology: topology.to_string(),
                    reason: e.to_string(),
                })
            }
            // Reported once per outage by `stats::health`.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(%topology, error = %e, "consumer connection error");
                Ok(None)
            }
            Err(e) => {
                let wait = self.next().min(MAX_CONSUME_WAIT);
                tracing::warn!(%topology, error = %e, retry_in = ?wait, "consume failed");
                tokio::time::sleep(wait).await;
                Ok(None)
            }
        }
    }
}

/// The longest a consume error holds the loop up: the records of other
/// partitions wait behind it.
const MAX_CONSUME_WAIT: Duration = Duration::from_secs(1);

fn is_connection_error(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            BrokerTransportFailure | AllBrokersDown | Resolve | RequestTimedOut | OperationTimedOut
        )
    )
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

    use super::*;

    fn error(code: RDKafkaErrorCode) -> rdkafka::error::KafkaResult<()> {
        Err(KafkaError::MessageConsumption(code))
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_of_connection_errors_costs_no_time() {
        let mut b = Backoff::new();
        let started = tokio::time::Instant::now();
        for _ in 0..50 {
            let got = b
                .received(error(RDKafkaErrorCode::BrokerTransportFailure), "t")
                .await;
            assert!(matches!(got, Ok(None)));
            let got = b
                .received(error(RDKafkaErrorCode::AllBrokersDown), "t")
                .await;
            assert!(matches!(got, Ok(None)));
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_wait_a_doubling_while_of_at_most_a_second() {
        let mut b = Backoff::new();
        let started = tokio::time::Instant::now();
        for _ in 0..6 {
            let got = b
                .received(error(RDKafkaErrorCode::TopicAuthorizationFailed), "t")
                .await;
            assert!(matches!(got, Ok(None)));
        }
        // 100 + 200 + 400 + 800 ms, then 1 s twice.
        assert_eq!(started.elapsed(), Duration::from_millis(3500));
        assert!(matches!(b.received(Ok(()), "t").await, Ok(Some(()))));
        let again = tokio::time::Instant::now();
        let _ = b
            .received(error(RDKafkaErrorCode::TopicAuthorizationFailed), "t")
            .await;
        assert_eq!(again.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_fatal_error_ends_the_member() {
        let mut b = Backoff::new();
        let fatal: rdkafka::error::KafkaResult<()> = Err(KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::Fenced,
        ));
        assert!(matches!(
            b.received(fatal, "t").await,
            Err(RuntimeError::Fatal { .. })
        ));
    }
}
