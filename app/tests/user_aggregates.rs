//! A user-defined aggregate (p95 and distinct values) reaches both window
//! sinks on Apache Kafka: columns of a PostgreSQL table, and fields of a
//! topic's records with a schema of the test's own; both equal what is
//! computed offline.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{read_committed_all, windows::*};
use serde::{Deserialize, Serialize};
use sluice::{
    avro::Reader,
    prelude::*,
    runtime::{RunOptions, Workers},
    schemas,
    sink::Stores,
};
use sluice_app::topologies::iot_alerts::SensorReading;

/// Every value of the window, for its 95th percentile (nearest rank) and
/// how many distinct values it saw.
#[derive(Clone, Default)]
struct Spread(Vec<f64>);

impl Aggregate<f64> for Spread {
    fn add(&mut self, v: &f64) {
        self.0.push(*v);
    }
    fn merge(&mut self, o: &Self) {
        self.0.extend(&o.0);
    }
}

impl Spread {
    fn p95(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((v.len() as f64) * 0.95).ceil() as usize;
        v.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
    }

    fn distinct(&self) -> i64 {
        let mut v: Vec<u64> = self.0.iter().map(|x| x.to_bits()).collect();
        v.sort_unstable();
        v.dedup();
        v.len() as i64
    }
}

impl Columns for Spread {
    fn columns() -> Vec<(&'static str, ValueType)> {
        vec![
            ("p95", ValueType::Float),
            ("distinct_values", ValueType::Int),
        ]
    }
    fn values(&self) -> Vec<Value> {
        vec![Value::Float(self.p95()), Value::Int(self.distinct())]
    }
}

const TOPIC: &str = "device-spread";
const TABLE: &str = "device_spread";
const SCHEMA: &str = r#"{"type": "record", "name": "DeviceSpread", "fields": [
  {"name": "device_id", "type": "string"},
  {"name": "window_start", "type": "long"},
  {"name": "count", "type": "long"},
  {"name": "p95", "type": "double"},
  {"name": "distinct_values", "type": "long"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeviceSpread {
    device_id: String,
    window_start: i64,
    count: i64,
    p95: f64,
    distinct_values: i64,
}

fn spec() -> WindowSpec {
    WindowSpec {
        idle_timeout: Duration::from_secs(2),
        ..WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(5))
    }
}

fn windowed(
    name: &str,
) -> Aggregated<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>> {
    topology(name)
        .source_with_schema::<SensorReading>(
            "iot_sensor_data",
            schemas::for_topic("iot_sensor_data").unwrap(),
        )
        .event_time("timestamp", |r| r.timestamp)
        .window(spec())
        .aggregate("value by device", |r| r.device_id.clone(), |r| r.value)
        .with::<Spread>()
}

/// (device, window start) → every value, offline.
fn expected(readings: &[SensorReading]) -> BTreeMap<(String, i64), Spread> {
    let mut out: BTreeMap<(String, i64), Spread> = BTreeMap::new();
    for r in readings {
        let start = r.timestamp.div_euclid(60_000) * 60_000;
        out.entry((r.device_id.clone(), start))
            .or_default()
            .add(&r.value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_defined_aggregate_reaches_a_table_and_a_topic() {
    let f = WindowsFixture::start(TOPIC, SCHEMA).await;
    let (cluster, codec, kafka, pool) =
        (&f.cluster, f.codec.clone(), f.kafka.clone(), f.pool.clone());

    let table = TableSpec::new(TABLE)
        .unwrap()
        .key("device_id", SqlType::Text)
        .unwrap()
        .stats()
        .columns_of::<Spread>()
        .unwrap();
    // A table that lacks the aggregate's columns is refused when declared.
    let refused = windowed("spread-bad").to_postgres(
        TableSpec::new("t")
            .unwrap()
            .key("device_id", SqlType::Text)
            .unwrap()
            .stats(),
    );
    assert!(
        refused.unwrap_err().to_string().contains("columns_of"),
        "a clear error"
    );
    let topologies = vec![
        windowed("spread-pg").to_postgres(table).unwrap(),
        windowed("spread-topic")
            .to_topic_when_final(TOPIC, |key, w, agg| {
                let spread = agg
                    .user::<Spread>()
                    .expect("declared with .with::<Spread>()");
                let device_id = key[0].to_string();
                (
                    Some(device_id.clone().into_bytes()),
                    DeviceSpread {
                        device_id,
                        window_start: w.start_ms,
                        count: agg.stats.count as i64,
                        p95: spread.p95(),
                        distinct_values: spread.distinct(),
                    },
                )
            })
            .unwrap(),
    ];
    let opts = RunOptions {
        instance_id: "spread".into(),
        stores: Some(Stores::Postgres(pool.clone())),
        ..RunOptions::default()
    };
    let workers = Workers::spawn(topologies, &kafka, codec.clone(), &opts);
    let all = readings(4, 300, past_base(60), 11);
    produce(&kafka, &codec, &all).await;
    let want = expected(&all);

    // Every window closes: by the stream, then by idleness for the last.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (rows, records) = loop {
        let rows: Vec<(String, i64, i64, f64, i64, bool)> = sqlx::query_as(&format!(
            "SELECT device_id, (extract(epoch FROM window_start) * 1000)::bigint, count, p95,
                    distinct_values, is_final
               FROM {TABLE}"
        ))
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        let records = read_committed_all(&cluster.bootstrap, TOPIC).await;
        if (rows.len() >= want.len() && records.len() >= want.len())
            || tokio::time::Instant::now() > deadline
        {
            break (rows, records);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    workers.stop(Duration::from_secs(30)).await.unwrap();

    assert_eq!(rows.len(), want.len(), "one row per device and window");
    for (device, start, count, p95, distinct, is_final) in rows {
        let w = &want[&(device.clone(), start)];
        assert!(is_final, "written once final");
        assert_eq!(
            (count, p95, distinct),
            (w.0.len() as i64, w.p95(), w.distinct()),
            "{device} {start}"
        );
    }
    let reader = Reader::new(apache_avro::Schema::parse_str(SCHEMA).unwrap());
    let mut seen = BTreeMap::new();
    for r in records {
        let (_, s) = codec
            .decode::<DeviceSpread>(&r.value, &reader)
            .await
            .unwrap();
        let w = &want[&(s.device_id.clone(), s.window_start)];
        assert_eq!(
            (s.count, s.p95, s.distinct_values),
            (w.0.len() as i64, w.p95(), w.distinct())
        );
        assert!(
            seen.insert((s.device_id, s.window_start), ()).is_none(),
            "once"
        );
    }
    assert_eq!(seen.len(), want.len());
    f.db.drop_db().await;
}
