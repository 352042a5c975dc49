//! `iot-enriched` on Apache Kafka: readings left-joined with the devices
//! table by event time. A device moved mid-stream gives readings before the
//! move the old site and after it the new; a deleted device and one never
//! described give none. A move produced while the worker runs is seen by
//! the next reading produced after it (the table is read to the end it had
//! when the reading was fetched), and a restarted worker reads the table
//! again before it joins. Read co-partitioned, the table is split between
//! two workers by the readings' partitions they own, the partitions taken
//! over in a rebalance are read before their readings are joined, and a
//! table topic with another partition count is refused.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{kafka::Kafka, member::Member as Worker, read_topic};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::{
    avro::{AvroCodec, AvroSchema, Reader, RegistryConfig},
    kafka::KafkaConfig,
    runtime::{self, RunOptions},
    stats::Stats,
    topology::{BuildError, Topology},
};
use sluice_app::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_enriched::{self, ALERTS, DEVICES, DeviceInfo, EnrichedReading, SINK, SOURCE},
};

struct Setup {
    _registry: sluice::registry::Running,
    codec: Arc<AvroCodec>,
    kafka: KafkaConfig,
    producer: FutureProducer,
}

impl Setup {
    /// The topics, the devices' with `devices` partitions.
    async fn new(kafka: &Kafka, devices: i32) -> Setup {
        sluice::logging::init(sluice::logging::LogFormat::Human, "off");
        kafka
            .create_topics(&[
                (SOURCE, 4),
                (DEVICES, devices),
                (SINK, 4),
                (ALERTS, 4),
                ("iot_sensor_data.dlq", 1),
            ])
            .await;
        let registry = sluice::registry::spawn_preloaded(&common::schemas())
            .await
            .unwrap();
        let config = RegistryConfig::new(&registry.url(), None).unwrap();
        let kafka = kafka.config();
        let producer = kafka.producer(None).create().unwrap();
        Setup {
            _registry: registry,
            codec: Arc::new(AvroCodec::new(&config).unwrap()),
            kafka,
            producer,
        }
    }

