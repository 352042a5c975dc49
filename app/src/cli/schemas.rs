use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::RegistryArgs;
use sluice::{avro::RegistryClient, schemas};

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register every schema under `<topic>-value`. Already-registered schemas
    /// are left as they are; an incompatible change is refused (exit code 1)
    /// naming the subject, the version it breaks and why.
    Register(RegisterArgs),
    /// Print the schemas compiled into this binary, one per topic.
    List,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    registry: RegistryArgs,

    /// Read `<topic>.avsc` files from this directory instead of the compiled-in schemas.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(cmd: SchemasCommand) -> anyhow::Result<()> {
    match cmd {
        SchemasCommand::List => {
            for file in schemas::embedded() {
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
                None => schemas::embedded(),
            };
            let client = RegistryClient::new(args.registry.config()?)?;
            for line in register_all(&client, &files).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// Registers each schema file; one line per subject saying what happened.
pub async fn register_all(
    client: &RegistryClient,
    files: &[schemas::SchemaFile],
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for file in files {
        let done = client.register(&file.subject(), &file.text).await?;
        let what = if done.new_version {
            "registered"
        } else {
            "unchanged"
        };
        lines.push(format!(
            "{}: {what}, id {}, version {}",
            done.subject, done.id, done.version
        ));
    }
    Ok(lines)
}
