//! Avro values over the Confluent wire format through a Schema Registry,
//! with schema_registry_converter doing the registry look-ups and caching
//! schemas by id.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, types::Value, writer::datum::GenericDatumWriter,
};
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
    fast,
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
    /// The registry refused our credentials: the operator's to fix, never
    /// the record's fault, so it is retried rather than dead-lettered.
    #[error("schema registry refused the credentials ({0}): check the registry credentials")]
    RegistryRefused(String),
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
        matches!(
            self,
            CodecError::RegistryUnavailable(_) | CodecError::RegistryRefused(_)
        )
    }

    /// A short stable name for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Wire(WireError::Empty) => "empty_payload",
            CodecError::Wire(WireError::Truncated(_)) => "truncated_header",
            CodecError::Wire(WireError::BadMagic(_)) => "bad_magic_byte",
            CodecError::UnknownSchema { .. } => "unknown_schema_id",
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::RegistryRefused(_) => "registry_refused",
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

/// A reader schema with, per writer schema id, a prepared way to decode.
/// When writer and reader are the same schema, records deserialise straight
/// from the bytes; otherwise through Avro schema resolution.
pub struct Reader {
    schema: &'static Schema,
    canonical: String,
    fast: Option<fast::Plan>,
    /// Keyed by codec as well: the same id means another schema in another registry.
    plans: RwLock<HashMap<PlanKey, Arc<Plan>>>,
    /// The first plan prepared: in the steady state every record has this
    /// writer, and finding it costs a comparison instead of a locked,
    /// hashed look-up (measured: a tenth of the per-record work).
    first: OnceLock<(PlanKey, Arc<Plan>)>,
}

/// (codec, writer schema id)
type PlanKey = (u64, u32);

