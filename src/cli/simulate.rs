//! `sluice simulate …`: data generators.

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::args::{KafkaArgs, RegistryArgs};
use crate::{avro::AvroCodec, simulate::logins};

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Produce UserLogin records to `user-login`, some invalid or undecodable.
    Logins(LoginArgs),
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
    let SimulateCommand::Logins(args) = cmd;
    let codec = Arc::new(AvroCodec::new(&args.registry.config()?)?);
    let opts = logins::Options {
        rate: args.rate,
        count: args.count,
        bad_ratio: args.bad_ratio,
        seed: args.seed,
    };
    let report = logins::run(&args.kafka.config(), codec, &opts, super::shutdown_signal()).await?;
    println!(
        "produced {} logins: {} valid, {} invalid, {} undecodable",
        report.total(),
        report.valid,
        report.invalid,
        report.undecodable
    );
    Ok(())
}
