//! The registry's rules, free of storage: schema parsing and identity,
//! compatibility levels, version resolution and the plans for registering and
//! deleting. Both stores run these same functions under their own lock, so
//! memory and PostgreSQL behave identically.

use std::{fmt, str::FromStr};

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
};

use super::error::RegistryError;

/// Compatibility levels, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const DEFAULT: Level = Level::Backward;

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// (new must read old, old must read new)
    fn directions(self) -> (bool, bool) {
        match self {
            Level::None => (false, false),
            Level::Backward | Level::BackwardTransitive => (true, false),
            Level::Forward | Level::ForwardTransitive => (false, true),
            Level::Full | Level::FullTransitive => (true, true),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return Err(RegistryError::InvalidCompatibilityLevel(s.to_string())),
        })
    }
}

/// A validated Avro schema and the text that identifies it: the schema as
/// apache-avro writes it back, so whitespace and key order do not make a new id.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    pub canonical: String,
    pub schema: Schema,
}

pub fn parse_schema(text: &str) -> Result<ParsedSchema, RegistryError> {
    if text.trim().is_empty() {
        return Err(RegistryError::InvalidSchema("empty schema".into()));
    }
    let schema =
        Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let canonical = serde_json::to_string(&schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("cannot serialise schema: {e}")))?;
    Ok(ParsedSchema { canonical, schema })
}

/// One version of a subject, soft-deleted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub version: i32,
    pub id: i64,
    pub schema: String,
    pub deleted: bool,
}

/// `latest`, `-1` (Confluent's alias for latest) or a positive version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl FromStr for VersionSpec {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

/// The versions a request may see: live ones, or all when `include_deleted`.
/// An empty result means the subject does not exist for this request.
pub fn visible(versions: &[VersionRecord], include_deleted: bool) -> Vec<&VersionRecord> {
    versions
        .iter()
        .filter(|v| include_deleted || !v.deleted)
        .collect()
}

pub fn resolve_version<'a>(
    subject: &str,
    versions: &'a [VersionRecord],
    spec: VersionSpec,
    include_deleted: bool,
) -> Result<&'a VersionRecord, RegistryError> {
    let seen = visible(versions, include_deleted);
    if seen.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject.to_string()));
    }
    let found = match spec {
        VersionSpec::Latest => seen.last().copied(),
        VersionSpec::Number(n) => seen.into_iter().find(|v| v.version == n),
    };
    found.ok_or_else(|| RegistryError::VersionNotFound {
        subject: subject.to_string(),
        version: match spec {
            VersionSpec::Latest => "latest".into(),
            VersionSpec::Number(n) => n.to_string(),
        },
    })
}

/// Why `new` does not fit `existing` under `level`, one message per broken
/// pair; empty when compatible. `existing` is in version order.
pub fn incompatibilities(level: Level, new: &Schema, existing: &[(i32, Schema)]) -> Vec<String> {
    let (backward, forward) = level.directions();
    let against = if level.transitive() {
        existing
    } else {
        &existing[existing.len().saturating_sub(1)..]
    };
    let mut out = Vec::new();
    for (version, old) in against {
        if backward && let Some(why) = cannot_read(old, new) {
            out.push(format!(
                "{level}: the new schema cannot read data written with version {version}: {why}"
            ));
        }
        if forward && let Some(why) = cannot_read(new, old) {
            out.push(format!(
                "{level}: version {version} cannot read data written with the new schema: {why}"
            ));
        }
    }
    out
}

/// Why `reader` cannot read all data written with `writer`, if it cannot.
/// A partial match (an enum symbol or union branch the reader lacks) fails on
/// some records, so it counts as incompatible, as in Confluent's checker.
fn cannot_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(
            "some values cannot be read: the reader lacks an enum symbol or union branch the writer has"
                .into(),
        ),
        Err(e) => Some(e.to_string()),
    }
}

/// Parses the stored texts of the live versions for a compatibility check.
pub fn live_schemas(versions: &[VersionRecord]) -> Result<Vec<(i32, Schema)>, RegistryError> {
    versions
        .iter()
        .filter(|v| !v.deleted)
        .map(|v| {
            Schema::parse_str(&v.schema)
                .map(|s| (v.version, s))
                .map_err(|e| {
                    RegistryError::Store(format!("stored schema id {} unreadable: {e}", v.id))
                })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterPlan {
    /// The subject already has this schema live: same id, nothing written.
    Existing { id: i64, version: i32 },
    /// Write a new version with this number.
    New { version: i32 },
}

pub fn plan_register(
    subject: &str,
    versions: &[VersionRecord],
    level: Level,
    new: &ParsedSchema,
) -> Result<RegisterPlan, RegistryError> {
    if let Some(v) = versions
        .iter()
        .find(|v| !v.deleted && v.schema == new.canonical)
    {
        return Ok(RegisterPlan::Existing {
            id: v.id,
            version: v.version,
        });
    }
    let problems = incompatibilities(level, &new.schema, &live_schemas(versions)?);
    if !problems.is_empty() {
        return Err(RegistryError::Incompatible {
            subject: subject.to_string(),
            details: problems,
        });
    }
    let next = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    Ok(RegisterPlan::New { version: next })
}

/// Versions a subject delete removes. Soft first, then permanent, as Confluent.
pub fn plan_delete_subject(
    subject: &str,
    versions: &[VersionRecord],
    permanent: bool,
) -> Result<Vec<i32>, RegistryError> {
    if versions.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject.to_string()));
    }
    let any_live = versions.iter().any(|v| !v.deleted);
    match (permanent, any_live) {
        (false, false) => Err(RegistryError::SubjectSoftDeleted(subject.to_string())),
        (true, true) => Err(RegistryError::SubjectNotSoftDeleted(subject.to_string())),
        (false, true) => Ok(versions
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| v.version)
            .collect()),
        (true, false) => Ok(versions.iter().map(|v| v.version).collect()),
    }
}

pub fn plan_delete_version(
    subject: &str,
    versions: &[VersionRecord],
    spec: VersionSpec,
    permanent: bool,
) -> Result<i32, RegistryError> {
    // A numbered version is looked up among deleted ones too, so deleting it
    // twice says "already soft deleted" rather than "not found".
    let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
    let target = resolve_version(subject, versions, spec, include_deleted)?;
    match (permanent, target.deleted) {
        (false, true) => Err(RegistryError::VersionSoftDeleted {
            subject: subject.to_string(),
            version: target.version,
        }),
        (true, false) => Err(RegistryError::VersionNotSoftDeleted {
            subject: subject.to_string(),
            version: target.version,
        }),
        _ => Ok(target.version),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
