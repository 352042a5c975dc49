//! Kafka client settings, topic creation and the embedded mock cluster.

pub mod access;
pub mod deliveries;
pub mod members;
pub mod partitioner;
pub mod properties;
pub mod txn;

pub use txn::Txn;

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    types::RDKafkaErrorCode,
};

/// Runs a blocking librdkafka call without stalling other tasks on this thread.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Where the brokers are, plus any librdkafka property the user passes through
/// (SASL, TLS, tuning). User properties win over sluice's defaults.
#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {
    pub bootstrap: String,
    pub properties: Vec<(String, String)>,
}

/// Parses `key=value` for `--kafka-config`.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        // Not echoed: it may be a secret with a typo in it.
        _ => Err(
            "expected a librdkafka property as key=value (e.g. security.protocol=SASL_SSL), got one without '=' or without a key (not shown: it may hold a secret)"
                .to_string(),
        ),
    }
}

/// Whether a property holds a secret that must never be logged.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "sasl.jaas",
        "private.key",
        "key.pem",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// How far a consumer fetches ahead of what it processed: a worker's,
/// and a reader's restoring a table or changelog.
const FETCH_AHEAD: [(&str, &str); 3] = [
    // Bounds what is buffered ahead of processing.
    ("queued.max.messages.kbytes", "16384"),
    // When that buffer is full, librdkafka postpones the next fetch by this
    // much (default 1 s). A worker drains 16 MiB in a fraction of that and
    // then sat idle: measured on tansu, the default cost 30–40 % of the
    // throughput; a table of a million rows took 7.6 s to restore, ~1 s
    // per 100 000 rows (queued.min.messages), where it now takes 1.5 s.
    ("fetch.queue.backoff.ms", "10"),
    // After a fetch finds a partition at its end, librdkafka waits this
    // long before fetching it again (default 500 ms, as after an error):
    // the first record after a lull then waited up to half a second, which
    // was the p99 latency at 10 000 records/s.
    ("fetch.error.backoff.ms", "20"),
];

impl KafkaConfig {
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            properties: Vec::new(),
        }
    }

    /// The user's properties with secrets masked, for logs.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret(k) {
                    "****".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The connection and the user's properties alone: for admin clients.
    pub fn client(&self) -> ClientConfig {
        self.base(&[])
    }

    fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // rdkafka passes on only the levels the `log` crate would show,
        // and sluice logs through `tracing`: without this, the `debug`
        // property a user sets to see librdkafka's debug lines shows none.
        if self.property("debug").is_some() {
            c.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        c
    }

    /// The group protocol in effect: a `group.protocol` the user passed
    /// through wins over `--group-protocol`.
    pub fn effective_protocol(&self, flag: GroupProtocol) -> GroupProtocol {
        match self.property("group.protocol") {
            Some(v) if v.eq_ignore_ascii_case("consumer") => GroupProtocol::Consumer,
            Some(_) => GroupProtocol::Classic,
            None => flag,
        }
    }

    /// The user's last setting of `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Properties the broker owns under the new group protocol (librdkafka
    /// refuses to start a consumer that sets them): what to say instead.
    pub fn check_protocol(&self, protocol: GroupProtocol) -> Result<(), String> {
        if self.effective_protocol(protocol) != GroupProtocol::Consumer {
            return Ok(());
        }
        for key in CLASSIC_ONLY {
            if self.property(key).is_some() {
                return Err(format!(
                    "the Kafka property {key} is not allowed with the consumer group protocol: the broker decides it (group.consumer.session.timeout.ms, group.consumer.heartbeat.interval.ms, group.consumer.assignors); remove it or use the classic protocol"
                ));
            }
        }
        Ok(())
    }

    /// A consumer-group member that commits only what sluice tells it to,
    /// with the classic protocol (cooperative-sticky assignment).
    pub fn consumer(&self, group_id: &str) -> ClientConfig {
        self.member(group_id, &Membership::default())
    }

    /// A consumer-group member: `membership` picks the group protocol and,
    /// with a stable instance name, static membership (KIP-345), so that a
    /// restarted member takes its old place without a rebalance.
    pub fn member(&self, group_id: &str, membership: &Membership) -> ClientConfig {
        let mut defaults = vec![
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ];
        defaults.extend(FETCH_AHEAD);
        match self.effective_protocol(membership.protocol) {
            GroupProtocol::Classic => defaults.extend([
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
            ]),
            GroupProtocol::Consumer => defaults.push(("group.protocol", "consumer")),
        }
        let mut c = self.base(&defaults);
        c.set("group.id", group_id);
        if let Some(id) = &membership.instance
            && c.get("group.instance.id").is_none()
        {
            c.set("group.instance.id", id);
        }
        if let Some(id) = &membership.client_id
            && c.get("client.id").is_none()
        {
            c.set("client.id", id);
        }
        c
    }

    /// A worker's consumer: it also reports librdkafka's statistics every
    /// second, which the lag metrics and readiness come from. Other
    /// consumers leave them off, since rdkafka's default context logs each
    /// report at info.
    pub fn worker_consumer(&self, group_id: &str, membership: &Membership) -> ClientConfig {
        let mut c = self.member(group_id, membership);
        if c.get("statistics.interval.ms").is_none() {
            c.set("statistics.interval.ms", "1000");
        }
        c
    }

    /// A reader outside any group's assignment (it commits nothing): for
    /// reading a changelog or a table's topic, as committed.
    pub fn reader(&self, group_id: &str) -> ClientConfig {
        let mut defaults = vec![
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ];
        defaults.extend(FETCH_AHEAD);
        let mut c = self.base(&defaults);
        c.set("group.id", group_id);
        c
    }

    /// An idempotent producer; transactional when given an id.
    pub fn producer(&self, transactional_id: Option<&str>) -> ClientConfig {
        let mut c = self.base(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            // Keys land where the Java client and Kafka Streams put them
            // (librdkafka's default hashes differently), so sluice's
            // outputs co-partition with topics written by Java producers.
            ("partitioner", "murmur2_random"),
            // A dead worker's open transaction blocks read_committed readers
            // until it times out; keep that short.
            ("transaction.timeout.ms", "15000"),
            ("queue.buffering.max.kbytes", "65536"),
            // Right after a commit the coordinator answers the next
            // transaction's first request with CONCURRENT_TRANSACTIONS until
            // the markers are written; the default 100 ms retry back-off
            // then stalls every commit by that much.
            ("retry.backoff.ms", "5"),
            ("retry.backoff.max.ms", "100"),
            // librdkafka 2.12 can wait forever in send_offsets_to_transaction
            // when the group coordinator's broker dies and drops out of the
            // metadata: nothing re-runs the coordinator lookup until some
            // connection of the producer changes state (librdkafka issues
            // 5456 and 5511). Closing idle connections makes such a change
            // within this long of a commit getting stuck.
            ("connections.max.idle.ms", "20000"),
        ]);
        if let Some(id) = transactional_id {
            c.set("transactional.id", id);
        }
        c
    }
}

