//! The `sluice` command and what ships with it: the command line (`cli`),
//! `sluice demo`, `sluice bench`, the simulators and the topologies in
//! `topologies/`, all on the engine, the `sluice` library.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod memory;
pub mod ops;
pub mod simulate;
#[path = "../../topologies/mod.rs"]
pub mod topologies;
