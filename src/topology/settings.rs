//! What a deployment may tune when it builds a topology: one set of
//! settings for the command line's flags and every crate of topologies.

use std::time::Duration;

use crate::window::WindowSpec;

/// Settings a topology may take when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The windows of windowed topologies (`--window-size`, `--window-grace`, …).
    pub window: WindowSpec,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: WindowSpec::tumbling(Duration::from_secs(60), Duration::from_secs(10)),
        }
    }
}
