//! One generated stream of readings — in order per device, some a few
//! seconds out of order (within grace), forty five minutes late — through
//! the iot-windows pipeline four ways on Apache Kafka into PostgreSQL:
//! (a) processed as it is produced, (b) preloaded, (c) preloaded with the
//! worker killed again and again, (d) with workers going 1 → 3 → 1. Lateness
//! and finality are decided per partition, by its own event time, so all
//! four give the same rows and the same late records, and those are the
//! ones computed independently.

mod common;

use std::{
    collections::BTreeSet,
    ops::Not,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{TestDb, kafka::Kafka, member::Member, read_committed_all, windows::*};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sluice::{
    avro::{AvroCodec, Reader, RegistryConfig},
    kafka::KafkaConfig,
    runtime::RunOptions,
    window::WindowSpec,
};
use sluice_app::topologies::{iot_alerts::SensorReading, iot_windows};
use sqlx::PgPool;

const PARTITIONS: i32 = 4;

fn spec() -> WindowSpec {
    // No closing by the wall clock: what closes a window is event time.
    WindowSpec {
        idle_timeout: Duration::from_secs(3600),
        ..WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10))
    }
}

/// The stream, and the readings in it that are late.
fn stream() -> (Vec<SensorReading>, Vec<SensorReading>) {
    let base = past_base(60);
    let mut all = readings(8, 600, base, 11);
    let mut rng = StdRng::seed_from_u64(11);
    // A few seconds back: out of order, within the 10 s grace.
    for r in all.iter_mut() {
        if rng.random_bool(0.02) {
            r.timestamp -= rng.random_range(1_000..5_000);
        }
    }
    // Forty readings five minutes behind their device: late wherever they
    // land, as long as it is past the first six minutes.
    let mut late = Vec::new();
    for i in 0..40 {
        let at = all.len() / 2 + i * 97;
        let mut r = all[at].clone();
        r.timestamp -= 300_000;
        r.value = 1000.0 + i as f64;
        late.push(r.clone());
        all.insert(at + 1, r);
    }
    (all, late)
}

/// What the late topic holds, as (device, sensor type, event time, value),
/// whatever the number of copies (late records are at least once).
async fn late_set(s: &Setup, topic: &str) -> BTreeSet<(String, String, i64, i64)> {
    let reader = Reader::new(common::schema("iot_sensor_data"));
    let mut out = BTreeSet::new();
    for r in read_committed_all(&s.kafka.bootstrap, topic).await {
        assert_eq!(r.headers["sluice.error.kind"], "late");
        let (_, reading): (u32, SensorReading) = s.codec.decode(&r.value, &reader).await.unwrap();
        out.insert(key_of(&reading));
    }
    out
}

fn key_of(r: &SensorReading) -> (String, String, i64, i64) {
    (
        r.device_id.clone(),
        r.sensor_type.as_str().to_string(),
        r.timestamp,
        r.value as i64,
    )
}

struct Setup {
    _registry: sluice::registry::Running,
    codec: Arc<AvroCodec>,
    kafka: KafkaConfig,
    registry_url: String,
    db: TestDb,
    pool: PgPool,
}

/// One topic set per way through: `<name>` and its dead-letter and late topics.
async fn topics(kafka: &Kafka, source: &str) {
    let dlq = format!("{source}.dlq");
    let late = format!("{source}.late");
    kafka
        .create_topics(&[(source, PARTITIONS), (&dlq, 1), (&late, 1)])
        .await;
}

fn member(s: &Setup, way: &str, instance: &str) -> Member {
    let opts = RunOptions {
        instance_id: instance.to_string(),
        databases: common::postgres(s.pool.clone()),
        ..RunOptions::default()
    };
    let (name, source, table) = names(way);
    let topology = iot_windows::declare(&name, &source, &table, spec()).unwrap();
    Member::spawn(topology, &s.kafka, &s.codec, opts)
}

/// (topology, source topic, table) of a way through.
fn names(way: &str) -> (String, String, String) {
    (
        format!("det-{way}"),
        format!("readings-{way}"),
        format!("windows_{way}"),
    )
}

