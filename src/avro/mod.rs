//! Avro over the Confluent wire format: framing, encoding/decoding through a
//! Schema Registry, and a registry client for registering schemas.

pub mod client;
pub mod codec;
pub mod fast;
pub mod view;
pub mod wire;

pub use client::{ClientError, RegistryClient, RegistryConfig};
pub use codec::{AvroCodec, CodecError, Reader, SinkSchema};

/// A Rust type whose values are Avro records of `SCHEMA`: the reader
/// schema when a topology reads them, and the schema registered as
/// `<topic>-value` for a topic it writes them to.
pub trait AvroSchema {
    const SCHEMA: &'static str;
}

macro_rules! primitive {
    ($($t:ty => $s:literal),* $(,)?) => {
        $(impl AvroSchema for $t {
            const SCHEMA: &'static str = $s;
        })*
    };
}

primitive! {
    i32 => r#""int""#,
    i64 => r#""long""#,
    f32 => r#""float""#,
    f64 => r#""double""#,
    bool => r#""boolean""#,
    String => r#""string""#,
}
