//! The iot-windows topology on Apache Kafka into a real PostgreSQL: exact
//! aggregates, finality, dead letters and late records; workers joining and
//! leaving while windows are open (1 → 3 → 1, with each group protocol);
//! PostgreSQL cut off mid-stream.

mod common;

use std::{sync::Arc, time::Duration};

use common::{TestDb, kafka::Kafka, member::Member as Worker, read_topic, windows::*};
use sluice::{
    avro::{AvroCodec, RegistryConfig},
    kafka::{GroupProtocol, KafkaConfig},
    runtime::RunOptions,
    window::WindowSpec,
};
use sluice_app::topologies::{iot_alerts::SensorReading, iot_windows};
use sqlx::PgPool;

struct Setup {
    _registry: sluice::registry::Running,
    codec: Arc<AvroCodec>,
    kafka: KafkaConfig,
    db: TestDb,
    pool: PgPool,
}

async fn setup(kafka: &Kafka) -> Setup {
    // RUST_LOG=sluice=debug shows what the workers do.
    sluice::logging::init(sluice::logging::LogFormat::Human, "off");
    kafka
        .create_topics(&[
            ("iot_sensor_data", 4),
            ("iot_sensor_data.dlq", 1),
            ("iot_sensor_data.late", 1),
        ])
        .await;
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    Setup {
        _registry: registry,
        codec: Arc::new(AvroCodec::new(&config).unwrap()),
        kafka: kafka.config(),
        db,
        pool,
    }
}

fn spawn(s: &Setup, pool: PgPool, spec: WindowSpec, instance: &str) -> Worker {
    spawn_with(s, pool, spec, instance, GroupProtocol::Classic)
}

fn spawn_with(
    s: &Setup,
    pool: PgPool,
    spec: WindowSpec,
    instance: &str,
    group_protocol: GroupProtocol,
) -> Worker {
    let opts = RunOptions {
        instance_id: instance.to_string(),
        group_protocol,
        databases: common::postgres(pool),
        ..RunOptions::default()
    };
    Worker::spawn(iot_windows::build(spec).unwrap(), &s.kafka, &s.codec, opts)
}

