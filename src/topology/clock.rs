//! Processing time: the wall-clock time at which the current record entered
//! the operators. Read once per record, so operators that stamp or compare
//! times see one consistent instant and do not each ask the OS.

use std::cell::Cell;

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(0) };
}

/// Called by the runtime as each record starts through the operators.
pub(crate) fn start_record() {
    NOW_MS.with(|n| n.set(wall_clock_ms()));
}

/// chrono's `Utc::now()` also builds a calendar date, which per record is
/// measurable; the epoch offset is all that is needed here.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch at which the current record started being
/// processed; outside the runtime (tests, tools), the current time.
pub fn processing_time_ms() -> i64 {
    match NOW_MS.with(Cell::get) {
        0 => wall_clock_ms(),
        t => t,
    }
}
