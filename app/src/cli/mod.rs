//! The `sluice` command line: parsing (clap, with environment fall-backs)
//! and dispatch to the library.

mod args;
mod bench;
mod demo;
mod dlq;
mod migrate;
mod output;
mod readings;
mod registry;
mod run;
mod schemas;
mod simulate;
mod tail;
mod windows;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Print a topic's records, values decoded through the registry (any
    /// schema id), as JSON lines or a table.
    Tail(tail::TailArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
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

/// The command line with an environment fall-back on every flag: those
/// not named otherwise read `SLUICE_<SUBCOMMAND…>_<FLAG>` (e.g.
/// `SLUICE_TAIL_FORMAT`, `SLUICE_SIMULATE_LOGINS_RATE`), shown in `--help`.
pub fn command() -> clap::Command {
    with_env(Cli::command(), "SLUICE")
}

/// A flag that can be set (not a positional argument, not --help or --version).
fn is_settable_flag(a: &clap::Arg) -> bool {
    !a.is_positional()
        && !matches!(
            a.get_action(),
            clap::ArgAction::Help
                | clap::ArgAction::HelpShort
                | clap::ArgAction::HelpLong
                | clap::ArgAction::Version
        )
}

fn with_env(cmd: clap::Command, prefix: &str) -> clap::Command {
    let unnamed: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| is_settable_flag(a) && a.get_env().is_none() && !a.is_global_set())
        .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string())))
        .collect();
    let mut cmd = cmd;
    for (id, long) in unnamed {
        let name = format!("{prefix}_{}", long.to_ascii_uppercase().replace('-', "_"));
        // clap keeps &'static names; the command line is built once.
        let name: &'static str = Box::leak(name.into_boxed_str());
        cmd = cmd.mut_arg(id, |a| a.env(name));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        let p = format!("{prefix}_{}", sub.to_ascii_uppercase().replace('-', "_"));
        cmd = cmd.mut_subcommand(sub, |s| with_env(s, &p));
    }
    cmd
}

/// Parses the command line, sets up logging and runs the command.
pub async fn main() -> anyhow::Result<()> {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
        Command::Tail(args) => tail::run(args).await,
        Command::Dlq(cmd) => dlq::run(cmd).await,
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

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    /// The README promises it: every flag has an environment fall-back.
    #[test]
    fn every_flag_has_an_environment_variable() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if is_settable_flag(a) && a.get_env().is_none() {
                    missing.push(format!("{path} --{}", a.get_long().unwrap_or("?")));
                }
            }
            for s in cmd.get_subcommands() {
                check(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&command(), "sluice", &mut missing);
        assert!(
            missing.is_empty(),
            "flags without an environment variable: {missing:?}"
        );
        let tail = command().find_subcommand("tail").unwrap().clone();
        let format = tail
            .get_arguments()
            .find(|a| a.get_id() == "format")
            .unwrap();
        assert_eq!(
            format.get_env(),
            Some(std::ffi::OsStr::new("SLUICE_TAIL_FORMAT"))
        );
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let err = command()
            .try_get_matches_from(["sluice", "registry", "serve", "--storage", "disk"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("disk") && err.contains("memory") && err.contains("postgres"),
            "{err}"
        );
        let err = command()
            .try_get_matches_from(["sluice", "registry", "serve", "--listen", "nowhere"])
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
