//! A dead-letter (or late) topic summed up: letters by reason and by source
//! partition, the time range, and the first letters of each reason with
//! their message, source coordinates and value, decoded where it decodes.

use std::collections::BTreeMap;

use rdkafka::message::{Message, OwnedMessage};
use serde_json::{Value, json};

use super::{NO_REASON, REPLAYED_FROM, read::header, view};
use sluice::{avro::AvroCodec, runtime::letters};

#[derive(Debug, Default)]
pub struct Summary {
    pub topic: String,
    pub letters: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub by_reason: BTreeMap<String, u64>,
    /// `topic/partition` of the records the letters stand for.
    pub by_source: BTreeMap<String, u64>,
    pub first: BTreeMap<String, Vec<Value>>,
    keep: usize,
}

impl Summary {
    /// Keeps the first `keep` letters of each reason.
    pub fn new(topic: &str, keep: usize) -> Summary {
        Summary {
            topic: topic.to_string(),
            keep,
            ..Default::default()
        }
    }

    pub async fn add(&mut self, codec: &AvroCodec, m: &OwnedMessage) {
        self.letters += 1;
        if let Some(ms) = view::timestamp_ms(m) {
            self.first_ms = Some(self.first_ms.map_or(ms, |f| f.min(ms)));
            self.last_ms = Some(self.last_ms.map_or(ms, |l| l.max(ms)));
        }
        let reason = header(m, letters::KIND).unwrap_or(NO_REASON).to_string();
        let source = format!(
            "{}/{}",
            header(m, letters::TOPIC).unwrap_or("?"),
            header(m, letters::PARTITION).unwrap_or("?")
        );
        *self.by_source.entry(source).or_default() += 1;
        *self.by_reason.entry(reason.clone()).or_default() += 1;
        let kept = self.first.entry(reason).or_default();
        if kept.len() < self.keep {
            let d = view::decode(codec, m.payload()).await;
            let mut letter = json!({
                "offset": m.offset(),
                "partition": m.partition(),
                "timestamp": view::timestamp_ms(m).map(view::rfc3339),
                "message": header(m, letters::MESSAGE),
                "source_topic": header(m, letters::TOPIC),
                "source_partition": header(m, letters::PARTITION).and_then(|p| p.parse::<i64>().ok()),
                "source_offset": header(m, letters::OFFSET).and_then(|p| p.parse::<i64>().ok()),
                "value": d.value,
            });
            if let Some((b64, kind, message)) = d.undecodable {
                letter["value_base64"] = b64.into();
                letter["value_error"] = json!({ "kind": kind, "message": message });
            }
            if let Some(from) = header(m, REPLAYED_FROM) {
                letter["replayed_from"] = from.into();
            }
            kept.push(letter);
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "topic": self.topic,
            "letters": self.letters,
            "first_timestamp": self.first_ms.map(view::rfc3339),
            "last_timestamp": self.last_ms.map(view::rfc3339),
            "by_reason": self.by_reason,
            "by_source_partition": self.by_source,
            "first": self.first,
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = format!("{}: {} letters", self.topic, self.letters);
        if let (Some(f), Some(l)) = (self.first_ms, self.last_ms) {
            out += &format!(", {} to {}", view::rfc3339(f), view::rfc3339(l));
        }
        out += "\n";
        if self.letters == 0 {
            return out;
        }
        let width = |m: &BTreeMap<String, u64>| m.keys().map(String::len).max().unwrap_or(0);
        out += "\nby reason:\n";
        let w = width(&self.by_reason);
        for (r, n) in &self.by_reason {
            out += &format!("  {r:<w$}  {n}\n");
        }
        out += "\nby source partition:\n";
        let w = width(&self.by_source);
        for (s, n) in &self.by_source {
            out += &format!("  {s:<w$}  {n}\n");
        }
        for (reason, kept) in &self.first {
            out += &format!("\nfirst {} of {reason}:\n", kept.len());
            for l in kept {
                out += &format!(
                    "  {}/{}@{}  {}  (letter {}:{})\n    {}\n    value: {}\n",
                    view::plain(&l["source_topic"]),
                    view::plain(&l["source_partition"]),
                    view::plain(&l["source_offset"]),
                    view::plain(&l["timestamp"]),
                    l["partition"],
                    l["offset"],
                    view::plain(&l["message"]),
                    match l.get("value_error") {
                        Some(e) => format!(
                            "undecodable ({}), base64 {}",
                            view::plain(&e["kind"]),
                            view::plain(&l["value_base64"])
                        ),
                        None => view::plain(&l["value"]),
                    }
                );
            }
        }
        out
    }
}
