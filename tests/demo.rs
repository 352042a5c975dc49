//! `sluice demo` accounts for every record it simulated.

use std::time::Duration;

use sluice::demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_accounts_for_every_record() {
    let opts = demo::Options {
        rate: 500,
        bad_ratio: 0.1,
        partitions: 3,
        status_every: Duration::from_secs(1),
        duration: Some(Duration::from_secs(8)),
    };
    let mut out = Vec::new();
    let s = demo::run(&opts, std::future::pending(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(s.produced.total() > 1000, "{s:?}\n{text}");
    assert_eq!(s.records_in, s.produced.total(), "{text}");
    assert_eq!(s.records_out, s.produced.valid, "{text}");
    assert_eq!(
        s.dead_letters,
        s.produced.invalid + s.produced.undecodable,
        "{text}"
    );
    assert!(
        text.contains("user-login: in") && text.contains("sample: user"),
        "{text}"
    );
}
