//! Avro over the Confluent wire format: framing, encoding/decoding through a
//! Schema Registry, and a registry client for registering schemas.

pub mod client;
pub mod codec;
pub mod fast;
pub mod wire;

pub use client::{ClientError, RegistryClient, RegistryConfig};
pub use codec::{AvroCodec, CodecError, Reader, SinkSchema};
