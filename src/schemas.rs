//! The Avro schemas in `schemas/`, compiled into the binary. A file
//! `schemas/<topic>.avsc` is the value schema of `<topic>`, registered under
//! the subject `<topic>-value` (Confluent's TopicNameStrategy).

use std::path::Path;

use apache_avro::Schema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub topic: String,
    pub text: String,
}

impl SchemaFile {
    pub fn subject(&self) -> String {
        value_subject(&self.topic)
    }
}

pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

macro_rules! embedded {
    ($($topic:literal),* $(,)?) => {
        &[$(($topic, include_str!(concat!("../schemas/", $topic, ".avsc")))),*]
    };
}

/// (topic, schema text) for every file in `schemas/`; a test keeps this list
/// and the directory in step.
pub const EMBEDDED: &[(&str, &str)] = embedded![
    "user-login",
    "processed-user-login",
    "iot_sensor_data",
    "iot-alerts",
    "iot-window-aggregates",
];

pub fn embedded() -> Vec<SchemaFile> {
    EMBEDDED
        .iter()
        .map(|(topic, text)| SchemaFile {
            topic: topic.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// The text of the embedded schema of a topic's values.
pub fn text_for(topic: &str) -> Option<&'static str> {
    EMBEDDED
        .iter()
        .find(|(t, _)| *t == topic)
        .map(|(_, text)| *text)
}

/// The parsed embedded schema of a topic's values.
pub fn for_topic(topic: &str) -> Option<Schema> {
    text_for(topic)
        .map(|text| Schema::parse_str(text).expect("embedded schemas are tested to parse"))
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaDirError {
    #[error("cannot read schema directory {dir}: {cause}")]
    Io { dir: String, cause: std::io::Error },
    #[error("{file} is not a valid Avro schema: {reason}")]
    Invalid { file: String, reason: String },
    #[error("{dir} holds no .avsc files")]
    Empty { dir: String },
}

/// Reads `*.avsc` from a directory, sorted by topic, each checked to parse.
pub fn load_dir(dir: &Path) -> Result<Vec<SchemaFile>, SchemaDirError> {
    let io = |cause| SchemaDirError::Io {
        dir: dir.display().to_string(),
        cause,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("avsc") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        Schema::parse_str(&text).map_err(|e| SchemaDirError::Invalid {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let topic = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.push(SchemaFile { topic, text });
    }
    if out.is_empty() {
        return Err(SchemaDirError::Empty {
            dir: dir.display().to_string(),
        });
    }
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let on_disk = load_dir(&dir).unwrap();
        let mut compiled = embedded();
        compiled.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(
            on_disk, compiled,
            "add new schemas/*.avsc files to EMBEDDED"
        );
    }

    #[test]
    fn every_schema_has_a_namespace_and_documents_every_field() {
        for (topic, text) in EMBEDDED {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(
                json["namespace"].as_str().is_some_and(|n| !n.is_empty()),
                "{topic}"
            );
            for field in json["fields"].as_array().unwrap() {
                assert!(
                    field["doc"].as_str().is_some_and(|d| !d.is_empty()),
                    "{topic}: field {} has no doc",
                    field["name"]
                );
            }
            assert!(for_topic(topic).is_some());
        }
    }

    #[test]
    fn bad_directories_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(SchemaDirError::Empty { .. })
        ));
        std::fs::write(dir.path().join("t.avsc"), "{\"type\":\"nope\"}").unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(SchemaDirError::Invalid { .. })
        ));
        assert!(matches!(
            load_dir(&dir.path().join("missing")),
            Err(SchemaDirError::Io { .. })
        ));
    }
}
