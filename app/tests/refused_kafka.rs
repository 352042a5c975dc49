//! Records the producer refuses for good (larger than `message.max.bytes`):
//! they go to the dead-letter topic in their place, and the partition moves
//! on. On Apache Kafka, read back by the raw batch reader and by a plain
//! read_committed consumer: the mock cluster writes no transaction markers
//! and keeps no offsets sent in a transaction.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use common::{
    kafka::Kafka,
    raw::{self, RawReader},
    read_committed_all,
};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use sluice::{
    avro::{AvroCodec, Reader, RegistryConfig},
    kafka::KafkaConfig,
    prelude::*,
    runtime::letters::{KIND as DLQ_KIND, OFFSET as DLQ_OFFSET},
    runtime::{self, RunOptions},
    stats::Stats,
    topology::Guarantee,
};
use sluice_app::{
    simulate::logins,
    topologies::user_login::{self, ProcessedUserLogin, UserLogin},
};

const RECORDS: usize = 400;
/// Every 10th login is one user's, on one partition.
const ONE_USER_EVERY: usize = 10;
/// The 4 KB login, one of that user's.
const LARGE: usize = 200;

struct Setup {
    _registry: sluice::registry::Running,
    _kafka: Kafka,
    bootstrap: String,
    codec: Arc<AvroCodec>,
    /// The large login's partition, its end, and the large login's offset.
    partition: i32,
    end: i64,
    large_at: i64,
}

/// 400 logins, each with its own device id; the 201st is 4 KB.
async fn setup() -> Setup {
    let kafka = Kafka::start();
    let bootstrap = kafka.bootstrap.clone();
    kafka
        .create_topics(&[
            ("user-login", 4),
            ("processed-user-login", 4),
            ("user-login.dlq", 1),
        ])
        .await;
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    let codec = Arc::new(AvroCodec::new(&config).unwrap());
    let mut generator = logins::Generator::new(21, 0.0);
    let now = chrono::Utc::now().timestamp();
    // One user's logins, on one partition, among other users' on all four.
    let mut all: Vec<UserLogin> = (0..RECORDS).map(|_| generator.valid(now)).collect();
    let user = all[0].user_id.clone();
    for (i, l) in all.iter_mut().enumerate() {
        if i % ONE_USER_EVERY == 0 {
            l.user_id = user.clone();
        }
        l.device_id = format!("dev-{i}");
    }
    all[LARGE].app_version = "9".repeat(4000);
    let producer: rdkafka::producer::FutureProducer = KafkaConfig::new(&bootstrap)
        .producer(None)
        .create()
        .unwrap();
    let mut delivered = Vec::new();
    for l in &all {
        let bytes = codec.encode("user-login", l).await.unwrap();
        let r = rdkafka::producer::FutureRecord::to("user-login")
            .key(l.user_id.as_str())
            .payload(&bytes);
        delivered.push(producer.send(r, Duration::from_secs(5)).await.unwrap());
    }
    let partition = delivered[LARGE].partition;
    let end = delivered
        .iter()
        .filter(|d| d.partition == partition)
        .map(|d| d.offset + 1)
        .max()
        .unwrap();
    Setup {
        _registry: registry,
        _kafka: kafka,
        bootstrap,
        codec,
        partition,
        end,
        large_at: delivered[LARGE].offset,
    }
}

