//! A lean Avro binary serde for the common shape of Kafka values: records of
//! primitives, strings, enums, optional (null-union) fields and nested
//! records. It reads and writes fields by position, with no intermediate
//! `Value` and no per-record maps, which is several times faster than the
//! general path. Anything it does not cover returns an error and the caller
//! falls back to apache-avro, which stays the reference for correctness.

use std::fmt;

use apache_avro::Schema;
use serde::{
    Deserializer, Serialize, Serializer,
    de::{self, DeserializeOwned, IntoDeserializer, Visitor},
    ser,
};

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

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn eof() -> Error {
    Error("unexpected end of data".into())
}

fn read_long(input: &mut &[u8]) -> Result<i64, Error> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or_else(eof)?;
        *input = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(Error("varint longer than 10 bytes".into()))
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if input.len() < n {
        return Err(eof());
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn read_len(input: &mut &[u8]) -> Result<usize, Error> {
    usize::try_from(read_long(input)?).map_err(|_| Error("negative length".into()))
}

/// Decodes one record into `T`.
pub fn from_slice<T: DeserializeOwned>(input: &mut &[u8], plan: &Plan) -> Result<T, Error> {
    T::deserialize(RecordDe { input, plan })
}

struct RecordDe<'a, 'b, 'p> {
    input: &'b mut &'a [u8],
    plan: &'p Plan,
}

struct ValueDe<'a, 'b, 'p> {
    input: &'b mut &'a [u8],
    kind: &'p Kind,
}

impl<'de> Deserializer<'de> for RecordDe<'_, '_, '_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let access = Fields {
            input: self.input,
            plan: self.plan,
            next: 0,
        };
        if fields == self.plan.names.as_slice() {
            visitor.visit_seq(access)
        } else {
            visitor.visit_map(access)
        }
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            input: self.input,
            plan: self.plan,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct Fields<'a, 'b, 'p> {
    input: &'b mut &'a [u8],
    plan: &'p Plan,
    next: usize,
}

impl<'de> de::SeqAccess<'de> for Fields<'_, '_, '_> {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(kind) = self.plan.kinds.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        seed.deserialize(ValueDe {
            input: self.input,
            kind,
        })
        .map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_, '_> {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.plan.names.get(self.next) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let kind = &self.plan.kinds[self.next];
        self.next += 1;
        seed.deserialize(ValueDe {
            input: self.input,
            kind,
        })
    }
}

impl<'de> Deserializer<'de> for ValueDe<'_, '_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool => match take(self.input, 1)?[0] {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                b => Err(Error(format!("invalid boolean byte {b}"))),
            },
            Kind::Int => {
                let v = read_long(self.input)?;
                visitor.visit_i32(
                    i32::try_from(v).map_err(|_| Error(format!("int {v} out of range")))?,
                )
            }
            Kind::Long => visitor.visit_i64(read_long(self.input)?),
            Kind::Float => {
                let b = take(self.input, 4)?;
                visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Kind::Double => {
                let b = take(self.input, 8)?;
                visitor.visit_f64(f64::from_le_bytes(b.try_into().map_err(|_| eof())?))
            }
            Kind::Bytes => {
                let n = read_len(self.input)?;
                visitor.visit_bytes(take(self.input, n)?)
            }
            Kind::Str => {
                let n = read_len(self.input)?;
                let s = std::str::from_utf8(take(self.input, n)?)
                    .map_err(|e| Error(format!("string is not UTF-8: {e}")))?;
                visitor.visit_str(s)
            }
            Kind::Enum(symbols) => visitor.visit_str(symbol(self.input, symbols)?),
            Kind::Optional { null_first, inner } => {
                if is_null(self.input, *null_first)? {
                    visitor.visit_none()
                } else {
                    ValueDe {
                        input: self.input,
                        kind: inner,
                    }
                    .deserialize_any(visitor)
                }
            }
            Kind::Record(plan) => RecordDe {
                input: self.input,
                plan,
            }
            .deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Optional { null_first, inner } => {
                if is_null(self.input, *null_first)? {
                    visitor.visit_none()
                } else {
                    visitor.visit_some(ValueDe {
                        input: self.input,
                        kind: inner,
                    })
                }
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Enum(symbols) => {
                let s: &str = symbol(self.input, symbols)?;
                visitor.visit_enum(s.into_deserializer())
            }
            _ => Err(Error("a Rust enum needs an Avro enum".into())),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Record(plan) => RecordDe {
                input: self.input,
                plan,
            }
            .deserialize_struct(name, fields, visitor),
            _ => Err(Error("a Rust struct needs an Avro record".into())),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

fn symbol<'s>(input: &mut &[u8], symbols: &'s [String]) -> Result<&'s str, Error> {
    let i = read_long(input)?;
    usize::try_from(i)
        .ok()
        .and_then(|i| symbols.get(i))
        .map(String::as_str)
        .ok_or_else(|| Error(format!("enum index {i} out of range")))
}

