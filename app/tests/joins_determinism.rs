//! One generated stream of readings and device moves through the
//! iot-enriched join four ways on Apache Kafka: (a) live, each move
//! produced just before the readings stamped after it, (b) preloaded,
//! the whole devices table and every reading in before the worker starts,
//! (c) preloaded with the worker (the binary) ended again and again right
//! before or right after its transaction commits, (d)
//! with workers going 1 → 3 → 1. A reading joins the row its device had at
//! the reading's time, so all four give the same enriched readings, and
//! those are the ones computed independently.

mod common;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{kafka::Kafka, member::Member, read_committed_all, windows::past_base};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::{
    avro::{AvroCodec, AvroSchema, Reader, RegistryConfig},
    kafka::KafkaConfig,
    runtime::RunOptions,
};
use sluice_app::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_enriched::{self, ALERTS, DeviceInfo, EnrichedReading},
};

const PARTITIONS: i32 = 4;
const DEVICES: usize = 10;
const STEPS: i64 = 150;
const SITES: [&str; 4] = ["plant-a", "plant-b", "plant-c", "warehouse"];

/// What is produced, in order: a device's row, or a reading.
enum Event {
    Row(DeviceInfo, i64),
    Reading(SensorReading),
}

/// Rows valid from before the first reading, then a move every few steps;
/// and what each reading must carry: (device, time) → site.
fn stream() -> (Vec<Event>, BTreeMap<(String, i64), String>) {
    let base = past_base(30);
    let mut rng = StdRng::seed_from_u64(21);
    let id = |d: usize| format!("dev-{d:02}");
    let row = |d: usize, site: &str| DeviceInfo {
        device_id: id(d),
        site: site.to_string(),
        model: None,
        temperature_max: None,
        humidity_max: None,
    };
    let mut site: Vec<usize> = (0..DEVICES).map(|d| d % SITES.len()).collect();
    let mut events: Vec<Event> = (0..DEVICES)
        .map(|d| Event::Row(row(d, SITES[site[d]]), base - 60_000))
        .collect();
    let mut want = BTreeMap::new();
    for step in 0..STEPS {
        let at = base + step * 1000;
        if step > 0 && rng.random_bool(0.3) {
            let d = rng.random_range(0..DEVICES);
            site[d] = (site[d] + rng.random_range(1..SITES.len())) % SITES.len();
            events.push(Event::Row(row(d, SITES[site[d]]), at));
        }
        for (d, s) in site.iter().enumerate() {
            let r = SensorReading {
                device_id: id(d),
                sensor_type: SensorType::Pressure,
                value: 1000.0 + step as f64,
                unit: "hPa".into(),
                timestamp: at + d as i64,
            };
            want.insert((id(d), r.timestamp), SITES[*s].to_string());
            events.push(Event::Reading(r));
        }
    }
    (events, want)
}

/// (topology, readings, devices, enriched) of a way through.
fn names(way: &str) -> [String; 4] {
    [
        format!("det-join-{way}"),
        format!("readings-{way}"),
        format!("devices-{way}"),
        format!("enriched-{way}"),
    ]
}

struct Setup {
    _registry: sluice::registry::Running,
    registry_url: String,
    codec: Arc<AvroCodec>,
    kafka: KafkaConfig,
    producer: FutureProducer,
}

impl Setup {
    async fn topics(&self, cluster: &Kafka, names: &[String; 4]) {
        let [_, readings, devices, enriched] = names;
        let dlq = format!("{readings}.dlq");
        cluster
            .create_topics(&[
                (readings, PARTITIONS),
                (devices, 2),
                (enriched, PARTITIONS),
                (&dlq, 1),
            ])
            .await;
    }

