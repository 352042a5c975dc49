//! The topologies a binary runs, by name: what `sluice run --topology`,
//! `sluice topologies` and `sluice topics create` choose from.

use std::sync::Arc;

pub use sluice::topology::Settings;
use sluice::topology::{BuildError, Topology};

type Build = Arc<dyn Fn(&Settings) -> Result<Topology, BuildError> + Send + Sync>;

/// Topologies by name, each built on demand with the run's settings.
#[derive(Clone, Default)]
pub struct Catalog {
    entries: Vec<(String, Build)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The user named a topology that does not exist.
    #[error("unknown topology {name:?}; known topologies: {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a topology named `name`, built by `build`.
    pub fn topology(
        mut self,
        name: &str,
        build: impl Fn(&Settings) -> Result<Topology, BuildError> + Send + Sync + 'static,
    ) -> Self {
        self.entries.push((name.to_string(), Arc::new(build)));
        self
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Builds the topologies named; all of them when none is.
    pub fn select(
        &self,
        names: &[String],
        settings: &Settings,
    ) -> Result<Vec<Topology>, SelectError> {
        let wanted: Vec<&str> = if names.is_empty() {
            self.names()
        } else {
            names.iter().map(String::as_str).collect()
        };
        wanted
            .into_iter()
            .map(|n| match self.entries.iter().find(|(name, _)| name == n) {
                Some((_, build)) => Ok(build(settings)?),
                None => Err(SelectError::Unknown {
                    name: n.to_string(),
                    known: self.names().join(", "),
                }),
            })
            .collect()
    }

    /// Every topology, built with default settings.
    pub fn all(&self) -> Result<Vec<Topology>, SelectError> {
        self.select(&[], &Settings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let c = Catalog::new()
            .topology("a", |_| Err(BuildError::NoSource("a".into())))
            .topology("b", |_| Err(BuildError::NoSource("b".into())));
        let e = c
            .select(&["zzz".into()], &Settings::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"zzz\"") && e.contains("a, b"), "{e}");
        assert!(matches!(
            c.select(&["b".into()], &Settings::default()),
            Err(SelectError::Build(BuildError::NoSource(n))) if n == "b"
        ));
    }
}
