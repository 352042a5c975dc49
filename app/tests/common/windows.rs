//! Helpers for the windowed-topology tests: deterministic sensor readings,
//! the aggregates computed independently, the table read back, and a TCP
//! proxy that can cut PostgreSQL off.

use std::{collections::BTreeMap, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sluice::{
    avro::AvroCodec,
    kafka::KafkaConfig,
    window::{Aggregate, Stats, WindowSpec},
};
use sluice_app::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_events::{SensorWindowAggregate, WINDOWS as SINK},
};
use sqlx::PgPool;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// (device, sensor type, window start ms, window end ms)
pub type RowKey = (String, String, i64, i64);

/// count, sum, min, max, is_final
pub type RowValue = (i64, f64, f64, f64, bool);

/// `rounds` readings per device and sensor type, one second apart from
/// `base_ms`, in event-time order per device; quarter values keep every
/// partial sum exact in floating point.
pub fn readings(devices: usize, rounds: i64, base_ms: i64, seed: u64) -> Vec<SensorReading> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for round in 0..rounds {
        for d in 0..devices {
            for t in SensorType::ALL {
                out.push(SensorReading {
                    device_id: format!("dev-{d:02}"),
                    sensor_type: t,
                    value: f64::from(rng.random_range(-400..400)) / 4.0,
                    unit: t.unit().to_string(),
                    timestamp: base_ms + round * 1000,
                });
            }
        }
    }
    out
}

/// The minute-aligned start of a stretch of event time well in the past.
pub fn past_base(minutes_ago: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now - minutes_ago * 60_000).div_euclid(60_000) * 60_000
}

/// The aggregates every reading should produce, without the engine.
pub fn expected(readings: &[SensorReading], spec: &WindowSpec) -> BTreeMap<RowKey, Stats> {
    let mut out: BTreeMap<RowKey, Stats> = BTreeMap::new();
    for r in readings {
        for w in spec.kind.windows_for(r.timestamp) {
            let key = (
                r.device_id.clone(),
                r.sensor_type.as_str().to_string(),
                w.start_ms,
                w.end_ms,
            );
            out.entry(key).or_default().add(&r.value);
        }
    }
    out
}

/// The table's rows.
pub async fn stored(pool: &PgPool) -> BTreeMap<RowKey, RowValue> {
    stored_in(pool, "sensor_window_aggregates").await
}

