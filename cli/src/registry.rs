use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use sluice::{
    config::redact_url,
    db,
    registry::{self, Credentials, MemoryStore, ServeOptions, Store, pg::PgStore},
};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the Confluent Schema Registry REST API (subjects, versions, ids,
    /// config, compatibility), storing in memory or in PostgreSQL.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Storage {
    /// Kept in this process only; gone on exit. For demos and tests.
    Memory,
    /// Kept in PostgreSQL (DATABASE_URL); survives restarts and can be shared
    /// by several registry processes.
    Postgres,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port).
    #[arg(long, env = "SLUICE_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Where schemas are kept.
    #[arg(
        long,
        env = "SLUICE_REGISTRY_STORAGE",
        value_enum,
        default_value = "memory"
    )]
    storage: Storage,

    /// PostgreSQL URL, needed with --storage postgres; migrations are applied at start.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Largest request body accepted, in bytes; larger ones get HTTP 413.
    #[arg(long, env = "SLUICE_REGISTRY_MAX_BODY_BYTES", default_value_t = registry::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,

    /// Require HTTP basic auth with these credentials (USER:PASSWORD).
    #[arg(long, env = "SLUICE_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    // A String, not Credentials: clap would echo a value it cannot parse.
    basic_auth: Option<String>,

    /// Serve HTTPS with this PEM certificate (chain), with --tls-key.
    #[arg(
        long,
        env = "SLUICE_REGISTRY_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "SLUICE_REGISTRY_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_key: Option<std::path::PathBuf>,
}

pub async fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    let RegistryCommand::Serve(args) = cmd;
    let store: Arc<dyn Store> = match args.storage {
        Storage::Memory => Arc::new(MemoryStore::new()),
        Storage::Postgres => {
            let Some(url) = args.database_url.as_deref() else {
                bail!(
                    "--storage postgres needs a database: pass --database-url or set DATABASE_URL"
                );
            };
            let pool = db::connect(url).await?;
            db::migrate(&pool).await?;
            tracing::info!(database = %redact_url(url), "registry storage: PostgreSQL");
            Arc::new(PgStore::new(pool))
        }
    };
    let opts = ServeOptions {
        max_body: args.max_body_bytes,
        basic_auth: super::args::secret_flag::<Credentials>(
            "--basic-auth",
            args.basic_auth.as_deref(),
        )?,
    };
    // Read before binding: a bad file is an error before anyone can connect.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(registry::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another process using it? pick another --listen",
                args.listen
            )
        })?;
    tracing::info!(
        addr = %listener.local_addr()?,
        storage = ?args.storage,
        auth = opts.basic_auth.is_some(),
        https = tls.is_some(),
        "schema registry listening"
    );
    match tls {
        Some(acceptor) => {
            let listener = registry::tls::TlsListener::new(listener, acceptor)?;
            registry::serve(listener, store, &opts, super::shutdown_signal()).await?
        }
        None => registry::serve(listener, store, &opts, super::shutdown_signal()).await?,
    }
    Ok(())
}
