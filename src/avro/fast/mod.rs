//! A lean Avro binary serde for the common shape of Kafka values: records of
//! primitives, strings, enums, optional (null-union) fields and nested
//! records. It reads and writes fields by position, with no intermediate
//! `Value` and no per-record maps, which is several times faster than the
//! general path. Anything it does not cover returns an error and the caller
//! falls back to apache-avro, which stays the reference for correctness.

use std::fmt;

use apache_avro::Schema;

#[derive(Debug, Clone)]
enum Kind {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Enum(Vec<String>),
    /// A two-branch union with null; `null_first` says which branch is null.
    Optional {
        null_first: bool,
        inner: Box<Kind>,
    },
    Record(Plan),
}

/// How to read and write one record schema positionally.
#[derive(Debug, Clone)]
pub struct Plan {
    names: Vec<&'static str>,
    kinds: Vec<Kind>,
}

fn kind(schema: &Schema) -> Option<Kind> {
    Some(match schema {
        Schema::Null => Kind::Null,
        Schema::Boolean => Kind::Bool,
        Schema::Int | Schema::Date | Schema::TimeMillis => Kind::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Kind::Long,
        Schema::Float => Kind::Float,
        Schema::Double => Kind::Double,
        Schema::Bytes => Kind::Bytes,
        Schema::String => Kind::Str,
        Schema::Enum(e) => Kind::Enum(e.symbols.clone()),
        Schema::Union(u) => match u.variants() {
            [Schema::Null, other] => Kind::Optional {
                null_first: true,
                inner: Box::new(kind(other)?),
            },
            [other, Schema::Null] => Kind::Optional {
                null_first: false,
                inner: Box::new(kind(other)?),
            },
            _ => return None,
        },
        Schema::Record(_) => Kind::Record(plan(schema)?),
        _ => return None,
    })
}

/// A plan for `schema`, if it is a record this module covers.
pub fn plan(schema: &Schema) -> Option<Plan> {
    let Schema::Record(r) = schema else {
        return None;
    };
    let mut names = Vec::with_capacity(r.fields.len());
    let mut kinds = Vec::with_capacity(r.fields.len());
    for f in &r.fields {
        // Plans live as long as the leaked schemas they describe.
        names.push(&*Box::leak(f.name.clone().into_boxed_str()));
        kinds.push(kind(&f.schema)?);
    }
    Some(Plan { names, kinds })
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

mod decode;
mod encode;

pub use decode::from_slice;
pub use encode::write;

#[cfg(test)]
mod tests;
