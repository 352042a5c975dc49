//! The compose stack's dashboards and alert rules only use what sluice
//! exports: every PromQL expression names metrics the real exporter renders,
//! and every SQL panel runs against the migrated schema. (.ci/run also runs
//! `docker-compose config`, `promtool check config` and `promtool check rules`.)

mod common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::Value;
use sluice::{
    metrics::{Metrics, Timings},
    stats::Stats,
};
use sluice_app::simulate::metrics::SimulatorState;

/// Metric names as Prometheus sees them, histogram series included.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new().unwrap();
    let stats = Arc::new(Stats::default());
    stats
        .late
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stats.count_dead_letters("validation", 1);
    stats.set_lag("in", 0, 5);
    metrics.observe_topologies(vec![("t".into(), stats)]);
    let sim = SimulatorState::new();
    sim.set("d", "temperature", "°C", 20.0);
    sluice_app::simulate::metrics::register(&metrics.meter(), "iot", sim);
    let timings = Timings::new(&metrics.meter(), "t");
    timings.latency_ms(5);
    timings.batch(Duration::from_millis(3));
    timings.commit(Duration::from_millis(2));
    timings.e2e_ms(7);
    timings.commit_parts(&sluice::commit::CommitParts::default());
    timings.postgres(Duration::from_millis(2));
    timings.rebalance(Duration::from_millis(20));
    let mut names = BTreeSet::new();
    for line in metrics.render().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn sluice_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("sluice_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Not part of a longer identifier (a label value such as "sluice_x" is fine too).
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn collect(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => collect(v, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect(v, key, out)),
        _ => {}
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        out.push((path.display().to_string(), json));
    }
    assert_eq!(out.len(), 3, "the pipeline, sensor and broker dashboards");
    out
}

#[test]
fn every_promql_expression_names_exported_metrics() {
    let names = exported();
    let mut exprs = Vec::new();
    // The brokers' dashboard reads the JMX exporter (tests/broker_metrics.rs).
    for (_, d) in dashboards()
        .iter()
        .filter(|(p, _)| !p.ends_with("brokers.json"))
    {
        collect(d, "expr", &mut exprs);
    }
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../compose/prometheus/alerts.yml"
    ))
    .unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(|e| e.trim().to_string()),
    );
    assert!(exprs.len() > 15, "{exprs:?}");
    for e in &exprs {
        let used = sluice_names(e);
        assert!(
            !used.is_empty() || e.contains("up{"),
            "{e} uses no sluice metric"
        );
        for n in used {
            assert!(
                names.contains(&n),
                "{e}: {n} is not exported; exported: {names:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_sql_panel_runs_against_the_migrated_schema() {
    let db = common::TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    sluice::db::migrate(&pool).await.unwrap();
    let mut queries = Vec::new();
    for (_, d) in dashboards() {
        collect(&d, "rawSql", &mut queries);
        collect(&d["templating"], "query", &mut queries);
    }
    assert!(queries.len() >= 7, "{queries:?}");
    for q in queries {
        // Grafana's macros and variables, as it would expand them.
        let sql = q
            .replace(
                "$__timeFilter(window_start)",
                "window_start > now() - interval '1 hour'",
            )
            .replace("$device", "'device-000'");
        sqlx::query(&sql)
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{q}\n→ {e}"));
    }
    db.drop_db().await;
}

/// The stack runs the Kafka the tests run (dev/kafka/pom.xml).
#[test]
fn compose_runs_the_kafka_version_the_tests_run() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let pom = std::fs::read_to_string(format!("{root}/dev/kafka/pom.xml")).unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split("</kafka.version>").next())
        .expect("dev/kafka/pom.xml names kafka.version");
    let compose = std::fs::read_to_string(format!("{root}/compose/docker-compose.yml")).unwrap();
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: apache/kafka:"))
        .collect();
    assert_eq!(
        images,
        vec![version],
        "compose/ and the tests run one Kafka"
    );
}
