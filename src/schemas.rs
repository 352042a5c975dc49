//! Schemas by topic: a value schema of `<topic>` is registered under the
//! subject `<topic>-value` (Confluent's TopicNameStrategy). Topologies
//! carry theirs (`Topology::schemas`); a directory of `<topic>.avsc`
//! files can be read too.

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

/// A topology's schemas as files: (topic, schema text) pairs.
pub fn files(schemas: &[(String, String)]) -> Vec<SchemaFile> {
    schemas
        .iter()
        .map(|(topic, text)| SchemaFile {
            topic: topic.clone(),
            text: text.clone(),
        })
        .collect()
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
