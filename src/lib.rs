//! sluice, the engine: declare topologies as graphs (`topology`), with
//! stateful operators (`operator`) that own stores (`state`), into sinks
//! (`sink`); run them as consumer-group workers (`runtime`, the one place
//! that commits), as a whole service (`service`: registration, databases,
//! metrics, access checks, graceful stop), or without any service for
//! tests (`testing`). Avro goes through a Schema Registry (`avro`, and the
//! embedded one, `registry`); event-time windows are `window`. The
//! `sluice` command is the `sluice-cli` crate; the shipped topologies are
//! the `sluice-topologies` crate. See README.md.

pub mod avro;
pub mod commit;
pub mod config;
pub mod console;
pub mod db;
mod failpoint;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod query;
pub mod record;
pub mod registry;
pub mod runtime;
pub mod schemas;
pub mod service;
pub mod sink;
pub mod state;
pub mod stats;
pub mod table;
pub mod testing;
pub mod topology;
pub mod window;

pub use topology::Topology;

/// What declaring a topology takes: `use sluice::prelude::*;`.
pub mod prelude {
    pub use crate::{
        avro::AvroSchema,
        operator::aggregate::{Grouped, Update},
        sink::{RowSpec, SqlType, TableSpec, ToPostgres, ToTable, ToTopic, rows::text},
        state::KeyValueStore,
        table::{Miss, Table},
        topology::{
            BuildError, Builder, Cell, Ended, Item, KeyValue, Ops, Stream, Topology, WindowKey,
            Windowed, clock, topology,
        },
        window::{Aggregate, Columns, Stats, Value, ValueType, Window, WindowKind, WindowSpec},
    };
}
