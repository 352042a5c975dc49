//! The commands the `sluice` binary adds to the command line every
//! topology crate gets (`sluice-cli`): the demo, the benchmark, the
//! simulators, and queries of the shipped topologies' tables.

mod bench;
mod demo;
mod readings;
mod simulate;
mod windows;

use std::{future::Future, pin::Pin};

use clap::Subcommand;
use sluice_cli::{Catalog, Extra};

pub use bench::BenchArgs;

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Run the whole pipeline in this process with no services: a mock Kafka
    /// cluster, the embedded registry, the simulators and every topology.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency (records/s, p50/p99), in-process and through a broker.
    Bench(bench::BenchArgs),
    /// Produce simulated data.
    #[command(subcommand)]
    Simulate(simulate::SimulateCommand),
    /// Window aggregates stored in PostgreSQL.
    #[command(subcommand)]
    Windows(windows::WindowsCommand),
    /// Readings stored in PostgreSQL, one row each (topology iot-readings).
    #[command(subcommand)]
    Readings(readings::ReadingsCommand),
    /// One processor of `sluice bench --compare`, in a process of its own.
    #[command(hide = true)]
    BenchWorker(crate::bench::compare::worker::WorkerArgs),
}

impl Extra for AppCommand {
    fn run(self, catalog: &Catalog) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + '_>> {
        Box::pin(async move {
            match self {
                AppCommand::Demo(args) => demo::run(args).await,
                AppCommand::Bench(args) => bench::run(args).await,
                AppCommand::Simulate(cmd) => simulate::run(cmd).await,
                AppCommand::Windows(cmd) => windows::run(catalog, cmd).await,
                AppCommand::Readings(cmd) => readings::run(catalog, cmd).await,
                AppCommand::BenchWorker(args) => crate::bench::compare::worker::serve(args).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        sluice_cli::command::<AppCommand>()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn every_shipped_topology_is_in_the_catalog() {
        let names = crate::catalog().names().join(",");
        for n in sluice_topologies::names() {
            assert!(names.contains(n), "{n} missing from {names}");
        }
    }

    fn bench_args(args: &[&str]) -> bench::BenchArgs {
        use clap::FromArgMatches;
        let all = [&["sluice", "bench"], args].concat();
        let m = command().try_get_matches_from(all).unwrap();
        match sluice_cli::Cli::<AppCommand>::from_arg_matches(&m)
            .unwrap()
            .command
        {
            sluice_cli::Command::Extra(AppCommand::Bench(b)) => b,
            _ => unreachable!("parsed as bench"),
        }
    }

    #[test]
    fn the_mock_cluster_refuses_more_records_than_it_keeps() {
        let err = bench::e2e_records(&bench_args(&["--e2e-records", "300000"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at most 100000") && err.contains("--bootstrap"),
            "{err}"
        );
        let wider = bench_args(&["--e2e-records", "300000", "--partitions", "12"]);
        assert_eq!(bench::e2e_records(&wider).unwrap(), 300_000);
        assert_eq!(bench::e2e_records(&bench_args(&[])).unwrap(), 100_000);
        let broker = bench_args(&["--bootstrap", "127.0.0.1:9092"]);
        assert_eq!(bench::e2e_records(&broker).unwrap(), 500_000);
    }
}
