//! A lean Avro binary serde for the common shape of Kafka values: records of
//! primitives, strings, enums, optional (null-union) fields and nested
//! records. It reads and writes fields by position, with no intermediate
//! `Value` and no per-record maps, which is several times faster than the
//! general path. Anything it does not cover returns an error and the caller
//! falls back to apache-avro, which stays the reference for correctness.

use std::{
    fmt,
    sync::atomic::{AtomicPtr, Ordering},
};

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
    /// The `&'static` field lists (serde's) and field names already found
    /// equal to `names`: the same address and length is the same immutable
    /// text, so comparing a pointer replaces comparing the strings per record.
    matched_fields: Seen<&'static str>,
    matched_names: Vec<Seen<u8>>,
}

/// An address once found to hold what was expected.
#[derive(Debug)]
struct Seen<T>(AtomicPtr<T>);

impl<T> Seen<T> {
    fn new() -> Self {
        Seen(AtomicPtr::new(std::ptr::null_mut()))
    }

    fn is(&self, p: *const T) -> bool {
        std::ptr::eq(self.0.load(Ordering::Relaxed), p)
    }

    fn remember(&self, p: *const T) {
        self.0.store(p.cast_mut(), Ordering::Relaxed);
    }
}

impl<T> Clone for Seen<T> {
    fn clone(&self) -> Self {
        Seen(AtomicPtr::new(self.0.load(Ordering::Relaxed)))
    }
}

impl Plan {
    /// Whether serde's field list for a struct is this record's, in order.
    fn same_fields(&self, fields: &'static [&'static str]) -> bool {
        if fields.len() != self.names.len() {
            return false;
        }
        if self.matched_fields.is(fields.as_ptr()) {
            return true;
        }
        let same = fields == self.names.as_slice();
        if same {
            self.matched_fields.remember(fields.as_ptr());
        }
        same
    }

    /// Whether `key` is the name of field `i`.
    fn is_name(&self, i: usize, key: &'static str) -> bool {
        let (Some(name), Some(seen)) = (self.names.get(i), self.matched_names.get(i)) else {
            return false;
        };
        if key.len() != name.len() {
            return false;
        }
        if seen.is(key.as_ptr()) {
            return true;
        }
        let same = key == *name;
        if same {
            seen.remember(key.as_ptr());
        }
        same
    }
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
    Some(Plan {
        matched_fields: Seen::new(),
        matched_names: names.iter().map(|_| Seen::new()).collect(),
        names,
        kinds,
    })
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