/// Consumer settings the broker owns under the consumer group protocol.
const CLASSIC_ONLY: [&str; 3] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
];

/// Kafka's consumer group protocols: `classic` (join/sync rounds, the client
/// assigns) and `consumer` (KIP-848, Kafka 4.x: the broker assigns, members
/// heartbeat, no stop-the-world rebalance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!(
                "unknown group protocol {other:?}: use classic (any Kafka) or consumer (KIP-848, Kafka 4.0 or later)"
            )),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        })
    }
}

/// How a worker's consumer takes part in its group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub protocol: GroupProtocol,
    /// `group.instance.id` (static membership), when the member has a stable name.
    pub instance: Option<String>,
    /// `client.id`: the member's name as the group lists it (the console's
    /// owner column, Kafka's tools), unless the user set one.
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub min_insync_replicas: Option<i32>,
    /// Compacted (`cleanup.policy=compact`): a store's changelog.
    pub compact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExisted,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create Kafka admin client: {0}")]
    Client(KafkaError),
    /// The cluster refused (bad replication factor, no permission, …).
    #[error("cannot create topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
}

/// The context of a consumer that reads partitions to their end: the end
/// is news, not an error, so it is not logged as one; librdkafka's own
/// logs and other client errors go to debug.
pub struct QuietReader;

impl rdkafka::ClientContext for QuietReader {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!("librdkafka: {fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_))
            && error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(%error, %reason, "Kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietReader {}

/// The number of partitions of `topic`; `None` if it does not exist.
pub fn partitions_of(kafka: &KafkaConfig, topic: &str) -> Result<Option<i32>, KafkaError> {
    Ok(partition_counts(kafka, &[topic])?.pop().flatten())
}

/// The number of partitions of each of `topics` (`None` where it does not
/// exist), asked through one short-lived client.
pub fn partition_counts(
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<Vec<Option<i32>>, KafkaError> {
    let consumer: rdkafka::consumer::BaseConsumer<QuietReader> =
        kafka.base(&[]).create_with_context(QuietReader)?;
    blocking(|| {
        (topics.iter())
            .map(|t| partition_count(&consumer, t))
            .collect()
    })
}

/// The number of partitions of `topic` as `client` sees it; `None` if it
/// does not exist. Blocks for a metadata request.
pub fn partition_count<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    client: &C,
    topic: &str,
) -> Result<Option<i32>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0))
}

/// Deletes topics; those that do not exist are no error.
pub async fn delete_topics(kafka: &KafkaConfig, topics: &[&str]) -> Result<(), SetupError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.base(&[]).create().map_err(SetupError::Client)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(topics, &opts)
        .await
        .map_err(SetupError::Client)?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(SetupError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Creates the topics that do not exist yet; existing ones are left alone.
pub async fn create_topics(
    kafka: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, Created)>, SetupError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.base(&[]).create().map_err(SetupError::Client)?;
    let min_isr: Vec<Option<String>> = specs
        .iter()
        .map(|s| s.min_insync_replicas.map(|n| n.to_string()))
        .collect();
    let topics: Vec<NewTopic> = specs
        .iter()
        .zip(&min_isr)
        .map(|(s, isr)| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            if s.compact {
                t = t.set("cleanup.policy", "compact");
            }
            match isr {
                Some(n) => t.set("min.insync.replicas", n),
                None => t,
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(SetupError::Client)?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok((name, Created::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                Ok((name, Created::AlreadyExisted))
            }
            Err((topic, code)) => Err(SetupError::Topic {
                topic,
                reason: code.to_string(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_secrets_are_masked() {
        assert_eq!(
            parse_property("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_property("novalue").unwrap_err().contains("key=value"));
        let mut k = KafkaConfig::new("x:9092");
        k.properties = vec![
            ("sasl.password".into(), "hunter2".into()),
            ("ssl.key.password".into(), "k".into()),
            ("security.protocol".into(), "SASL_SSL".into()),
        ];
        let shown = format!("{:?}", k.redacted());
        assert!(
            !shown.contains("hunter2") && shown.contains("SASL_SSL"),
            "{shown}"
        );
    }
}
