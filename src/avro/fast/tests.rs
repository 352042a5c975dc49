use apache_avro::{Schema, reader::datum::GenericDatumReader, writer::datum::GenericDatumWriter};
use serde::{Deserialize, Serialize};

use super::*;

const SCHEMA: &str = r#"{"type":"record","name":"T","namespace":"x","fields":[
  {"name":"s","type":"string"},
  {"name":"i","type":"int"},
  {"name":"l","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"d","type":"double"},
  {"name":"f","type":"float"},
  {"name":"b","type":"boolean"},
  {"name":"e","type":{"type":"enum","name":"E","symbols":["low","high"]}},
  {"name":"o","type":["null","string"]},
  {"name":"o2","type":["long","null"]},
  {"name":"raw","type":"bytes"},
  {"name":"n","type":{"type":"record","name":"N","fields":[{"name":"k","type":"string"}]}}
]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum E {
    Low,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct N {
    k: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct T {
    s: String,
    i: i32,
    l: i64,
    d: f64,
    f: f32,
    b: bool,
    e: E,
    o: Option<String>,
    o2: Option<i64>,
    #[serde(with = "serde_bytes_compat")]
    raw: Vec<u8>,
    n: N,
}

/// Bytes as Avro bytes, for both serde paths.
mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

fn samples() -> Vec<T> {
    vec![
        T {
            s: "héllo".into(),
            i: -7,
            l: 1_790_000_000_123,
            d: 21.5,
            f: -0.25,
            b: true,
            e: E::High,
            o: Some("x".into()),
            o2: None,
            raw: vec![0, 255, 7],
            n: N { k: "nested".into() },
        },
        T {
            s: String::new(),
            i: i32::MIN,
            l: i64::MAX,
            d: f64::MIN_POSITIVE,
            f: 3.5,
            b: false,
            e: E::Low,
            o: None,
            o2: Some(-1),
            raw: vec![],
            n: N { k: String::new() },
        },
    ]
}

#[test]
fn bytes_match_apache_avro_both_ways() {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let plan = plan(&schema).expect("covered");
    let reference = GenericDatumWriter::builder(&schema).build().unwrap();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    for t in samples() {
        let expected = reference.write_ser_to_vec(&t).unwrap();
        let mut ours = Vec::new();
        write(&mut ours, &t, &plan).unwrap();
        assert_eq!(ours, expected, "{t:?}");
        let mut input = &expected[..];
        let back: T = from_slice(&mut input, &plan).unwrap();
        assert_eq!(back, t);
        assert!(input.is_empty());
        let theirs: T = reader.read_deser(&mut &ours[..]).unwrap();
        assert_eq!(theirs, t);
    }
}

#[test]
fn truncated_and_garbage_input_fail() {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let plan = plan(&schema).unwrap();
    let mut bytes = Vec::new();
    write(&mut bytes, &samples()[0], &plan).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            from_slice::<T>(&mut &bytes[..cut], &plan).is_err(),
            "cut at {cut}"
        );
    }
    assert!(from_slice::<T>(&mut &[0xffu8; 12][..], &plan).is_err());
}

#[test]
fn other_field_orders_fall_back() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Swapped {
        b: i64,
        a: String,
    }
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"S","fields":[{"name":"a","type":"string"},{"name":"b","type":"long"}]}"#,
    )
    .unwrap();
    let plan = plan(&schema).unwrap();
    let v = Swapped {
        b: 3,
        a: "z".into(),
    };
    assert!(
        write(&mut Vec::new(), &v, &plan).is_err(),
        "writing must refuse, not scramble"
    );
    // Reading by name still works for another declaration order.
    let bytes = GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_ser_to_vec(&v)
        .unwrap();
    assert_eq!(from_slice::<Swapped>(&mut &bytes[..], &plan).unwrap(), v);
}

#[test]
fn arrays_and_maps_are_not_covered() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"A","fields":[{"name":"xs","type":{"type":"array","items":"int"}}]}"#,
    )
    .unwrap();
    assert!(plan(&schema).is_none());
}
