//! The IoT records (`SensorReading` in, `SensorAlert` out) and the alert
//! rules: threshold per sensor type, the most severe one a reading breaks.
//! `iot-events` sends the alerts to `iot-alerts`.

use serde::{Deserialize, Serialize};

use sluice::prelude::*;

pub const SOURCE: &str = "iot_sensor_data";
pub const SINK: &str = "iot-alerts";

/// The Avro enum `io.sluice.iot.SensorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorType {
    Temperature,
    Humidity,
    Pressure,
    Motion,
    Light,
    /// Host figures (`sluice simulate host`): CPU busy %, memory used %,
    /// disk used %, network bytes per second.
    Cpu,
    Memory,
    Disk,
    Network,
}

impl SensorType {
    /// The physical sensors of the IoT devices.
    pub const ALL: [SensorType; 5] = [
        SensorType::Temperature,
        SensorType::Humidity,
        SensorType::Pressure,
        SensorType::Motion,
        SensorType::Light,
    ];

    /// Every symbol, host figures included.
    pub const EVERY: [SensorType; 9] = [
        SensorType::Temperature,
        SensorType::Humidity,
        SensorType::Pressure,
        SensorType::Motion,
        SensorType::Light,
        SensorType::Cpu,
        SensorType::Memory,
        SensorType::Disk,
        SensorType::Network,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SensorType::Temperature => "temperature",
            SensorType::Humidity => "humidity",
            SensorType::Pressure => "pressure",
            SensorType::Motion => "motion",
            SensorType::Light => "light",
            SensorType::Cpu => "cpu",
            SensorType::Memory => "memory",
            SensorType::Disk => "disk",
            SensorType::Network => "network",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            SensorType::Temperature => "°C",
            SensorType::Humidity => "%",
            SensorType::Pressure => "hPa",
            SensorType::Motion => "bool",
            SensorType::Light => "lux",
            SensorType::Cpu | SensorType::Memory | SensorType::Disk => "%",
            SensorType::Network => "B/s",
        }
    }
}

impl std::str::FromStr for SensorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SensorType::EVERY
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown sensor type {s:?}; use temperature, humidity, pressure, motion, light, cpu, memory, disk or network")
            })
    }
}

/// `schemas/iot_sensor_data.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    pub device_id: String,
    pub sensor_type: SensorType,
    pub value: f64,
    pub unit: String,
    /// Event time, ms since the epoch.
    pub timestamp: i64,
}

impl AvroSchema for SensorReading {
    const SCHEMA: &'static str = include_str!("../../schemas/iot_sensor_data.avsc");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// `schemas/iot-alerts.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorAlert {
    pub device_id: String,
    pub sensor_type: SensorType,
    pub value: f64,
    pub threshold: f64,
    pub rule: String,
    pub severity: Severity,
    pub timestamp: i64,
}

impl AvroSchema for SensorAlert {
    const SCHEMA: &'static str = include_str!("../../schemas/iot-alerts.avsc");
}

/// (rule, comparison, threshold, severity), most severe first per sensor.
enum Cmp {
    Above,
    Below,
    AtLeast,
}

const RULES: &[(SensorType, &str, Cmp, f64, Severity)] = &[
    (
        SensorType::Temperature,
        "extreme_temperature",
        Cmp::Above,
        45.0,
        Severity::Critical,
    ),
    (
        SensorType::Temperature,
        "extreme_temperature",
        Cmp::Above,
        35.0,
        Severity::Warning,
    ),
    (
        SensorType::Temperature,
        "extreme_temperature",
        Cmp::Below,
        -10.0,
        Severity::Warning,
    ),
    (
        SensorType::Humidity,
        "high_humidity",
        Cmp::Above,
        95.0,
        Severity::Critical,
    ),
    (
        SensorType::Humidity,
        "high_humidity",
        Cmp::Above,
        85.0,
        Severity::Warning,
    ),
    (
        SensorType::Pressure,
        "low_pressure",
        Cmp::Below,
        960.0,
        Severity::Critical,
    ),
    (
        SensorType::Pressure,
        "low_pressure",
        Cmp::Below,
        980.0,
        Severity::Warning,
    ),
    (
        SensorType::Motion,
        "motion_detected",
        Cmp::AtLeast,
        1.0,
        Severity::Info,
    ),
    (
        SensorType::Light,
        "low_light",
        Cmp::Below,
        10.0,
        Severity::Info,
    ),
];