    /// Produces `events` in order, each acknowledged before the next.
    async fn produce(&self, events: &[Event], readings: &str, devices: &str) {
        for e in events {
            let (topic, key, value, at) = match e {
                Event::Row(info, at) => (
                    devices,
                    &info.device_id,
                    self.codec.encode(devices, info).await.unwrap(),
                    *at,
                ),
                Event::Reading(r) => (
                    readings,
                    &r.device_id,
                    self.codec.encode(readings, r).await.unwrap(),
                    r.timestamp,
                ),
            };
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(&value)
                .timestamp(at);
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }

    /// The enriched readings committed on `topic`: (device, time) → site.
    async fn enriched(&self, topic: &str) -> BTreeMap<(String, i64), String> {
        let reader = Reader::new(apache_avro::Schema::parse_str(EnrichedReading::SCHEMA).unwrap());
        let mut out = BTreeMap::new();
        for r in read_committed_all(&self.kafka.bootstrap, topic).await {
            let (_, e) = self
                .codec
                .decode::<EnrichedReading>(&r.value, &reader)
                .await
                .unwrap();
            let site = e.site.unwrap_or_else(|| "(none)".into());
            let twice = out.insert((e.device_id.clone(), e.timestamp), site);
            assert!(
                twice.is_none(),
                "{topic}: {} at {} twice",
                e.device_id,
                e.timestamp
            );
        }
        out
    }

    /// Waits until `topic` holds `n` enriched readings (committed).
    async fn wait_for(&self, topic: &str, n: usize) -> BTreeMap<(String, i64), String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let got = self.enriched(topic).await;
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn member(&self, way: &str, instance: &str) -> Member {
        let opts = RunOptions {
            instance_id: instance.to_string(),
            ..RunOptions::default()
        };
        let [name, readings, devices, enriched] = names(way);
        let topology = iot_enriched::declare(&name, &readings, &devices, &enriched, None).unwrap();
        Member::spawn(topology, &self.kafka, &self.codec, opts)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_preloaded_killed_and_rebalanced_give_the_same_enriched_readings() {
    sluice::logging::init(sluice::logging::LogFormat::Human, "off");
    let cluster = Kafka::start();
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    let kafka = cluster.config();
    let s = Setup {
        registry_url: registry.url(),
        _registry: registry,
        codec: Arc::new(AvroCodec::new(&config).unwrap()),
        producer: kafka.producer(None).create().unwrap(),
        kafka,
    };
    let (events, want) = stream();
    let n = want.len();
    // The ways' topics take the shipped topics' schemas.
    for way in ["live", "preloaded", "rebalanced"] {
        let [_, readings, devices, enriched] = names(way);
        for (topic, of) in [
            (readings, iot_enriched::SOURCE),
            (devices, iot_enriched::DEVICES),
            (enriched, iot_enriched::SINK),
        ] {
            let text = common::schema_text(of);
            sluice::avro::RegistryClient::new(config.clone())
                .unwrap()
                .register(&sluice::schemas::value_subject(&topic), &text)
                .await
                .unwrap();
        }
    }

    // (a) Live: the worker runs while the stream is produced, bit by bit.
    let live_names = names("live");
    s.topics(&cluster, &live_names).await;
    let m = s.member("live", "live");
    for part in events.chunks(events.len() / 20 + 1) {
        s.produce(part, &live_names[1], &live_names[2]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = s.wait_for(&live_names[3], n).await;
    m.stop().await;

    // (b) Preloaded: the table and every reading in before the worker starts.
    let pre = names("preloaded");
    s.topics(&cluster, &pre).await;
    s.produce(&events, &pre[1], &pre[2]).await;
    let m = s.member("preloaded", "preloaded");
    let preloaded = s.wait_for(&pre[3], n).await;
    m.stop().await;

    // (c) Preloaded, and `sluice run` ended again and again right before
    // or right after its transaction commits, in small units.
    cluster
        .create_topics(&[
            (iot_enriched::SOURCE, PARTITIONS),
            (iot_enriched::DEVICES, 2),
            (iot_enriched::SINK, PARTITIONS),
            (ALERTS, PARTITIONS),
            ("iot_sensor_data.dlq", 1),
        ])
        .await;
    s.produce(&events, iot_enriched::SOURCE, iot_enriched::DEVICES)
        .await;
    let mut rng = StdRng::seed_from_u64(22);
    let mut lives = 0;
    let killed = loop {
        let got = s.enriched(iot_enriched::SINK).await;
        if got.len() >= n {
            break got;
        }
        assert!(lives < 40, "only {} of {n} enriched in 40 lives", got.len());
        let point = if lives % 2 == 0 { "after" } else { "before" };
        let failpoint = format!("{point}-txn-commit@{}", rng.random_range(2..5));
        let log = tempfile::NamedTempFile::new().unwrap();
        lives += 1;
        let mut w = common::Proc(
            common::sluice()
                .args(["run", "--topology", "iot-enriched"])
                .env("KAFKA_BOOTSTRAP_SERVERS", &s.kafka.bootstrap)
                .env("SCHEMA_REGISTRY_URL", &s.registry_url)
                .env("SLUICE_INSTANCE_ID", "join-determinism")
                .env("SLUICE_BATCH_SIZE", "100")
                .env("SLUICE_FAILPOINT", &failpoint)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log.reopen().unwrap()))
                .spawn()
                .unwrap(),
        );
        // A life ends at its failpoint, or is killed once all is in.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = w.0.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(6),
                    "life {lives} ({failpoint}) ended with {status}, not at its failpoint:\n{}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
                break;
            }
            if s.enriched(iot_enriched::SINK).await.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "life {lives} neither ended nor finished"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(w);
    };

    // (d) 1 → 3 → 1 workers.
    let reb = names("rebalanced");
    s.topics(&cluster, &reb).await;
    let third = events.len() / 3;
    s.produce(&events[..third], &reb[1], &reb[2]).await;
    let a = s.member("rebalanced", "a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.read() == 0 {
        assert!(Instant::now() < deadline, "the first worker read nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = s.member("rebalanced", "b");
    let c = s.member("rebalanced", "c");
    let deadline = Instant::now() + Duration::from_secs(60);
    while [&b, &c].iter().any(|m| !m.stats.health.is_joined()) {
        assert!(Instant::now() < deadline, "the new members never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.produce(&events[third..2 * third], &reb[1], &reb[2]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.read() == 0 || c.read() == 0 {
        assert!(
            Instant::now() < deadline,
            "the new members read nothing: {} and {}",
            b.read(),
            c.read()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shared = [b.read(), c.read()];
    b.stop().await;
    c.stop().await;
    s.produce(&events[2 * third..], &reb[1], &reb[2]).await;
    let rebalanced = s.wait_for(&reb[3], n).await;
    a.stop().await;

    for (way, got) in [
        ("live", &live),
        ("preloaded", &preloaded),
        ("killed", &killed),
        ("rebalanced", &rebalanced),
    ] {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", got.get(k)))
            .take(20)
            .collect();
        assert!(
            wrong.is_empty() && got.len() == n,
            "{way}: {} enriched readings for {n}; wrong or missing:\n{}",
            got.len(),
            wrong.join("\n")
        );
    }
    assert!(lives >= 3, "only {lives} lives in (c)");
    eprintln!(
        "{n} readings with {} moves four ways, the same sites each; {lives} worker lives in (c); members b and c read {shared:?}",
        events.len() - n - DEVICES
    );
}
