//! Event-time windows: window kinds, per-partition watermarks with idle
//! detection, grace periods, late records and mergeable aggregates. Pure
//! logic driven by explicit timestamps, so the runtime (and tests) decide
//! what "now" is.

mod aggregate;
mod state;
mod watermark;

pub use aggregate::{Aggregate, Columns, Fold, Stats, Value, ValueType};
pub use state::{Closed, Late, Update, WindowState};
pub use watermark::Watermarks;

use std::time::Duration;

/// A window as a half-open interval of event time, [start, end), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// How records are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows aligned to the epoch.
    Tumbling { size: Duration },
    /// Fixed-size windows starting every `advance`; a record falls in
    /// size / advance of them.
    Hopping { size: Duration, advance: Duration },
    /// Per key, records closer than `gap` in event time form one session,
    /// [first record, last record + gap); a record that bridges two
    /// sessions merges them.
    Session { gap: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window size must be at least 1 ms")]
    ZeroSize,
    #[error("hopping advance must be at least 1 ms and at most the window size")]
    BadAdvance,
    #[error("session gap must be at least 1 ms")]
    ZeroGap,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WindowKind {
    pub fn validate(&self) -> Result<(), WindowError> {
        match *self {
            WindowKind::Tumbling { size } if ms(size) < 1 => Err(WindowError::ZeroSize),
            WindowKind::Hopping { size, .. } if ms(size) < 1 => Err(WindowError::ZeroSize),
            WindowKind::Hopping { size, advance } if ms(advance) < 1 || advance > size => {
                Err(WindowError::BadAdvance)
            }
            WindowKind::Session { gap } if ms(gap) < 1 => Err(WindowError::ZeroGap),
            _ => Ok(()),
        }
    }

    /// The windows a record with event time `ts` belongs to, oldest first;
    /// for sessions, the session the record alone would make.
    pub fn windows_for(&self, ts: i64) -> Vec<Window> {
        let (size, advance) = match *self {
            WindowKind::Tumbling { size } => (ms(size), ms(size)),
            WindowKind::Hopping { size, advance } => (ms(size), ms(advance)),
            WindowKind::Session { gap } => {
                return vec![Window {
                    start_ms: ts,
                    end_ms: ts.saturating_add(ms(gap)),
                }];
            }
        };
        // The latest window start at or before ts, then walk back while the
        // window still covers ts.
        let last_start = ts.div_euclid(advance) * advance;
        let mut out = Vec::with_capacity((size / advance) as usize + 1);
        let mut start = last_start;
        while start > ts - size {
            out.push(Window {
                start_ms: start,
                end_ms: start + size,
            });
            start -= advance;
        }
        out.reverse();
        out
    }
}

/// Everything that decides when a window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// How long after a window's end records are still accepted into it.
    pub grace: Duration,
    /// How far behind the highest event time seen a partition's watermark trails.
    pub out_of_order: Duration,
    /// A partition with no records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
}

impl WindowSpec {
    pub fn tumbling(size: Duration, grace: Duration) -> WindowSpec {
        WindowSpec {
            kind: WindowKind::Tumbling { size },
            grace,
            out_of_order: Duration::ZERO,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// Session windows: a session closes `grace` after its end (its last
    /// record plus `gap`).
    pub fn session(gap: Duration, grace: Duration) -> WindowSpec {
        WindowSpec {
            kind: WindowKind::Session { gap },
            ..WindowSpec::tumbling(gap, grace)
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self.kind, WindowKind::Session { .. })
    }

    /// The watermark at which `w` is final.
    pub fn closes_at(&self, w: Window) -> i64 {
        w.end_ms.saturating_add(ms(self.grace))
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
