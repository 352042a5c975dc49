//! Sinks other than Kafka topics.

pub mod postgres;
