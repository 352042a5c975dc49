//! Kill `sluice run --topology iot-enriched` abruptly at random moments
//! while readings and device moves flow, on Apache Kafka, and restart it:
//! each life reads the devices table again before it joins. Read with
//! `read_committed`, every reading is enriched exactly once, with the site
//! its device had at the reading's time (each move is produced before the
//! readings stamped after it).

mod common;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    kafka::{FAST_CONSUMER_SESSIONS, Kafka},
    *,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::avro::{AvroCodec, AvroSchema, Reader, RegistryConfig};
use sluice_app::topologies::{
    iot_alerts::SensorAlert,
    iot_alerts::{SensorReading, SensorType},
    iot_enriched::{ALERTS, DEVICES, DeviceInfo, EnrichedReading, SINK, SOURCE},
};

const DEVICES_N: usize = 12;
const STEPS: i64 = 360;
const SITES: [&str; 4] = ["plant-a", "plant-b", "plant-c", "warehouse"];

/// Device `d` moves at the steps where `step % 30 == d`, to another site.
fn moves_at(step: i64) -> Vec<(usize, &'static str)> {
    (0..DEVICES_N)
        .filter(|d| step > 0 && step % 30 == *d as i64)
        .map(|d| (d, SITES[((step / 30) as usize + d + 1) % SITES.len()]))
        .collect()
}

