//! The simulators' own /metrics, and /readyz refusing while PostgreSQL is
//! unreachable.

mod common;

use std::{sync::Arc, time::Duration};

use common::{TestDb, windows::Proxy};
use rdkafka::mocking::MockCluster;
use sluice::{
    avro::{AvroCodec, RegistryConfig},
    kafka::KafkaConfig,
    metrics::{Metrics, postgres_check},
};
use sluice_app::simulate::{iot, metrics::SimulatorState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iot_simulator_exports_what_it_produced_and_the_latest_values() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("iot_sensor_data", 2, 1).unwrap();
    let registry = sluice::registry::spawn_preloaded(&common::schemas())
        .await
        .unwrap();
    let codec =
        Arc::new(AvroCodec::new(&RegistryConfig::new(&registry.url(), None).unwrap()).unwrap());
    let state = SimulatorState::new();
    let metrics = Metrics::new().unwrap();
    sluice_app::simulate::metrics::register(&metrics.meter(), "iot", state.clone());
    let opts = iot::Options {
        devices: 3,
        interval: Duration::from_millis(10),
        rounds: Some(4),
        observed: Some(state),
        ..iot::Options::default()
    };
    let kafka = KafkaConfig::new(&mock.bootstrap_servers());
    let report = iot::run(&kafka, codec, &opts, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.total, 4 * 3 * 5);

    let body = metrics.render();
    assert!(
        body.lines().any(
            |l| l.starts_with("sluice_simulator_records_produced_total{")
                && l.contains("simulator=\"iot\"")
                && l.ends_with(" 60")
        ),
        "{body}"
    );
    let gauges: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("sluice_simulator_sensor_value{"))
        .collect();
    assert_eq!(gauges.len(), 3 * 5, "one per device and sensor: {body}");
    assert!(
        gauges.iter().any(|l| l.contains("device_id=\"device-000\"")
            && l.contains("sensor_type=\"temperature\"")
            && l.contains("unit=\"°C\"")),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_says_which_service_is_unreachable() {
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let pool = sluice::db::connect(&proxy.url_for(&db.url)).await.unwrap();
    let mut metrics = Metrics::new().unwrap();
    metrics.require(postgres_check(pool));
    assert_eq!(metrics.ready().await, Ok(()));
    proxy.set_up(false);
    let err = metrics.ready().await.unwrap_err();
    assert!(err.starts_with("PostgreSQL:"), "{err}");
    proxy.set_up(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.ready().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.drop_db().await;
}
