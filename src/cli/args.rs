//! Flag groups shared by several commands.

use std::time::Duration;

use clap::Args;

use crate::{
    avro::RegistryConfig,
    kafka::{KafkaConfig, parse_property},
    registry::Credentials,
};

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Schema Registry base URL; credentials may be given as http://user:pass@host.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry_url: String,

    /// Registry basic-auth credentials, USER:PASSWORD (Confluent's basic.auth.user.info).
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        hide_env_values = true
    )]
    pub registry_auth: Option<Credentials>,
}

impl RegistryArgs {
    pub fn config(&self) -> anyhow::Result<RegistryConfig> {
        Ok(RegistryConfig::new(
            &self.registry_url,
            self.registry_auth.clone(),
        )?)
    }
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,

    /// Any librdkafka property, KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL,
    /// sasl.mechanism=SCRAM-SHA-512, sasl.username=…, sasl.password=…). Secrets are never logged.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_config: Vec<(String, String)>,
}

impl KafkaArgs {
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig {
            bootstrap: self.bootstrap_servers.clone(),
            properties: self.kafka_config.clone(),
        }
    }
}

/// Parses durations such as `500ms`, `30s`, `2m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 500ms, 30s or 2m"))
}