enum Plan {
    Direct(GenericDatumReader<'static>),
    Resolve(GenericDatumReader<'static>),
}

impl Reader {
    pub fn new(schema: Schema) -> Reader {
        let canonical = schema.canonical_form();
        Reader {
            fast: fast::plan(&schema),
            schema: leak(schema),
            canonical,
            plans: RwLock::default(),
            first: OnceLock::new(),
        }
    }

    pub fn schema(&self) -> &Schema {
        self.schema
    }

    fn plan(&self, key: PlanKey) -> Option<Arc<Plan>> {
        self.plans
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    fn first_plan(&self, key: PlanKey) -> Option<&Plan> {
        match self.first.get() {
            Some((k, plan)) if *k == key => Some(plan),
            _ => None,
        }
    }
}

/// Schemas are immutable and few (one per registered id a process meets, one
/// per reader), and the prepared readers and writers borrow them for the
/// life of the process; leaking them is the simplest sound way to say so.
fn leak(schema: Schema) -> &'static Schema {
    Box::leak(Box::new(schema))
}

/// The latest schema of a topic's value subject, prepared for writing.
struct Sink {
    id: u32,
    writer: GenericDatumWriter<'static>,
    fast: Option<fast::Plan>,
}

/// A topic's sink schema as one codec resolved it, for a processor to keep,
/// so that encoding skips the codec's hashed, locked look-up by topic.
#[derive(Clone)]
pub struct SinkSchema {
    codec: u64,
    topic: Arc<str>,
    sink: Arc<Sink>,
}

impl SinkSchema {
    /// Whether this was resolved by `codec`: ids differ between registries.
    pub fn is_from(&self, codec: &AvroCodec) -> bool {
        self.codec == codec.id
    }

    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        encode_with(&self.sink, &self.topic, value)
    }
}

/// Schemas given up front: id → schema, and topic → its values' id.
type Local = (HashMap<u32, &'static Schema>, HashMap<String, u32>);

/// Tells codecs apart, for the caches keyed by codec.
static CODECS: AtomicU64 = AtomicU64::new(1);

/// Encodes to and decodes from the Confluent wire format.
pub struct AvroCodec {
    id: u64,
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    /// Schemas given up front instead of a registry (the test driver's):
    /// id → schema, and topic → the id its values are written with.
    local: Option<Local>,
    writers: RwLock<HashMap<u32, &'static Schema>>,
    sinks: RwLock<HashMap<String, Arc<Sink>>>,
    errors_flushed: Mutex<Instant>,
}

/// How long a "no such schema" answer is trusted before asking again.
const ERROR_CACHE_TTL: Duration = Duration::from_secs(30);

impl AvroCodec {
    pub fn new(registry: &RegistryConfig) -> Result<Self, CodecError> {
        let settings = || -> Result<SrSettings, CodecError> {
            let mut b = SrSettings::new_builder(registry.base_url());
            b.set_timeout(registry.timeout);
            if let Some(c) = &registry.credentials {
                b.set_basic_authorization(&c.user, Some(&c.password));
            }
            let http = registry
                .http()
                .map_err(|e| CodecError::RegistryUnavailable(e.to_string()))?;
            b.build_with(http)
                .map_err(|e| CodecError::RegistryUnavailable(describe(&e)))
        };
        Ok(Self {
            id: CODECS.fetch_add(1, Ordering::Relaxed),
            decoder: AvroDecoder::new(settings()?),
            encoder: AvroEncoder::new(settings()?),
            local: None,
            writers: RwLock::default(),
            sinks: RwLock::default(),
            errors_flushed: Mutex::new(Instant::now()),
        })
    }

    /// A codec without a registry: `schemas` (topic, schema text) are the
    /// only ones, with ids 1, 2, … in order. For running topologies
    /// without any service (the test driver).
    pub fn in_memory(schemas: &[(String, String)]) -> Result<Self, CodecError> {
        let registry = RegistryConfig::new("http://127.0.0.1:9", None)
            .map_err(|e| CodecError::RegistryUnavailable(e.to_string()))?;
        let mut codec = Self::new(&registry)?;
        let mut by_id = HashMap::new();
        let mut by_topic = HashMap::new();
        for (i, (topic, text)) in schemas.iter().enumerate() {
            let schema = Schema::parse_str(text).map_err(|e| CodecError::Encode {
                subject: crate::schemas::value_subject(topic),
                reason: e.to_string(),
            })?;
            let id = i as u32 + 1;
            by_id.insert(id, leak(schema));
            by_topic.insert(topic.clone(), id);
        }
        codec.local = Some((by_id, by_topic));
        Ok(codec)
    }

    /// The id `topic`'s values are written with, for codecs without a registry.
    pub fn local_id(&self, topic: &str) -> Option<u32> {
        self.local.as_ref()?.1.get(topic).copied()
    }

    /// Makes `reader` ready for the writer schema of `bytes` (asking the
    /// registry if need be), so that `decode_cached` answers for it.
    pub async fn prepare_reader(&self, bytes: &[u8], reader: &Reader) -> Result<(), CodecError> {
        let (id, _) = wire::split(bytes)?;
        if reader.plan((self.id, id)).is_none() {
            self.prepare(id, reader).await?;
        }
        Ok(())
    }

    /// The converter remembers failed look-ups; forget them now and then so a
    /// schema registered later is found.
    fn expire_cached_errors(&self) {
        let mut last = self
            .errors_flushed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.elapsed() > ERROR_CACHE_TTL {
            self.decoder.remove_errors_from_cache();
            self.encoder.remove_errors_from_cache();
            *last = Instant::now();
        }
    }

    /// A failed look-up: the registry's trouble (retried), or `otherwise`.
    fn lookup_error(
        &self,
        e: &SRCError,
        otherwise: impl FnOnce(String) -> CodecError,
    ) -> CodecError {
        let reason = describe(e);
        if e.retriable {
            return CodecError::RegistryUnavailable(reason);
        }
        self.expire_cached_errors();
        if reason.contains("status 401") || reason.contains("status 403") {
            CodecError::RegistryRefused(reason)
        } else {
            otherwise(reason)
        }
    }

    /// The writer schema registered under `id`.
    pub async fn writer_schema(&self, id: u32) -> Result<&'static Schema, CodecError> {
        if let Some(s) = self
            .writers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(s);
        }
        if let Some((by_id, _)) = &self.local {
            return by_id.get(&id).copied().ok_or(CodecError::UnknownSchema {
                id,
                reason: "no schema with this id was given".into(),
            });
        }
        let fetched = self.decoder.get_schema(id).await.map_err(|e| {
            self.lookup_error(&e, |reason| CodecError::UnknownSchema { id, reason })
        })?;
        let mut writers = self.writers.write().unwrap_or_else(|p| p.into_inner());
        Ok(*writers
            .entry(id)
            .or_insert_with(|| leak(fetched.parsed.clone())))
    }

