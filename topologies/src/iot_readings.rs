//! `iot_sensor_data` → every reading as a row of `sensor_readings`, exactly
//! once: history to query by device and time range.

use sluice::prelude::*;

pub const NAME: &str = "iot-readings";
pub const SOURCE: &str = "iot_sensor_data";
pub const TABLE: &str = "sensor_readings";

pub fn build() -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, TABLE)
}

/// The same pipeline under another name, source and table (the benchmark's).
pub fn declare(name: &str, source: &str, table: &str) -> Result<Topology, BuildError> {
    let bad_table = |reason| BuildError::BadTable {
        topology: name.to_string(),
        reason,
    };
    let t = topology(name);
    super::iot_windows::checked(&t, source).to_table(table_spec(table).map_err(bad_table)?, |r| {
        vec![
            Cell::Text(r.device_id.clone()),
            Cell::Text(r.sensor_type.as_str().to_string()),
            Cell::Float(r.value),
            Cell::Text(r.unit.clone()),
            Cell::TimeMs(r.timestamp),
        ]
    });
    t.build()
}

/// `sensor_readings`: a reading per row, keyed by where it was read from,
/// indexed for a device's readings over a time range.
pub fn table_spec(table: &str) -> Result<RowSpec, String> {
    RowSpec::new(table)?
        .column("device_id", SqlType::Text)?
        .column("sensor_type", SqlType::Text)?
        .column("value", SqlType::Float8)?
        .column("unit", SqlType::Text)?
        .column("event_time", SqlType::Timestamp)?
        .indexed("device_id", "event_time")
}
