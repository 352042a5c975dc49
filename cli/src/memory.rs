//! Gives freed memory back to the system now and then. librdkafka
//! allocates with glibc's malloc, which keeps what a burst freed (fetched
//! batches, queued records) in its arenas: after catching up a backlog a
//! worker stayed about 90 MB above its idle size, the memory free but
//! resident. Trimming every few seconds returns it (measured: steady RSS at
//! 10 000 records/s after a million-record backlog, 128 → 59 MB). A trim
//! took 0.2–1.8 ms, off the runtime's threads; no latency stall lined up
//! with one (docs/benchmarks.md, 2026-12-05).
//!
//! glibc also gives each thread that allocates an arena of its own, up to
//! eight per core, and each keeps some freed memory however often it is
//! trimmed: with a second transactional producer (its librdkafka threads)
//! the steady RSS rose from 63 to 69 MB; two arenas brought it back to
//! 63 MB with the same latency and records/s.

use std::time::Duration;

/// At most two malloc arenas (glibc; elsewhere nothing). Call before
/// threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX
    // takes effect for arenas made from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Starts the trimming task on the current Tokio runtime (Linux with glibc
/// only; elsewhere nothing).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            // Off the runtime's threads: a trim walks every arena.
            // SAFETY: malloc_trim only returns free memory to the system.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}

const EVERY: Duration = Duration::from_secs(2);
