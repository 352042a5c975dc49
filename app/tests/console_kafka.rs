//! The console in a real browser: headless Chromium opens the page of a
//! worker running `user-login` and `iot-windows` on Apache Kafka with
//! PostgreSQL, and the topology graph, the partition table, the dead
//! letters and a window chart show what the worker's /metrics, the topics
//! and the table hold, and change as records flow. With PostgreSQL cut,
//! the page says so and goes on. Screenshots go to the test's target dir.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    TestDb,
    browser::{self, attr, tag_with, tags},
    kafka::Kafka,
    logins::{self, Logins, Worker},
    windows::Proxy,
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};
use sluice_app::simulate::iot;

const BUDGET: Duration = Duration::from_secs(6);
const WINDOWS: &str = "sensor_window_aggregates";

/// A counter of one topology from the worker's /metrics.
async fn counter(w: &Worker, name: &str, topology: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", w.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let label = format!("topology=\"{topology}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn card<'a>(dom: &'a str, topology: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"topology-{topology}\""))
        .unwrap_or_else(|| panic!("no card of {topology} in the page:\n{dom}"));
    let end = dom[start..]
        .find("</section>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn node_records(dom: &str, topology: &str, label: &str) -> u64 {
    let tag = tag_with(card(dom, topology), "class=\"node ", "data-label", label)
        .unwrap_or_else(|| panic!("no node {label} in the graph of {topology}"));
    attr(tag, "data-records").unwrap().parse().unwrap()
}

/// The record at `partition:offset` of `topic`, read_committed.
fn record_at(bootstrap: &str, topic: &str, at: &str) -> rdkafka::message::OwnedMessage {
    let (p, o) = at.split_once(':').unwrap();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "console-test-reader")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        topic,
        p.parse().unwrap(),
        Offset::Offset(o.parse().unwrap()),
    )
    .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            return m.unwrap().detach();
        }
    }
    panic!("no record at {topic} {at}");
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| Some(String::from_utf8_lossy(h.value?).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_the_worker_and_the_topics_hold() {
    console_in_a_browser("classic").await;
}

/// The brokers do not list a consumer-protocol group's members: the console
/// describes the group (ConsumerGroupDescribe) instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_consumer_protocol_group() {
    console_in_a_browser("consumer").await;
}

