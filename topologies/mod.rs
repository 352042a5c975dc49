//! The shipped topologies. A new topology is one file here plus one line in
//! `ALL`.

pub mod iot_alerts;
pub mod user_login;

use crate::topology::{BuildError, Topology};

type Build = fn() -> Result<Topology, BuildError>;

/// Every shipped topology by name.
pub const ALL: &[(&str, Build)] = &[
    (user_login::NAME, user_login::build),
    (iot_alerts::NAME, iot_alerts::build),
];

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|(n, _)| *n).collect()
}

pub fn build(name: &str) -> Option<Result<Topology, BuildError>> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| b())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_topology_builds_under_its_own_name() {
        for (name, build) in super::ALL {
            assert_eq!(build().unwrap().description.name, *name);
        }
    }
}
