//! The `sluice` binary: the command line of `sluice-cli` over the shipped
//! topologies (`sluice-topologies`), plus what ships with it: `sluice
//! demo`, `sluice bench`, the simulators and queries of the shipped tables.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod simulate;

pub use sluice_topologies as topologies;

/// The shipped topologies, by name, as the command line builds them.
pub fn catalog() -> sluice_cli::Catalog {
    topologies::ALL
        .iter()
        .fold(sluice_cli::Catalog::new(), |c, &(name, build)| {
            c.topology(name, build)
        })
}