/// Even devices have their own humidity limit, below the fleet's (85 %).
fn own_limit(d: usize) -> Option<f64> {
    d.is_multiple_of(2).then_some(50.0)
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: Vec<u8>, at_ms: i64) {
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(&value)
        .timestamp(at_ms);
    p.send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enriched_readings_stay_exact_across_kills() {
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
            (SOURCE, 3),
            ("iot_sensor_data.dlq", 1),
            (DEVICES, 2),
            (SINK, 3),
            (ALERTS, 3),
        ])
        .await;
    let base = windows::past_base(60);
    let id = |d: usize| format!("dev-{d:02}");

    // What each reading must carry: the site of its device at its time.
    let mut site: Vec<&str> = (0..DEVICES_N).map(|d| SITES[d % SITES.len()]).collect();
    let mut want: BTreeMap<(String, i64), String> = BTreeMap::new();
    for step in 0..STEPS {
        for (d, to) in moves_at(step) {
            site[d] = to;
        }
        for (d, s) in site.iter().enumerate() {
            want.insert((id(d), base + step * 1000 + d as i64), s.to_string());
        }
    }

    // Devices described a minute before the first reading, then steps of
    // moves and readings at a steady pace for the whole test.
    let feeder = {
        let (kafka, codec) = (kafka.clone(), codec.clone());
        tokio::spawn(async move {
            let p: FutureProducer = kafka.producer(None).create().unwrap();
            let info = |d: usize, site: &str| DeviceInfo {
                device_id: format!("dev-{d:02}"),
                site: site.to_string(),
                model: None,
                temperature_max: None,
                humidity_max: own_limit(d),
            };
            for d in 0..DEVICES_N {
                let v = codec
                    .encode(DEVICES, &info(d, SITES[d % SITES.len()]))
                    .await
                    .unwrap();
                send(&p, DEVICES, &info(d, "").device_id, v, base - 60_000).await;
            }
            for step in 0..STEPS {
                let at = base + step * 1000;
                for (d, to) in moves_at(step) {
                    let v = codec.encode(DEVICES, &info(d, to)).await.unwrap();
                    send(&p, DEVICES, &info(d, to).device_id, v, at).await;
                }
                for d in 0..DEVICES_N {
                    let r = SensorReading {
                        device_id: format!("dev-{d:02}"),
                        sensor_type: SensorType::Humidity,
                        value: step as f64,
                        unit: "%".into(),
                        timestamp: at + d as i64,
                    };
                    let v = codec.encode(SOURCE, &r).await.unwrap();
                    send(&p, SOURCE, &r.device_id, v, r.timestamp).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let log_dir = tempfile::tempdir().unwrap();
    let life_log = log_dir.path().join("life.log");
    let worker = || {
        let log = std::fs::File::create(&life_log).unwrap();
        let mut cmd = sluice();
        cmd.args(["run", "--topology", "iot-enriched"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("SCHEMA_REGISTRY_URL", registry.url())
            .env("SLUICE_INSTANCE_ID", "crash-joins")
            .env("SLUICE_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log);
        Proc(cmd.spawn().unwrap())
    };
    let mut rng = StdRng::seed_from_u64(11);
    let (mut lives, mut progressed, mut committed) = (0, 0, 0);
    while !feeder.is_finished() {
        lives += 1;
        let mut w = worker();
        let life = Duration::from_millis(rng.random_range(3_000..8_000));
        let started = Instant::now();
        while started.elapsed() < life {
            if let Some(status) = w.0.try_wait().unwrap() {
                panic!(
                    "life {lives} ended by itself ({status}); its log:\n{}",
                    std::fs::read_to_string(&life_log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(w); // SIGKILL
        let now = read_committed_all(&bootstrap, SINK).await.len();
        progressed += usize::from(now > committed);
        committed = now;
    }
    feeder.await.unwrap();
    // Kills landed while the worker had work in hand, not only before it began.
    assert!(
        progressed >= 2,
        "only {progressed} of {lives} lives committed anything"
    );

    // The last life reads what is left.
    let _last = worker();
    let reader = Reader::new(apache_avro::Schema::parse_str(EnrichedReading::SCHEMA).unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    let got = loop {
        let reads = read_committed_all(&bootstrap, SINK).await;
        if reads.len() >= want.len() || Instant::now() > deadline {
            break reads;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut seen: BTreeMap<(String, i64), Option<String>> = BTreeMap::new();
    let mut twice = Vec::new();
    for r in &got {
        let (_, e) = codec
            .decode::<EnrichedReading>(&r.value, &reader)
            .await
            .unwrap();
        if seen
            .insert((e.device_id.clone(), e.timestamp), e.site)
            .is_some()
        {
            twice.push((e.device_id, e.timestamp));
        }
    }
    assert!(twice.is_empty(), "enriched more than once: {twice:?}");
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(&Some(v.to_string())))
        .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", seen.get(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} readings wrong or missing after {lives} lives:\n{}",
        wrong.len(),
        want.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Alerts by each device's limit (a reading's value is its step), once.
    let alert_reader = Reader::new(apache_avro::Schema::parse_str(SensorAlert::SCHEMA).unwrap());
    let mut alerts = BTreeMap::new();
    for r in read_committed_all(&bootstrap, ALERTS).await {
        let (_, a) = codec
            .decode::<SensorAlert>(&r.value, &alert_reader)
            .await
            .unwrap();
        let key = (a.device_id.clone(), a.timestamp);
        assert!(
            alerts.insert(key, a.threshold).is_none(),
            "an alert twice: {a:?}"
        );
    }
    let mut want_alerts = BTreeMap::new();
    for step in 0..STEPS {
        for d in 0..DEVICES_N {
            let (value, at) = (step as f64, base + step * 1000 + d as i64);
            let threshold = if value > 95.0 {
                Some(95.0)
            } else {
                own_limit(d).or(Some(85.0)).filter(|l| value > *l)
            };
            if let Some(t) = threshold {
                want_alerts.insert((id(d), at), t);
            }
        }
    }
    assert!(
        alerts == want_alerts,
        "{} alerts, {} wanted",
        alerts.len(),
        want_alerts.len()
    );
    eprintln!(
        "{} readings enriched exactly once, each with its site then, and {} alerts by the devices' own limits, across {lives} killed lives ({progressed} of them committed some first)",
        want.len(),
        alerts.len()
    );
}
