//! The comparison's input, preloaded the same for every processor, and
//! the checks of what came out. Every record is a fresh one (a login
//! numbered in its `device_id`; a reading of 1 000 devices × 5 sensors,
//! each reporting every second of event time; for the join, 5 000 devices
//! and their table), and each partition starts
//! and ends with a sentinel that every processor refuses: its dead letter's
//! append time (the topics are `LogAppendTime`) says when the processor
//! took the partition's first and last record, on the broker's clock, so
//! neither start-up nor the commit interval counts against the rate.

use std::collections::HashMap;

use crate::simulate::logins::Generator;
use crate::topologies::{
    iot_alerts::{SensorReading, SensorType},
    iot_enriched::DeviceInfo,
    user_login::UserLogin,
};
use sluice::avro::AvroCodec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// user-login: every valid login comes out, normalised.
    Logins,
    /// iot windows: every reading lands in one final window.
    Readings,
    /// iot-enriched: every reading of 5 000 devices joined with its
    /// device's row (a table preloaded before the run).
    Enriched,
    /// The same readings through the same steps but the join: what the
    /// join's cost is measured against (sluice only).
    Unjoined,
    /// logins-by-locale: the logins' stream, re-keyed by locale through a
    /// repartition topic and counted; every login comes out as its
    /// locale's next count.
    Counts,
}

impl Work {
    /// Whether every input record comes out (windows come out per window).
    pub fn one_to_one(self) -> bool {
        self != Work::Readings
    }

    fn devices(self) -> usize {
        match self {
            Work::Enriched | Work::Unjoined => ENRICHED_DEVICES,
            _ => DEVICES,
        }
    }
}

/// The devices of the enrichment (the 5 000).
pub const ENRICHED_DEVICES: usize = 5000;

/// The site of device `d` in the benchmark's table.
pub fn site_of(d: usize) -> String {
    format!("plant-{:02}", d % 16)
}

/// A record as preloaded: key, value, Kafka timestamp.
pub type Rec = (Vec<u8>, Vec<u8>, i64);

pub struct Stream {
    /// Per partition, in order, sentinels included.
    pub partitions: Vec<Vec<Rec>>,
    /// Records besides the sentinels.
    pub records: usize,
    /// Readings: records per (device, sensor type, window start).
    pub windows: HashMap<(String, String, i64), u64>,
    /// Logins: records per locale.
    pub locales: HashMap<String, u64>,
    /// Mean encoded value size, bytes.
    pub record_size: usize,
    /// The table a join reads (`Work::Enriched`): its rows.
    pub table: Vec<Rec>,
}

pub const START: &[u8] = b"\x01start";
pub const END: &[u8] = b"\x01end";

/// Whether a key is a sentinel's.
pub fn sentinel(key: Option<&[u8]>) -> Option<bool> {
    match key? {
        START => Some(true),
        END => Some(false),
        _ => None,
    }
}

const DEVICES: usize = 1000;
const SENSORS: [SensorType; 5] = [
    SensorType::Temperature,
    SensorType::Humidity,
    SensorType::Pressure,
    SensorType::Motion,
    SensorType::Light,
];
pub const WINDOW_MS: i64 = 60_000;

