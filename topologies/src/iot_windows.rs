//! `iot_sensor_data` → key by (device, sensor type) → event-time windows
//! (1-minute tumbling, 10 s grace by default) → count/sum/min/max/avg merged
//! into `sensor_window_aggregates`, exactly once (rows and input positions
//! in one PostgreSQL transaction).

use sluice::{
    prelude::*,
    topology::{Builder, WindowedTable, ops::Ops},
};

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
    let t = topology(name);
    let spec = table_spec(table).map_err(|reason| BuildError::BadTable {
        topology: name.to_string(),
        reason,
    })?;
    windowed(&t, source, window).to_postgres(spec);
    t.build()
}

/// The readings' key in the windows: device and sensor type.
pub type Key = (String, String);

/// Readings from `source`, checked, keyed by device and sensor type, in
/// event-time windows of count, sum, min and max: what both window sinks take.
pub fn windowed(
    t: &Builder,
    source: &str,
    window: WindowSpec,
) -> WindowedTable<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>, Key, Stats>
{
    by_sensor(checked(t, source), window)
}

/// `readings` in event-time windows of count, sum, min and max per device
/// and sensor type.
pub fn by_sensor<S: Send + 'static, O: Ops<S, SensorReading>>(
    readings: Stream<S, SensorReading, O>,
    window: WindowSpec,
) -> WindowedTable<S, SensorReading, impl Ops<S, SensorReading>, Key, Stats> {
    readings
        .event_time("timestamp", |r| r.timestamp)
        .window(window)
        .aggregate(
            "value by device and sensor type",
            |r| (r.device_id.clone(), r.sensor_type.as_str().to_string()),
            Stats::default,
            |s, r| s.add(&r.value),
        )
        .merge(Aggregate::merge)
}

/// Readings from `source` with a finite value and a device: what every
/// IoT topology starts from (bad ones go to the dead-letter topic).
pub fn checked(
    t: &Builder,
    source: &str,
) -> Stream<SensorReading, SensorReading, impl Ops<SensorReading, SensorReading>> {
    t.source::<SensorReading>(source)
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
        })
}

/// `sensor_window_aggregates`: a row per device, sensor type and window,
/// with count, sum, min, max and avg.
pub fn table_spec(table: &str) -> Result<TableSpec, String> {
    Ok(TableSpec::new(table)?
        .key("device_id", SqlType::Text)?
        .key("sensor_type", SqlType::Text)?
        .stats())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice::{testing::TestDriver, window::Value};

    use super::*;
    use crate::iot_alerts::SensorType;

    fn reading(device: &str, value: f64, at_ms: i64) -> SensorReading {
        SensorReading {
            device_id: device.into(),
            sensor_type: SensorType::Temperature,
            value,
            unit: "°C".into(),
            timestamp: at_ms,
        }
    }

    #[test]
    fn windows_fill_the_table_and_turn_final() {
        let spec = WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10));
        let mut d = TestDriver::new(build(spec).unwrap()).unwrap();
        let t0 = 1_800_000_000_000 / 60_000 * 60_000;
        d.pipe(None, &reading("d1", 1.0, t0), t0).unwrap();
        d.pipe(None, &reading("d1", 3.0, t0 + 1_000), t0).unwrap();
        let rows = d.tables().windows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].aggregates[0], ("count".into(), Value::Int(2)));
        assert_eq!(rows[0].aggregates[4], ("avg".into(), Value::Float(2.0)));
        assert!(!rows[0].is_final);
        // The next minute plus grace closes it.
        d.pipe(None, &reading("d1", 5.0, t0 + 71_000), t0).unwrap();
        let rows = d.tables().windows();
        assert_eq!(rows.iter().filter(|r| r.is_final).count(), 1);
        // Too late now: a late record, not a change.
        d.pipe(None, &reading("d1", 9.0, t0 + 2_000), t0).unwrap();
        let late = d.late_records();
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].kind, "late");
        assert_eq!(d.tables().windows().len(), 2);
    }
}
