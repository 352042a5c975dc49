//! What a simulator exposes: records produced, and the latest value per
//! device and sensor type as a gauge, so a device's temperature can be
//! graphed straight from Prometheus.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry::{KeyValue, metrics::Meter};

#[derive(Debug, Default)]
pub struct SimulatorState {
    pub produced: AtomicU64,
    /// (device, sensor type, unit) → latest value
    latest: Mutex<BTreeMap<(String, String, String), f64>>,
}

impl SimulatorState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn produced(&self, n: u64) {
        self.produced.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, device: &str, sensor_type: &str, unit: &str, value: f64) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((device.into(), sensor_type.into(), unit.into()), value);
    }

    fn latest(&self) -> BTreeMap<(String, String, String), f64> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn register(meter: &Meter, name: &str, state: Arc<SimulatorState>) {
    let (s, simulator) = (state.clone(), name.to_string());
    meter
        .u64_observable_counter("sluice.simulator.records.produced")
        .with_description("Records a simulator produced")
        .with_callback(move |obs| {
            obs.observe(
                s.produced.load(Ordering::Relaxed),
                &[KeyValue::new("simulator", simulator.clone())],
            );
        })
        .build();
    meter
        .f64_observable_gauge("sluice.simulator.sensor.value")
        .with_description("Latest simulated reading per device and sensor type")
        .with_callback(move |obs| {
            for ((device, sensor_type, unit), value) in state.latest() {
                obs.observe(
                    value,
                    &[
                        KeyValue::new("device_id", device),
                        KeyValue::new("sensor_type", sensor_type),
                        KeyValue::new("unit", unit),
                    ],
                );
            }
        })
        .build();
}
