//! `sluice simulate …`: data generators.

use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::{
    simulate::logins,
    topologies::iot_alerts::{SensorReading, SensorType},
};
use sluice::avro::{AvroCodec, AvroSchema, ClientError, RegistryClient, RegistryConfig};
use sluice_cli::{KafkaArgs, RegistryArgs, shutdown_signal};

use crate::simulate::metrics::SimulatorState;

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Produce UserLogin records to `user-login`, some invalid or undecodable.
    Logins(LoginArgs),
    /// Produce SensorReading records to `iot_sensor_data`: each device's
    /// sensors random-walk in their units, with occasional anomalies.
    Iot(IotArgs),
    /// Produce this machine's CPU, memory, disk and network figures (and CPU
    /// temperature, where exposed) to `iot_sensor_data` as readings of one device.
    Host(HostArgs),
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Time between samples.
    #[arg(long, value_parser = sluice_cli::duration, default_value = "5s")]
    interval: std::time::Duration,
    /// Device id of the readings (default: host-<hostname>).
    #[arg(long)]
    device_id: Option<String>,
    /// Serve /metrics (records produced, latest value per device and sensor) here.
    #[arg(long, env = "SLUICE_SIMULATOR_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct IotArgs {
    /// Number of simulated devices [default: 8; env also IOT_NUM_DEVICES].
    #[arg(long, env = "SLUICE_IOT_DEVICES")]
    devices: Option<usize>,
    /// Time between readings of each sensor [default: 1s; env also
    /// IOT_DATA_INTERVAL_SEC, in seconds].
    #[arg(long, env = "SLUICE_IOT_INTERVAL", value_parser = sluice_cli::duration)]
    interval: Option<std::time::Duration>,
    /// Share of readings, 0.0–1.0, that break an alert rule [default: 0.05;
    /// env also IOT_ANOMALY_PROBABILITY].
    #[arg(long, env = "SLUICE_IOT_ANOMALY_PROBABILITY", value_parser = ratio)]
    anomaly_probability: Option<f64>,
    /// Sensor types to simulate, comma-separated: temperature, humidity,
    /// pressure, motion, light [default: all five; env also IOT_DEVICE_TYPES].
    #[arg(long, env = "SLUICE_IOT_SENSOR_TYPES", value_delimiter = ',')]
    sensor_types: Vec<crate::topologies::iot_alerts::SensorType>,
    /// Share of readings stamped 1–5 s in the past (out of order, within grace).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    out_of_order: f64,
    /// Share of readings stamped 2–5 min in the past (later than the grace period).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    late: f64,
    /// Share of rounds, 0.0–1.0, in which one device moves to another site
    /// (a new row in iot-devices, stamped when it moved).
    #[arg(long, env = "SLUICE_IOT_MOVE_PROBABILITY", default_value_t = 0.02, value_parser = ratio)]
    move_probability: f64,
    /// Random seed, for reproducible runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve /metrics (records produced, latest value per device and sensor) here.
    #[arg(long, env = "SLUICE_SIMULATOR_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Records per second (0: as fast as possible).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Stop after this many records (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    /// Share of records, 0.0–1.0, that are invalid or undecodable, to exercise the dead-letter topic.
    #[arg(long, default_value_t = 0.05, value_parser = ratio)]
    bad_ratio: f64,
    /// Random seed, for reproducible runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve /metrics (records produced, latest value per device and sensor) here.
    #[arg(long, env = "SLUICE_SIMULATOR_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "{s:?} is not a ratio between 0.0 and 1.0 (e.g. 0.05 for 5 %)"
        )),
    }
}

pub async fn run(cmd: SimulateCommand) -> anyhow::Result<()> {
    let args = match cmd {
        SimulateCommand::Logins(args) => args,
        SimulateCommand::Iot(args) => return iot(args).await,
        SimulateCommand::Host(args) => return host(args).await,
    };
    let registry = args.registry.config()?;
    register::<crate::topologies::user_login::UserLogin>(
        &registry,
        crate::topologies::user_login::SOURCE,
    )
    .await?;
    let codec = Arc::new(AvroCodec::new(&registry)?);
    let opts = logins::Options {
        rate: args.rate,
        count: args.count,
        bad_ratio: args.bad_ratio,
        seed: args.seed,
        observed: observe("logins", args.metrics_addr).await?,
    };
    let report = logins::run(&args.kafka.config()?, codec, &opts, shutdown_signal()).await?;
    println!(
        "produced {} logins: {} valid, {} invalid, {} undecodable",
        report.total(),
        report.valid,
        report.invalid,
        report.undecodable
    );
    Ok(())
}

/// The IoT settings under the names the seeds' simulator read them from,
/// where neither a flag nor a SLUICE_IOT_* variable sets them.
fn seed_env<T>(
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => parse(v.trim())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        _ => Ok(None),
    }
}

