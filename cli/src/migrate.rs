use clap::Args;

use sluice::{config::redact_url, db};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let pool = db::connect(&args.database_url).await?;
    let applied = db::migrate(&pool).await?;
    let target = redact_url(&args.database_url);
    if applied.is_empty() {
        println!("{target}: already up to date");
    } else {
        println!("{target}: applied migrations {applied:?}");
    }
    Ok(())
}