fn is_null(input: &mut &[u8], null_first: bool) -> Result<bool, Error> {
    match read_long(input)? {
        0 => Ok(null_first),
        1 => Ok(!null_first),
        i => Err(Error(format!("union index {i} out of range"))),
    }
}

fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends the Avro encoding of `value` to `out`.
pub fn write<T: Serialize>(out: &mut Vec<u8>, value: &T, plan: &Plan) -> Result<(), Error> {
    value.serialize(RecordSer { out, plan })
}

struct RecordSer<'o, 'p> {
    out: &'o mut Vec<u8>,
    plan: &'p Plan,
}

struct ValueSer<'o, 'p> {
    out: &'o mut Vec<u8>,
    kind: &'p Kind,
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error(format!("{what} is not covered by the fast path")))
}

macro_rules! only_struct {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), Error> { unsupported(stringify!($method)) })*
    };
}

impl<'o, 'p> Serializer for RecordSer<'o, 'p> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = StructSer<'o, 'p>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<StructSer<'o, 'p>, Error> {
        if len != self.plan.names.len() {
            return unsupported("a struct with another number of fields");
        }
        Ok(StructSer {
            out: self.out,
            plan: self.plan,
            next: 0,
        })
    }

    only_struct!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    fn serialize_none(self) -> Result<(), Error> {
        unsupported("a top-level None")
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Error> {
        unsupported("a top-level Option")
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        unsupported("a newtype variant")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        unsupported("a sequence")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        unsupported("a tuple")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        unsupported("a tuple struct")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        unsupported("a tuple variant")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        unsupported("a map")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        unsupported("a struct variant")
    }
}

pub struct StructSer<'o, 'p> {
    out: &'o mut Vec<u8>,
    plan: &'p Plan,
    next: usize,
}

impl ser::SerializeStruct for StructSer<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // Positional: the struct must declare its fields in schema order.
        if self.plan.names.get(self.next) != Some(&key) {
            return unsupported("fields in another order than the schema's");
        }
        let kind = &self.plan.kinds[self.next];
        self.next += 1;
        value.serialize(ValueSer {
            out: self.out,
            kind,
        })
    }

    fn end(self) -> Result<(), Error> {
        if self.next == self.plan.names.len() {
            Ok(())
        } else {
            unsupported("a struct missing fields")
        }
    }
}

impl ValueSer<'_, '_> {
    fn int(self, v: i64) -> Result<(), Error> {
        match self.kind {
            Kind::Int if i32::try_from(v).is_ok() => write_long(self.out, v),
            Kind::Long => write_long(self.out, v),
            _ => return unsupported("this integer"),
        }
        Ok(())
    }

    fn null(self) -> Result<(), Error> {
        match self.kind {
            Kind::Null => Ok(()),
            Kind::Optional { null_first, .. } => {
                write_long(self.out, if *null_first { 0 } else { 1 });
                Ok(())
            }
            _ => unsupported("a null here"),
        }
    }
}

impl<'o, 'p> Serializer for ValueSer<'o, 'p> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = StructSer<'o, 'p>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        match self.kind {
            Kind::Bool => {
                self.out.push(u8::from(v));
                Ok(())
            }
            _ => unsupported("a bool here"),
        }
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.int(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => unsupported("a u64 above i64::MAX"),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        match self.kind {
            Kind::Float => self.out.extend_from_slice(&v.to_le_bytes()),
            Kind::Double => self.out.extend_from_slice(&f64::from(v).to_le_bytes()),
            _ => return unsupported("a float here"),
        }
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        match self.kind {
            Kind::Double => {
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            _ => unsupported("a double here"),
        }
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        match self.kind {
            Kind::Str => {
                write_long(self.out, v.len() as i64);
                self.out.extend_from_slice(v.as_bytes());
                Ok(())
            }
            Kind::Enum(symbols) => match symbols.iter().position(|s| s == v) {
                Some(i) => {
                    write_long(self.out, i as i64);
                    Ok(())
                }
                None => unsupported("a symbol the enum lacks"),
            },
            _ => unsupported("a string here"),
        }
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        match self.kind {
            Kind::Bytes => {
                write_long(self.out, v.len() as i64);
                self.out.extend_from_slice(v);
                Ok(())
            }
            _ => unsupported("bytes here"),
        }
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.null()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Error> {
        match self.kind {
            Kind::Optional { null_first, inner } => {
                write_long(self.out, if *null_first { 1 } else { 0 });
                v.serialize(ValueSer {
                    out: self.out,
                    kind: inner,
                })
            }
            _ => v.serialize(self),
        }
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.null()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.null()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        unsupported("a newtype variant")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        unsupported("an array")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        unsupported("a tuple")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        unsupported("a tuple struct")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        unsupported("a tuple variant")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        unsupported("a map")
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructSer<'o, 'p>, Error> {
        match self.kind {
            Kind::Record(plan) => RecordSer {
                out: self.out,
                plan,
            }
            .serialize_struct(name, len),
            _ => unsupported("a struct here"),
        }
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        unsupported("a struct variant")
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