/// A device's own upper limits: each replaces its sensor's fleet-wide
/// warning limit (35 °C, 85 %); the critical limits stay the fleet's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub temperature_max: Option<f64>,
    pub humidity_max: Option<f64>,
}

/// The alert a reading raises, if any: the most severe rule it breaks.
pub fn alert(r: &SensorReading) -> Option<SensorAlert> {
    alert_within(r, Limits::default())
}

/// The same, with a device's own limits where it has them.
pub fn alert_within(r: &SensorReading, own: Limits) -> Option<SensorAlert> {
    RULES
        .iter()
        .filter(|(t, ..)| *t == r.sensor_type)
        .map(|(t, rule, cmp, limit, severity)| {
            let limit = match (t, cmp, severity) {
                (SensorType::Temperature, Cmp::Above, Severity::Warning) => {
                    own.temperature_max.unwrap_or(*limit)
                }
                (SensorType::Humidity, Cmp::Above, Severity::Warning) => {
                    own.humidity_max.unwrap_or(*limit)
                }
                _ => *limit,
            };
            (rule, cmp, limit, severity)
        })
        .find(|(_, cmp, limit, _)| match cmp {
            Cmp::Above => r.value > *limit,
            Cmp::Below => r.value < *limit,
            Cmp::AtLeast => r.value >= *limit,
        })
        .map(|(rule, _, limit, severity)| SensorAlert {
            device_id: r.device_id.clone(),
            sensor_type: r.sensor_type,
            value: r.value,
            threshold: limit,
            rule: rule.to_string(),
            severity: *severity,
            timestamp: r.timestamp,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(t: SensorType, value: f64) -> SensorReading {
        SensorReading {
            device_id: "d1".into(),
            sensor_type: t,
            value,
            unit: t.unit().into(),
            timestamp: 1_800_000_000_000,
        }
    }

    #[test]
    fn each_rule_fires_at_its_threshold_and_not_below() {
        use SensorType::*;
        let cases = [
            (
                Temperature,
                46.0,
                Some(("extreme_temperature", Severity::Critical, 45.0)),
            ),
            (
                Temperature,
                36.0,
                Some(("extreme_temperature", Severity::Warning, 35.0)),
            ),
            (Temperature, 35.0, None),
            (
                Temperature,
                -12.0,
                Some(("extreme_temperature", Severity::Warning, -10.0)),
            ),
            (
                Humidity,
                90.0,
                Some(("high_humidity", Severity::Warning, 85.0)),
            ),
            (Humidity, 60.0, None),
            (
                Pressure,
                955.0,
                Some(("low_pressure", Severity::Critical, 960.0)),
            ),
            (Pressure, 1013.0, None),
            (Motion, 1.0, Some(("motion_detected", Severity::Info, 1.0))),
            (Motion, 0.0, None),
            (Light, 3.0, Some(("low_light", Severity::Info, 10.0))),
            (Light, 300.0, None),
        ];
        for (t, v, want) in cases {
            let got = alert(&reading(t, v)).map(|a| (a.rule.clone(), a.severity, a.threshold));
            assert_eq!(
                got,
                want.map(|(r, s, l)| (r.to_string(), s, l)),
                "{t:?} {v}"
            );
        }
    }

    #[test]
    fn a_device_limit_replaces_the_warning_limit_not_the_critical() {
        let own = Limits {
            temperature_max: Some(22.0),
            humidity_max: Some(50.0),
        };
        let got =
            |t, v| alert_within(&reading(t, v), own).map(|a| (a.rule, a.severity, a.threshold));
        let w = |r: &str, l| Some((r.to_string(), Severity::Warning, l));
        assert_eq!(
            got(SensorType::Temperature, 23.0),
            w("extreme_temperature", 22.0)
        );
        assert_eq!(got(SensorType::Temperature, 21.5), None);
        assert_eq!(
            got(SensorType::Temperature, 46.0),
            Some(("extreme_temperature".into(), Severity::Critical, 45.0))
        );
        assert_eq!(got(SensorType::Humidity, 55.0), w("high_humidity", 50.0));
        // Without its own limits, the fleet's.
        assert_eq!(alert(&reading(SensorType::Temperature, 23.0)), None);
    }

    #[test]
    fn sensor_types_parse_by_name() {
        assert_eq!("Humidity".parse::<SensorType>(), Ok(SensorType::Humidity));
        assert!(
            "sound"
                .parse::<SensorType>()
                .unwrap_err()
                .contains("temperature")
        );
    }
}
