//! `sluice simulate iot`: devices whose sensors random-walk around plausible
//! values in their units, with occasional anomalies, and optionally records
//! out of order or late to exercise event-time windows. Each device's
//! `DeviceInfo` goes to `iot-devices` at start, and now and then a device
//! moves to another site: its new row is acknowledged before any reading
//! stamped after the move is sent, so a join by event time sees it. Every
//! fourth device has its own, tighter alert limits (a clean room).

use std::{future::Future, sync::Arc, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::topologies::{
    iot_alerts::{SOURCE, SensorReading, SensorType},
    iot_enriched::{DEVICES, DeviceInfo},
};
use sluice::{avro::AvroCodec, kafka::KafkaConfig};

#[derive(Debug, Clone)]
pub struct Options {
    pub devices: usize,
    pub interval: Duration,
    pub sensor_types: Vec<SensorType>,
    /// Share of readings that are wild values which break an alert rule.
    pub anomaly_probability: f64,
    /// Share of readings stamped a few seconds in the past.
    pub out_of_order: f64,
    /// Share of readings stamped minutes in the past (later than any grace).
    pub late: f64,
    /// Share of rounds in which one device moves to another site.
    pub move_probability: f64,
    pub seed: u64,
    /// Stop after this many rounds (one reading per device and sensor each).
    pub rounds: Option<u64>,
    /// Counts what was produced and keeps the latest values, for /metrics.
    pub observed: Option<Arc<super::metrics::SimulatorState>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            devices: 8,
            interval: Duration::from_secs(1),
            sensor_types: SensorType::ALL.to_vec(),
            anomaly_probability: 0.05,
            out_of_order: 0.0,
            late: 0.0,
            move_probability: 0.0,
            seed: 1,
            rounds: None,
            observed: None,
        }
    }
}

/// Typical level and the spread of one random-walk step, per sensor.
fn baseline(t: SensorType) -> (f64, f64) {
    match t {
        SensorType::Temperature => (21.0, 0.3),
        SensorType::Humidity => (45.0, 1.0),
        SensorType::Pressure => (1013.0, 0.8),
        SensorType::Motion => (0.0, 0.0),
        SensorType::Light => (300.0, 15.0),
        SensorType::Cpu | SensorType::Disk => (30.0, 2.0),
        SensorType::Memory => (50.0, 1.0),
        SensorType::Network => (50_000.0, 2_000.0),
    }
}

/// A value that breaks the sensor's alert rule.
fn anomaly(t: SensorType, rng: &mut StdRng) -> f64 {
    match t {
        SensorType::Temperature => rng.random_range(36.0..55.0),
        SensorType::Humidity => rng.random_range(86.0..100.0),
        SensorType::Pressure => rng.random_range(940.0..979.0),
        SensorType::Motion => 1.0,
        SensorType::Light => rng.random_range(0.0..9.0),
        SensorType::Cpu | SensorType::Memory | SensorType::Disk => rng.random_range(95.0..100.0),
        SensorType::Network => rng.random_range(1e8..1e9),
    }
}

pub struct Generator {
    rng: StdRng,
    opts: Options,
    /// Current value per (device, sensor).
    levels: Vec<Vec<f64>>,
    /// Readings stamped minutes in the past so far.
    pub late: u64,
    /// Each device's site (an index into `SITES`).
    sites: Vec<usize>,
    /// Moves draw from their own sequence: readings stay as the seed makes them.
    moves: StdRng,
}

/// Where devices are.
pub const SITES: [&str; 4] = ["plant-a", "plant-b", "plant-c", "warehouse"];

/// A clean room's limits: temperature (°C) and humidity (%), near the
/// readings' usual levels (21 °C, 45 %).
const CLEAN_ROOM: (f64, f64) = (21.5, 47.0);

/// How long before start the devices' first rows are valid: readings
/// stamped minutes late still find their device.
const DESCRIBED_BEFORE_MS: i64 = 10 * 60 * 1000;

impl Generator {
    pub fn new(opts: Options) -> Generator {
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let levels = (0..opts.devices)
            .map(|_| {
                opts.sensor_types
                    .iter()
                    .map(|t| {
                        let (base, step) = baseline(*t);
                        base + rng.random_range(-5.0..=5.0) * step
                    })
                    .collect()
            })
            .collect();
        let sites = (0..opts.devices).map(|d| d % SITES.len()).collect();
        Generator {
            moves: StdRng::seed_from_u64(opts.seed ^ 0x5eed),
            rng,
            opts,
            levels,
            late: 0,
            sites,
        }
    }