impl Stream {
    /// `records` logins or readings over `partitions`, encoded for `subject_topic`.
    pub async fn build(
        work: Work,
        records: usize,
        partitions: i32,
        codec: &AvroCodec,
        subject_topic: &str,
    ) -> anyhow::Result<Stream> {
        let p = partitions.max(1) as usize;
        let mut out: Vec<Vec<Rec>> = vec![Vec::new(); p];
        let mut windows = HashMap::new();
        let mut locales = HashMap::new();
        let mut bytes = 0usize;
        match work {
            Work::Logins | Work::Counts => {
                let now = chrono::Utc::now().timestamp();
                let mut generator = Generator::new(11, 0.0);
                let mut bad = generator.valid(now);
                bad.user_id = "not-a-uuid".into();
                let refused = codec.encode(subject_topic, &bad).await?;
                for q in out.iter_mut() {
                    q.push((START.to_vec(), refused.clone(), now * 1000));
                }
                for i in 0..records {
                    let mut login: UserLogin = generator.valid(now);
                    login.device_id = seq_id(i);
                    *locales.entry(login.locale.clone()).or_insert(0) += 1;
                    let value = codec.encode(subject_topic, &login).await?;
                    bytes += value.len();
                    out[i % p].push((login.user_id.into_bytes(), value, now * 1000));
                }
                for q in out.iter_mut() {
                    q.push((END.to_vec(), refused.clone(), now * 1000));
                }
            }
            Work::Readings | Work::Enriched | Work::Unjoined => {
                let devices = work.devices();
                // Event time an hour back, on a window boundary.
                let base =
                    (chrono::Utc::now().timestamp_millis() - 3_600_000) / WINDOW_MS * WINDOW_MS;
                let reading =
                    |device: usize, sensor: SensorType, value: f64, ts: i64| SensorReading {
                        device_id: format!("device-{device:04}"),
                        sensor_type: sensor,
                        value,
                        unit: "u".into(),
                        timestamp: ts,
                    };
                let refused = |ts| reading(0, SensorType::Temperature, f64::NAN, ts);
                let start = codec.encode(subject_topic, &refused(base)).await?;
                for q in out.iter_mut() {
                    q.push((START.to_vec(), start.clone(), base));
                }
                let mut last = base;
                for j in 0..records {
                    let device = (j / SENSORS.len()) % devices;
                    let sensor = SENSORS[j % SENSORS.len()];
                    let second = (j / (SENSORS.len() * devices)) as i64;
                    let ts = base + second * 1000 + device as i64;
                    // Exact in binary, so sums do not depend on the order of adding.
                    let value = 20.0 + (j % 40) as f64 * 0.25;
                    let r = reading(device, sensor, value, ts);
                    let value = codec.encode(subject_topic, &r).await?;
                    bytes += value.len();
                    let start = ts - ts.rem_euclid(WINDOW_MS);
                    *windows
                        .entry((r.device_id.clone(), sensor_name(sensor), start))
                        .or_insert(0) += 1;
                    out[device % p].push((r.device_id.into_bytes(), value, ts));
                    last = ts;
                }
                let end = codec.encode(subject_topic, &refused(last)).await?;
                for q in out.iter_mut() {
                    q.push((END.to_vec(), end.clone(), last));
                }
            }
        }
        Ok(Stream {
            partitions: out,
            records,
            windows,
            locales,
            record_size: bytes / records.max(1),
            table: Vec::new(),
        })
    }

    /// The devices table: `rows` devices' `DeviceInfo` rows (at least the
    /// readings' devices), keyed by id, valid from two hours back (the
    /// readings start an hour back), on one partition each as the
    /// producer's partitioner puts it.
    pub async fn devices(
        codec: &AvroCodec,
        subject_topic: &str,
        rows: usize,
    ) -> anyhow::Result<Vec<Rec>> {
        let at = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
        let rows = rows.max(ENRICHED_DEVICES);
        let mut out = Vec::with_capacity(rows);
        for d in 0..rows {
            let info = DeviceInfo {
                device_id: format!("device-{d:04}"),
                site: site_of(d),
                model: Some(format!("sim-{}", d % 3 + 1)),
                temperature_max: None,
                humidity_max: None,
            };
            let value = codec.encode(subject_topic, &info).await?;
            out.push((info.device_id.into_bytes(), value, at));
        }
        Ok(out)
    }

    /// Readings far ahead in event time, one per partition, that close
    /// every window of the stream (their own windows stay open).
    pub async fn closers(
        &self,
        codec: &AvroCodec,
        subject_topic: &str,
    ) -> anyhow::Result<Vec<Vec<Rec>>> {
        let latest = self
            .partitions
            .iter()
            .flatten()
            .map(|r| r.2)
            .max()
            .unwrap_or(0);
        let ts = latest + 3_600_000;
        let mut out = Vec::new();
        for p in 0..self.partitions.len() {
            let r = SensorReading {
                device_id: format!("closer-{p}"),
                sensor_type: SensorType::Temperature,
                value: 0.0,
                unit: "u".into(),
                timestamp: ts,
            };
            out.push(vec![(
                r.device_id.clone().into_bytes(),
                codec.encode(subject_topic, &r).await?,
                ts,
            )]);
        }
        Ok(out)
    }
}

