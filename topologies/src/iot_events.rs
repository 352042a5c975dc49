//! `iot_sensor_data`, read once → alerts to `iot-alerts` (Avro
//! `SensorAlert`, keyed by device) and each window's final
//! count/sum/min/max/avg, once, to `iot-window-aggregates` (Avro
//! `SensorWindowAggregate`, keyed by device), both in the Kafka
//! transaction that commits the input offsets.

use serde::{Deserialize, Serialize};
use sluice::prelude::*;

use super::{
    iot_alerts::{self, SensorReading},
    iot_windows,
};

pub const NAME: &str = "iot-events";
pub const SOURCE: &str = iot_windows::SOURCE;
pub const ALERTS: &str = iot_alerts::SINK;
pub const WINDOWS: &str = "iot-window-aggregates";

/// One final window, as `schemas/iot-window-aggregates.avsc` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorWindowAggregate {
    pub device_id: String,
    pub sensor_type: String,
    pub window_start: i64,
    pub window_end: i64,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}

impl AvroSchema for SensorWindowAggregate {
    const SCHEMA: &'static str = include_str!("../../schemas/iot-window-aggregates.avsc");
}

pub fn build(window: WindowSpec) -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, ALERTS, WINDOWS, window)
}

/// The same pipeline under other names (tests).
pub fn declare(
    name: &str,
    source: &str,
    alerts: &str,
    windows: &str,
    window: WindowSpec,
) -> Result<Topology, BuildError> {
    let t = topology(name);
    let [for_alerts, for_windows] = iot_windows::checked(&t, source).fan_out();
    for_alerts
        .flat_map("alert rules", |r: SensorReading| iot_alerts::alert(&r))
        .key_by("device_id", |a| a.device_id.clone())
        .to_topic(alerts);
    iot_windows::by_sensor(for_windows, window)
        .finals()
        .map("record", aggregate)
        .key_by("device_id", |a| a.device_id.clone())
        .to_topic(windows);
    t.build()
}

/// Only the final windows, to `sink` (the benchmark's).
pub fn declare_windows(
    name: &str,
    source: &str,
    sink: &str,
    window: WindowSpec,
) -> Result<Topology, BuildError> {
    let t = topology(name);
    iot_windows::windowed(&t, source, window)
        .finals()
        .map("record", aggregate)
        .key_by("device_id", |a| a.device_id.clone())
        .to_topic(sink);
    t.build()
}

/// A final window as its record: keyed by device, so a device's windows
/// stay in order on one partition.
pub fn aggregate(w: Windowed<iot_windows::Key, Stats>) -> SensorWindowAggregate {
    let s = &w.value;
    SensorWindowAggregate {
        device_id: w.key.0,
        sensor_type: w.key.1,
        window_start: w.window.start_ms,
        window_end: w.window.end_ms,
        count: i64::try_from(s.count).unwrap_or(i64::MAX),
        sum: s.sum,
        min: s.min,
        max: s.max,
        avg: s.avg().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice::testing::TestDriver;

    use super::*;
    use crate::iot_alerts::{SensorAlert, SensorType};

    fn reading(t: SensorType, value: f64, at_ms: i64) -> SensorReading {
        SensorReading {
            device_id: "d1".into(),
            sensor_type: t,
            value,
            unit: t.unit().into(),
            timestamp: at_ms,
        }
    }

    #[test]
    fn alerts_and_final_windows_from_one_read() {
        let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
        let topology = build(spec).unwrap();
        assert_eq!(topology.description.writes(), [ALERTS, WINDOWS]);
        let mut d = TestDriver::new(topology).unwrap();
        let t0 = 1_800_000_000_000 / 60_000 * 60_000;
        d.pipe(None, &reading(SensorType::Temperature, 50.0, t0), t0)
            .unwrap();
        d.pipe(
            None,
            &reading(SensorType::Temperature, 20.0, t0 + 1_000),
            t0,
        )
        .unwrap();
        let alerts: Vec<Item<SensorAlert>> = d.read(ALERTS).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].key.as_deref(), Some(&b"d1"[..]));
        assert!(d.read::<SensorWindowAggregate>(WINDOWS).unwrap().is_empty());
        d.pipe(
            None,
            &reading(SensorType::Temperature, 21.0, t0 + 75_000),
            t0,
        )
        .unwrap();
        let windows: Vec<Item<SensorWindowAggregate>> = d.read(WINDOWS).unwrap();
        assert_eq!(windows.len(), 1);
        let w = &windows[0].value;
        assert_eq!((w.count, w.sum, w.min, w.max), (2, 70.0, 20.0, 50.0));
        assert_eq!(windows[0].timestamp_ms, t0 + 59_999);
        // A bad reading is a dead letter; the windows and alerts go on.
        d.pipe(
            None,
            &reading(SensorType::Humidity, f64::NAN, t0 + 76_000),
            t0,
        )
        .unwrap();
        let dead = d.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].kind, "validation");
    }

    #[test]
    fn a_restart_rebuilds_open_windows_and_emits_each_once() {
        let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
        let mut d = TestDriver::new(build(spec).unwrap()).unwrap();
        let t0 = 1_800_000_000_000 / 60_000 * 60_000;
        for i in 0..5 {
            d.pipe(None, &reading(SensorType::Light, 1.0, t0 + i * 1_000), t0)
                .unwrap();
        }
        let alerts = d.read::<SensorAlert>(ALERTS).unwrap().len();
        assert_eq!(alerts, 5);
        d.restart().unwrap();
        // The restart read the open window's records again: no new alerts.
        assert!(d.read::<SensorAlert>(ALERTS).unwrap().is_empty());
        d.pipe(None, &reading(SensorType::Light, 100.0, t0 + 80_000), t0)
            .unwrap();
        let windows: Vec<Item<SensorWindowAggregate>> = d.read(WINDOWS).unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].value.count, 5);
        d.restart().unwrap();
        d.pipe(None, &reading(SensorType::Light, 100.0, t0 + 81_000), t0)
            .unwrap();
        assert!(d.read::<SensorWindowAggregate>(WINDOWS).unwrap().is_empty());
    }
}
