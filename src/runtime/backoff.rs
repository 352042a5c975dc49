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
            // Transport failures are logged once per outage (`stats::health`).
            Err(e) => {
                let wait = self.next();
                tracing::debug!(%topology, error = %e, retry_in = ?wait, "consume failed");
                tokio::time::sleep(wait).await;
                Ok(None)
            }
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}