fn iot_settings(
    args: &IotArgs,
) -> anyhow::Result<(usize, std::time::Duration, f64, Vec<SensorType>)> {
    let devices = match args.devices {
        Some(d) => d,
        None => seed_env("IOT_NUM_DEVICES", |v| {
            v.parse::<usize>()
                .map_err(|_| "expected a number of devices".into())
        })?
        .unwrap_or(8),
    };
    let interval = match args.interval {
        Some(i) => i,
        None => seed_env("IOT_DATA_INTERVAL_SEC", |v| match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(std::time::Duration::from_secs_f64(s)),
            _ => Err("expected seconds, more than 0 (e.g. 1 or 0.5)".into()),
        })?
        .unwrap_or(std::time::Duration::from_secs(1)),
    };
    let anomaly = match args.anomaly_probability {
        Some(p) => p,
        None => seed_env("IOT_ANOMALY_PROBABILITY", ratio)?.unwrap_or(0.05),
    };
    let types = if !args.sensor_types.is_empty() {
        args.sensor_types.clone()
    } else {
        seed_env("IOT_DEVICE_TYPES", |v| {
            v.split(',')
                .map(|t| t.trim().parse::<SensorType>().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        })?
        .unwrap_or_else(|| SensorType::ALL.to_vec())
    };
    if devices == 0 || types.is_empty() {
        anyhow::bail!("--devices and --sensor-types must name at least one device and sensor");
    }
    Ok((devices, interval, anomaly, types))
}

async fn iot(args: IotArgs) -> anyhow::Result<()> {
    let (devices, interval, anomaly_probability, sensor_types) = iot_settings(&args)?;
    let registry = args.registry.config()?;
    register::<SensorReading>(&registry, crate::topologies::iot_alerts::SOURCE).await?;
    register::<crate::topologies::iot_enriched::DeviceInfo>(
        &registry,
        crate::topologies::iot_enriched::DEVICES,
    )
    .await?;
    let codec = Arc::new(AvroCodec::new(&registry)?);
    let opts = crate::simulate::iot::Options {
        devices,
        interval,
        sensor_types,
        anomaly_probability,
        out_of_order: args.out_of_order,
        late: args.late,
        move_probability: args.move_probability,
        seed: args.seed,
        rounds: None,
        observed: observe("iot", args.metrics_addr).await?,
    };
    let r =
        crate::simulate::iot::run(&args.kafka.config()?, codec, &opts, shutdown_signal()).await?;
    println!(
        "produced {} sensor readings ({} stamped minutes late)",
        r.total, r.late
    );
    Ok(())
}

async fn host(args: HostArgs) -> anyhow::Result<()> {
    if args.interval < std::time::Duration::from_millis(100) {
        anyhow::bail!("--interval must be at least 100ms: CPU usage needs time between samples");
    }
    let registry = args.registry.config()?;
    register::<SensorReading>(&registry, crate::topologies::iot_alerts::SOURCE).await?;
    let codec = Arc::new(AvroCodec::new(&registry)?);
    let opts = crate::simulate::host::Options {
        interval: args.interval,
        device_id: args.device_id,
        rounds: None,
        observed: observe("host", args.metrics_addr).await?,
    };
    let r =
        crate::simulate::host::run(&args.kafka.config()?, codec, &opts, shutdown_signal()).await?;
    println!("produced {} host readings", r.total);
    Ok(())
}

/// Serves the simulator's /metrics in the background when asked to.
async fn observe(
    name: &str,
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<Arc<SimulatorState>>> {
    let Some(addr) = addr else { return Ok(None) };
    let state = SimulatorState::new();
    let metrics = sluice::metrics::Metrics::new()?;
    crate::simulate::metrics::register(&metrics.meter(), name, state.clone());
    // Served until the process exits.
    sluice::metrics::spawn(addr, Arc::new(metrics), std::future::pending()).await?;
    Ok(Some(state))
}

/// Registers the schema a simulator writes `topic` with, as Confluent's
/// serializers do (auto.register.schemas), so that it may start before
/// any worker; waits, saying so, while the registry is unreachable.
async fn register<T: AvroSchema>(registry: &RegistryConfig, topic: &str) -> anyhow::Result<()> {
    let client = RegistryClient::new(registry.clone())?;
    let subject = sluice::schemas::value_subject(topic);
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match client.register(&subject, T::SCHEMA).await {
            Ok(r) => {
                tracing::info!(subject = %r.subject, id = r.id, version = r.version, "schema registered");
                return Ok(());
            }
            Err(e @ ClientError::Unavailable { .. }) => {
                tracing::warn!(error = %e, retry_in = ?wait, "schema registry unreachable; waiting for it before producing");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "registering the schema of {topic} (subject {subject})"
                )));
            }
        }
    }
}
