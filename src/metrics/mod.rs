//! `/metrics` (Prometheus text, through OpenTelemetry and
//! opentelemetry-prometheus), `/healthz` and `/readyz`. Counters and gauges
//! are observable: the exporter reads the workers' atomics when scraped, so
//! the hot path only bumps atomics. Durations are OpenTelemetry histograms
//! recorded per batch, commit and rebalance (and per sampled record).

mod ready;
mod tables;
mod topology;

use std::{future::Future, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

pub use crate::stats::Timings;
pub use ready::{ReadyCheck, Refused, postgres_check, registry_check};

use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot set up the Prometheus exporter: {0}")]
    Exporter(String),
    #[error("cannot serve metrics: {0}")]
    Io(#[from] std::io::Error),
    /// Another process holds the address: the user's to change.
    #[error("cannot serve metrics on {addr}: {source}; choose another address for them")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

type Topologies = Arc<Vec<(String, Arc<Stats>)>>;

pub struct Metrics {
    registry: prometheus::Registry,
    meter: Meter,
    topologies: std::sync::OnceLock<Topologies>,
    checks: Vec<Arc<dyn ReadyCheck>>,
    // Owns the instruments' callbacks for as long as metrics are served.
    _provider: SdkMeterProvider,
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .map_err(|e| MetricsError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(Metrics {
            registry,
            meter: provider.meter("sluice"),
            topologies: std::sync::OnceLock::new(),
            checks: Vec::new(),
            _provider: provider,
        })
    }

    /// The meter workers record their histograms with.
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }

    /// Exports the topologies' counters and lag; `/readyz` waits for them to join.
    pub fn observe_topologies(&self, topologies: Vec<(String, Arc<Stats>)>) {
        let topologies: Topologies = Arc::new(topologies);
        topology::register(&self.meter, &topologies);
        tables::register(&self.meter, &topologies);
        let _ = self.topologies.set(topologies);
    }

    /// Something `/readyz` must reach (the registry, PostgreSQL).
    pub fn require(&mut self, check: Arc<dyn ReadyCheck>) {
        self.checks.push(check);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// `Ok` while every topology's worker is in its consumer group, reaches
    /// its brokers and commits, and every required service answers.
    pub async fn ready(&self) -> Result<(), String> {
        if let Some(t) = self.topologies.get() {
            let unready: Vec<String> = t
                .iter()
                .filter_map(|(n, s)| s.not_ready().map(|why| format!("{n}: {why}")))
                .collect();
            if !unready.is_empty() {
                return Err(unready.join("; "));
            }
        }
        for c in &self.checks {
            c.check().await.map_err(|e| format!("{}: {e}", c.name()))?;
        }
        Ok(())
    }
}

async fn scrape(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], m.render())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    serve_with(listener, metrics, Router::new(), shutdown).await
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `more` (the console) until `shutdown`.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    more: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
        .merge(more)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /, /metrics, /healthz, /readyz or /stores\n",
            )
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Binds `addr` and serves in the background; the task ends with `shutdown`.
pub async fn spawn(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), MetricsError>>, MetricsError> {
    Ok(spawn_with(addr, metrics, Router::new(), shutdown).await?.1)
}

/// `spawn`, serving `more` too; gives the address it serves at.
pub async fn spawn_with(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    more: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), MetricsError>>,
    ),
    MetricsError,
> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((
        bound,
        tokio::spawn(serve_with(listener, metrics, more, shutdown)),
    ))
}
