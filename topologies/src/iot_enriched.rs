//! `iot_sensor_data` left-joined with the devices table (`iot-devices`,
//! compacted, read whole by every worker) → `iot-enriched-readings`: each
//! reading with the site its device was at when the reading was taken,
//! exactly once, keyed by device id. A device moved mid-stream gives its
//! earlier readings the old site and later ones the new, live or replayed.
//! The same join gives `iot-device-alerts`: the alert rules of `iot-alerts`
//! with the device's own upper limits where its row has them.

use serde::{Deserialize, Serialize};

use sluice::prelude::*;

use super::iot_alerts::{self, Limits, SensorAlert, SensorReading, SensorType};

pub const NAME: &str = "iot-enriched";
pub const SOURCE: &str = "iot_sensor_data";
pub const DEVICES: &str = "iot-devices";
pub const SINK: &str = "iot-enriched-readings";
/// Alerts by each device's own limits (`SensorAlert`, keyed by device).
pub const ALERTS: &str = "iot-device-alerts";

/// `schemas/iot-devices.avsc`: a device's row, keyed by its id (UTF-8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: String,
    pub site: String,
    #[serde(default)]
    pub model: Option<String>,
    /// This device's own alert limits, where it has them.
    #[serde(default)]
    pub temperature_max: Option<f64>,
    #[serde(default)]
    pub humidity_max: Option<f64>,
}

impl DeviceInfo {
    pub fn limits(&self) -> Limits {
        Limits {
            temperature_max: self.temperature_max,
            humidity_max: self.humidity_max,
        }
    }
}

impl AvroSchema for DeviceInfo {
    const SCHEMA: &'static str = include_str!("../../schemas/iot-devices.avsc");
}

/// `schemas/iot-enriched-readings.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedReading {
    pub device_id: String,
    pub sensor_type: SensorType,
    pub value: f64,
    pub unit: String,
    pub timestamp: i64,
    pub site: Option<String>,
}

impl AvroSchema for EnrichedReading {
    const SCHEMA: &'static str = include_str!("../../schemas/iot-enriched-readings.avsc");
}

impl EnrichedReading {
    pub fn of(r: SensorReading, device: Option<&DeviceInfo>) -> EnrichedReading {
        EnrichedReading {
            device_id: r.device_id,
            sensor_type: r.sensor_type,
            value: r.value,
            unit: r.unit,
            timestamp: r.timestamp,
            site: device.map(|d| d.site.clone()),
        }
    }
}

pub fn build() -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, DEVICES, SINK, Some(ALERTS))
}

/// What one joined reading gives.
enum Out {
    Reading(EnrichedReading),
    Alert(SensorAlert),
}

impl Out {
    /// A reading and the alert it raises by its device's limits.
    fn of(r: Item<SensorReading>, device: Option<&DeviceInfo>) -> [Option<Out>; 2] {
        let limits = device.map(DeviceInfo::limits).unwrap_or_default();
        let alert = iot_alerts::alert_within(&r.value, limits).map(Out::Alert);
        [
            Some(Out::Reading(EnrichedReading::of(r.value, device))),
            alert,
        ]
    }
}

/// The same pipeline over other topics (the benchmark's and tests'):
/// without `alerts`, the join alone.
pub fn declare(
    name: &str,
    source: &str,
    devices: &str,
    sink: &str,
    alerts: Option<&str>,
) -> Result<Topology, BuildError> {
    let t = topology(name);
    let devices = t.global_table::<DeviceInfo>(devices);
    enrich(&t, source, &devices, sink, alerts);
    t.build()
}

/// The same with the devices read co-partitioned (`Builder::table`): the
/// devices topic keyed and partitioned as the readings are, each worker
/// reading only the partitions it owns of the readings.
pub fn declare_co_partitioned(
    name: &str,
    source: &str,
    devices: &str,
    sink: &str,
    alerts: Option<&str>,
) -> Result<Topology, BuildError> {
    let t = topology(name);
    let devices = t.table::<DeviceInfo>(devices);
    enrich(&t, source, &devices, sink, alerts);
    t.build()
}

/// The readings as `EnrichedReading`s with no site, without a table: what
/// the join adds to is measured against this (the benchmark's baseline).
pub fn declare_unjoined(name: &str, source: &str, sink: &str) -> Result<Topology, BuildError> {
    let t = topology(name);
    super::iot_windows::checked(&t, source)
        .event_time("timestamp", |r| r.timestamp)
        .key_by("device_id", |r| r.device_id.clone())
        .map("unjoined", |r| EnrichedReading::of(r, None))
        .to_topic(sink);
    t.build()
}

