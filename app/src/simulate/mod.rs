//! Data generators that produce realistic records, a share of them bad, to
//! exercise the topologies and their dead-letter paths.

pub mod host;
pub mod iot;
pub mod logins;
pub mod metrics;
