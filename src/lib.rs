//! sluice, the engine: declare topologies (`topology`), run them as
//! consumer-group workers (`runtime`) into their sinks (`sink`), with Avro
//! through a Schema Registry (`avro`, `registry`), event-time windows
//! (`window`) and metrics (`metrics`). The `sluice` command, the demo, the
//! benchmark, the simulators and the shipped topologies are the `app/`
//! crate. See README.md.

pub mod avro;
pub mod config;
pub mod db;
mod failpoint;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod schemas;
pub mod sink;
pub mod stats;
pub mod topology;
pub mod window;

pub use sink::Topology;

/// What declaring a topology takes: `use sluice::prelude::*;`.
pub mod prelude {
    pub use crate::{
        sink::{
            SqlType, TableSpec, Topology,
            kafka::ToTopic,
            postgres::ToPostgres,
            rows::{RowSpec, ToTable},
            window_topic::ToFinalTopic,
        },
        topology::{Aggregated, BuildError, Cell, KeyValue, Ops, Stream, WindowKey, topology},
        window::{
            Aggregate, Columns, Combined, Stats, Value, ValueType, Window, WindowKind, WindowSpec,
        },
    };
}
