//! A processor under test in a process of its own: started, watched through
//! `/proc` (CPU time and resident memory, sampled every few milliseconds
//! with the wall-clock time of each sample), and stopped with SIGTERM.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// One reading of the process's counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall clock, ms since the epoch (the broker's append times are on it).
    pub at_ms: i64,
    /// User and system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Resident set now, bytes.
    pub rss: u64,
}

pub struct Watched {
    child: Child,
    pub started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    done: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
    name: String,
    log: std::path::PathBuf,
}

const EVERY: Duration = Duration::from_millis(20);

impl Watched {
    /// Starts `command` with its stderr in `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Watched> {
        let err = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({command:?}): {e}"))?;
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let pid = child.id();
        let sampler = {
            let (samples, done) = (samples.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    match read(pid) {
                        Some(s) => samples.lock().unwrap_or_else(|p| p.into_inner()).push(s),
                        None => break,
                    }
                    std::thread::sleep(EVERY);
                }
            })
        };
        Ok(Watched {
            child,
            started,
            samples,
            done,
            sampler: Some(sampler),
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Fails with the process's log if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            anyhow::bail!(
                "{} exited ({status}) during the run; the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The peak resident set so far (the kernel's high-water mark), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        kb_field(&status, "VmHWM:")
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        self.done.store(true, Ordering::Release);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(process = %self.name, "did not stop within {grace:?} of SIGTERM; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn now_ms() -> i64 {
    sluice::topology::clock::wall_clock_ms()
}

fn read(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // The command name may hold spaces and parentheses: count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Sample {
        at_ms: now_ms(),
        cpu_s: ticks as f64 / CLOCK_TICKS,
        rss: kb_field(&status, "VmRSS:")?,
    })
}

/// Resident memory of process `pid`, bytes (Linux).
pub fn resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&status, "VmRSS:")
}

/// USER_HZ, which Linux fixes at 100 for /proc on every architecture it ships.
const CLOCK_TICKS: f64 = 100.0;

fn kb_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU seconds the process spent between two wall-clock instants, from
/// the samples nearest them.
pub fn cpu_between(samples: &[Sample], from_ms: i64, to_ms: i64) -> Option<f64> {
    let at = |t: i64| {
        samples
            .iter()
            .min_by_key(|s| (s.at_ms - t).abs())
            .map(|s| s.cpu_s)
    };
    Some(at(to_ms)? - at(from_ms)?)
}

/// The median resident set over a span of wall-clock time.
pub fn median_rss(samples: &[Sample], from_ms: i64, to_ms: i64) -> Option<u64> {
    let mut rss: Vec<u64> = samples
        .iter()
        .filter(|s| s.at_ms >= from_ms && s.at_ms <= to_ms)
        .map(|s| s.rss)
        .collect();
    rss.sort_unstable();
    rss.get(rss.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let s = read(std::process::id()).expect("/proc of this process");
        assert!(s.rss > 1 << 20, "{s:?}");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(kb_field(&status, "VmHWM:").unwrap() >= s.rss / 2);
    }

    #[test]
    fn spans_pick_the_nearest_samples() {
        let s = |at_ms, cpu_s, rss| Sample { at_ms, cpu_s, rss };
        let samples = [
            s(0, 1.0, 10),
            s(100, 1.5, 30),
            s(200, 2.5, 20),
            s(300, 2.6, 40),
        ];
        assert_eq!(cpu_between(&samples, 90, 210), Some(1.0));
        assert_eq!(median_rss(&samples, 100, 300), Some(30));
    }
}
