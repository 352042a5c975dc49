//! The `sluice` command line for a set of topologies: a user's crate
//! declares its topologies in a `Catalog` and gets every command (`run`,
//! `topologies`, `topics create`, `tail`, `dlq`, `state`, `registry`,
//! `schemas`, `migrate`) from one call in its `main`:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     sluice_cli::main(Catalog::new().topology("orders", |_| orders::build()))
//! }
//! ```
//!
//! Flags fall back to environment variables; secrets are never echoed. A
//! binary that ships more commands (sluice's own: the demo, the benchmark,
//! the simulators) adds them as an `Extra` subcommand enum.

mod args;
pub mod catalog;
mod dlq;
pub mod memory;
mod migrate;
pub mod ops;
pub mod output;
mod registry;
mod run;
mod schemas;
pub mod state;
mod tail;

use std::{future::Future, pin::Pin};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use args::{KafkaArgs, RegistryArgs, WindowArgs, duration, guarantee, secret_flag};
pub use catalog::{Catalog, SelectError, Settings};
pub use run::{RunArgs, TopicArgs};
use sluice::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka stream processor: Avro through a Schema Registry, exactly-once into Kafka and PostgreSQL",
    long_about = "sluice runs stream-processing topologies declared in Rust as Kafka consumer-group \
workers. Records are Avro in the Confluent wire format, checked against a Schema Registry; \
results go to topics, or to PostgreSQL tables.\n\n\
Every flag can also be set through the environment variable shown in its help.",
    after_help = "Examples:\n  \
sluice topologies\n  \
sluice registry serve --listen 127.0.0.1:8081\n  \
SCHEMA_REGISTRY_URL=http://127.0.0.1:8081 sluice schemas register\n  \
KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 sluice run --create-topics"
)]
pub struct Cli<E: Subcommand> {
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
    pub command: Command<E>,
}

#[derive(Debug, Subcommand)]
pub enum Command<E: Subcommand> {
    /// Run topologies as consumer-group workers (start more copies to scale out).
    Run(Box<run::RunArgs>),
    /// List the topologies: their graphs, sinks and guarantees, stores and groups.
    Topologies,
    /// Kafka topics the topologies use.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// The embedded Confluent-compatible Schema Registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The Avro schemas the topologies read and write (one per topic).
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Print a topic's records, values decoded through the registry (any
    /// schema id), as JSON lines or a table.
    Tail(tail::TailArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Apply the PostgreSQL migrations compiled into sluice (idempotent).
    Migrate(migrate::MigrateArgs),
    /// Query the live state of running workers' stores.
    #[command(subcommand)]
    State(state::StateCommand),
    #[command(flatten)]
    Extra(E),
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the sources, sinks, dead-letter and changelog topics the
    /// topologies declare; existing topics are left alone.
    Create(run::TopicsCreateArgs),
}

/// More commands, run by the binary that adds them.
pub trait Extra: Subcommand + Send + 'static {
    fn run(self, catalog: &Catalog) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + '_>>;
}

/// No more commands.
#[derive(Debug, Subcommand)]
pub enum NoExtra {}

impl Extra for NoExtra {
    fn run(self, _: &Catalog) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + '_>> {
        match self {}
    }
}

/// The whole command line for `catalog`'s topologies: parses the
/// arguments, sets up logging, runs the command; the process's exit code.
pub fn main(catalog: Catalog) -> std::process::ExitCode {
    main_with::<NoExtra>(catalog)
}

/// `main`, with the commands of `E` besides.
pub fn main_with<E: Extra>(catalog: Catalog) -> std::process::ExitCode {
    // Before any thread allocates.
    memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch::<E>(catalog)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line with an environment fall-back on every flag: those
/// not named otherwise read `SLUICE_<SUBCOMMAND…>_<FLAG>` (e.g.
/// `SLUICE_TAIL_FORMAT`, `SLUICE_SIMULATE_LOGINS_RATE`), shown in `--help`.
pub fn command<E: Subcommand>() -> clap::Command {
    with_env(Cli::<E>::command(), "SLUICE")
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
async fn dispatch<E: Extra>(catalog: Catalog) -> anyhow::Result<()> {
    let matches = command::<E>().get_matches();
    let cli = Cli::<E>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run(args) => run::run(&catalog, *args).await,
        Command::Topologies => run::list(&catalog),
        Command::Topics(TopicsCommand::Create(args)) => run::topics_create(&catalog, args).await,
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Schemas(cmd) => schemas::run(&catalog, cmd).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Dlq(cmd) => dlq::run(cmd).await,
        Command::State(cmd) => state::run(cmd).await,
        Command::Extra(e) => e.run(&catalog).await,
    }
}

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
        command::<NoExtra>().debug_assert();
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
        check(&command::<NoExtra>(), "sluice", &mut missing);
        assert!(
            missing.is_empty(),
            "flags without an environment variable: {missing:?}"
        );
        let tail = command::<NoExtra>()
            .find_subcommand("tail")
            .unwrap()
            .clone();
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
        let err = command::<NoExtra>()
            .try_get_matches_from(["sluice", "registry", "serve", "--storage", "disk"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("disk") && err.contains("memory") && err.contains("postgres"),
            "{err}"
        );
        let err = command::<NoExtra>()
            .try_get_matches_from(["sluice", "registry", "serve", "--listen", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }
}
