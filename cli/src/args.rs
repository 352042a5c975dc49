//! Flag groups shared by several commands.

use std::time::Duration;

use clap::Args;

use sluice::{
    avro::RegistryConfig,
    kafka::{KafkaConfig, parse_property, properties},
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
    // A String, not Credentials: clap would echo a value it cannot parse.
    pub registry_auth: Option<String>,

    /// A PEM file of CAs to trust for an https registry URL, besides the
    /// system's (Confluent's schema.registry.ssl.truststore, in PEM).
    #[arg(long, env = "SCHEMA_REGISTRY_SSL_CA_LOCATION", value_name = "FILE")]
    pub registry_ca: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    pub fn config(&self) -> anyhow::Result<RegistryConfig> {
        Ok(RegistryConfig::new(
            &self.registry_url,
            secret_flag("--registry-auth", self.registry_auth.as_deref())?,
        )?
        .with_ca(self.registry_ca.clone()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…] [default: the file's
    /// bootstrap.servers, else 127.0.0.1:9092].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,

    /// Any librdkafka property, KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL,
    /// sasl.mechanism=SCRAM-SHA-512, sasl.username=…, sasl.password=…). Each may also be
    /// set as SLUICE_KAFKA_<KEY> (dots as underscores, e.g. SLUICE_KAFKA_SASL_PASSWORD).
    /// Flags win over the environment, which wins over --kafka-config-file.
    /// Secrets are never logged.
    // Strings, parsed in `config`: clap would echo a value it cannot parse.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE")]
    pub kafka_config: Vec<String>,

    /// A client properties file (key=value lines, as Confluent Cloud, MSK or
    /// Aiven hand out); a Java `sasl.jaas.config` line is read as
    /// sasl.username and sasl.password.
    #[arg(long, env = "SLUICE_KAFKA_CONFIG_FILE", value_name = "FILE")]
    pub kafka_config_file: Option<std::path::PathBuf>,
}

impl KafkaArgs {
    /// The connection: the file's properties, then the environment's, then
    /// the flags' (later ones win).
    pub fn config(&self) -> anyhow::Result<KafkaConfig> {
        let mut properties = Vec::new();
        if let Some(path) = &self.kafka_config_file {
            let loaded = properties::read_file(path)?;
            for note in &loaded.notes {
                tracing::info!(file = %path.display(), "{note}");
            }
            properties.extend(loaded.properties);
        }
        properties.extend(properties::from_env(std::env::vars()));
        for p in &self.kafka_config {
            properties.push(parse_property(p).map_err(|e| anyhow::anyhow!("--kafka-config: {e}"))?);
        }
        let mut from_properties = None;
        properties.retain(|(k, v)| {
            let bootstrap = k == "bootstrap.servers";
            if bootstrap {
                from_properties = Some(v.clone());
            }
            !bootstrap
        });
        // An empty KAFKA_BOOTSTRAP_SERVERS is as good as unset.
        let bootstrap = self
            .bootstrap_servers
            .clone()
            .filter(|b| !b.trim().is_empty())
            .or(from_properties)
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        Ok(KafkaConfig {
            bootstrap,
            properties,
        })
    }
}

/// Parses a flag that holds a secret, saying what is wrong without
/// showing the value.
pub fn secret_flag<T>(flag: &str, value: Option<&str>) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr<Err = String>,
{
    value
        .map(|v| {
            v.parse()
                .map_err(|e| anyhow::anyhow!("{flag}: {e} (the value is not shown)"))
        })
        .transpose()
}

/// Parses durations such as `500ms`, `30s`, `2m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 500ms, 30s or 2m"))
}

/// The windows of topologies that read them from the command line
/// (`Settings::window`).
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Window size.
    #[arg(long, env = "SLUICE_WINDOW_SIZE", value_parser = duration, default_value = "1m")]
    pub window_size: Duration,
    /// Start a window every this long (hopping windows); default: tumbling.
    #[arg(long, env = "SLUICE_WINDOW_ADVANCE", value_parser = duration, conflicts_with = "session_gap")]
    pub window_advance: Option<Duration>,
    /// Session windows instead: per key, records at most this far apart in
    /// event time form one session (--window-size does not apply).
    #[arg(long, env = "SLUICE_SESSION_GAP", value_parser = duration)]
    pub session_gap: Option<Duration>,
    /// How long after a window's end its records are still accepted.
    #[arg(long, env = "SLUICE_WINDOW_GRACE", value_parser = duration, default_value = "10s")]
    pub window_grace: Duration,
    /// How far a partition's watermark trails the newest event time it has read.
    #[arg(long, env = "SLUICE_OUT_OF_ORDER", value_parser = duration, default_value = "0s")]
    pub out_of_order: Duration,
    /// A partition with no records for this long no longer holds windows open;
    /// when all are idle, windows close by the wall clock.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub idle_timeout: Duration,
}

impl WindowArgs {
    pub fn settings(&self) -> anyhow::Result<crate::Settings> {
        use sluice::window::{WindowKind, WindowSpec};
        let kind = match (self.session_gap, self.window_advance) {
            (Some(gap), _) => WindowKind::Session { gap },
            (None, None) => WindowKind::Tumbling {
                size: self.window_size,
            },
            (None, Some(advance)) => WindowKind::Hopping {
                size: self.window_size,
                advance,
            },
        };
        kind.validate().map_err(|e| {
            anyhow::anyhow!("{e}: check --window-size, --window-advance and --session-gap")
        })?;
        Ok(crate::Settings {
            window: WindowSpec {
                kind,
                grace: self.window_grace,
                out_of_order: self.out_of_order,
                idle_timeout: self.idle_timeout,
            },
        })
    }
}

/// `--guarantee`: the engine's `Guarantee`, with its values in `--help`.
pub fn guarantee() -> impl clap::builder::TypedValueParser<Value = sluice::topology::Guarantee> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["exactly-once", "at-least-once"])
        .map(|s| s.parse().expect("a listed value"))
}

/// `--log-format`: human or json.
pub fn log_format() -> impl clap::builder::TypedValueParser<Value = sluice::logging::LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["human", "json"])
        .map(|s| s.parse().expect("a listed value"))
}

/// `--group-protocol`: classic or consumer.
pub fn group_protocol() -> impl clap::builder::TypedValueParser<Value = sluice::kafka::GroupProtocol>
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["classic", "consumer"])
        .map(|s| s.parse().expect("a listed value"))
}

/// `NAME=URL`, a link for the console: the URL must be http or https.
pub fn link() -> impl clap::builder::TypedValueParser<Value = (String, String)> {
    |s: &str| -> Result<(String, String), String> {
        let (name, url) = s
            .split_once('=')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "{s:?} is not NAME=URL, e.g. Brokers=http://localhost:3000/d/sluice-brokers"
                )
            })?;
        let parsed =
            url::Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{url:?}: the console links only to http or https addresses"
            ));
        }
        Ok((name.trim().to_string(), url.trim().to_string()))
    }
}

/// HOST:PORT, for an address others reach this worker at.
pub fn host_port(s: &str) -> Result<String, String> {
    let ok = s.rsplit_once(':').filter(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    });
    match ok {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "{s:?} is not HOST:PORT; give the host name (or IP) and port others reach this worker's metrics port at, e.g. worker-1.internal:9464"
        )),
    }
}
