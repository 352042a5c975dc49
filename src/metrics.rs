//! `/metrics` (Prometheus text, through OpenTelemetry and
//! opentelemetry-prometheus), `/healthz` and `/readyz`. Instruments are
//! observable: the exporter reads the workers' counters when scraped, so the
//! hot path only bumps atomics.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use opentelemetry::{KeyValue, metrics::MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use crate::runtime::Stats;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot set up the Prometheus exporter: {0}")]
    Exporter(String),
    #[error("cannot serve metrics: {0}")]
    Io(#[from] std::io::Error),
}

type Topologies = Arc<Vec<(String, Arc<Stats>)>>;

pub struct Metrics {
    registry: prometheus::Registry,
    topologies: Topologies,
    // Owns the instruments' callbacks for as long as metrics are served.
    _provider: SdkMeterProvider,
}

fn counter(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
    topologies: &Topologies,
    read: fn(&Stats) -> u64,
) {
    let t = topologies.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |obs| {
            for (topology, s) in t.iter() {
                obs.observe(read(s), &[KeyValue::new("topology", topology.clone())]);
            }
        })
        .build();
}

impl Metrics {
    pub fn new(topologies: Vec<(String, Arc<Stats>)>) -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .map_err(|e| MetricsError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("sluice");
        let topologies: Topologies = Arc::new(topologies);
        counter(
            &meter,
            "sluice.records.in",
            "Records consumed from the source topic",
            &topologies,
            |s| s.records_in.load(Ordering::Relaxed),
        );
        counter(
            &meter,
            "sluice.records.out",
            "Records produced to sink topics",
            &topologies,
            |s| s.records_out.load(Ordering::Relaxed),
        );
        counter(
            &meter,
            "sluice.commits",
            "Batches committed (transactions or offset commits)",
            &topologies,
            |s| s.commits.load(Ordering::Relaxed),
        );
        counter(
            &meter,
            "sluice.aborts",
            "Batches aborted and re-read",
            &topologies,
            |s| s.aborts.load(Ordering::Relaxed),
        );
        let t = topologies.clone();
        meter
            .u64_observable_counter("sluice.dead_letters")
            .with_description("Records sent to the dead-letter topic, by reason")
            .with_callback(move |obs| {
                for (topology, s) in t.iter() {
                    for (reason, n) in s.dead_letters_by_kind() {
                        obs.observe(
                            n,
                            &[
                                KeyValue::new("topology", topology.clone()),
                                KeyValue::new("reason", reason),
                            ],
                        );
                    }
                }
            })
            .build();
        let t = topologies.clone();
        meter
            .i64_observable_gauge("sluice.consumer.lag")
            .with_description("Records behind the end of each assigned partition")
            .with_callback(move |obs| {
                for (topology, s) in t.iter() {
                    for ((topic, partition), lag) in s.lag() {
                        obs.observe(
                            lag,
                            &[
                                KeyValue::new("topology", topology.clone()),
                                KeyValue::new("topic", topic),
                                KeyValue::new("partition", i64::from(partition)),
                            ],
                        );
                    }
                }
            })
            .build();
        Ok(Metrics {
            registry,
            topologies,
            _provider: provider,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Ready once every topology's worker has joined its consumer group.
    pub fn ready(&self) -> bool {
        self.topologies
            .iter()
            .all(|(_, s)| s.joined.load(Ordering::Relaxed))
    }
}

async fn scrape(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], m.render())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not every worker has joined its group\n",
        )
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
