//! Decoding: Avro binary into any `Deserialize` type, by position.

use serde::{
    Deserializer,
    de::{self, DeserializeOwned, IntoDeserializer, Visitor},
};

use super::{Error, Kind, Plan};

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
        if self.plan.same_fields(fields) {
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
                visitor.visit_str(utf8(take(self.input, n)?)?)
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

/// Most strings in Kafka values are ASCII, which is valid UTF-8 and checked
/// several times faster than full validation for short strings.
fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|e| Error(format!("string is not UTF-8: {e}")))
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
