//! `sluice demo` accounts for every record it simulated.

use std::time::Duration;

use sluice_app::{
    demo,
    topologies::{iot_enriched, iot_events},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_accounts_for_every_record() {
    let opts = demo::Options {
        rate: 500,
        bad_ratio: 0.1,
        partitions: 3,
        status_every: Duration::from_secs(1),
        // Long enough for a 10 s window and its 2 s grace to pass whatever
        // the phase: the topic of final windows gets at least one.
        duration: Some(Duration::from_secs(13)),
        database_url: None,
        window: demo::Options::demo_window(),
        console: Some("127.0.0.1:0".parse().unwrap()),
    };
    let mut out = Vec::new();
    let s = demo::run(&opts, std::future::pending(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(s.logins.total() > 1000, "{s:?}\n{text}");
    let u = &s.user_login;
    assert_eq!(u.records_in, s.logins.total(), "{text}");
    assert_eq!(u.records_out, s.logins.valid, "{text}");
    assert_eq!(
        u.dead_letters,
        s.logins.invalid + s.logins.undecodable,
        "{text}"
    );
    assert!(s.readings > 100, "{s:?}");
    let w = &s.iot_windows;
    assert_eq!(w.records_in, s.readings, "{text}");
    assert!(w.window_rows > 0 && w.dead_letters == 0, "{text}");
    assert!(text.contains("kept in memory"), "{text}");
    assert!(text.contains("the console: http://127.0.0.1:"), "{text}");
    assert!(text.contains("latest windows"), "{text}");
    let r = &s.iot_readings;
    assert_eq!(r.records_in, s.readings, "{text}");
    assert_eq!(
        r.window_rows, s.readings,
        "every reading stored once: {text}"
    );
    assert!(text.contains("sensor_readings: "), "{text}");
    // Alerts and final windows from one read of the readings.
    let e = &s.iot_events;
    assert_eq!(e.records_in, s.readings, "{text}");
    assert_eq!(e.dead_letters, 0, "{text}");
    assert!(e.to(iot_events::WINDOWS) > 0, "{text}");
    assert!(
        e.to(iot_events::ALERTS) > 0,
        "anomalies raise alerts: {text}"
    );
    assert_eq!(
        e.records_out,
        e.to(iot_events::WINDOWS) + e.to(iot_events::ALERTS),
        "{text}"
    );
    assert!(
        text.contains("user-login: in") && text.contains("iot-events: in"),
        "{text}"
    );
    assert!(text.contains("processed-user-login: user"), "{text}");
    // Every valid login counted once by locale, after its repartition topic.
    let c = &s.logins_by_locale;
    assert_eq!(c.records_in, s.logins.valid, "{text}");
    assert_eq!(c.records_out, s.logins.valid, "{text}");
    assert!(text.contains("login-counts-by-locale: "), "{text}");
    // Every reading enriched once, each with its device's site (rows are
    // valid from before the first reading).
    let n = &s.iot_enriched;
    assert_eq!(n.records_in, s.readings, "{text}");
    assert_eq!(n.to(iot_enriched::SINK), s.readings, "{text}");
    assert_eq!(n.dead_letters, 0, "{text}");
    assert!(text.contains("iot-enriched-readings: device-"), "{text}");
    assert!(!text.contains("none known then"), "{text}");
    // Alerts by each device's limits: every fleet-wide alert (no device
    // has a looser limit), and more from the clean rooms' tighter ones.
    let fleet = s.iot_events.to(iot_events::ALERTS);
    let own = n.to(iot_enriched::ALERTS);
    assert!(
        own >= fleet,
        "{own} device alerts, {fleet} fleet-wide: {text}"
    );
    assert!(
        text.contains("iot-device-alerts: device-") && text.contains(", limit "),
        "{text}"
    );
}
