//! One record as JSON or as a table row: key, partition, offset, timestamp,
//! headers, and the value decoded through the registry whatever its schema
//! id; bytes that do not decode are shown as base64 with the reason. Text
//! that is not UTF-8 (keys, header values) is shown as base64 too.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::{Map, Value, json};

use super::AvroCodec;

/// Bytes as a string when they are UTF-8, else `{"base64": …}`.
pub fn text_or_base64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": STANDARD.encode(bytes) }),
    }
}

/// The record's value: decoded, null for a tombstone, or the bytes with why
/// they do not decode.
pub struct Decoded {
    pub schema_id: Option<u32>,
    pub value: Value,
    /// Base64 of bytes that did not decode, and the reason (kind, message).
    pub undecodable: Option<(String, &'static str, String)>,
}

pub async fn decode(codec: &AvroCodec, bytes: Option<&[u8]>) -> Decoded {
    let Some(bytes) = bytes else {
        return Decoded {
            schema_id: None,
            value: Value::Null,
            undecodable: None,
        };
    };
    match codec.decode_value(bytes).await {
        Ok((id, v)) => match Value::try_from(v) {
            Ok(value) => Decoded {
                schema_id: Some(id),
                value,
                undecodable: None,
            },
            Err(e) => Decoded {
                schema_id: Some(id),
                value: Value::Null,
                undecodable: Some((STANDARD.encode(bytes), "not_json", e.to_string())),
            },
        },
        Err(e) => Decoded {
            schema_id: None,
            value: Value::Null,
            undecodable: Some((STANDARD.encode(bytes), e.kind(), e.to_string())),
        },
    }
}

pub fn timestamp_ms(m: &OwnedMessage) -> Option<i64> {
    m.timestamp().to_millis()
}

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn headers(m: &OwnedMessage) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            out.insert(
                h.key.to_string(),
                h.value.map_or(Value::Null, text_or_base64),
            );
        }
    }
    out
}

/// The record as one JSON object.
pub async fn to_json(codec: &AvroCodec, m: &OwnedMessage) -> Value {
    let d = decode(codec, m.payload()).await;
    let mut o = Map::new();
    o.insert("topic".into(), m.topic().into());
    o.insert("partition".into(), m.partition().into());
    o.insert("offset".into(), m.offset().into());
    if let Some(ms) = timestamp_ms(m) {
        o.insert("timestamp".into(), rfc3339(ms).into());
        o.insert("timestamp_ms".into(), ms.into());
    }
    o.insert("key".into(), m.key().map_or(Value::Null, text_or_base64));
    if let Some(id) = d.schema_id {
        o.insert("schema_id".into(), id.into());
    }
    o.insert("value".into(), d.value);
    if let Some((b64, kind, message)) = d.undecodable {
        o.insert("value_base64".into(), b64.into());
        o.insert("error".into(), json!({ "kind": kind, "message": message }));
    }
    o.insert("headers".into(), Value::Object(headers(m)));
    Value::Object(o)
}

/// JSON as one line of text, strings without their quotes.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The record as one table row: partition:offset, time, key, value (or
/// the reason it does not decode), and the headers when asked.
pub fn to_row(record: &Value, with_headers: bool) -> String {
    let mut cols = vec![
        format!("{}:{}", record["partition"], record["offset"]),
        plain(&record["timestamp"]),
        plain(&record["key"]),
    ];
    cols.push(match record.get("error") {
        Some(e) => format!(
            "undecodable ({}: {}) base64 {}",
            plain(&e["kind"]),
            plain(&e["message"]),
            plain(&record["value_base64"])
        ),
        None => plain(&record["value"]),
    });
    if with_headers {
        cols.push(plain(&record["headers"]));
    }
    cols.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_base64() {
        assert_eq!(text_or_base64(b"abc"), json!("abc"));
        assert_eq!(text_or_base64(&[0xff, 0]), json!({"base64": "/wA="}));
    }

    #[test]
    fn a_row_says_why_a_value_does_not_decode() {
        let r = json!({"partition": 1, "offset": 7, "timestamp": "t", "key": null,
            "value": null, "value_base64": "AAE=", "error": {"kind": "bad_magic_byte", "message": "m"},
            "headers": {"h": "v"}});
        let row = to_row(&r, true);
        assert!(
            row.starts_with("1:7  t  -  undecodable (bad_magic_byte: m) base64 AAE="),
            "{row}"
        );
        assert!(row.ends_with(r#"{"h":"v"}"#), "{row}");
    }
}
