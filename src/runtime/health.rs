//! Whether a worker can do its job, for `/readyz`, and the one log line per
//! change of that: librdkafka reports a broker outage as a stream of
//! transport errors (one per connection and retry), which say less than
//! "cannot reach any broker" once and "reachable again" once.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use rdkafka::{Statistics, config::RDKafkaLogLevel, error::KafkaError, types::RDKafkaErrorCode};

#[derive(Debug, Default)]
pub struct Health {
    /// Has had an assignment from its group since it started.
    joined: AtomicBool,
    brokers_down: AtomicBool,
    /// Was in its group and is not now (coordinator lost, session timed out).
    group_lost: AtomicBool,
    commit_failed: AtomicBool,
    /// What the group looked like when it was lost, for `/readyz`.
    group_state: Mutex<String>,
}

impl Health {
    /// An assignment arrived: the worker is in its group.
    pub fn assigned(&self, topology: &str) {
        self.joined.store(true, Ordering::Relaxed);
        // A new assignment is a fresh start: what failed before is re-read.
        self.commit_failed.store(false, Ordering::Relaxed);
        self.set_group_lost(topology, false, "");
    }

    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// A commit's outcome: a failed one makes the worker unready until one succeeds.
    pub fn committed(&self, ok: bool) {
        self.commit_failed.store(!ok, Ordering::Relaxed);
    }

    /// Why the worker cannot do its job now, if it cannot.
    pub fn not_ready(&self) -> Option<String> {
        if !self.joined.load(Ordering::Relaxed) {
            return Some("not in its consumer group yet".into());
        }
        if self.brokers_down.load(Ordering::Relaxed) {
            return Some("cannot reach any Kafka broker".into());
        }
        if self.group_lost.load(Ordering::Relaxed) {
            let state = self.group_state.lock().unwrap_or_else(|p| p.into_inner());
            return Some(format!("lost its consumer group ({state}); rejoining"));
        }
        if self.commit_failed.load(Ordering::Relaxed) {
            return Some("its last commit failed; retrying".into());
        }
        None
    }

    /// Takes in a consumer's statistics (every second): brokers and group.
    pub fn observe(&self, topology: &str, s: &Statistics) {
        let up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        if up {
            self.set_brokers_down(topology, false, "");
        }
        if let Some(g) = &s.cgrp
            && self.joined.load(Ordering::Relaxed)
        {
            // "up": the coordinator answers; join state "init": no member
            // any more (left, or its session timed out).
            let lost = g.state != "up" || g.join_state == "init";
            let state = format!("coordinator {}, join state {}", g.state, g.join_state);
            self.set_group_lost(topology, lost, &state);
        }
    }

    /// Takes in a client error; true if it is a transport failure, which
    /// this logs once per outage instead of once per connection.
    pub fn client_error(&self, topology: &str, error: &KafkaError, reason: &str) -> bool {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.set_brokers_down(topology, true, reason);
                true
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => true,
            _ => false,
        }
    }

    fn set_brokers_down(&self, topology: &str, down: bool, reason: &str) {
        if self.brokers_down.swap(down, Ordering::Relaxed) == down {
            return;
        }
        if down {
            tracing::warn!(%topology, %reason, "cannot reach any Kafka broker; not committing, retrying until they answer");
        } else {
            tracing::info!(%topology, "Kafka brokers reachable again");
        }
    }

    fn set_group_lost(&self, topology: &str, lost: bool, state: &str) {
        if lost {
            *self.group_state.lock().unwrap_or_else(|p| p.into_inner()) = state.to_string();
        }
        if self.group_lost.swap(lost, Ordering::Relaxed) == lost {
            return;
        }
        if lost {
            tracing::warn!(%topology, %state, "lost the consumer group; rejoining");
        } else {
            tracing::info!(%topology, "back in the consumer group");
        }
    }
}

/// Why librdkafka declared this client failed for good (fenced, say), if
/// it has: it will not work again, so the worker starts afresh with new
/// clients. Allocates: call it now and then, not per record.
pub fn fatal_error<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
) -> Option<String> {
    client
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

/// librdkafka's own log lines, with its per-connection failure reports
/// (facility FAIL) moved to debug: `Health` reports an outage once.
pub fn log_librdkafka(topology: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        _ if fac == "FAIL" => tracing::debug!(%topology, "librdkafka: {fac} {message}"),
        Emerg | Alert | Critical | Error => {
            tracing::error!(%topology, "librdkafka: {fac} {message}")
        }
        Warning => tracing::warn!(%topology, "librdkafka: {fac} {message}"),
        Notice | Info => tracing::info!(%topology, "librdkafka: {fac} {message}"),
        Debug => tracing::debug!(%topology, "librdkafka: {fac} {message}"),
    }
}

/// A client error: transport failures at debug (see `Health`), others as errors.
pub fn log_client_error(health: &Health, topology: &str, error: KafkaError, reason: &str) {
    if health.client_error(topology, &error, reason) {
        tracing::debug!(%topology, %error, %reason, "Kafka client error");
    } else {
        tracing::error!(%topology, %error, %reason, "Kafka client error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(broker_state: &str, cgrp: Option<(&str, &str)>) -> Statistics {
        let mut s = Statistics::default();
        let broker = rdkafka::statistics::Broker {
            nodeid: 1,
            state: broker_state.into(),
            ..Default::default()
        };
        s.brokers.insert("b1".into(), broker);
        s.cgrp = cgrp.map(|(state, join)| rdkafka::statistics::ConsumerGroup {
            state: state.into(),
            join_state: join.into(),
            ..Default::default()
        });
        s
    }

    #[test]
    fn ready_follows_brokers_group_and_commits() {
        let h = Health::default();
        assert!(h.not_ready().unwrap().contains("not in its consumer group"));
        h.assigned("t");
        assert_eq!(h.not_ready(), None);
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert!(h.client_error("t", &down, "1/1 brokers are down"));
        assert!(
            h.not_ready()
                .unwrap()
                .contains("cannot reach any Kafka broker")
        );
        h.observe("t", &stats("UP", Some(("up", "steady"))));
        assert_eq!(h.not_ready(), None, "a broker answers again");
        h.observe("t", &stats("UP", Some(("wait-broker-transport", "steady"))));
        let why = h.not_ready().unwrap();
        assert!(
            why.contains("lost its consumer group") && why.contains("wait-broker-transport"),
            "{why}"
        );
        h.observe("t", &stats("UP", Some(("up", "init"))));
        assert!(h.not_ready().is_some(), "no member any more");
        h.observe("t", &stats("UP", Some(("up", "steady"))));
        assert_eq!(h.not_ready(), None);
        h.committed(false);
        assert!(h.not_ready().unwrap().contains("commit failed"));
        h.committed(true);
        assert_eq!(h.not_ready(), None);
    }

    #[test]
    fn group_state_before_the_first_assignment_is_not_a_loss() {
        let h = Health::default();
        h.observe("t", &stats("UP", Some(("query-coord", "init"))));
        h.assigned("t");
        assert_eq!(h.not_ready(), None);
        let other = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(!h.client_error("t", &other, "bad password"));
    }
}
