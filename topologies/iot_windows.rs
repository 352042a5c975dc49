//! `iot_sensor_data` → key by (device, sensor type) → event-time windows
//! (1-minute tumbling, 10 s grace by default) → count/sum/min/max/avg merged
//! into `sensor_window_aggregates`, exactly once.

use sluice::prelude::*;

use super::iot_alerts::SensorReading;

pub const NAME: &str = "iot-windows";
pub const SOURCE: &str = "iot_sensor_data";
pub const TABLE: &str = "sensor_window_aggregates";

pub fn build(window: WindowSpec) -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, TABLE, window)
}

/// The same pipeline under another name, source and table (the benchmark's).
pub fn declare(
    name: &str,
    source: &str,
    table: &str,
    window: WindowSpec,
) -> Result<Topology, BuildError> {
    windowed(name, source, window)?.to_postgres(table_spec(table).map_err(|reason| {
        BuildError::BadTable {
            topology: name.to_string(),
            reason,
        }
    })?)
}

/// Readings from `source`, checked, keyed by device and sensor type, in
/// event-time windows: what both window sinks take.
pub fn windowed(
    name: &str,
    source: &str,
    window: WindowSpec,
) -> Result<
    Aggregated<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>>,
    BuildError,
> {
    Ok(checked(name, source)?
        .event_time("timestamp", |r| r.timestamp)
        .window(window)
        .aggregate(
            "value by device and sensor type",
            |r| (r.device_id.clone(), r.sensor_type.as_str().to_string()),
            |r| r.value,
        ))
}

/// Readings from `source` with a finite value and a device: what every
/// IoT topology starts from (bad ones go to the dead-letter topic).
pub fn checked(
    name: &str,
    source: &str,
) -> Result<Stream<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>>, BuildError>
{
    Ok(topology(name)
        .source_with_schema::<SensorReading>(
            source,
            sluice::schemas::for_topic(SOURCE).ok_or_else(|| BuildError::NoSchema {
                topology: name.to_string(),
                topic: SOURCE.to_string(),
            })?,
        )
        .validate("finite value", |r| {
            if r.value.is_finite() {
                Ok(())
            } else {
                Err(format!("value {} is not a finite number", r.value))
            }
        })
        .validate("device_id present", |r| {
            if r.device_id.trim().is_empty() {
                Err("device_id is empty")
            } else {
                Ok(())
            }
        }))
}

/// `sensor_window_aggregates`: a row per device, sensor type and window,
/// with count, sum, min, max and avg.
pub fn table_spec(table: &str) -> Result<TableSpec, String> {
    Ok(TableSpec::new(table)?
        .key("device_id", SqlType::Text)?
        .key("sensor_type", SqlType::Text)?
        .stats())
}