/// Runs `topology` with a producer that refuses records over 2000 bytes
/// until it has read all the logins and sent a dead letter.
async fn run_until_quiet(s: &Setup, topology: Topology) -> Arc<Stats> {
    let mut kafka = KafkaConfig::new(&s.bootstrap);
    kafka
        .properties
        .push(("message.max.bytes".into(), "2000".into()));
    let opts = RunOptions {
        guarantee: Guarantee::ExactlyOnce,
        instance_id: "refused".into(),
        ..RunOptions::default()
    };
    let stats = Arc::new(Stats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (codec, st) = (s.codec.clone(), stats.clone());
    let task = tokio::spawn(async move {
        runtime::run_topology(&topology, &kafka, codec, &opts, st, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    // Wait for the dead letter and a quiet second, then stop, which commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut last_in = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let read = n(&stats.records_in);
        if n(&stats.dead_letters) >= 1 && read >= RECORDS as u64 && read == last_in {
            break;
        }
        last_in = read;
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter within 60 s: in {read} out {} dlq {} aborts {}",
            n(&stats.records_out),
            n(&stats.dead_letters),
            n(&stats.aborts),
        );
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("group.id", "sluice-user-login")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("user-login", s.partition);
    let committed = reader
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let at = committed
        .find_partition("user-login", s.partition)
        .map(|e| e.offset());
    assert_eq!(
        at,
        Some(Offset::Offset(s.end)),
        "committed past every login"
    );
    stats
}

/// What committed transactions wrote to a topic's partitions.
async fn committed(
    s: &Setup,
    topic: &str,
    partitions: i32,
) -> Vec<kafka_protocol::records::Record> {
    let mut reader = RawReader::connect(&s.bootstrap).await;
    let mut out = Vec::new();
    for p in 0..partitions {
        out.extend(raw::committed(reader.read_partition(topic, p).await).0);
    }
    out
}

fn headers(r: &kafka_protocol::records::Record) -> BTreeMap<String, String> {
    r.headers
        .iter()
        .map(|(k, v)| {
            let v = v.as_deref().unwrap_or_default();
            (k.to_string(), String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}

/// Every login but the large one, `per` times, in committed transactions.
async fn check_outputs(s: &Setup, per: usize) {
    let witness = read_committed_all(&s.bootstrap, "processed-user-login").await;
    assert_eq!(witness.len(), per * (RECORDS - 1), "read_committed outputs");
    let reader = Reader::new(common::schema("processed-user-login"));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in committed(s, "processed-user-login", 4).await {
        let value = r.value.as_deref().unwrap_or_default();
        let (_, p): (u32, ProcessedUserLogin) = s.codec.decode(value, &reader).await.unwrap();
        *seen.entry(p.device_id).or_default() += 1;
    }
    let wrong: Vec<(String, usize)> = (0..RECORDS)
        .filter(|&i| i != LARGE)
        .map(|i| format!("dev-{i}"))
        .map(|d| (seen.get(&d).copied().unwrap_or(0), d))
        .filter(|(n, _)| *n != per)
        .map(|(n, d)| (d, n))
        .collect();
    assert!(wrong.is_empty(), "outputs per login, not {per}: {wrong:?}");
    let large = format!("dev-{LARGE}");
    assert!(!seen.contains_key(&large), "the large login came out");
}

/// The one dead letter: the large login's, without its key and value.
async fn check_dead_letter(s: &Setup) {
    let dlq = committed(s, "user-login.dlq", 1).await;
    assert_eq!(dlq.len(), 1, "one dead letter");
    let h = headers(&dlq[0]);
    assert_eq!(h[DLQ_KIND], "refused_by_producer");
    assert_eq!(h[DLQ_OFFSET], s.large_at.to_string());
    assert!(
        h["sluice.error.message"].contains("message.max.bytes"),
        "{h:?}"
    );
    assert!(h.contains_key("sluice.value.omitted"), "{h:?}");
    assert!(dlq[0].value.is_none() && dlq[0].key.is_none());
    // The plain read_committed witness agrees.
    let seen = read_committed_all(&s.bootstrap, "user-login.dlq").await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].null_value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_too_large_for_the_producer_goes_to_the_dead_letter_topic() {
    let s = setup().await;
    let stats = run_until_quiet(&s, user_login::build().unwrap()).await;
    check_outputs(&s, 1).await;
    check_dead_letter(&s).await;
    // Handled twice, as the first dead letter was refused too and its unit
    // aborted, but counted once: when it committed.
    assert_eq!(stats.dead_letters_by_kind()["refused_by_producer"], 1);
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    let out = stats.records_out.load(Ordering::Relaxed);
    assert_eq!(out, RECORDS as u64 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_second_output_takes_the_first_out_again() {
    let s = setup().await;
    // Two outputs per login, a short one first: the large login's first
    // output is in the transaction when its second is refused.
    let twice = topology("user-login")
        .source::<UserLogin>("user-login")
        .flat_map("short-and-full", |l: UserLogin| {
            let mut short = l.clone();
            short.app_version.truncate(8);
            [short, l].map(|l| user_login::normalise(l, 0))
        })
        .to_topic("processed-user-login")
        .build()
        .unwrap();
    let stats = run_until_quiet(&s, twice).await;
    assert!(stats.aborts.load(Ordering::Relaxed) >= 1);
    check_outputs(&s, 2).await;
    check_dead_letter(&s).await;
    let out = stats.records_out.load(Ordering::Relaxed);
    assert_eq!(out, 2 * (RECORDS as u64 - 1), "counted once committed");
}
