//! `iot_sensor_data` → the same windows as `iot-windows` → each window's
//! final count/sum/min/max/avg, once, to the topic `iot-window-aggregates`
//! (Avro `SensorWindowAggregate`), keyed by device, exactly once.

use serde::{Deserialize, Serialize};
use sluice::prelude::*;

use super::iot_windows;

pub const NAME: &str = "iot-window-aggregates";
pub const SOURCE: &str = iot_windows::SOURCE;
pub const SINK: &str = "iot-window-aggregates";

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

pub fn build(window: WindowSpec) -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, SINK, window)
}

/// The same pipeline under another name, source and sink (tests, benchmark).
pub fn declare(
    name: &str,
    source: &str,
    sink: &str,
    window: WindowSpec,
) -> Result<Topology, BuildError> {
    iot_windows::windowed(name, source, window)?.to_topic_when_final(sink, aggregate)
}

fn text(key: &WindowKey, i: usize) -> String {
    key.get(i).map(ToString::to_string).unwrap_or_default()
}

/// A final window as its record: keyed by device, so a device's windows
/// stay in order on one partition.
pub fn aggregate(
    key: &WindowKey,
    w: Window,
    agg: &Combined,
) -> (Option<Vec<u8>>, SensorWindowAggregate) {
    let s = &agg.stats;
    let device_id = text(key, 0);
    let value = SensorWindowAggregate {
        device_id: device_id.clone(),
        sensor_type: text(key, 1),
        window_start: w.start_ms,
        window_end: w.end_ms,
        count: i64::try_from(s.count).unwrap_or(i64::MAX),
        sum: s.sum,
        min: s.min,
        max: s.max,
        avg: if s.count == 0 {
            0.0
        } else {
            s.sum / s.count as f64
        },
    };
    (Some(device_id.into_bytes()), value)
}