/// The rows of a table shaped like `sensor_window_aggregates`.
pub async fn stored_in(pool: &PgPool, table: &str) -> BTreeMap<RowKey, RowValue> {
    type Fetched = (String, String, i64, i64, i64, f64, f64, f64, bool);
    let rows: Vec<Fetched> = sqlx::query_as(&format!(
        "SELECT device_id, sensor_type,
                (extract(epoch FROM window_start) * 1000)::bigint,
                (extract(epoch FROM window_end) * 1000)::bigint,
                count, sum, min, max, is_final
           FROM {table}"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(d, s, ws, we, c, su, mi, ma, f)| ((d, s, ws, we), (c, su, mi, ma, f)))
        .collect()
}

/// Total count over all rows: how many readings have been committed.
pub async fn committed_count(pool: &PgPool) -> i64 {
    committed_in(pool, "sensor_window_aggregates").await
}

/// The same for another table (0 until it exists).
pub async fn committed_in(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(&format!("SELECT sum(count)::bigint FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap_or(None)
        .unwrap_or(0)
}

/// Asserts the table holds exactly the expected aggregates.
pub fn assert_exact(stored: &BTreeMap<RowKey, RowValue>, expected: &BTreeMap<RowKey, Stats>) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    let extra: Vec<_> = stored
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing rows {missing:?}, extra rows {extra:?}"
    );
    for (k, e) in expected {
        let (count, sum, min, max, _) = stored[k];
        assert_eq!(
            (count, sum, min, max),
            (e.count as i64, e.sum, e.min, e.max),
            "row {k:?}"
        );
    }
}

/// Produces readings keyed by device with their event time as timestamp.
pub async fn produce(kafka: &KafkaConfig, codec: &AvroCodec, readings: &[SensorReading]) {
    let producer: rdkafka::producer::FutureProducer = kafka.producer(None).create().unwrap();
    produce_with(&producer, codec, readings).await;
}

pub async fn produce_with(
    producer: &rdkafka::producer::FutureProducer,
    codec: &AvroCodec,
    readings: &[SensorReading],
) {
    produce_to(producer, codec, "iot_sensor_data", readings).await;
}

/// Readings to `topic` (Avro under the schema of `iot_sensor_data`).
pub async fn produce_to(
    producer: &rdkafka::producer::FutureProducer,
    codec: &AvroCodec,
    topic: &str,
    readings: &[SensorReading],
) {
    let mut deliveries = Vec::new();
    for r in readings {
        let bytes = codec.encode("iot_sensor_data", r).await.unwrap();
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(&r.device_id)
            .payload(&bytes)
            .timestamp(r.timestamp);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Produces raw bytes (undecodable records) keyed by `key`.
pub async fn produce_raw(kafka: &KafkaConfig, key: &str, values: &[Vec<u8>]) {
    let producer: rdkafka::producer::FutureProducer = kafka.producer(None).create().unwrap();
    for v in values {
        producer
            .send(
                rdkafka::producer::FutureRecord::to("iot_sensor_data")
                    .key(key)
                    .payload(v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// A loopback TCP proxy to PostgreSQL that can be cut: while down, it
/// closes every open connection and refuses new ones.
pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, watch_up) = watch::channel(true);
        let target = target.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*watch_up.borrow() {
                    drop(client);
                    continue;
                }
                let (target, mut watch_up) = (target.clone(), watch_up.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut c, mut s) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                        _ = watch_up.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Proxy { port, up, task }
    }

    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stored reading: device, sensor type, value, unit, event time ms.
pub type StoredReading = (String, String, f64, String, i64);

/// The rows of `sensor_readings` (none until it exists), in reading order.
pub async fn stored_readings(pool: &PgPool) -> Vec<StoredReading> {
    let mut rows: Vec<StoredReading> = sqlx::query_as(
        "SELECT device_id, sensor_type, value, unit, (extract(epoch FROM event_time) * 1000)::bigint
           FROM sensor_readings",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.sort_by(|a, b| a.partial_cmp(b).expect("finite values"));
    rows
}

/// How many readings `sensor_readings` holds (0 until it exists).
pub async fn readings_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sensor_readings")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Asserts `sensor_readings` holds every reading exactly once.
pub async fn assert_every_reading_once(pool: &PgPool, all: &[SensorReading]) {
    let mut want: Vec<StoredReading> = all
        .iter()
        .map(|r| {
            let t = r.sensor_type.as_str().to_string();
            (r.device_id.clone(), t, r.value, r.unit.clone(), r.timestamp)
        })
        .collect();
    want.sort_by(|a, b| a.partial_cmp(b).expect("finite values"));
    let got = stored_readings(pool).await;
    assert_eq!(got.len(), want.len(), "readings stored vs produced");
    let wrong = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    assert_eq!(
        wrong, 0,
        "{wrong} stored readings differ from the produced ones"
    );
}

/// The windows final once every partition's watermark reached
/// `watermark_ms`, and what each must hold.
pub fn expected_final(
    readings: &[SensorReading],
    spec: &WindowSpec,
    watermark_ms: i64,
) -> BTreeMap<RowKey, Stats> {
    let mut all = expected(readings, spec);
    all.retain(|(_, _, start, end), _| {
        spec.closes_at(sluice::window::Window {
            start_ms: *start,
            end_ms: *end,
        }) <= watermark_ms
    });
    all
}

/// Every committed record of the topic of final windows, decoded, with
/// its record key.
pub async fn final_windows(
    bootstrap: &str,
    codec: &AvroCodec,
    topic: &str,
) -> Vec<(Option<Vec<u8>>, SensorWindowAggregate)> {
    let reader = sluice::avro::Reader::new(super::schema(SINK));
    let mut out = Vec::new();
    for r in super::read_committed_all(bootstrap, topic).await {
        let (_, w) = codec
            .decode::<SensorWindowAggregate>(&r.value, &reader)
            .await
            .unwrap();
        out.push((r.key, w));
    }
    out
}

/// Asserts the topic holds each expected window once, exact, keyed by device.
pub fn assert_final_windows_exact(
    got: &[(Option<Vec<u8>>, SensorWindowAggregate)],
    expected: &BTreeMap<RowKey, Stats>,
) {
    let mut seen: BTreeMap<RowKey, &SensorWindowAggregate> = BTreeMap::new();
    for (key, w) in got {
        assert_eq!(
            key.as_deref(),
            Some(w.device_id.as_bytes()),
            "keyed by device"
        );
        let k = (
            w.device_id.clone(),
            w.sensor_type.clone(),
            w.window_start,
            w.window_end,
        );
        assert!(
            seen.insert(k.clone(), w).is_none(),
            "window {k:?} emitted twice"
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    let extra: Vec<_> = seen.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing windows {missing:?}, extra windows {extra:?}"
    );
    for (k, e) in expected {
        let w = seen[k];
        assert_eq!(
            (w.count, w.sum, w.min, w.max),
            (e.count as i64, e.sum, e.min, e.max),
            "window {k:?}"
        );
        assert_eq!(w.avg, e.sum / e.count as f64, "window {k:?}");
    }
}

/// What a test of a windowed topology with an output topic runs against:
/// Apache Kafka with the readings' topics and `output`, the embedded
/// registry holding `output_schema` under `<output>-value` too, and a
/// migrated PostgreSQL database of its own.
pub struct WindowsFixture {
    pub cluster: super::kafka::Kafka,
    pub registry: sluice::registry::Running,
    pub codec: std::sync::Arc<AvroCodec>,
    pub kafka: KafkaConfig,
    pub db: super::TestDb,
    pub pool: PgPool,
}

impl WindowsFixture {
    pub async fn start(output: &str, output_schema: &str) -> WindowsFixture {
        use sluice::avro::{RegistryClient, RegistryConfig};
        sluice::logging::init(sluice::logging::LogFormat::Human, "off");
        let cluster = super::kafka::Kafka::start();
        cluster
            .create_topics(&[
                ("iot_sensor_data", 3),
                ("iot_sensor_data.dlq", 1),
                ("iot_sensor_data.late", 1),
                (output, 3),
            ])
            .await;
        let registry = sluice::registry::spawn_preloaded(&super::schemas())
            .await
            .unwrap();
        let config = RegistryConfig::new(&registry.url(), None).unwrap();
        RegistryClient::new(config.clone())
            .unwrap()
            .register(&sluice::schemas::value_subject(output), output_schema)
            .await
            .unwrap();
        let db = super::TestDb::create().await;
        let pool = sluice::db::connect(&db.url).await.unwrap();
        sluice::db::migrate(&pool).await.unwrap();
        WindowsFixture {
            kafka: cluster.config(),
            cluster,
            registry,
            codec: std::sync::Arc::new(AvroCodec::new(&config).unwrap()),
            db,
            pool,
        }
    }
}
