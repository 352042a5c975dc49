//! Whether the brokers let this worker in and let it do its job, asked
//! before any member starts: a wrong password, an untrusted certificate, a
//! plaintext client on a TLS port or a missing ACL never gets better by
//! retrying, and librdkafka reports each as a stream of errors from every
//! client while it retries for ever. Asked once, each is one refusal that
//! says what to check; an unreachable broker is not a refusal (workers wait
//! for it as they wait out any outage).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    producer::{BaseProducer, Producer},
    types::RDKafkaErrorCode,
};

use super::KafkaConfig;

/// What a topology's members will do on the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub topology: String,
    /// Topics it reads and writes (source first).
    pub topics: Vec<String>,
    pub group: String,
    /// The transactional id of its first member, when it writes in
    /// transactions (ACLs grant ids by prefix, so one stands for all).
    pub transactional_id: Option<TransactionalId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionalId {
    pub id: String,
    /// What every member's id starts with.
    pub prefix: String,
}

/// A refusal: always the user's to fix (settings or ACLs); retrying the
/// same thing does not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Kafka refused the SASL credentials ({detail}): check sasl.username, sasl.password and sasl.mechanism against the user the broker has"
    )]
    Credentials { detail: String },
    #[error(
        "the broker's TLS certificate is not trusted ({detail}): check that ssl.ca.location names the CA that signed it"
    )]
    Certificate { detail: String },
    #[error(
        "the broker's listener speaks another protocol than security.protocol says ({detail}): set security.protocol to the listener's (SASL_SSL, SSL, SASL_PLAINTEXT or PLAINTEXT)"
    )]
    Protocol { detail: String },
    #[error(
        "topology {topology}: Kafka denies access to topic {topic}: grant this user Describe, Read and Write on it (kafka-acls --topic {topic})"
    )]
    Topic { topology: String, topic: String },
    #[error(
        "topology {topology}: Kafka denies access to consumer group {group}: grant this user Read on the group (kafka-acls --group {group})"
    )]
    Group { topology: String, group: String },
    #[error(
        "topology {topology}: Kafka denies the transactional id {id}: grant this user Write and Describe on transactional ids with its prefix (kafka-acls --transactional-id {prefix} --resource-pattern-type prefixed)"
    )]
    TransactionalId {
        topology: String,
        id: String,
        prefix: String,
    },
}

impl Refusal {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Credentials { .. } => "credentials",
            Refusal::Certificate { .. } => "certificate",
            Refusal::Protocol { .. } => "protocol",
            Refusal::Topic { .. } => "topic_acl",
            Refusal::Group { .. } => "group_acl",
            Refusal::TransactionalId { .. } => "transactional_id_acl",
        }
    }
}

/// How long the brokers get to answer before the check gives way to the
/// workers' own waiting.
const CONNECT: Duration = Duration::from_secs(15);
const CALL: Duration = Duration::from_secs(10);

/// Asks the brokers; `Ok` also when they do not answer at all.
pub fn check(kafka: &KafkaConfig, needs: &[Needs]) -> Result<(), Refusal> {
    let Some(first) = needs.first() else {
        return Ok(());
    };
    let mut config = kafka.client();
    config.set("group.id", &first.group);
    let consumer: BaseConsumer<Recorder> = match config.create_with_context(Recorder::default()) {
        Ok(c) => c,
        // A bad property: the workers' own clients say so.
        Err(_) => return Ok(()),
    };
    if !connected(&consumer)? {
        // librdkafka's plaintext request to a TLS listener gets no answer
        // at all, which looks like a slow broker: asking in TLS tells.
        let plaintext = !kafka
            .property("security.protocol")
            .is_some_and(|p| p.to_ascii_uppercase().contains("SSL"));
        if let Some(addr) = kafka.bootstrap.split(',').next()
            && plaintext
            && speaks_tls(addr.trim())
        {
            return Err(Refusal::Protocol {
                detail: format!("{addr} answers in TLS, security.protocol is plaintext"),
            });
        }
        return Ok(());
    }
    for n in needs {
        for topic in &n.topics {
            let denied = consumer
                .fetch_metadata(Some(topic), CALL)
                .ok()
                .and_then(|md| md.topics().first().and_then(|t| t.error()))
                .map(RDKafkaErrorCode::from)
                == Some(RDKafkaErrorCode::TopicAuthorizationFailed);
            if denied {
                return Err(Refusal::Topic {
                    topology: n.topology.clone(),
                    topic: topic.clone(),
                });
            }
        }
        // The first topology's group is the probe's own: no second client.
        if n.group == first.group {
            group(&consumer, n)?;
        } else {
            let mut config = kafka.client();
            config.set("group.id", &n.group);
            if let Ok(other) = config.create_with_context(Recorder::default()) {
                group(&other, n)?;
            }
        }
        if let Some(t) = &n.transactional_id {
            transactional_id(kafka, n, t)?;
        }
    }
    Ok(())
}

