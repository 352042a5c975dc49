//! What a run cost in CPU, per record: the whole machine's busy time and
//! this process's share of it, read from `/proc`. On a small shared machine
//! throughput swings with whatever else runs, while the CPU a record costs
//! holds steady; the two together say whether a run was short of CPU or of
//! something else.

use std::fmt;

/// Cumulative counters at one instant (Linux only; elsewhere none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Clock ticks of every CPU, busy or idle.
    total: u64,
    /// Of those, idle (including waiting for I/O).
    idle: u64,
    /// Clock ticks this process ran, user and system.
    process: u64,
    cpus: u32,
}

impl Sample {
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Sample::parse(&stat, &own)
    }

    fn parse(stat: &str, own: &str) -> Option<Sample> {
        let mut lines = stat.lines();
        let all: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal; guest time is
        // already inside user.
        let total = all.iter().take(8).sum();
        let idle = all.get(3)? + all.get(4).copied().unwrap_or(0);
        let cpus = lines.filter(|l| l.starts_with("cpu")).count() as u32;
        // The command name may hold spaces and parentheses: count from the last ')'.
        let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Sample {
            total,
            idle,
            process,
            cpus: cpus.max(1),
        })
    }

    /// What happened between `earlier` and this sample, over `records`.
    pub fn since(&self, earlier: &Sample, records: u64, seconds: f64) -> Option<Cost> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 || records == 0 {
            return None;
        }
        // Ticks cancel out: shares of the ticks that passed, times the CPU
        // time that passed.
        let cpu_seconds = seconds * f64::from(self.cpus);
        let share = |ticks: u64| ticks as f64 / total as f64;
        let per_record = |ticks: u64| share(ticks) * cpu_seconds * 1e6 / records as f64;
        let idle = self.idle.saturating_sub(earlier.idle);
        let process = self.process.saturating_sub(earlier.process);
        Some(Cost {
            busy_us: per_record(total.saturating_sub(idle)),
            process_us: per_record(process),
            idle: share(idle),
        })
    }
}

/// CPU time per record, in microseconds of one core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Everything the machine ran: sluice, the broker, anything else.
    pub busy_us: f64,
    /// This process: the processor under test, the reader, their clients.
    pub process_us: f64,
    /// The share of the machine's CPU time that went unused.
    pub idle: f64,
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  CPU per record: {:.2} µs (sluice {:.2}, broker and the rest {:.2}), {:.0} % idle",
            self.busy_us,
            self.process_us,
            (self.busy_us - self.process_us).max(0.0),
            100.0 * self.idle
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";

    fn own(utime: u64, stime: u64) -> String {
        format!("42 (sluice (x)) R 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 9 0")
    }

    #[test]
    fn parses_proc_and_splits_cost_per_record() {
        let a = Sample::parse(STAT, &own(10, 5)).unwrap();
        assert_eq!((a.total, a.idle, a.process, a.cpus), (1000, 850, 15, 2));
        let later = "cpu  220 0 80 860 60 0 0 0 0 0\ncpu0 1\ncpu1 1\n";
        let b = Sample::parse(later, &own(90, 15)).unwrap();
        // 220 ticks passed, 70 of them idle; the process ran 90 of them.
        // Over 1 s on 2 CPUs and 1 000 records: 2e6 µs / 1 000 × share.
        let c = b.since(&a, 1000, 1.0).unwrap();
        assert!((c.busy_us - 2000.0 * 150.0 / 220.0).abs() < 1e-9, "{c:?}");
        assert!((c.process_us - 2000.0 * 90.0 / 220.0).abs() < 1e-9, "{c:?}");
        assert!((c.idle - 70.0 / 220.0).abs() < 1e-12);
        assert!(c.to_string().contains("32 % idle"), "{c}");
    }

    #[test]
    fn nothing_to_say_without_time_or_records() {
        let a = Sample::parse(STAT, &own(1, 1)).unwrap();
        assert_eq!(a.since(&a, 10, 1.0), None);
        assert!(Sample::parse("intr 1\n", &own(1, 1)).is_none());
        assert!(Sample::parse(STAT, "garbage").is_none());
    }

    #[test]
    fn reads_this_machine() {
        if cfg!(target_os = "linux") {
            let s = Sample::now().expect("/proc is readable on Linux");
            assert!(s.total > 0 && s.cpus >= 1);
        }
    }
}
