//! Session windows on Apache Kafka, into a real PostgreSQL table and to a
//! topic at once: records out of order bridge sessions and merge them,
//! records too old for any open session go to the late topic, the workers
//! stop and start again while sessions are open (which they rebuild by
//! re-reading), and every session comes out once, final, equal to the
//! sessions computed offline.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{read_committed_all, windows::*};
use sluice::{
    runtime::{RunOptions, Workers},
    window::{Aggregate, Stats, WindowSpec},
};
use sluice_app::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_events, iot_windows,
};

const GAP_MS: i64 = 10_000;
const TABLE: &str = "sensor_sessions";
const TOPIC: &str = "iot-sessions";

fn spec(idle: Duration) -> WindowSpec {
    WindowSpec {
        idle_timeout: idle,
        ..WindowSpec::session(Duration::from_millis(GAP_MS as u64), Duration::from_secs(5))
    }
}

/// Per device, bursts a minute apart of five readings 3 s apart, produced
/// in the order 0, 4, 2, 1, 3: the first two are 12 s apart (two
/// sessions) until the third bridges them.
fn bursts(devices: usize, bursts: std::ops::Range<i64>, base: i64) -> Vec<SensorReading> {
    let mut out = Vec::new();
    for b in bursts {
        for d in 0..devices {
            for i in [0, 4, 2, 1, 3] {
                out.push(SensorReading {
                    device_id: format!("dev-{d}"),
                    sensor_type: SensorType::Temperature,
                    value: f64::from((b * 7 + i as i64 * 3 + d as i64) as i32 % 41) / 4.0,
                    unit: "°C".into(),
                    timestamp: base + b * 60_000 + i as i64 * 3_000,
                });
            }
        }
    }
    out
}

/// Sessions per (device, sensor) computed offline: sorted event times split
/// where two are more than the gap apart.
fn expected(readings: &[SensorReading]) -> BTreeMap<RowKey, Stats> {
    let mut by_key: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        by_key
            .entry((r.device_id.clone(), r.sensor_type.as_str().to_string()))
            .or_default()
            .push((r.timestamp, r.value));
    }
    let mut out = BTreeMap::new();
    for ((device, sensor), mut points) in by_key {
        points.sort_by_key(|p| p.0);
        let mut session: Vec<(i64, f64)> = Vec::new();
        let mut close = |s: &mut Vec<(i64, f64)>| {
            if let (Some(first), Some(last)) = (s.first(), s.last()) {
                let mut stats = Stats::default();
                s.iter().for_each(|(_, v)| stats.add(v));
                let key = (device.clone(), sensor.clone(), first.0, last.0 + GAP_MS);
                out.insert(key, stats);
            }
            s.clear();
        };
        for p in points {
            if session.last().is_some_and(|l| p.0 - l.0 > GAP_MS) {
                close(&mut session);
            }
            session.push(p);
        }
        close(&mut session);
    }
    out
}

/// The sessions table's rows (none until the sink has created it).
async fn sessions(pool: &sqlx::PgPool) -> BTreeMap<RowKey, RowValue> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(TABLE)
        .fetch_one(pool)
        .await
        .unwrap();
    match exists {
        Some(_) => stored_in(pool, TABLE).await,
        None => BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_merge_close_and_survive_a_restart_exactly_once() {
    let text = common::schemas()
        .into_iter()
        .find(|f| f.topic == iot_events::WINDOWS)
        .unwrap()
        .text;
    let f = WindowsFixture::start(TOPIC, &text).await;
    let (cluster, codec, kafka, pool) =
        (&f.cluster, f.codec.clone(), f.kafka.clone(), f.pool.clone());

    let base = past_base(240);
    let first = bursts(6, 0..10, base);
    // An hour before anything else: no open session takes them.
    let late: Vec<SensorReading> = bursts(2, 0..1, base - 3_600_000)
        .into_iter()
        .take(4)
        .collect();
    let second = bursts(6, 10..20, base);
    let topologies = |idle| {
        vec![
            iot_windows::declare("sessions-pg", "iot_sensor_data", TABLE, spec(idle)).unwrap(),
            iot_events::declare_windows("sessions-topic", "iot_sensor_data", TOPIC, spec(idle))
                .unwrap(),
        ]
    };
    let opts = RunOptions {
        instance_id: "sessions".into(),
        databases: common::postgres(pool.clone()),
        ..RunOptions::default()
    };

    // No closing by idleness yet, so that the last sessions stay open.
    let workers = Workers::spawn(
        topologies(Duration::from_secs(3600)),
        &kafka,
        codec.clone(),
        &opts,
    );
    produce(&kafka, &codec, &first).await;
    produce(&kafka, &codec, &late).await;
    // Sessions of the first bursts turn final as later bursts arrive; the
    // last burst's stay open when the workers stop.
    let want_first = expected(&first).len() - 6;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (sessions(&pool).await.len()) < want_first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first sessions not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workers.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        sessions(&pool).await.len(),
        want_first,
        "open sessions are not stored before they are final"
    );

    let workers = Workers::spawn(
        topologies(Duration::from_secs(2)),
        &kafka,
        codec.clone(),
        &opts,
    );
    produce(&kafka, &codec, &second).await;
    let all: Vec<SensorReading> = first.iter().chain(&second).cloned().collect();
    let want = expected(&all);
    // The last sessions close once the partitions are idle for 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut finals = Vec::new();
    loop {
        let stored = sessions(&pool).await;
        if stored.len() >= want.len() {
            finals = final_windows(&cluster.bootstrap, &codec, TOPIC).await;
            if finals.len() >= want.len() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} sessions stored, {} on the topic",
            stored.len(),
            want.len(),
            finals.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    workers.stop(Duration::from_secs(30)).await.unwrap();

    let stored = sessions(&pool).await;
    assert!(
        stored.values().all(|r| r.4),
        "every stored session is final"
    );
    assert_exact(&stored, &want);
    assert_final_windows_exact(&finals, &want);
    assert_eq!(want.len(), 6 * 20, "one session per device and burst");
    // Each topology sends each too-old reading to the late topic once,
    // though both re-read some of them after the restart.
    let letters = read_committed_all(&cluster.bootstrap, "iot_sensor_data.late").await;
    assert_eq!(
        letters.len(),
        2 * late.len(),
        "late letters: {}",
        letters.len()
    );
    f.db.drop_db().await;
}
