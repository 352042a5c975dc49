//! sluice: a Kafka Streams-style stream processor. See README.md.

pub mod avro;
pub mod cli;
pub mod config;
pub mod db;
pub mod logging;
pub mod registry;
pub mod schemas;
