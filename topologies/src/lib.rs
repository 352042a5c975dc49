//! The topologies that ship with sluice, declared exactly as a user's own
//! crate declares its topologies: `user-login`, `iot-windows`,
//! `iot-readings`, `iot-events`, `iot-enriched`, `logins-by-locale` and
//! `logins-by-locale-pg`. A new
//! topology is one file here plus one line in `ALL`.

pub mod iot_alerts;
pub mod iot_enriched;
pub mod iot_events;
pub mod iot_readings;
pub mod iot_windows;
pub mod logins_by_locale;
pub mod user_login;

use sluice::prelude::*;
pub use sluice::topology::Settings;

type Build = fn(&Settings) -> Result<Topology, BuildError>;

/// Every shipped topology by name.
pub const ALL: &[(&str, Build)] = &[
    (user_login::NAME, |_| user_login::build()),
    (iot_windows::NAME, |s| iot_windows::build(s.window)),
    (iot_events::NAME, |s| iot_events::build(s.window)),
    (iot_readings::NAME, |_| iot_readings::build()),
    (iot_enriched::NAME, |_| iot_enriched::build()),
    (logins_by_locale::NAME, |_| logins_by_locale::build()),
    (logins_by_locale::pg::NAME, |_| logins_by_locale::build_pg()),
];

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|(n, _)| *n).collect()
}

/// Every shipped topology, built with `settings`.
pub fn all(settings: &Settings) -> Result<Vec<Topology>, BuildError> {
    ALL.iter().map(|(_, b)| b(settings)).collect()
}

pub fn build(name: &str, settings: &Settings) -> Option<Result<Topology, BuildError>> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b(settings))
}

/// The schema of every topic the shipped topologies read or write (what
/// the simulators write with, and `sluice schemas` lists); not their
/// repartition topics', which are sluice's own.
pub fn schemas() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let units = all(&Settings::default())
        .unwrap_or_default()
        .into_iter()
        .flat_map(Topology::units);
    let units: Vec<Topology> = units.collect();
    let internal: Vec<&String> = units
        .iter()
        .flat_map(|t| &t.description.repartitions)
        .collect();
    for t in &units {
        for s in t.schemas() {
            if !internal.contains(&&s.0) && !out.iter().any(|(topic, _)| *topic == s.0) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// The schema of `topic`'s values.
pub fn schema_for(topic: &str) -> Option<String> {
    schemas()
        .into_iter()
        .find(|(t, _)| t == topic)
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn every_topology_builds_under_its_own_name() {
        for (name, build) in super::ALL {
            let settings = super::Settings::default();
            assert_eq!(build(&settings).unwrap().description.name, *name);
        }
    }

    #[test]
    fn every_schema_file_is_used_documented_and_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let files = sluice::schemas::load_dir(&dir).unwrap();
        let used = super::schemas();
        for f in &files {
            assert!(
                used.iter().any(|(t, s)| *t == f.topic && *s == f.text),
                "schemas/{}.avsc is not the schema of a topic a shipped topology uses",
                f.topic
            );
            let json: serde_json::Value = serde_json::from_str(&f.text).unwrap();
            assert!(
                json["namespace"].as_str().is_some_and(|n| !n.is_empty()),
                "{}",
                f.topic
            );
            for field in json["fields"].as_array().unwrap() {
                assert!(
                    field["doc"].as_str().is_some_and(|d| !d.is_empty()),
                    "{}: field {} has no doc",
                    f.topic,
                    field["name"]
                );
            }
        }
        assert_eq!(files.len(), used.len());
    }
}
