//! The embedded, Confluent-compatible Schema Registry (`sluice registry serve`):
//! used by the demo and the tests, and usable anywhere a small registry will do.

pub mod api;
pub mod auth;
pub mod error;
pub mod model;
pub mod pg;
pub mod store;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use auth::Credentials;
pub use error::RegistryError;
pub use store::{MemoryStore, Store};

/// Confluent's own default cap on request bodies is far larger than any sane
/// schema; 1 MiB keeps one client from making us buffer without bound.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_body: usize,
    pub basic_auth: Option<Credentials>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            basic_auth: None,
        }
    }
}

pub fn router(store: Arc<dyn Store>, opts: &ServeOptions) -> Router {
    let app = api::routes(opts.max_body).with_state(api::AppState {
        store,
        max_body: opts.max_body,
    });
    match &opts.basic_auth {
        Some(creds) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(creds.clone()),
            auth::require,
        )),
        None => app,
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests;
/// over plain TCP or `tls::TlsListener`.
pub async fn serve<L>(
    listener: L,
    store: Arc<dyn Store>,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(store, opts))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A registry serving in the background of this process.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    #[error("cannot start the embedded registry: {0}")]
    Io(#[from] std::io::Error),
    /// One of the given schemas is invalid: a bug in the caller's files.
    #[error("subject {subject}: {source}")]
    Schema {
        subject: String,
        #[source]
        source: RegistryError,
    },
}

/// An in-memory registry on an ephemeral loopback port with `files`
/// registered under `<topic>-value`: what the demo, the benchmarks and the
/// tests run against.
pub async fn spawn_preloaded(
    files: &[crate::schemas::SchemaFile],
) -> Result<Running, PreloadError> {
    let store = Arc::new(MemoryStore::new());
    for f in files {
        let subject = f.subject();
        let parsed = model::parse_schema(&f.text).map_err(|source| PreloadError::Schema {
            subject: subject.clone(),
            source,
        })?;
        store
            .register(&subject, &parsed)
            .await
            .map_err(|source| PreloadError::Schema { subject, source })?;
    }
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(spawn(loopback, store, ServeOptions::default()).await?)
}

/// Binds `addr` (port 0 for any free one) and serves in a background task.
pub async fn spawn(
    addr: SocketAddr,
    store: Arc<dyn Store>,
    opts: ServeOptions,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        serve(listener, store, &opts, async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}
