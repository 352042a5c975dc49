//! The orders crate's own binary against Apache Kafka (`dev/kafka/start`)
//! and the embedded registry: orders produced in three waves, the worker
//! killed (SIGKILL) after each of the first two. Read as committed, every
//! customer's running total counts each valid order once — restored from
//! the store's changelog after each kill, not restarted — the large
//! orders are flagged once each, and the bad ones are dead letters.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use orders::{CustomerTotal, LARGE, Order, SOURCE, TOTALS};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, Producer},
};
use sluice::{
    avro::{AvroCodec, AvroSchema, Reader, RegistryClient, RegistryConfig},
    kafka::{KafkaConfig, TopicSpec, create_topics},
};

/// One Kafka node for this test, stopped when the test process exits.
fn kafka() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/kafka/start");
    let out = Command::new(script)
        .args(["--owner", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("dev/kafka/start (.ci/run installs Java and Maven)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn worker(bootstrap: &str, registry: &str, instance: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["run", "--create-topics", "--partitions", "3"])
        .args(["--bootstrap-servers", bootstrap, "--registry-url", registry])
        .args(["--metrics-addr", "127.0.0.1:0", "--instance-id", instance])
        .args(["--commit-interval", "50ms", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the orders binary")
}

/// Placed a little before the test ran: the output records carry the
/// event time, and a broker refuses timestamps far from its clock.
fn order(i: usize) -> Order {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| sluice::topology::clock::wall_clock_ms() - 60_000);
    let customer = format!("customer-{}", i % 7);
    let mut o = Order {
        order_id: format!("o-{i:04}"),
        customer,
        amount: ((i * 37) % 1500) as f64 + 0.5,
        currency: ["EUR", "USD", "GBP"][i % 3].into(),
        placed_at: start + i as i64,
    };
    if i.is_multiple_of(25) {
        o.currency = "DOGE".into();
    }
    o
}

/// Every committed record of `topic`, in partition order.
fn read_committed(bootstrap: &str, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "orders-test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let meta = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = meta.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_end < partitions && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_survive_kills_exactly_once_on_kafka() {
    let bootstrap = kafka();
    let registry = sluice::registry::spawn_preloaded(&[]).await.unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    RegistryClient::new(config.clone())
        .unwrap()
        .register(&sluice::schemas::value_subject(SOURCE), Order::SCHEMA)
        .await
        .unwrap();
    let codec = AvroCodec::new(&config).unwrap();
    let kafka = KafkaConfig::new(&bootstrap);
    let spec = TopicSpec {
        name: SOURCE.into(),
        partitions: 3,
        replication: 1,
        min_insync_replicas: None,
        compact: false,
    };
    create_topics(&kafka, &[spec]).await.unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();

    let waves = [0..200, 200..400, 400..600];
    let mut w = worker(&bootstrap, &registry.url(), "a");
    for (n, wave) in waves.iter().enumerate() {
        for i in wave.clone() {
            let o = order(i);
            let value = codec.encode(SOURCE, &o).await.unwrap();
            let record = BaseRecord::to(SOURCE)
                .key(o.customer.as_bytes())
                .payload(&value);
            producer.send(record).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        // Let the worker get some of it done, then kill it mid-stream.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if n < 2 {
            w.kill().unwrap();
            w.wait().unwrap();
            w = worker(&bootstrap, &registry.url(), "a");
        }
    }

    let valid: Vec<Order> = (0..600)
        .map(order)
        .filter(|o| orders::check(o).is_ok())
        .collect();
    let mut want: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for o in &valid {
        let e = want.entry(o.customer.clone()).or_default();
        e.0 += 1;
        e.1 += o.amount;
    }
    let reader = Reader::new(apache_avro::Schema::parse_str(CustomerTotal::SCHEMA).unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let totals = loop {
        let mut totals: Vec<CustomerTotal> = Vec::new();
        for (_, v) in read_committed(&bootstrap, TOTALS) {
            totals.push(codec.decode(&v, &reader).await.unwrap().1);
        }
        if totals.len() >= valid.len() || Instant::now() > deadline {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status();
    w.wait().unwrap();

    // Per customer: 1, 2, … n once each, in order, and the right sum.
    let mut seen: BTreeMap<String, Vec<&CustomerTotal>> = BTreeMap::new();
    for t in &totals {
        seen.entry(t.customer.clone()).or_default().push(t);
    }
    assert_eq!(totals.len(), valid.len(), "one total per valid order");
    for (customer, (n, sum)) in &want {
        let got = &seen[customer];
        let counts: Vec<i64> = got.iter().map(|t| t.orders).collect();
        assert_eq!(counts, (1..=*n).collect::<Vec<_>>(), "{customer}");
        let last = got.last().unwrap();
        assert!(
            (last.total - sum).abs() < 1e-6,
            "{customer}: {} ≠ {sum}",
            last.total
        );
    }

    let large = read_committed(&bootstrap, LARGE);
    let want_large = valid
        .iter()
        .filter(|o| o.amount >= orders::LARGE_AMOUNT)
        .count();
    assert_eq!(large.len(), want_large, "each large order flagged once");
    let dead = read_committed(&bootstrap, &format!("{SOURCE}.dlq"));
    assert_eq!(
        dead.len(),
        600 - valid.len(),
        "each bad order dead-lettered once"
    );
    registry.stop().await.unwrap();
}
