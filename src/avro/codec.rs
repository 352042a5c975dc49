//! Avro values over the Confluent wire format through a Schema Registry,
//! with schema_registry_converter doing the registry look-ups and caching
//! schemas by id.

use apache_avro::{Schema, reader::datum::GenericDatumReader, types::Value};
use schema_registry_converter::{
    async_impl::{
        avro::{AvroDecoder, AvroEncoder},
        schema_registry::SrSettings,
    },
    error::SRCError,
    schema_registry_common::SubjectNameStrategy,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    client::RegistryConfig,
    wire::{self, WireError},
};

/// Why a record could not be decoded or encoded, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not Confluent-framed: the producer's fault, never decodable.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The registry does not know the schema id, or it is not valid Avro.
    #[error("schema id {id} cannot be used: {reason}")]
    UnknownSchema { id: u32, reason: String },
    /// The registry could not be reached or failed; retrying may help.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// Bytes do not match the writer schema (corrupt or truncated body).
    #[error("corrupt Avro body for schema id {id}: {reason}")]
    Corrupt { id: u32, reason: String },
    /// The writer schema's data cannot be read as the reader schema.
    #[error("schema id {id} does not resolve to the reader schema: {reason}")]
    Incompatible { id: u32, reason: String },
    /// Our value does not fit the registered schema: a bug on our side.
    #[error("cannot encode value for subject {subject}: {reason}")]
    Encode { subject: String, reason: String },
}

impl CodecError {
    /// Retrying later may help; other errors are final for this record.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    /// A short stable name for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Wire(WireError::Empty) => "empty_payload",
            CodecError::Wire(WireError::Truncated(_)) => "truncated_header",
            CodecError::Wire(WireError::BadMagic(_)) => "bad_magic_byte",
            CodecError::UnknownSchema { .. } => "unknown_schema_id",
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::Corrupt { .. } => "corrupt_avro",
            CodecError::Incompatible { .. } => "incompatible_schema",
            CodecError::Encode { .. } => "encode_failed",
        }
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// Encodes to and decodes from the Confluent wire format.
pub struct AvroCodec {
    decoder: AvroDecoder,
    encoder: AvroEncoder,
}

impl AvroCodec {
    pub fn new(registry: &RegistryConfig) -> Result<Self, CodecError> {
        let settings = || -> Result<SrSettings, CodecError> {
            let mut b = SrSettings::new_builder(registry.base_url());
            b.set_timeout(registry.timeout);
            if let Some(c) = &registry.credentials {
                b.set_basic_authorization(&c.user, Some(&c.password));
            }
            b.build()
                .map_err(|e| CodecError::RegistryUnavailable(describe(&e)))
        };
        Ok(Self {
            decoder: AvroDecoder::new(settings()?),
            encoder: AvroEncoder::new(settings()?),
        })
    }

    /// The writer's schema id and the value as the writer wrote it.
    pub async fn decode_value(&self, bytes: &[u8]) -> Result<(u32, Value), CodecError> {
        let (id, _) = wire::split(bytes)?;
        let schema = self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                CodecError::RegistryUnavailable(describe(&e))
            } else {
                CodecError::UnknownSchema {
                    id,
                    reason: describe(&e),
                }
            }
        })?;
        let mut body = &bytes[wire::HEADER_LEN..];
        let corrupt = |e: apache_avro::Error| CodecError::Corrupt {
            id,
            reason: e.to_string(),
        };
        let value = GenericDatumReader::builder(&schema.parsed)
            .build()
            .map_err(corrupt)?
            .read_value(&mut body)
            .map_err(corrupt)?;
        // apache-avro can yield a partial value from a truncated body rather
        // than an error; a value that does not fit its own schema is corrupt.
        if !value.validate(&schema.parsed) {
            return Err(CodecError::Corrupt {
                id,
                reason: "body ends before the record does (truncated)".into(),
            });
        }
        if !body.is_empty() {
            return Err(CodecError::Corrupt {
                id,
                reason: format!("{} bytes left over after the record", body.len()),
            });
        }
        Ok((id, value))
    }

    /// Decodes into `T`, resolving the writer's schema to `reader` first so
    /// added fields with defaults, promotions and renames by alias work.
    pub async fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        reader: &Schema,
    ) -> Result<(u32, T), CodecError> {
        let (id, value) = self.decode_value(bytes).await?;
        let incompatible = |reason: String| CodecError::Incompatible { id, reason };
        let resolved = value
            .resolve(reader)
            .map_err(|e| incompatible(e.to_string()))?;
        let typed = apache_avro::from_value(&resolved).map_err(|e| incompatible(e.to_string()))?;
        Ok((id, typed))
    }

    /// Encodes with the latest schema of `<topic>-value`.
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false);
        self.encoder
            .encode_struct(value, &strategy)
            .await
            .map_err(|e| {
                if e.retriable {
                    CodecError::RegistryUnavailable(describe(&e))
                } else {
                    CodecError::Encode {
                        subject: crate::schemas::value_subject(topic),
                        reason: describe(&e),
                    }
                }
            })
    }
}
