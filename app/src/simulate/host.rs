//! `sluice simulate host`: this machine's real CPU, memory, disk and network
//! figures (and CPU temperatures where the kernel exposes them) published as
//! sensor readings, so real system metrics flow into the same windows.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::producer::FutureProducer;
use sysinfo::{Components, Disks, Networks, System};

use super::iot::Report;
use crate::topologies::iot_alerts::{SensorReading, SensorType};
use sluice::{avro::AvroCodec, kafka::KafkaConfig};

#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    /// Defaults to `host-<hostname>`.
    pub device_id: Option<String>,
    pub rounds: Option<u64>,
    /// Counts what was produced and keeps the latest values, for /metrics.
    pub observed: Option<Arc<super::metrics::SimulatorState>>,
}

/// Reads the host's figures; usage figures are deltas, so keep one around.
pub struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last: Instant,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Sampler {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
            last: Instant::now(),
        }
    }

    pub fn default_device_id() -> String {
        format!(
            "host-{}",
            System::host_name().unwrap_or_else(|| "unknown".into())
        )
    }

    /// One reading per figure, stamped `now_ms`.
    pub fn sample(&mut self, device_id: &str, now_ms: i64) -> Vec<SensorReading> {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);
        let elapsed = self.last.elapsed().as_secs_f64().max(1e-3);
        self.last = Instant::now();

        let reading = |sensor_type: SensorType, value: f64| SensorReading {
            device_id: device_id.to_string(),
            sensor_type,
            value,
            unit: sensor_type.unit().to_string(),
            timestamp: now_ms,
        };
        let percent = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                used as f64 * 100.0 / total as f64
            }
        };
        let mut out = vec![
            reading(SensorType::Cpu, f64::from(self.system.global_cpu_usage())),
            reading(
                SensorType::Memory,
                percent(self.system.used_memory(), self.system.total_memory()),
            ),
        ];
        let (total, available) = self.disks.iter().fold((0u64, 0u64), |(t, a), d| {
            (t + d.total_space(), a + d.available_space())
        });
        out.push(reading(
            SensorType::Disk,
            percent(total.saturating_sub(available), total),
        ));
        let bytes: u64 = self
            .networks
            .values()
            .map(|n| n.received() + n.transmitted())
            .sum();
        out.push(reading(SensorType::Network, bytes as f64 / elapsed));
        // The hottest sensor the kernel reports, if any (often none in VMs).
        if let Some(t) = self
            .components
            .iter()
            .filter_map(|c| c.temperature())
            .filter(|t| t.is_finite())
            .reduce(f32::max)
        {
            out.push(reading(SensorType::Temperature, f64::from(t)));
        }
        out
    }
}

/// Publishes the host's figures every interval until `shutdown`.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    let producer: FutureProducer = kafka.producer(None).create()?;
    let device_id = opts
        .device_id
        .clone()
        .unwrap_or_else(Sampler::default_device_id);
    let mut sampler = Sampler::new();
    let mut tick = tokio::time::interval(opts.interval);
    // The first usage figures need a previous refresh to differ from.
    tick.tick().await;
    tokio::pin!(shutdown);
    let mut report = Report::default();
    let mut rounds = 0;
    while opts.rounds.is_none_or(|r| rounds < r) {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        rounds += 1;
        let readings = sampler.sample(&device_id, chrono::Utc::now().timestamp_millis());
        report.total +=
            super::iot::publish(&producer, &codec, &readings, opts.observed.as_deref()).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_plausible_host_figures() {
        let mut s = Sampler::new();
        std::thread::sleep(Duration::from_millis(250));
        let readings = s.sample("host-test", 1_800_000_000_000);
        let get = |t| readings.iter().find(|r| r.sensor_type == t).unwrap();
        for t in [SensorType::Cpu, SensorType::Memory, SensorType::Disk] {
            let v = get(t).value;
            assert!((0.0..=100.0).contains(&v), "{t:?} {v}");
            assert_eq!(get(t).unit, "%");
        }
        // This process uses memory and the machine has a disk.
        assert!(get(SensorType::Memory).value > 0.0);
        assert!(get(SensorType::Disk).value > 0.0);
        assert!(get(SensorType::Network).value >= 0.0);
        assert!(readings.iter().all(|r| r.device_id == "host-test"));
    }
}