/// Waits until the table holds `n` readings in all.
async fn wait_committed(pool: &PgPool, n: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = committed_count(pool).await;
        if got == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {got} of {n} readings committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spec(idle: Duration) -> WindowSpec {
    WindowSpec {
        idle_timeout: idle,
        ..WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_are_exact_and_final_and_bad_records_are_routed() {
    let kafka = Kafka::start();
    let s = setup(&kafka).await;
    let spec = spec(Duration::from_secs(3));
    let base = past_base(30);
    let good = readings(6, 300, base, 1);
    produce(&s.kafka, &s.codec, &good).await;
    // Undecodable bytes, and readings that break a rule.
    produce_raw(
        &s.kafka,
        "dev-00",
        &[vec![9, 9, 9], vec![0, 0, 0, 0, 99, 1]],
    )
    .await;
    let nan = SensorReading {
        value: f64::NAN,
        ..good[0].clone()
    };
    let blank = SensorReading {
        device_id: " ".into(),
        ..good[1].clone()
    };
    produce(&s.kafka, &s.codec, &[nan, blank]).await;

    let w = spawn(&s, s.pool.clone(), spec, "a");
    wait_committed(&s.pool, good.len() as i64, Duration::from_secs(60)).await;
    // Readings for the first window, long closed by now.
    produce(&s.kafka, &s.codec, &good[..3]).await;
    // All input idle: every window turns final by the wall clock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stored(&s.pool).await.values().any(|v| !v.4) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "windows never turned final"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = w.stats.clone();
    w.stop().await;

    let rows = stored(&s.pool).await;
    assert_exact(&rows, &expected(&good, &spec));
    assert_eq!(rows.len(), 6 * 5 * 5, "five one-minute windows per key");
    let total = good.len() + 2 + 2 + 3;
    assert_eq!(
        stats.records_in.load(std::sync::atomic::Ordering::Relaxed),
        total as u64
    );

    let dlq = read_topic(
        &s.kafka.bootstrap,
        "iot_sensor_data.dlq",
        4,
        Duration::from_secs(20),
    )
    .await;
    let mut kinds: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["sluice.error.kind"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "bad_magic_byte",
            "unknown_schema_id",
            "validation",
            "validation"
        ]
    );
    assert!(
        dlq.iter()
            .all(|r| r.headers["sluice.topology"] == "iot-windows")
    );

    let late_read = read_topic(
        &s.kafka.bootstrap,
        "iot_sensor_data.late",
        3,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(late_read.len(), 3);
    for r in &late_read {
        assert_eq!(r.headers["sluice.error.kind"], "late");
        assert_eq!(r.headers["sluice.window.start"], base.to_string());
        assert_eq!(r.headers["sluice.window.end"], (base + 60_000).to_string());
        assert!(r.headers["sluice.watermark"].parse::<i64>().unwrap() >= base + 70_000);
        assert!(r.headers["sluice.error.message"].contains("too late"));
    }
    assert_eq!(stats.late.load(std::sync::atomic::Ordering::Relaxed), 3);
    s.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_three_one_workers_keep_aggregates_exact_classic_protocol() {
    one_three_one(GroupProtocol::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_three_one_workers_keep_aggregates_exact_consumer_protocol() {
    one_three_one(GroupProtocol::Consumer).await;
}

async fn one_three_one(protocol: GroupProtocol) {
    let kafka = Kafka::start();
    let s = setup(&kafka).await;
    // No idle close: windows stay open while partitions move.
    let spec = spec(Duration::from_secs(600));
    let all = readings(8, 240, past_base(30), 2);
    let third = all.len() / 3;
    // Readings are in time order per device, and each device stays on one partition.
    produce(&s.kafka, &s.codec, &all[..third]).await;
    let a = spawn_with(&s, s.pool.clone(), spec, "a", protocol);
    wait_committed(&s.pool, third as i64, Duration::from_secs(60)).await;

    let b = spawn_with(&s, s.pool.clone(), spec, "b", protocol);
    let c = spawn_with(&s, s.pool.clone(), spec, "c", protocol);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ![&b, &c].iter().all(|w| w.stats.health.is_joined()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new workers never joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&s.kafka, &s.codec, &all[third..2 * third]).await;
    wait_committed(&s.pool, 2 * third as i64, Duration::from_secs(90)).await;
    let shared: Vec<u64> = [&b, &c]
        .iter()
        .map(|w| {
            w.stats
                .records_in
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();

    b.stop().await;
    c.stop().await;
    produce(&s.kafka, &s.codec, &all[2 * third..]).await;
    wait_committed(&s.pool, all.len() as i64, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = a.stats.late.load(std::sync::atomic::Ordering::Relaxed);
    a.stop().await;

    assert!(
        shared.iter().all(|n| *n > 0),
        "the new workers took partitions: {shared:?}"
    );
    assert_eq!(late, 0);
    assert_exact(&stored(&s.pool).await, &expected(&all, &spec));
    s.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cut_off_mid_stream_loses_and_repeats_nothing() {
    let kafka = Kafka::start();
    let s = setup(&kafka).await;
    let spec = spec(Duration::from_secs(600));
    let all = readings(6, 200, past_base(30), 3);
    let half = all.len() / 2;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let through_proxy = sluice::db::connect(&proxy.url_for(&s.db.url))
        .await
        .unwrap();

    produce(&s.kafka, &s.codec, &all[..half]).await;
    let w = spawn(&s, through_proxy, spec, "a");
    wait_committed(&s.pool, half as i64, Duration::from_secs(60)).await;

    proxy.set_up(false);
    // Dead letters handled in a failed unit and again after, committed once.
    let bad = [vec![9, 9, 9], vec![0, 0, 0, 0, 99, 1], vec![7]];
    produce_raw(&s.kafka, "dev-00", &bad).await;
    produce(&s.kafka, &s.codec, &all[half..]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        committed_count(&s.pool).await,
        half as i64,
        "nothing written while cut off"
    );
    assert!(
        w.stats.aborts.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "commits failed"
    );

    proxy.set_up(true);
    wait_committed(&s.pool, all.len() as i64, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = w.stats.clone();
    w.stop().await;
    let dead = stats
        .dead_letters
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_exact(&stored(&s.pool).await, &expected(&all, &spec));
    assert_eq!(
        dead,
        bad.len() as u64,
        "dead letters counted once committed"
    );
    s.db.drop_db().await;
}
