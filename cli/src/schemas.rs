use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::RegistryArgs;
use crate::Catalog;
use sluice::{avro::RegistryClient, schemas, service::schemas_of};

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register every schema under `<topic>-value`. Already-registered schemas
    /// are left as they are; an incompatible change is refused (exit code 1)
    /// naming the subject, the version it breaks and why.
    Register(RegisterArgs),
    /// Print the schemas the topologies read and write, one per topic.
    List,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    registry: RegistryArgs,

    /// Read `<topic>.avsc` files from this directory instead of the topologies' schemas.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(catalog: &Catalog, cmd: SchemasCommand) -> anyhow::Result<()> {
    match cmd {
        SchemasCommand::List => {
            for file in schemas_of(&catalog.all()?) {
                println!(
                    "{} ({})\n{}",
                    file.topic,
                    file.subject(),
                    file.text.trim_end()
                );
            }
            Ok(())
        }
        SchemasCommand::Register(args) => {
            let files = match &args.dir {
                Some(dir) => schemas::load_dir(dir)?,
                None => schemas_of(&catalog.all()?),
            };
            let client = RegistryClient::new(args.registry.config()?)?;
            for line in client.register_all(&files).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}
