//! The `sluice` command line: parsing (clap, with environment fall-backs)
//! and dispatch to the library.

mod args;
mod bench;
mod demo;
mod migrate;
mod output;
mod readings;
mod registry;
mod run;
mod schemas;
mod simulate;
mod windows;

use clap::{Parser, Subcommand};

use sluice::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka stream processor: Avro through a Schema Registry, exactly-once into Kafka and PostgreSQL",
    long_about = "sluice runs stream-processing topologies declared in Rust as Kafka consumer-group \
workers. Records are Avro in the Confluent wire format, checked against a Schema Registry; \
window aggregates land in PostgreSQL.\n\n\
Every flag can also be set through the environment variable shown in its help.",
    after_help = "Examples:\n  \
sluice registry serve --listen 127.0.0.1:8081\n  \
SCHEMA_REGISTRY_URL=http://127.0.0.1:8081 sluice schemas register\n  \
DATABASE_URL=postgres://postgres@127.0.0.1/postgres sluice migrate"
)]
pub struct Cli {
    /// Log output: human-readable lines, or one JSON object per line for log shippers.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG_FORMAT",
        value_parser = args::log_format(),
        default_value = "human"
    )]
    pub log_format: LogFormat,

    /// Default log level (error, warn, info, debug, trace); RUST_LOG overrides it per module.
    #[arg(long, global = true, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline in this process with no services: a mock Kafka
    /// cluster, the embedded registry, the simulator and every topology.
    Demo(demo::DemoArgs),
    /// Run topologies as consumer-group workers (start more copies to scale out).
    Run(run::RunArgs),
    /// Measure throughput and latency (records/s, p50/p99), in-process and through a broker.
    Bench(bench::BenchArgs),
    /// List the topologies with their sources, operators, sinks and groups.
    Topologies,
    /// Kafka topics the topologies use.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Produce simulated data.
    #[command(subcommand)]
    Simulate(simulate::SimulateCommand),
    /// The embedded Confluent-compatible Schema Registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The Avro schemas compiled into sluice (one per topic, from schemas/*.avsc).
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Window aggregates stored in PostgreSQL.
    #[command(subcommand)]
    Windows(windows::WindowsCommand),
    /// Readings stored in PostgreSQL, one row each (topology iot-readings).
    #[command(subcommand)]
    Readings(readings::ReadingsCommand),
    /// Apply the PostgreSQL migrations compiled into sluice (idempotent).
    Migrate(migrate::MigrateArgs),
    /// One processor of `sluice bench --compare`, in a process of its own.
    #[command(hide = true)]
    BenchWorker(crate::bench::compare::worker::WorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the sources, sinks and dead-letter topics the topologies declare;
    /// existing topics are left alone.
    Create(run::TopicsCreateArgs),
}

/// Parses the command line, sets up logging and runs the command.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Topologies => run::list(),
        Command::Bench(args) => bench::run(args).await,
        Command::Topics(TopicsCommand::Create(args)) => run::topics_create(args).await,
        Command::Simulate(cmd) => simulate::run(cmd).await,
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Schemas(cmd) => schemas::run(cmd).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Windows(cmd) => windows::run(cmd).await,
        Command::Readings(cmd) => readings::run(cmd).await,
        Command::BenchWorker(args) => crate::bench::compare::worker::serve(args).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
/// Resolves on SIGTERM or Ctrl-C. The handlers are installed at once, not
/// on first poll, so a signal that comes early still stops the process
/// gracefully rather than killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let err = Cli::try_parse_from(["sluice", "registry", "serve", "--storage", "disk"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("disk") && err.contains("memory") && err.contains("postgres"),
            "{err}"
        );
        let err = Cli::try_parse_from(["sluice", "registry", "serve", "--listen", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }
}

#[cfg(test)]
mod bench_tests {
    use super::*;

    fn bench_args(args: &[&str]) -> bench::BenchArgs {
        let all = [&["sluice", "bench"], args].concat();
        match Cli::try_parse_from(all).unwrap().command {
            Command::Bench(b) => b,
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