    /// The writer's schema id and the value as the writer wrote it.
    pub async fn decode_value(&self, bytes: &[u8]) -> Result<(u32, Value), CodecError> {
        let (id, mut body) = wire::split(bytes)?;
        let schema = self.writer_schema(id).await?;
        let corrupt = |e: apache_avro::Error| CodecError::Corrupt {
            id,
            reason: e.to_string(),
        };
        let value = GenericDatumReader::builder(schema)
            .build()
            .map_err(corrupt)?
            .read_value(&mut body)
            .map_err(corrupt)?;
        // apache-avro can yield a partial value from a truncated body rather
        // than an error; a value that does not fit its own schema is corrupt.
        if !value.validate(schema) {
            return Err(CodecError::Corrupt {
                id,
                reason: "body ends before the record does (truncated)".into(),
            });
        }
        check_consumed(id, body)?;
        Ok((id, value))
    }

    /// Decodes into `T` as `reader` sees it: added fields with defaults,
    /// promotions and renames by alias resolve.
    pub async fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        reader: &Reader,
    ) -> Result<(u32, T), CodecError> {
        let (id, body) = wire::split(bytes)?;
        let plan = match reader.plan((self.id, id)) {
            Some(p) => p,
            None => self.prepare(id, reader).await?,
        };
        decode_with(&plan, reader, id, body)
    }

    /// `decode` without waiting, when `reader` already met this writer
    /// schema id; `None` when the registry must be asked first.
    pub fn decode_cached<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        reader: &Reader,
    ) -> Option<Result<(u32, T), CodecError>> {
        let (id, body) = match wire::split(bytes) {
            Ok(split) => split,
            Err(e) => return Some(Err(e.into())),
        };
        let key = (self.id, id);
        if let Some(plan) = reader.first_plan(key) {
            return Some(decode_with(plan, reader, id, body));
        }
        let plan = reader.plan(key)?;
        Some(decode_with(&plan, reader, id, body))
    }

    async fn prepare(&self, id: u32, reader: &Reader) -> Result<Arc<Plan>, CodecError> {
        let writer = self.writer_schema(id).await?;
        let incompatible = |e: apache_avro::Error| CodecError::Incompatible {
            id,
            reason: e.to_string(),
        };
        let builder = GenericDatumReader::builder(writer);
        let plan = Arc::new(if writer.canonical_form() == reader.canonical {
            Plan::Direct(builder.build().map_err(incompatible)?)
        } else {
            Plan::Resolve(
                builder
                    .reader_schema(reader.schema)
                    .build()
                    .map_err(incompatible)?,
            )
        });
        let key = (self.id, id);
        reader
            .plans
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, plan.clone());
        let _ = reader.first.set((key, plan.clone()));
        Ok(plan)
    }

    async fn sink(&self, topic: &str) -> Result<Arc<Sink>, CodecError> {
        if let Some(s) = self
            .sinks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(s.clone());
        }
        let subject = crate::schemas::value_subject(topic);
        let (id, schema) = match &self.local {
            Some((by_id, by_topic)) => {
                let id = by_topic.get(topic).ok_or_else(|| CodecError::Encode {
                    subject: subject.clone(),
                    reason: "no schema was given for this topic".into(),
                })?;
                (*id, by_id[id])
            }
            None => {
                let strategy = SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false);
                let found = self
                    .encoder
                    .get_schema_and_id(&subject, strategy)
                    .await
                    .map_err(|e| {
                        self.lookup_error(&e, |reason| CodecError::Encode {
                            subject: subject.clone(),
                            reason,
                        })
                    })?;
                (found.id, leak(found.parsed.clone()))
            }
        };
        let writer =
            GenericDatumWriter::builder(schema)
                .build()
                .map_err(|e| CodecError::Encode {
                    subject: subject.clone(),
                    reason: e.to_string(),
                })?;
        let sink = Arc::new(Sink {
            id,
            writer,
            fast: fast::plan(schema),
        });
        self.sinks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), sink.clone());
        Ok(sink)
    }

    /// Encodes with the latest schema of `<topic>-value` (looked up once).
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let sink = self.sink(topic).await?;
        encode_with(&sink, topic, value)
    }

    /// The topic's sink schema, looked up in the registry if need be.
    pub async fn resolve_sink(&self, topic: &str) -> Result<SinkSchema, CodecError> {
        let sink = self.sink(topic).await?;
        Ok(SinkSchema {
            codec: self.id,
            topic: topic.into(),
            sink,
        })
    }

    /// The topic's sink schema, once `encode` has looked it up.
    pub fn sink_schema(&self, topic: &str) -> Option<SinkSchema> {
        let sink = self
            .sinks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()?;
        Some(SinkSchema {
            codec: self.id,
            topic: topic.into(),
            sink,
        })
    }

    /// `encode` without waiting, once the topic's schema was looked up.
    pub fn encode_cached<T: Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Option<Result<Vec<u8>, CodecError>> {
        let sink = self
            .sinks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()?;
        Some(encode_with(&sink, topic, value))
    }
}