    fn info(&self, d: usize) -> DeviceInfo {
        // Every fourth device watches a clean room: its own, tighter
        // limits, which `iot-enriched`'s device alerts apply.
        let clean_room = d % 4 == 3;
        DeviceInfo {
            device_id: Self::device_id(d),
            site: SITES[self.sites[d]].to_string(),
            model: Some(format!("sim-{}", d % 3 + 1)),
            temperature_max: clean_room.then_some(CLEAN_ROOM.0),
            humidity_max: clean_room.then_some(CLEAN_ROOM.1),
        }
    }

    /// Every device's row, valid from a while before `now_ms`.
    pub fn devices(&self, now_ms: i64) -> Vec<(DeviceInfo, i64)> {
        (0..self.opts.devices)
            .map(|d| (self.info(d), now_ms - DESCRIBED_BEFORE_MS))
            .collect()
    }

    /// Perhaps one device moved at `now_ms`: its new row.
    pub fn maybe_move(&mut self, now_ms: i64) -> Option<(DeviceInfo, i64)> {
        if self.opts.move_probability <= 0.0 || self.opts.devices == 0 {
            return None;
        }
        if !self.moves.random_bool(self.opts.move_probability.min(1.0)) {
            return None;
        }
        let d = self.moves.random_range(0..self.opts.devices);
        self.sites[d] = (self.sites[d] + self.moves.random_range(1..SITES.len())) % SITES.len();
        Some((self.info(d), now_ms))
    }

    pub fn device_id(i: usize) -> String {
        format!("device-{i:03}")
    }

    /// One reading per device and sensor, stamped around `now_ms`.
    pub fn round(&mut self, now_ms: i64) -> Vec<SensorReading> {
        let mut out = Vec::with_capacity(self.opts.devices * self.opts.sensor_types.len());
        for d in 0..self.opts.devices {
            for (s, t) in self.opts.sensor_types.clone().into_iter().enumerate() {
                let (base, step) = baseline(t);
                let level = &mut self.levels[d][s];
                // Drift back towards the baseline, plus noise.
                *level += (base - *level) * 0.05 + self.rng.random_range(-1.0..=1.0) * step;
                let value = if t == SensorType::Motion {
                    f64::from(u8::from(self.rng.random_bool(0.02)))
                } else if self.rng.random_bool(self.opts.anomaly_probability) {
                    anomaly(t, &mut self.rng)
                } else {
                    (*level * 100.0).round() / 100.0
                };
                let shift = if self.rng.random_bool(self.opts.late) {
                    self.late += 1;
                    self.rng.random_range(120_000..300_000)
                } else if self.rng.random_bool(self.opts.out_of_order) {
                    self.rng.random_range(1_000..5_000)
                } else {
                    0
                };
                out.push(SensorReading {
                    device_id: Self::device_id(d),
                    sensor_type: t,
                    value,
                    unit: t.unit().to_string(),
                    timestamp: now_ms - shift,
                });
            }
        }
        out
    }
}

/// What a simulator run produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub total: u64,
    /// Stamped minutes in the past, later than any usual grace period.
    pub late: u64,
}

