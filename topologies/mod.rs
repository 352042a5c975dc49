//! The shipped topologies. A new topology is one file here plus one line in
//! `ALL`.

pub mod iot_alerts;
pub mod iot_readings;
pub mod iot_window_aggregates;
pub mod iot_windows;
pub mod user_login;

use std::time::Duration;

use sluice::prelude::*;

/// What a deployment may tune in the shipped topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Windows of the windowed topologies.
    pub window: WindowSpec,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10)),
        }
    }
}

type Build = fn(&Settings) -> Result<Topology, BuildError>;

/// Every shipped topology by name.
pub const ALL: &[(&str, Build)] = &[
    (user_login::NAME, |_| user_login::build()),
    (iot_windows::NAME, |s| iot_windows::build(s.window)),
    (iot_alerts::NAME, |_| iot_alerts::build()),
    (iot_readings::NAME, |_| iot_readings::build()),
    (iot_window_aggregates::NAME, |s| {
        iot_window_aggregates::build(s.window)
    }),
];

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The user named a topology that does not exist.
    #[error("unknown topology {name:?}; known topologies: {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Picks topologies by name; all of them when none is named.
pub fn select(names: &[String], settings: &Settings) -> Result<Vec<Topology>, SelectError> {
    let wanted: Vec<&str> = if names.is_empty() {
        self::names()
    } else {
        names.iter().map(String::as_str).collect()
    };
    wanted
        .into_iter()
        .map(|n| match build(n, settings) {
            Some(t) => Ok(t?),
            None => Err(SelectError::Unknown {
                name: n.to_string(),
                known: self::names().join(", "),
            }),
        })
        .collect()
}

pub fn build(name: &str, settings: &Settings) -> Option<Result<Topology, BuildError>> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b(settings))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_topology_builds_under_its_own_name() {
        for (name, build) in super::ALL {
            let settings = super::Settings::default();
            assert_eq!(build(&settings).unwrap().description.name, *name);
        }
    }
}