async fn console_in_a_browser(protocol: &'static str) {
    let logins = Logins::new(Kafka::start(), protocol).await;
    let bootstrap = logins.kafka.bootstrap.clone();
    logins
        .kafka
        .create_topics(&[
            ("iot_sensor_data", 2),
            ("iot_sensor_data.dlq", 2),
            ("iot_sensor_data.late", 2),
        ])
        .await;
    let db = TestDb::create().await;
    let pool = sluice::db::connect(&db.url).await.unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db_url = proxy.url_for(&db.url);
    let mut worker = logins.worker_env(
        "console",
        &[
            "--topology",
            "iot-windows",
            "--window-size",
            "5s",
            "--window-grace",
            "1s",
            "--idle-timeout",
            "3s",
        ],
        &[("DATABASE_URL", db_url.as_str())],
    );
    let url = format!("{}/", worker.metrics);

    let load = logins.load(11, 200);
    let (stop_sensors, sensors_stopped) = tokio::sync::watch::channel(false);
    let (kafka, codec) = (logins.kafka.config(), logins.codec.clone());
    let sensors = tokio::spawn(async move {
        let mut stopped = sensors_stopped;
        let opts = iot::Options {
            devices: 2,
            interval: Duration::from_millis(100),
            ..iot::Options::default()
        };
        iot::run(&kafka, codec, &opts, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .unwrap()
    });
    worker.wait_commits(0, Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::windows::committed_in(&pool, WINDOWS).await == 0 {
        worker.assert_running();
        assert!(
            Instant::now() < deadline,
            "no windows stored: {}",
            worker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // While records flow: the page's counts lie between /metrics before and after.
    let before = counter(&worker, "sluice_records_in_total", "user-login").await;
    let first = browser::dom(&url, BUDGET);
    let after = counter(&worker, "sluice_records_in_total", "user-login").await;
    let seen = node_records(&first, "user-login", "source user-login");
    assert!(
        before <= seen && seen <= after,
        "{before} ≤ {seen} ≤ {after}"
    );
    assert!(first.contains("data-ready=\"true\""), "{first}");

    // Stopped and caught up, the page equals what the worker and the topics hold.
    load.stop().await;
    let _ = stop_sensors.send(true);
    let readings = sensors.await.unwrap().total;
    logins
        .wait_caught_up(Duration::from_secs(60), &mut [&mut worker])
        .await;
    // Every reading committed into the windows table (none is late or
    // invalid here): nothing the page shows changes any more.
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::windows::committed_in(&pool, WINDOWS).await < readings as i64 {
        assert!(
            Instant::now() < deadline,
            "iot-windows never committed {readings} readings"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dom = browser::dom(&url, BUDGET);
    let records_in = counter(&worker, "sluice_records_in_total", "user-login").await;
    assert_eq!(
        node_records(&dom, "user-login", "source user-login"),
        records_in
    );
    assert!(
        records_in > seen,
        "the page moved on: {seen} → {records_in}"
    );
    let out = counter(&worker, "sluice_records_out_total", "user-login").await;
    assert_eq!(
        node_records(&dom, "user-login", "topic processed-user-login"),
        out
    );
    let refused = tag_with(
        card(&dom, "user-login"),
        "class=\"node ",
        "data-label",
        "validate(login-rules)",
    )
    .and_then(|t| attr(t, "data-errors"))
    .unwrap();
    assert!(
        refused.parse::<u64>().unwrap() > 0,
        "validation refusals show"
    );

    // The partition table: the group's committed and end offsets.
    let committed = logins::committed_offsets(
        &bootstrap,
        logins::GROUP,
        logins::SOURCE,
        logins::PARTITIONS,
    );
    let ends = logins::end_offsets(&bootstrap, logins::SOURCE, logins::PARTITIONS);
    let table = &dom[dom
        .find("class=\"partitions\" data-topology=\"user-login\"")
        .unwrap()..];
    for p in 0..logins::PARTITIONS {
        let row = tag_with(table, "data-partition=", "data-partition", &p.to_string()).unwrap();
        assert_eq!(
            attr(row, "data-committed").unwrap(),
            committed[p as usize].to_string()
        );
        assert_eq!(attr(row, "data-end").unwrap(), ends[p as usize].to_string());
        assert_eq!(attr(row, "data-lag").unwrap(), "0");
    }
    let owners: Vec<String> = tags(table, "data-partition=")
        .into_iter()
        .take(logins::PARTITIONS as usize)
        .filter_map(|row| {
            let cells = &table[table.find(row).unwrap() + row.len()..];
            let owner = cells.split("</td>").nth(1)?;
            Some(owner.rsplit('>').next()?.to_string())
        })
        .collect();
    assert_eq!(owners.len(), logins::PARTITIONS as usize, "{table}");
    // A member's client.id names it and where it answers queries.
    let member = format!(
        "sluice-user-login-console@{}",
        worker.metrics.trim_start_matches("http://")
    );
    // Listed by the group's coordinator (classic), or described by
    // ConsumerGroupDescribe (the consumer protocol).
    assert!(
        dom.contains(&format!("data-member=\"{member}\"")),
        "the group's member shows: {}",
        &dom[dom.find("id=\"partitions\"").unwrap()..][..3000]
    );
    assert!(owners.iter().all(|o| *o == member), "{owners:?}");

    // The dead letters: each listed one is in the topic with that reason.
    let list = &dom[dom.find("data-topic=\"user-login.dlq\"").unwrap()..];
    let letters = tags(list, "data-reason=");
    assert_eq!(letters.len(), 10, "the newest ten");
    for l in letters {
        let at = attr(l, "data-offset").unwrap();
        let m = record_at(&bootstrap, "user-login.dlq", &at);
        assert_eq!(
            header(&m, "sluice.error.kind"),
            attr(l, "data-reason"),
            "{at}"
        );
    }

    // A window chart: its points and newest value are the table's.
    let chart = tags(&dom, "class=\"window-chart\"")
        .into_iter()
        .next()
        .expect("a window chart");
    let key = attr(chart, "data-key").unwrap();
    let (device, sensor) = key.split_once(" / ").unwrap();
    // The page charts the table's newest windows, as its query orders them.
    let stored: Vec<(f64,)> = sqlx::query_as(&format!(
        "SELECT avg FROM (SELECT * FROM {WINDOWS} ORDER BY window_start DESC, device_id, sensor_type LIMIT {})
           AS newest WHERE device_id = $1 AND sensor_type = $2 ORDER BY window_start",
        sluice::console::WINDOWS_SHOWN
    ))
    .bind(device)
    .bind(sensor)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        attr(chart, "data-points").unwrap(),
        stored.len().to_string()
    );
    let last: f64 = attr(chart, "data-last").unwrap().parse().unwrap();
    assert!(
        (last - stored.last().unwrap().0).abs() < 1e-9,
        "{last} vs {stored:?}"
    );

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{protocol}"));
    std::fs::create_dir_all(&shots).unwrap();
    browser::screenshot(&url, BUDGET, &shots.join("console.png"), (1400, 2600));

    // PostgreSQL cut: the page says so, and the rest still shows.
    proxy.set_up(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.readyz().await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "never unready with PostgreSQL cut"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut = browser::dom(&url, BUDGET);
    assert!(
        cut.contains("not ready: ") && cut.contains("PostgreSQL"),
        "{cut}"
    );
    let table_box = &cut[cut.find(&format!("id=\"table-{WINDOWS}\"")).unwrap()..];
    let error = &table_box[table_box.find("class=\"error\">").unwrap() + 14..];
    assert!(
        !error.starts_with('<'),
        "the table says why it shows nothing"
    );
    assert_eq!(
        node_records(&cut, "user-login", "source user-login"),
        records_in
    );
    browser::screenshot(
        &url,
        BUDGET,
        &shots.join("console-postgres-down.png"),
        (1400, 1400),
    );
    proxy.set_up(true);

    // Bad input: unknown paths and a store that is not there.
    let r = reqwest::get(format!("{}/nothing-here", worker.metrics))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{}/api/stores/nope/k", worker.metrics))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no store named"),
        "{body}"
    );
    worker.terminate().await;
    drop(pool);
    db.drop_db().await;
}

#[test]
fn tags_and_attributes_are_read_from_the_dom() {
    let dom = r#"<svg><g class="node source" data-label="a &amp; b" data-records="12"><rect/></g><g class="node sink" data-label="t" data-records=""></g></svg>"#;
    let t = tags(dom, "class=\"node ");
    assert_eq!(t.len(), 2);
    assert_eq!(attr(t[0], "data-label").as_deref(), Some("a & b"));
    assert_eq!(attr(t[0], "data-records").as_deref(), Some("12"));
    assert_eq!(
        tag_with(dom, "class=\"node ", "data-label", "t").and_then(|t| attr(t, "data-records")),
        Some(String::new())
    );
}