async fn wait_for(pool: &PgPool, table: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = committed_in(pool, table).await;
        if got == n {
            return;
        }
        assert!(got < n, "{table}: counted twice: {got} > {n}");
        assert!(
            Instant::now() < deadline,
            "{table}: only {got} of {n} readings committed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_preloaded_killed_and_rebalanced_give_the_same_windows_and_late_records() {
    let kafka = Kafka::start();
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let s = Setup {
        registry_url: registry.url(),
        _registry: registry,
        codec: Arc::new(AvroCodec::new(&config).unwrap()),
        kafka: kafka.config(),
        db,
        pool,
    };
    let (all, late) = stream();
    let on_time: Vec<SensorReading> = all.iter().filter(|r| !late.contains(r)).cloned().collect();
    let want_rows = expected(&on_time, &spec());
    let want_late: BTreeSet<_> = late.iter().map(key_of).collect();
    let n = on_time.len() as i64;
    let producer: rdkafka::producer::FutureProducer = s.kafka.producer(None).create().unwrap();

    // (a) Live: the worker runs while the stream is produced, bit by bit.
    let (_, source, table) = names("live");
    topics(&kafka, &source).await;
    let m = member(&s, "live", "live");
    for chunk in all.chunks(all.len() / 20 + 1) {
        produce_to(&producer, &s.codec, &source, chunk).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(&s.pool, &table, n).await;
    m.stop().await;
    let live = (
        stored_in(&s.pool, &table).await,
        late_set(&s, &format!("{source}.late")).await,
    );

    // (b) Preloaded: everything is in before the worker starts.
    let (_, source, table) = names("preloaded");
    topics(&kafka, &source).await;
    produce_to(&producer, &s.codec, &source, &all).await;
    let m = member(&s, "preloaded", "preloaded");
    wait_for(&s.pool, &table, n).await;
    m.stop().await;
    let preloaded = (
        stored_in(&s.pool, &table).await,
        late_set(&s, &format!("{source}.late")).await,
    );

    // (c) Preloaded, and the worker (the binary) ended again and again at
    // failpoints right before and right after its SQL commit, in small units.
    topics(&kafka, "iot_sensor_data").await;
    produce_to(&producer, &s.codec, "iot_sensor_data", &all).await;
    let mut rng = StdRng::seed_from_u64(12);
    let mut lives = 0;
    while committed_count(&s.pool).await < n {
        assert!(
            lives < 40,
            "only {} of {n} committed in 40 lives",
            committed_count(&s.pool).await
        );
        let point = if lives % 2 == 0 { "after" } else { "before" };
        let failpoint = format!("{point}-store-commit@{}", rng.random_range(2..5));
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut w = common::Proc(
            common::sluice()
                .args(["run", "--topology", "iot-windows"])
                .env("KAFKA_BOOTSTRAP_SERVERS", &s.kafka.bootstrap)
                .env("SCHEMA_REGISTRY_URL", &s.registry_url)
                .env("DATABASE_URL", &s.db.url)
                .env("SLUICE_IDLE_TIMEOUT", "1h")
                .env("SLUICE_INSTANCE_ID", "determinism")
                .env("SLUICE_BATCH_SIZE", "2000")
                .env("SLUICE_FAILPOINT", &failpoint)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log.reopen().unwrap()))
                .spawn()
                .unwrap(),
        );
        lives += 1;
        // A life ends at its failpoint, or is killed once all is in.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = None;
        while committed_count(&s.pool).await < n {
            if let Some(status) = w.0.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a life neither ended nor finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Ending by itself, it must have ended at its failpoint (an abort),
        // not with an error of its own.
        if let Some(status) = ended {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(6),
                "life {lives} ({failpoint}) ended with {status}, not at its failpoint:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        drop(w);
    }
    wait_for(&s.pool, "sensor_window_aggregates", n).await;
    let killed = (
        stored(&s.pool).await,
        late_set(&s, "iot_sensor_data.late").await,
    );

    // (d) 1 → 3 → 1 workers while the windows are open.
    let (_, source, table) = names("rebalanced");
    topics(&kafka, &source).await;
    let third = all.len() / 3;
    produce_to(&producer, &s.codec, &source, &all[..third]).await;
    let a = member(&s, "rebalanced", "a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_in(&s.pool, &table).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the first worker committed nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = member(&s, "rebalanced", "b");
    let c = member(&s, "rebalanced", "c");
    // The new members take partitions before the second third comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while [&b, &c].iter().any(|m| m.stats.health.is_joined().not()) {
        assert!(Instant::now() < deadline, "the new members never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    produce_to(&producer, &s.codec, &source, &all[third..2 * third]).await;
    let read = |m: &Member| m.read();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read(&b) == 0 || read(&c) == 0 {
        assert!(
            Instant::now() < deadline,
            "the new members read nothing: {} and {}",
            read(&b),
            read(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = [read(&b), read(&c)];
    b.stop().await;
    c.stop().await;
    produce_to(&producer, &s.codec, &source, &all[2 * third..]).await;
    wait_for(&s.pool, &table, n).await;
    a.stop().await;
    let rebalanced = (
        stored_in(&s.pool, &table).await,
        late_set(&s, &format!("{source}.late")).await,
    );

    for (way, (rows, late)) in [
        ("live", &live),
        ("preloaded", &preloaded),
        ("killed", &killed),
        ("rebalanced", &rebalanced),
    ] {
        assert_exact(rows, &want_rows);
        assert_eq!(late, &want_late, "{way}: the late records");
    }
    assert_eq!(live.0, preloaded.0, "identical rows");
    let strip = |rows: &std::collections::BTreeMap<RowKey, RowValue>| {
        rows.iter()
            .map(|(k, v)| (k.clone(), (v.0, v.1, v.2, v.3)))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&live.0), strip(&killed.0));
    assert_eq!(strip(&live.0), strip(&rebalanced.0));
    assert!(lives >= 3, "only {lives} lives in (c)");
    eprintln!(
        "{} readings ({} late) four ways: {} rows and the same {} late records each; {} worker lives in (c); members b and c read {shared:?}",
        all.len(),
        late.len(),
        want_rows.len(),
        want_late.len(),
        lives
    );
    s.db.drop_db().await;
}