fn encode_with<T: Serialize>(sink: &Sink, topic: &str, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    wire::write_header(&mut out, sink.id);
    if let Some(plan) = &sink.fast {
        if fast::write(&mut out, value, plan).is_ok() {
            return Ok(out);
        }
        out.truncate(wire::HEADER_LEN);
    }
    sink.writer
        .write_ser(&mut out, value)
        .map_err(|e| CodecError::Encode {
            subject: crate::schemas::value_subject(topic),
            reason: e.to_string(),
        })?;
    Ok(out)
}

fn decode_with<T: DeserializeOwned>(
    plan: &Plan,
    reader: &Reader,
    id: u32,
    mut body: &[u8],
) -> Result<(u32, T), CodecError> {
    let value = match plan {
        Plan::Direct(r) => {
            let start = body;
            match reader
                .fast
                .as_ref()
                .map(|f| fast::from_slice::<T>(&mut body, f))
            {
                Some(Ok(v)) => v,
                // The reference decoder decides what is wrong, if anything.
                _ => {
                    body = start;
                    r.read_deser::<T>(&mut body)
                        .map_err(|e| CodecError::Corrupt {
                            id,
                            reason: e.to_string(),
                        })?
                }
            }
        }
        Plan::Resolve(r) => {
            // A resolution failure may be the data's (truncated) or the
            // schemas' (a symbol the reader lacks); the bytes did decode
            // as far as the writer's schema, so blame the schemas.
            let incompatible = |e: apache_avro::Error| CodecError::Incompatible {
                id,
                reason: e.to_string(),
            };
            let value = r.read_value(&mut body).map_err(incompatible)?;
            apache_avro::from_value(&value).map_err(incompatible)?
        }
    };
    check_consumed(id, body)?;
    Ok((id, value))
}

fn check_consumed(id: u32, rest: &[u8]) -> Result<(), CodecError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CodecError::Corrupt {
            id,
            reason: format!("{} bytes left over after the record", rest.len()),
        })
    }
}
