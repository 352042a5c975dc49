use std::time::Duration;

use clap::Args;

use crate::demo;
use sluice_cli::duration;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Simulated logins per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Share of simulated records, 0.0–1.0, that are invalid or undecodable.
    #[arg(long, default_value_t = 0.05)]
    bad_ratio: f64,
    /// How often to print the status line.
    #[arg(long, value_parser = duration, default_value = "2s")]
    status_every: Duration,
    /// PostgreSQL for the window aggregates (migrations are applied); without
    /// it they are kept in memory and shown live.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where to serve the console (and /metrics) [default: 127.0.0.1:8080,
    /// or a free port when that is taken].
    #[arg(long)]
    console_addr: Option<std::net::SocketAddr>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        anyhow::bail!("--bad-ratio must be between 0.0 and 1.0, e.g. 0.05 for 5 %");
    }
    let opts = demo::Options {
        rate: args.rate,
        bad_ratio: args.bad_ratio,
        partitions: 3,
        status_every: args.status_every,
        duration: args.duration,
        database_url: args.database_url,
        window: demo::Options::demo_window(),
        console: args.console_addr,
    };
    demo::run(&opts, sluice_cli::shutdown_signal(), &mut std::io::stdout()).await?;
    Ok(())
}
