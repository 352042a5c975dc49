//! Kill `sluice run --topology iot-windows --topology iot-readings
//! --topology iot-events` abruptly, many times, under load, on Apache
//! Kafka into a real PostgreSQL — at random moments and right before and
//! right after the commit — and restart it, with each group protocol. The
//! window aggregates must still equal the ones computed independently,
//! exactly, every reading must be stored once, and both sinks of
//! `iot-events`, which commit in one transaction, must hold every final
//! window and every alert once (read_committed), exact.

mod common;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    kafka::{FAST_CONSUMER_SESSIONS, Kafka},
    windows::*,
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sluice::{
    avro::{AvroCodec, RegistryConfig},
    window::WindowSpec,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_aggregates_stay_exact_across_kills_classic_protocol() {
    window_aggregates_stay_exact_across_kills("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_aggregates_stay_exact_across_kills_consumer_protocol() {
    window_aggregates_stay_exact_across_kills("consumer").await;
}

async fn window_aggregates_stay_exact_across_kills(protocol: &str) {
    let cluster = Kafka::cluster_with(1, &FAST_CONSUMER_SESSIONS);
    let bootstrap = cluster.bootstrap.clone();
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let config = RegistryConfig::new(&registry.url(), None).unwrap();
    let codec = Arc::new(AvroCodec::new(&config).unwrap());
    let kafka = cluster.config();
    cluster
        .create_topics(&[
            ("iot_sensor_data", 3),
            ("iot_sensor_data.dlq", 1),
            ("iot_sensor_data.late", 1),
            ("iot-window-aggregates", 3),
            ("iot-alerts", 3),
        ])
        .await;
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();

    let all = readings(9, 400, past_base(120), 7);
    // Progress of both topologies: each commits on its own.
    let committed = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        async move { committed_count(&pool).await + readings_count(&pool).await }
    };
    let total = 2 * all.len() as i64;
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("last-worker.log");
    let command = |log: Stdio| {
        let mut cmd = sluice();
        cmd.args([
            "run",
            "--topology",
            "iot-windows",
            "--topology",
            "iot-readings",
            "--topology",
            "iot-events",
            "--group-protocol",
            protocol,
        ])
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("SCHEMA_REGISTRY_URL", registry.url())
        .env("DATABASE_URL", &db.url)
        // No closing by idleness while the worker is down.
        .env("SLUICE_IDLE_TIMEOUT", "1h")
        .env("SLUICE_INSTANCE_ID", "crash-windows")
        .env("SLUICE_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(log);
        cmd
    };
    let life_log = log_dir.path().join("life.log");
    let worker = |failpoint: Option<String>| {
        let mut cmd = command(std::fs::File::create(&life_log).unwrap().into());
        if let Some(f) = failpoint {
            cmd.env("SLUICE_FAILPOINT", f);
        }
        Proc(cmd.spawn().unwrap())
    };

    // Readings flow at a steady pace for the whole test, so every life of
    // the worker has records to commit.
    let all = Arc::new(all);
    let feeder = {
        let (kafka, codec, all) = (kafka.clone(), codec.clone(), all.clone());
        tokio::spawn(async move {
            let producer = kafka.producer(None).create().unwrap();
            for chunk in all.chunks(45) {
                produce_with(&producer, &codec, chunk).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut rng = StdRng::seed_from_u64(7);
    let (mut lives, mut aborted_at_failpoint) = (0, 0);
    while !feeder.is_finished() {
        // Three lives in four end at a failpoint around a commit (or
        // while final windows wait for theirs); the rest by SIGKILL at a
        // random moment.
        let failpoint = match lives % 4 {
            0 => Some(format!("after-store-commit@{}", rng.random_range(2..8))),
            1 => Some(format!("before-store-commit@{}", rng.random_range(2..8))),
            // Final windows sent in a transaction that is never committed.
            2 => Some("final-windows-sent@1".to_string()),
            _ => None,
        };
        lives += 1;
        let mut w = worker(failpoint.clone());
        // Only a failpoint ends a life by itself, and by SIGABRT.
        let ended = |status: std::process::ExitStatus, lives: usize| {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                failpoint.is_some() && status.signal() == Some(6),
                "life {lives} exited by itself ({status}), failpoint {failpoint:?}"
            );
        };
        // Every life commits progress before it ends (a restarted worker
        // first waits for the group to let go of its killed predecessor),
        // unless it dies right before its first commit with new readings:
        // an earlier commit may only have closed windows, and with two
        // topologies either one's commit counts towards the failpoint.
        let before = committed(&pool).await;
        let may_end_first = failpoint.as_deref().is_some_and(|f| {
            f.starts_with("before-store-commit") || f.starts_with("final-windows")
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut done = false;
        while committed(&pool).await == before {
            if let Some(status) = w.0.try_wait().unwrap() {
                assert!(
                    may_end_first || committed(&pool).await > before,
                    "life {lives} ended ({status}) before it committed anything"
                );
                ended(status, lives);
                aborted_at_failpoint += 1;
                done = true;
                break;
            }
            if feeder.is_finished() && committed(&pool).await == total {
                // Everything is in: nothing left for this life to commit.
                break;
            }
            assert!(
                Instant::now() < deadline,
                "life {lives} committed nothing in 90 s ({} of {total} in); its log:\n{}",
                committed(&pool).await,
                std::fs::read_to_string(&life_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let life = Duration::from_millis(rng.random_range(1_000..5_000));
        let started = Instant::now();
        while !done && started.elapsed() < life {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(status) = w.0.try_wait().unwrap() {
                ended(status, lives);
                aborted_at_failpoint += 1;
                break;
            }
        }
        drop(w); // SIGKILL if still running
    }
    feeder.await.unwrap();

    let log = std::fs::File::create(&log_path).unwrap();
    let mut last = Proc(command(log.into()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let n = committed(&pool).await;
        if n == total {
            break;
        }
        assert!(n < total, "counted twice: {n} > {total}");
        assert!(
            Instant::now() < deadline,
            "only {n} of {total} readings committed (windows and rows)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The last worker did its part (the data may all have been committed
    // by an earlier life already).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("partition claimed")
    {
        assert!(
            Instant::now() < deadline,
            "the last worker never claimed its partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = last.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = last.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "worker did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "graceful stop exits 0: {status}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
    assert_exact(&stored(&pool).await, &expected(&all, &spec));
    assert_every_reading_once(&pool, &all).await;
    // Every partition's watermark reached the last reading's event time.
    let watermark = all.iter().map(|r| r.timestamp).max().unwrap();
    let want = expected_final(&all, &spec, watermark);
    let deadline = Instant::now() + Duration::from_secs(60);
    let finals = loop {
        let got = final_windows(&bootstrap, &codec, "iot-window-aggregates").await;
        if got.len() >= want.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_final_windows_exact(&finals, &want);
    let alerts = assert_every_alert_once(&bootstrap, &codec, &all).await;
    assert!(lives >= 4, "only {lives} lives");
    let mut reader = raw::RawReader::connect(&bootstrap).await;
    let (late, _) = raw::committed(reader.read_partition("iot_sensor_data.late", 0).await);
    assert!(
        late.is_empty(),
        "in-order readings are never late: {}",
        late.len()
    );
    assert!(aborted_at_failpoint > 0, "no life ended at a failpoint");
    let mut aborted = 0;
    for p in 0..3 {
        aborted +=
            raw::sort(reader.read_partition("iot-window-aggregates", p).await).aborted_transactions;
    }
    eprintln!(
        "{protocol}: {} readings, {lives} worker lives killed ({aborted_at_failpoint} at a failpoint), \
         aggregates exact, every reading stored once, {} final windows and {alerts} alerts on \
         their topics once each ({aborted} aborted transactions on the windows' topic)",
        all.len(),
        finals.len()
    );
    db.drop_db().await;
}

/// Every alert the readings raise is on `iot-alerts` once, as committed,
/// keyed by its device; gives how many.
async fn assert_every_alert_once(
    bootstrap: &str,
    codec: &AvroCodec,
    all: &[sluice_app::topologies::iot_alerts::SensorReading],
) -> usize {
    use std::collections::BTreeMap;

    use sluice::avro::{AvroSchema, Reader};
    use sluice_app::topologies::iot_alerts::{SensorAlert, alert};
    type Key = (String, String, i64, String);
    let key = |a: &SensorAlert| {
        (
            a.device_id.clone(),
            a.sensor_type.as_str().to_string(),
            a.timestamp,
            a.rule.clone(),
        )
    };
    let mut want: BTreeMap<Key, usize> = BTreeMap::new();
    for a in all.iter().filter_map(alert) {
        *want.entry(key(&a)).or_default() += 1;
    }
    let reader = Reader::new(apache_avro::Schema::parse_str(SensorAlert::SCHEMA).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let mut got: BTreeMap<Key, usize> = BTreeMap::new();
        for r in read_committed_all(bootstrap, "iot-alerts").await {
            let (_, a): (u32, SensorAlert) = codec.decode(&r.value, &reader).await.unwrap();
            assert_eq!(
                r.key.as_deref(),
                Some(a.device_id.as_bytes()),
                "keyed by device"
            );
            *got.entry(key(&a)).or_default() += 1;
        }
        if got.values().sum::<usize>() >= want.values().sum::<usize>() || Instant::now() > deadline
        {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k) != Some(*n))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "alerts not once each: {wrong:?}"
    );
    want.values().sum()
}
