//! Whether a worker can do its job, for `/readyz`, and the one log line per
//! change of that: librdkafka reports a broker outage as a stream of
//! transport errors (one per connection and retry), which say less than
//! "cannot reach any broker" once and "reachable again" once.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use super::repeats::{Repeats, Verdict};
use rdkafka::{Statistics, config::RDKafkaLogLevel, error::KafkaError, types::RDKafkaErrorCode};

/// A commit that takes longer than this (the brokers are slow or gone)
/// makes the worker unready.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long brokers must answer again before the outage is called over.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Health {
    /// Has had an assignment from its group since it started.
    joined: AtomicBool,
    brokers_down: AtomicBool,
    /// Was in its group and is not now (coordinator lost, session timed out).
    group_lost: AtomicBool,
    commit_failed: AtomicBool,
    /// An outage was logged, and its end not yet.
    outage_told: AtomicBool,
    /// Since when the brokers have answered again after an outage.
    up_since: Mutex<Option<std::time::Instant>>,
    /// When the commit under way began.
    committing_since: Mutex<Option<std::time::Instant>>,
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

    /// A commit begins; one that takes longer than `SLOW_COMMIT` makes the
    /// worker unready until it ends.
    pub fn committing(&self) {
        *self
            .committing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// A commit's outcome: a failed one makes the worker unready until one succeeds.
    pub fn committed(&self, ok: bool) {
        *self
            .committing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
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
        let since = *self
            .committing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = since.filter(|t| t.elapsed() > SLOW_COMMIT) {
            return Some(format!(
                "a commit has been waiting for the brokers for {} s",
                t.elapsed().as_secs()
            ));
        }
        None
    }

    /// Takes in a consumer's statistics (every second): brokers and group.
    pub fn observe(&self, topology: &str, s: &Statistics) {
        let up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        if up {
            self.set_brokers_down(topology, false, "");
        }
        self.settle(topology);
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
        // The worker's clients notice an outage one by one, and a client's
        // statistics may still show a broker up for a second: say it once.
        if down {
            if !self.outage_told.swap(true, Ordering::Relaxed) {
                tracing::warn!(%topology, %reason, "cannot reach any Kafka broker; not committing, retrying until they answer");
            }
        } else if self.outage_told.load(Ordering::Relaxed) {
            *self.up_since.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
    }

    /// After an outage: says the brokers are back once they have stayed
    /// reachable for a few seconds.
    fn settle(&self, topology: &str) {
        let mut up = self.up_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.brokers_down.load(Ordering::Relaxed) {
            *up = None;
        } else if up.is_some_and(|t| t.elapsed() >= SETTLED) {
            *up = None;
            self.outage_told.store(false, Ordering::Relaxed);
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
/// (facility FAIL) moved to debug, as `Health` reports an outage once, and
/// its transaction failures (TXNERR), which the sender reports. A line
/// shown within the last minute is counted and shown again after it with
/// the count (`repeats`): librdkafka logs some retries every millisecond.
pub fn log_librdkafka(topology: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel::*;
    static REPEATS: std::sync::LazyLock<Repeats> = std::sync::LazyLock::new(Repeats::default);
    let verdict = match level {
        _ if fac == "FAIL" || fac == "TXNERR" => Verdict::Quiet,
        Info | Debug => Verdict::Show { suppressed: 0 },
        _ => REPEATS.check(
            &format!("{topology} {fac} {message}"),
            std::time::Instant::now(),
        ),
    };
    let again = match verdict {
        Verdict::Quiet => {
            tracing::debug!(%topology, "librdkafka: {fac} {message}");
            return;
        }
        Verdict::Show { suppressed: 0 } => String::new(),
        Verdict::Show { suppressed } => {
            format!(" (and {suppressed} times more since it was last shown)")
        }
    };
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(%topology, "librdkafka: {fac} {message}{again}")
        }
        Warning => tracing::warn!(%topology, "librdkafka: {fac} {message}{again}"),
        Notice | Info => tracing::info!(%topology, "librdkafka: {fac} {message}{again}"),
        Debug => tracing::debug!(%topology, "librdkafka: {fac} {message}"),
    }
}

/// A producer's client error. A producer with nothing to send closes its
/// idle connections and then reports every broker down; the member's
/// consumer, always connected while it can be, is the one that says
/// whether the brokers are reachable.
pub fn log_producer_error(topology: &str, error: KafkaError, reason: &str) {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve,
        ) => tracing::debug!(%topology, %error, %reason, "Kafka producer error"),
        _ => tracing::error!(%topology, %error, %reason, "Kafka producer error"),
    }
}

/// A member's client error: transport failures at debug (see `Health`),
/// others as errors.
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