    /// Produces to `topic` and waits for the broker's acknowledgement.
    async fn send(&self, topic: &str, key: &str, value: Option<Vec<u8>>, at_ms: i64) {
        let mut record = FutureRecord::<str, Vec<u8>>::to(topic)
            .key(key)
            .timestamp(at_ms);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    async fn device(&self, id: &str, site: Option<&str>, from_ms: i64) {
        let value = match site {
            Some(site) => {
                let info = DeviceInfo {
                    device_id: id.into(),
                    site: site.into(),
                    model: None,
                    temperature_max: None,
                    humidity_max: None,
                };
                Some(self.codec.encode(DEVICES, &info).await.unwrap())
            }
            None => None,
        };
        self.send(DEVICES, id, value, from_ms).await;
    }

    /// `n` rows of other devices at once: a table reader that did not wait
    /// for the end of its topic would still be reading them when a reading
    /// produced after them is joined.
    async fn filler(&self, n: usize, at_ms: i64) {
        let info = DeviceInfo {
            device_id: "filler".into(),
            site: "nowhere".into(),
            model: Some("x".repeat(200)),
            temperature_max: None,
            humidity_max: None,
        };
        let bytes = self.codec.encode(DEVICES, &info).await.unwrap();
        let keys: Vec<String> = (0..n).map(|i| format!("filler-{i}")).collect();
        let sends = keys.iter().map(|k| {
            self.producer.send(
                FutureRecord::to(DEVICES)
                    .key(k)
                    .payload(&bytes)
                    .timestamp(at_ms),
                Duration::from_secs(60),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
    }

    async fn reading(&self, device: &str, at_ms: i64) {
        let r = SensorReading {
            device_id: device.into(),
            sensor_type: SensorType::Temperature,
            value: 20.0,
            unit: "°C".into(),
            timestamp: at_ms,
        };
        let bytes = self.codec.encode(SOURCE, &r).await.unwrap();
        self.send(SOURCE, device, Some(bytes), at_ms).await;
    }

    fn spawn(&self, instance: &str) -> Worker {
        self.spawn_of(instance, iot_enriched::build)
    }

    fn spawn_of(&self, instance: &str, build: fn() -> Result<Topology, BuildError>) -> Worker {
        let opts = RunOptions {
            instance_id: instance.to_string(),
            ..RunOptions::default()
        };
        Worker::spawn(build().unwrap(), &self.kafka, &self.codec, opts)
    }

    /// The enriched readings committed so far: (device, time) → site.
    async fn enriched(&self, want: usize) -> Sites {
        let reads = read_topic(&self.kafka.bootstrap, SINK, want, Duration::from_secs(90)).await;
        let reader = Reader::new(apache_avro::Schema::parse_str(EnrichedReading::SCHEMA).unwrap());
        let mut out = BTreeMap::new();
        for r in reads {
            let (_, e) = self
                .codec
                .decode::<EnrichedReading>(&r.value, &reader)
                .await
                .unwrap();
            assert_eq!(
                r.key.as_deref(),
                Some(e.device_id.as_bytes()),
                "keyed by device"
            );
            let twice = out.insert((e.device_id, e.timestamp), e.site);
            assert!(twice.is_none(), "a reading enriched twice");
        }
        out
    }
}

const S: i64 = 1000;

type Sites = BTreeMap<(String, i64), Option<String>>;

/// The enriched readings are those wanted; the message lists the differences.
fn same(got: &Sites, want: &Sites, what: &str) {
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: want {v:?}, got {:?}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k:?}: not sent")),
        )
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} wrong of {}:\n{}",
        wrong.len(),
        want.len(),
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readings_carry_the_site_valid_at_their_time() {
    let kafka = Kafka::start();
    let s = Setup::new(&kafka, 2).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 3600 * S;

    // The table's history, then the readings of that hour (a backlog).
    s.device("d1", Some("plant-a"), t0).await;
    s.device("d2", Some("plant-b"), t0).await;
    s.device("d2", None, t0 + 50 * S).await;
    s.device("d1", Some("plant-c"), t0 + 100 * S).await;
    let mut want = BTreeMap::new();
    for i in 0..150 {
        let at = t0 + i * S + 500;
        for d in ["d1", "d2", "d3"] {
            s.reading(d, at).await;
        }
        let d1 = if i < 100 { "plant-a" } else { "plant-c" };
        want.insert(("d1".to_string(), at), Some(d1.to_string()));
        want.insert(
            ("d2".to_string(), at),
            (i < 50).then(|| "plant-b".to_string()),
        );
        want.insert(("d3".to_string(), at), None);
    }
    let worker = s.spawn("join-1");
    same(&s.enriched(want.len()).await, &want, "the backlog");

    // Live: a move acknowledged before a reading is seen by that reading,
    // even behind a burst of other rows the table must read first.
    let t1 = chrono::Utc::now().timestamp_millis();
    for (i, site) in ["warehouse", "plant-b", "plant-a"].into_iter().enumerate() {
        let at = t1 + i as i64 * S;
        s.filler(20_000, at).await;
        s.device("d1", Some(site), at).await;
        s.reading("d1", at).await;
        want.insert(("d1".to_string(), at), Some(site.to_string()));
    }
    same(&s.enriched(want.len()).await, &want, "live moves");
    let table = worker.stats.tables.lock().unwrap()[0].clone();
    assert!(table.restoring().is_none());
    worker.stop().await;

    // A restart reads the table again before it joins.
    let worker = s.spawn("join-2");
    let t2 = chrono::Utc::now().timestamp_millis();
    s.reading("d1", t2).await;
    s.reading("d2", t2).await;
    want.insert(("d1".to_string(), t2), Some("plant-a".to_string()));
    want.insert(("d2".to_string(), t2), None);
    same(&s.enriched(want.len()).await, &want, "after a restart");
    worker.stop().await;
}

fn co_partitioned() -> Result<Topology, BuildError> {
    iot_enriched::declare_co_partitioned("iot-enriched-co", SOURCE, DEVICES, SINK, Some(ALERTS))
}

/// The keys each worker's table holds.
fn keys(w: &Worker) -> u64 {
    let table = w.stats.tables.lock().unwrap()[0].clone();
    table.keys.load(std::sync::atomic::Ordering::Relaxed)
}

/// A co-partitioned table: each of two workers reads only the devices'
/// partitions matching the readings' partitions it owns, and joins its
/// readings right; when one leaves, the other reads the partitions it
/// took over from their beginning before joining their readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_co_partitioned_table_is_read_where_its_partitions_are_owned() {
    let kafka = Kafka::start();
    let s = Setup::new(&kafka, 4).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 3600 * S;
    let devices: Vec<String> = (0..40).map(|i| format!("dev-{i:02}")).collect();
    let site = |d: usize, moved: bool| format!("site-{}", (d + moved as usize) % 5);
    for (d, id) in devices.iter().enumerate() {
        s.device(id, Some(&site(d, false)), t0).await;
        s.device(id, Some(&site(d, true)), t0 + 30 * S).await;
    }
    let mut want = BTreeMap::new();
    for i in 0..60 {
        let at = t0 + i * S + 500;
        for (d, id) in devices.iter().enumerate() {
            if (i as usize + d).is_multiple_of(6) {
                s.reading(id, at).await;
                want.insert((id.clone(), at), Some(site(d, i >= 30)));
            }
        }
    }
    let a = s.spawn_of("co-a", co_partitioned);
    let b = s.spawn_of("co-b", co_partitioned);
    same(&s.enriched(want.len()).await, &want, "two workers");
    // Once the group has settled, each reads only its share of the
    // devices (40 keys over 4 partitions, 2 partitions each).
    let split = |a: u64, b: u64| a + b == 40 && a > 0 && b > 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !split(keys(&a), keys(&b)) {
        let (ka, kb) = (keys(&a), keys(&b));
        assert!(
            std::time::Instant::now() < deadline,
            "the devices were not split between the workers: {ka} + {kb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Readings now go to both.
    let (ra, rb) = (a.read(), b.read());
    let t1 = chrono::Utc::now().timestamp_millis();
    for (d, id) in devices.iter().enumerate() {
        s.reading(id, t1).await;
        want.insert((id.clone(), t1), Some(site(d, true)));
    }
    same(
        &s.enriched(want.len()).await,
        &want,
        "split between two workers",
    );
    let (ra, rb) = (a.read() - ra, b.read() - rb);
    assert!(ra > 0 && rb > 0, "both joined readings: {ra} and {rb}");

    // One leaves: the other reads the partitions it takes over.
    a.stop().await;
    let t2 = t1 + S;
    for (d, id) in devices.iter().enumerate() {
        s.reading(id, t2).await;
        want.insert((id.clone(), t2), Some(site(d, true)));
    }
    same(&s.enriched(want.len()).await, &want, "after a rebalance");
    assert_eq!(keys(&b), 40, "the remaining worker reads every partition");
    b.stop().await;
}

/// A co-partitioned table whose topic has another partition count than
/// the source is refused, naming both counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_co_partitioned_table_of_another_partition_count_is_refused() {
    let kafka = Kafka::start();
    let s = Setup::new(&kafka, 3).await;
    let topology = co_partitioned().unwrap();
    let opts = RunOptions::default();
    let run = runtime::run_topology(
        &topology,
        &s.kafka,
        s.codec.clone(),
        &opts,
        Arc::new(Stats::default()),
        std::future::pending::<()>(),
    );
    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("refused at once")
        .expect_err("refused");
    let said = err.to_string();
    assert!(
        said.contains(&format!("table {DEVICES} has 3 partitions"))
            && said.contains(&format!("its source {SOURCE} has 4")),
        "{said}"
    );
}