/// Produces devices' rows to `iot-devices`, keyed by device id, stamped
/// from when they hold, and waits until all are acknowledged.
pub async fn publish_devices(
    producer: &FutureProducer,
    codec: &AvroCodec,
    devices: &[(DeviceInfo, i64)],
) -> anyhow::Result<()> {
    let mut deliveries = Vec::new();
    for (info, from_ms) in devices {
        let bytes = codec.encode(DEVICES, info).await?;
        let record = FutureRecord::to(DEVICES)
            .key(&info.device_id)
            .payload(&bytes)
            .timestamp(*from_ms);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Produces readings to `iot_sensor_data`, keyed by device with their event
/// time as timestamp, and waits until all are acknowledged.
pub(super) async fn publish(
    producer: &FutureProducer,
    codec: &AvroCodec,
    readings: &[SensorReading],
    observed: Option<&super::metrics::SimulatorState>,
) -> anyhow::Result<u64> {
    let mut deliveries = Vec::new();
    for reading in readings {
        let bytes = codec.encode(SOURCE, reading).await?;
        let record = FutureRecord::to(SOURCE)
            .key(&reading.device_id)
            .payload(&bytes)
            .timestamp(reading.timestamp);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    if let Some(o) = observed {
        o.produced(readings.len() as u64);
        for r in readings {
            o.set(&r.device_id, r.sensor_type.as_str(), &r.unit, r.value);
        }
    }
    Ok(readings.len() as u64)
}

/// Produces readings to `iot_sensor_data`, keyed by device, every interval.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    let producer: FutureProducer = kafka.producer(None).create()?;
    let mut generator = Generator::new(opts.clone());
    let mut tick = tokio::time::interval(opts.interval);
    tokio::pin!(shutdown);
    let mut produced = 0;
    let mut rounds = 0;
    let start = chrono::Utc::now().timestamp_millis();
    // Readings are worth sending without the devices' rows (iot-windows
    // needs none); a topic that is not there is said once.
    let describe =
        sluice::kafka::blocking(|| sluice::kafka::partitions_of(kafka, DEVICES))?.is_some();
    if describe {
        publish_devices(&producer, &codec, &generator.devices(start)).await?;
    } else {
        tracing::warn!(
            topic = DEVICES,
            "the devices topic does not exist: sending readings without devices' rows (create it compacted, or run `sluice run`, to enrich readings)"
        );
    }
    while opts.rounds.is_none_or(|r| rounds < r) {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        rounds += 1;
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(moved) = generator.maybe_move(now).filter(|_| describe) {
            publish_devices(&producer, &codec, &[moved]).await?;
        }
        let round = generator.round(now);
        produced += publish(&producer, &codec, &round, opts.observed.as_deref()).await?;
    }
    sluice::kafka::blocking(|| producer.flush(Duration::from_secs(30)))?;
    Ok(Report {
        total: produced,
        late: generator.late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topologies::iot_alerts::alert;

    #[test]
    fn readings_stay_plausible_and_anomalies_raise_alerts() {
        let mut g = Generator::new(Options {
            anomaly_probability: 0.1,
            ..Options::default()
        });
        let (mut total, mut alerts) = (0, 0);
        for round in 0..200 {
            for r in g.round(1_000_000 + round * 1000) {
                total += 1;
                assert_eq!(r.unit, r.sensor_type.unit());
                assert!(r.value.is_finite());
                if alert(&r).is_some() {
                    alerts += 1;
                }
            }
        }
        assert_eq!(total, 200 * 8 * 5);
        let share = alerts as f64 / total as f64;
        // ~10 % anomalies on four sensors, ~2 % motion on the fifth.
        assert!((0.05..0.15).contains(&share), "{share}");
    }

    #[test]
    fn devices_are_described_and_move_to_another_site_now_and_then() {
        let mut g = Generator::new(Options {
            devices: 5,
            move_probability: 0.5,
            ..Options::default()
        });
        let start = g.devices(1_000_000);
        assert_eq!(start.len(), 5);
        assert!(
            start
                .iter()
                .all(|(_, at)| *at == 1_000_000 - DESCRIBED_BEFORE_MS)
        );
        let mut site: std::collections::HashMap<String, String> = start
            .into_iter()
            .map(|(d, _)| (d.device_id, d.site))
            .collect();
        let mut moves = 0;
        for round in 0..100 {
            if let Some((info, at)) = g.maybe_move(2_000_000 + round) {
                moves += 1;
                assert_eq!(at, 2_000_000 + round);
                assert!(SITES.contains(&info.site.as_str()));
                let old = site
                    .insert(info.device_id.clone(), info.site.clone())
                    .unwrap();
                assert_ne!(old, info.site, "a move goes to another site");
            }
        }
        assert!((25..75).contains(&moves), "{moves}");
        let quiet = Generator::new(Options::default()).maybe_move(1);
        assert_eq!(quiet, None, "no moves unless asked");
    }

    #[test]
    fn late_and_out_of_order_shares_shift_timestamps_back() {
        let mut g = Generator::new(Options {
            late: 0.2,
            out_of_order: 0.2,
            ..Options::default()
        });
        let now = 10_000_000;
        let rs = g.round(now);
        assert!(rs.iter().all(|r| r.timestamp <= now));
        assert!(rs.iter().any(|r| now - r.timestamp >= 120_000));
        assert!(
            rs.iter()
                .any(|r| (1_000..5_000).contains(&(now - r.timestamp)))
        );
    }
}
