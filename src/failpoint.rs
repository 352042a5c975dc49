//! Crash injection for the fault tests: `SLUICE_FAILPOINT=NAME@N` aborts
//! the process the N-th time the named point is reached, so a test can kill
//! a worker at an exact moment (say, right after the SQL commit and before
//! anything else). Only with the `failpoints` feature, which the tests
//! enable; without it `hit` is nothing.

#[cfg(feature = "failpoints")]
use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

#[cfg(feature = "failpoints")]
struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

#[cfg(feature = "failpoints")]
fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("SLUICE_FAILPOINT").ok()?;
            let (name, at) = spec.split_once('@').unwrap_or((&spec, "1"));
            Some(Armed {
                name: name.to_string(),
                at: at.parse().ok()?,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts here if this point is armed and its turn has come.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Aborts here if this point is armed and its turn has come.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
