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
    topology::{Builder, WindowedTable},
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

impl AvroSchema for DeviceSpread {
    const SCHEMA: &'static str = SCHEMA;
}

fn spec() -> WindowSpec {
    WindowSpec {
        idle_timeout: Duration::from_secs(2),
        ..WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(5))
    }
}

/// The stats and the spread of each device's values per window: two
/// aggregates side by side, one type.
type Both = (Stats, Spread);

fn windowed(
    t: &Builder,
) -> WindowedTable<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>, String, Both>
{
    t.source::<SensorReading>("iot_sensor_data")
        .event_time("timestamp", |r| r.timestamp)
        .window(spec())
        .aggregate(
            "value by device",
            |r| r.device_id.clone(),
            Both::default,
            |a, r| a.add(&r.value),
        )
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
    // A table with columns the aggregate does not give is refused when built.
    let bad = topology("spread-bad");
    bad.source::<SensorReading>("iot_sensor_data")
        .event_time("timestamp", |r| r.timestamp)
        .window(spec())
        .aggregate(
            "stats only",
            |r| r.device_id.clone(),
            Stats::default,
            |a, r| a.add(&r.value),
        )
        .to_postgres(table.clone());
    let refused = bad.build().unwrap_err().to_string();
    assert!(
        refused.contains("column p95") && refused.contains("count, sum, min, max"),
        "a clear error: {refused}"
    );
    let pg = topology("spread-pg");
    windowed(&pg).to_postgres(table);
    let to_topic = topology("spread-topic");
    windowed(&to_topic)
        .finals()
        .map("record", |w: Windowed<String, Both>| DeviceSpread {
            device_id: w.key,
            window_start: w.window.start_ms,
            count: w.value.0.count as i64,
            p95: w.value.1.p95(),
            distinct_values: w.value.1.distinct(),
        })
        .key_by("device", |s| s.device_id.clone())
        .to_topic(TOPIC);
    let topologies = vec![pg.build().unwrap(), to_topic.build().unwrap()];
    let opts = RunOptions {
        instance_id: "spread".into(),
        databases: common::postgres(pool.clone()),
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
