//! Rounds of the four topic-to-topic runs, and their medians.

use std::fmt;

use super::{e2e, floor, runtime};

/// One round: the ceiling, the exactly-once floor, sluice's runtime alone,
/// and the topology.
pub struct Round {
    pub ceiling: e2e::Measured,
    pub floor: e2e::Measured,
    pub runtime: e2e::Measured,
    pub topology: e2e::Measured,
}

impl Round {
    fn share(&self, m: &e2e::Measured) -> f64 {
        100.0 * m.throughput.rate() / self.ceiling.throughput.rate()
    }

    pub fn topology_share(&self) -> f64 {
        self.share(&self.topology)
    }

    pub fn runtime_share(&self) -> f64 {
        self.share(&self.runtime)
    }

    /// The pass-through's CPU per record as a share of `m`'s: the share of
    /// the ceiling `m` reaches when both are short of nothing but CPU.
    pub fn cpu_share(&self, m: &e2e::Measured) -> Option<f64> {
        match (self.ceiling.cpu, m.cpu) {
            (Some(c), Some(m)) if m.busy_us > 0.0 => Some(100.0 * c.busy_us / m.busy_us),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Run {
    PassThrough,
    Floor,
    Runtime,
    Topology,
}

/// Runs the four, printing each result; round `n` starts `n` places further
/// along, so that no run always comes first, or after the same one, on a
/// broker that holds every earlier run's records in memory.
pub async fn round(setup: &e2e::Setup<'_>, n: u32) -> anyhow::Result<Round> {
    let mut order = [Run::PassThrough, Run::Floor, Run::Runtime, Run::Topology];
    let runs = order.len();
    order.rotate_left(n as usize % runs);
    let (mut ceiling, mut floor, mut runtime, mut topology) = (None, None, None, None);
    for run in order {
        let measured = match run {
            Run::PassThrough => e2e::passthrough(setup).await?,
            Run::Floor => floor::txn_copier(setup).await?,
            Run::Runtime => runtime::runtime_only(setup).await?,
            Run::Topology => e2e::topology(setup).await?,
        };
        println!("{}", measured.throughput);
        if let Some(cpu) = measured.cpu {
            println!("{cpu}");
        }
        *match run {
            Run::PassThrough => &mut ceiling,
            Run::Floor => &mut floor,
            Run::Runtime => &mut runtime,
            Run::Topology => &mut topology,
        } = Some(measured);
    }
    match (ceiling, floor, runtime, topology) {
        (Some(ceiling), Some(floor), Some(runtime), Some(topology)) => Ok(Round {
            ceiling,
            floor,
            runtime,
            topology,
        }),
        _ => anyhow::bail!("a run of the round did not report"),
    }
}

/// Medians over the rounds.
pub struct Summary {
    pub rounds: usize,
    pub ceiling_rate: f64,
    pub runtime_rate: f64,
    pub topology_rate: f64,
    pub topology_share: f64,
    pub runtime_share: f64,
    /// Medians of [`Round::cpu_share`], where every round had figures.
    pub cpu_shares: Option<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Summary {
    pub fn of(rounds: &[Round]) -> Summary {
        let each = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Summary {
            rounds: rounds.len(),
            ceiling_rate: each(&|r| r.ceiling.throughput.rate()),
            runtime_rate: each(&|r| r.runtime.throughput.rate()),
            topology_rate: each(&|r| r.topology.throughput.rate()),
            // The median of each round's own share: runs of one round share
            // the machine's state, so their ratio is steadier than rates.
            topology_share: each(&|r| r.topology_share()),
            runtime_share: each(&|r| r.runtime_share()),
            cpu_shares: cpu_shares(rounds),
        }
    }
}

fn cpu_shares(rounds: &[Round]) -> Option<(f64, f64)> {
    let mut topology = Vec::new();
    let mut runtime = Vec::new();
    for r in rounds {
        topology.push(r.cpu_share(&r.topology)?);
        runtime.push(r.cpu_share(&r.runtime)?);
    }
    Some((median(topology), median(runtime)))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "medians of {} rounds:", self.rounds)?;
        writeln!(
            f,
            "  pass-through {:.0} records/s, runtime alone {:.0} records/s, topology {:.0} records/s",
            self.ceiling_rate, self.runtime_rate, self.topology_rate
        )?;
        write!(
            f,
            "  of the pass-through ceiling (median of the rounds' shares): topology {:.0} %, runtime alone {:.0} %",
            self.topology_share, self.runtime_share
        )?;
        if let Some((topology, runtime)) = self.cpu_shares {
            write!(
                f,
                "\n  the pass-through's CPU per record as a share of theirs (what they reach where CPU is all that limits): topology {topology:.0} %, runtime alone {runtime:.0} %"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::{Figures, cpu::Cost};

    fn run(rate: u64, busy_us: Option<f64>) -> e2e::Measured {
        e2e::Measured {
            throughput: Figures::throughput("x", rate, Duration::from_secs(1)),
            cpu: busy_us.map(|busy_us| Cost {
                busy_us,
                process_us: busy_us / 2.0,
                idle: 0.1,
            }),
            latency: None,
        }
    }

    #[test]
    fn shares_by_rate_and_by_cpu() {
        let round = |topology_us| Round {
            ceiling: run(1000, Some(3.0)),
            floor: run(950, Some(3.1)),
            runtime: run(900, Some(3.0)),
            topology: run(750, topology_us),
        };
        let r = round(Some(4.0));
        assert_eq!(r.topology_share(), 75.0);
        assert_eq!(r.cpu_share(&r.topology), Some(75.0));
        assert_eq!(r.cpu_share(&r.runtime), Some(100.0));
        let s = Summary::of(&[round(Some(4.0)), round(Some(5.0)), round(Some(3.75))]);
        assert_eq!(s.cpu_shares, Some((75.0, 100.0)));
        assert!(
            s.to_string().contains("topology 75 %, runtime alone 100 %"),
            "{s}"
        );
        // One round without CPU figures: no CPU medians at all.
        assert_eq!(
            Summary::of(&[round(Some(4.0)), round(None)]).cpu_shares,
            None
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