/// Logins numbered `first..first + n`, for the latency pass (the producer
/// partitions them by key). `own_locale`: each of a locale of its own,
/// its number, so that its count's update (1) says which login it was.
pub async fn fresh_logins(
    codec: &AvroCodec,
    subject_topic: &str,
    first: usize,
    n: usize,
    own_locale: bool,
) -> anyhow::Result<Vec<Rec>> {
    let now = chrono::Utc::now().timestamp();
    let mut generator = Generator::new(13, 0.0);
    let mut out = Vec::with_capacity(n);
    for i in first..first + n {
        let mut login = generator.valid(now);
        login.device_id = seq_id(i);
        if own_locale {
            login.locale = seq_id(i);
        }
        let value = codec.encode(subject_topic, &login).await?;
        out.push((login.user_id.into_bytes(), value, 0));
    }
    Ok(out)
}

pub fn seq_id(i: usize) -> String {
    format!("seq-{i:010}")
}

fn sensor_name(s: SensorType) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The login number in a user-login record (input or output): `device_id`
/// is the fifth field, after four strings, so it is found by skipping
/// lengths, without a schema or a decode.
pub fn login_seq(value: &[u8]) -> Option<usize> {
    let mut body = value.get(5..)?;
    for field in 0..5 {
        let (len, rest) = varint(body)?;
        let len = usize::try_from(len).ok()?;
        if field == 4 {
            return std::str::from_utf8(rest.get(..len)?)
                .ok()?
                .strip_prefix("seq-")?
                .parse()
                .ok();
        }
        body = rest.get(len..)?;
    }
    None
}

/// A `LoginCount`'s locale and count (a string, then a long), read
/// without a decode.
pub fn login_count(value: &[u8]) -> Option<(String, i64)> {
    let (len, rest) = varint(value.get(5..)?)?;
    let len = usize::try_from(len).ok()?;
    let locale = std::str::from_utf8(rest.get(..len)?).ok()?.to_string();
    let (count, _) = varint(rest.get(len..)?)?;
    Some((locale, count))
}

/// The login number in a `LoginCount` of the latency pass, whose locale
/// is the login's number.
pub fn count_seq(value: &[u8]) -> Option<usize> {
    login_count(value)?.0.strip_prefix("seq-")?.parse().ok()
}

/// An Avro long (zig-zag varint).
fn varint(b: &[u8]) -> Option<(i64, &[u8])> {
    let mut n: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((n >> 1) as i64 ^ -((n & 1) as i64), &b[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Avro strings by hand: a zig-zag varint length, then the bytes.
    fn avro_strings(fields: &[&str]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0, 7];
        for f in fields {
            let mut n = (f.len() as u64) << 1;
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n == 0 { byte } else { byte | 0x80 });
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    #[test]
    fn the_login_number_is_found_without_a_decode() {
        let long = "x".repeat(200);
        let id = seq_id(123_456);
        let value = avro_strings(&[&long, "2.3.1", "10.0.0.1", "en-GB", &id, "rest"]);
        assert_eq!(login_seq(&value), Some(123_456));
        assert_eq!(login_seq(&value[..220]), None);
        assert_eq!(
            login_seq(&avro_strings(&["a", "b", "c", "d", "dev-1"])),
            None
        );
        let count = |locale: &str, zigzag: u8| {
            let mut v = avro_strings(&[locale]);
            v.push(zigzag);
            v
        };
        assert_eq!(count_seq(&count(&id, 2)), Some(123_456));
        assert_eq!(count_seq(&count("en-GB", 2)), None);
        assert_eq!(login_count(&count("en-GB", 6)), Some(("en-GB".into(), 3)));
        assert_eq!(login_count(&avro_strings(&["en-GB"])), None);
    }
}
