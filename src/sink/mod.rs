//! Sinks other than Kafka topics.

pub mod postgres;
pub mod query;