/// A reading's key in the devices table: its device id, as UTF-8.
fn device_key(r: &Item<SensorReading>) -> Vec<u8> {
    r.value.device_id.as_bytes().to_vec()
}

fn enrich(
    t: &Builder,
    source: &str,
    devices: &Table<DeviceInfo>,
    sink: &str,
    alerts: Option<&str>,
) {
    let joined = super::iot_windows::checked(t, source)
        .event_time("timestamp", |r| r.timestamp)
        .key_by("device_id", |r| r.device_id.clone());
    let Some(alerts) = alerts else {
        joined
            .left_join("devices", devices, device_key, |r, d| {
                EnrichedReading::of(r.value, d)
            })
            .to_topic(sink);
        return;
    };
    let [readings, raised] = joined
        .left_join("devices", devices, device_key, Out::of)
        .flat_map("reading and alert", |outs| outs.into_iter().flatten())
        .split("kind")
        .branch("readings", |o| matches!(o, Out::Reading(_)))
        .default_branch("alerts")
        .streams();
    readings
        .flat_map("reading", |o| match o {
            Out::Reading(r) => Some(r),
            Out::Alert(_) => None,
        })
        .to_topic(sink);
    raised
        .flat_map("alert", |o| match o {
            Out::Alert(a) => Some(a),
            Out::Reading(_) => None,
        })
        .to_topic(alerts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::testing::TestDriver;

    const H: i64 = 3_600_000;

    fn reading(device: &str, at: i64) -> SensorReading {
        SensorReading {
            device_id: device.into(),
            sensor_type: SensorType::Temperature,
            value: 21.5,
            unit: "°C".into(),
            timestamp: at,
        }
    }

    fn device(id: &str, site: &str) -> DeviceInfo {
        DeviceInfo {
            device_id: id.into(),
            site: site.into(),
            model: None,
            temperature_max: None,
            humidity_max: None,
        }
    }

    #[test]
    fn readings_carry_the_site_valid_at_their_time() {
        let mut d = TestDriver::new(build().unwrap()).unwrap();
        let t0 = 1_800_000_000_000;
        d.table_row(DEVICES, b"d1", t0, Some(device("d1", "plant-a")))
            .unwrap();
        d.table_row(DEVICES, b"d1", t0 + 2 * H, Some(device("d1", "plant-b")))
            .unwrap();
        d.table_row(DEVICES, b"d2", t0, Some(device("d2", "plant-c")))
            .unwrap();
        d.table_row::<DeviceInfo>(DEVICES, b"d2", t0 + H, None)
            .unwrap();
        for (dev, at) in [
            ("d1", t0 + H),
            ("d1", t0 + 3 * H),
            ("d2", t0 + 1),
            ("d2", t0 + 2 * H),
            ("d9", t0),
        ] {
            d.pipe(Some(dev), &reading(dev, at), at).unwrap();
        }
        let out: Vec<(Option<String>, Option<String>)> = d
            .read::<EnrichedReading>(SINK)
            .unwrap()
            .into_iter()
            .map(|i| (i.key.map(|k| String::from_utf8(k).unwrap()), i.value.site))
            .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            out,
            vec![
                (s("d1"), s("plant-a")),
                (s("d1"), s("plant-b")),
                (s("d2"), s("plant-c")),
                (s("d2"), None),
                (s("d9"), None),
            ]
        );
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn alerts_use_the_limits_the_device_had_at_the_reading_time() {
        let mut d = TestDriver::new(build().unwrap()).unwrap();
        let t0 = 1_800_000_000_000;
        let limited = |max| DeviceInfo {
            temperature_max: max,
            ..device("d1", "plant-a")
        };
        d.table_row(DEVICES, b"d1", t0, Some(limited(Some(21.0))))
            .unwrap();
        d.table_row(DEVICES, b"d1", t0 + H, Some(limited(None)))
            .unwrap();
        // 21.5 °C: over d1's own limit before the change, not after; d2
        // has no row, so the fleet's limits hold.
        for (dev, at) in [("d1", t0 + 1), ("d1", t0 + 2 * H), ("d2", t0 + 1)] {
            d.pipe(Some(dev), &reading(dev, at), at).unwrap();
        }
        let alerts: Vec<(String, i64, f64)> = d
            .read::<SensorAlert>(ALERTS)
            .unwrap()
            .into_iter()
            .map(|a| (a.value.device_id, a.value.timestamp, a.value.threshold))
            .collect();
        assert_eq!(alerts, vec![("d1".to_string(), t0 + 1, 21.0)]);
        assert_eq!(d.read::<EnrichedReading>(SINK).unwrap().len(), 3);
    }
}