/// Waits for metadata; a refusal seen meanwhile ends the wait.
fn connected(consumer: &BaseConsumer<Recorder>) -> Result<bool, Refusal> {
    let until = Instant::now() + CONNECT;
    while Instant::now() < until {
        let ok = consumer
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok();
        drain(consumer);
        if let Some(r) = consumer.context().refusal() {
            return Err(r);
        }
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

/// OffsetFetch needs Describe on the group, as joining needs Read;
/// `consumer` is one with `n`'s group id.
fn group(consumer: &BaseConsumer<Recorder>, n: &Needs) -> Result<(), Refusal> {
    let mut tpl = TopicPartitionList::new();
    let Some(source) = n.topics.first() else {
        return Ok(());
    };
    let _ = tpl.add_partition_offset(source, 0, Offset::Invalid);
    // A denied coordinator lookup reaches the context, not the call, which
    // only times out.
    let until = Instant::now() + CALL;
    while Instant::now() < until {
        let answer = consumer.committed_offsets(tpl.clone(), Duration::from_secs(1));
        drain(consumer);
        let denied =
            |c| answer.as_ref().err().and_then(code) == Some(c) || consumer.context().saw(c);
        if denied(RDKafkaErrorCode::GroupAuthorizationFailed) {
            return Err(Refusal::Group {
                topology: n.topology.clone(),
                group: n.group.clone(),
            });
        }
        if answer.is_ok() {
            break;
        }
    }
    Ok(())
}

/// Serves the queue that errors and logs reach the context from (one
/// event per poll).
fn drain(consumer: &BaseConsumer<Recorder>) {
    for _ in 0..1000 {
        let _ = consumer.poll(Duration::ZERO);
    }
}

fn transactional_id(kafka: &KafkaConfig, n: &Needs, t: &TransactionalId) -> Result<(), Refusal> {
    let producer = kafka
        .producer(Some(&t.id))
        .create_with_context::<_, BaseProducer<Recorder>>(Recorder::default());
    let Ok(producer) = producer else {
        return Ok(());
    };
    match producer.init_transactions(CALL) {
        Err(e) if code(&e) == Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => {
            Err(Refusal::TransactionalId {
                topology: n.topology.clone(),
                id: t.id.clone(),
                prefix: t.prefix.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Whether `addr` answers a TLS handshake (certificate not checked).
fn speaks_tls(addr: &str) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let probe = || -> Option<bool> {
        let sock = addr.to_socket_addrs().ok()?.next()?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(3)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(3)))
            .ok()?;
        let mut b =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).ok()?;
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
        let config = b.build().configure().ok()?.verify_hostname(false);
        Some(match config.connect("kafka", stream) {
            Ok(_) => true,
            // A listener that asks for a client certificate still spoke TLS.
            Err(e) => e.to_string().contains("alert"),
        })
    };
    probe().unwrap_or(false)
}

fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// Keeps the client's errors instead of logging them: the check reports
/// what they mean, once.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Option<Refusal>>,
    codes: Mutex<Vec<RDKafkaErrorCode>>,
}

impl Recorder {
    fn saw(&self, code: RDKafkaErrorCode) -> bool {
        self.codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&code)
    }

    fn refusal(&self) -> Option<Refusal> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for Recorder {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!("librdkafka (access check): {fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, %reason, "Kafka client error (access check)");
        if let Some(c) = error.rdkafka_error_code() {
            self.codes.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
        if let Some(r) = classify(error.rdkafka_error_code(), reason) {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get_or_insert(r);
        }
    }
}

impl ConsumerContext for Recorder {}

impl rdkafka::producer::ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// What a client error means, if it is a refusal.
pub fn classify(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Refusal> {
    let detail = reason.to_string();
    let r = reason.to_ascii_lowercase();
    if matches!(
        code,
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    ) {
        return Some(Refusal::Credentials { detail });
    }
    // librdkafka's own diagnosis of a plaintext client on a TLS port, and
    // OpenSSL's of a TLS client on a plaintext one.
    if r.contains("incorrect security.protocol")
        || r.contains("wrong version number")
        || r.contains("packet length too long")
        || r.contains("plaintext broker listener")
    {
        return Some(Refusal::Protocol { detail });
    }
    if code == Some(RDKafkaErrorCode::SSL) || r.contains("certificate verify failed") {
        return Some(Refusal::Certificate { detail });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_that_are_refusals() {
        let auth = classify(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        );
        assert_eq!(auth.unwrap().kind(), "credentials");
        let ca = classify(
            Some(RDKafkaErrorCode::SSL),
            "127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
        );
        assert!(ca.unwrap().to_string().contains("ssl.ca.location"));
        let plain = classify(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?)",
        );
        assert_eq!(plain.unwrap().kind(), "protocol");
        let down = classify(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: Connection refused",
        );
        assert_eq!(down, None, "an outage is not a refusal");
    }
}
