//! The whole command line — `run`, `topologies`, `topics create`, `tail`,
//! `dlq`, `schemas`, `registry`, `migrate` — for this crate's topology.

fn main() -> std::process::ExitCode {
    sluice_cli::main(sluice_cli::Catalog::new().topology(orders::NAME, |_| orders::build()))
}
