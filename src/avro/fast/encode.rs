//! Encoding: any `Serialize` struct declared in schema order into Avro binary.

use serde::{Serialize, Serializer, ser};

use super::{Error, Kind, Plan};

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

/// The compound shapes neither serializer covers: the caller falls back.
macro_rules! unsupported_compounds {
    () => {
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
    };
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

    unsupported_compounds!();

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
        if !self.plan.is_name(self.next, key) {
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

    unsupported_compounds!();

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
}
