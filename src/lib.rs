//! sluice: a Kafka Streams-style stream processor. See README.md.

pub mod avro;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod schemas;
pub mod simulate;
pub mod sink;
#[path = "../topologies/mod.rs"]
pub mod topologies;
pub mod topology;
pub mod window;
