//! The orders topology without a broker: the test driver runs the same
//! graph, task, store and commits as a worker does.

use orders::{CustomerTotal, LARGE, Order, TOTALS};
use sluice::{prelude::Item, testing::TestDriver};

fn order(id: &str, customer: &str, amount: f64) -> Order {
    Order {
        order_id: id.into(),
        customer: customer.into(),
        amount,
        currency: "EUR".into(),
        placed_at: 1_800_000_000_000,
    }
}

fn driver() -> TestDriver {
    TestDriver::new(orders::build().unwrap()).unwrap()
}

#[test]
fn totals_run_per_customer_and_large_orders_are_flagged() {
    let mut d = driver();
    d.pipe(None, &order("o1", "ann", 10.0), 1).unwrap();
    d.pipe(None, &order("o2", "bob", 2_500.0), 2).unwrap();
    d.pipe(None, &order("o3", "ann", 5.5), 3).unwrap();
    let totals: Vec<Item<CustomerTotal>> = d.read(TOTALS).unwrap();
    let seen: Vec<(&str, i64, f64)> = totals
        .iter()
        .map(|t| (t.value.customer.as_str(), t.value.orders, t.value.total))
        .collect();
    assert_eq!(
        seen,
        [("ann", 1, 10.0), ("bob", 1, 2500.0), ("ann", 2, 15.5)]
    );
    assert_eq!(totals[2].key.as_deref(), Some(&b"ann"[..]));
    let large: Vec<Item<Order>> = d.read(LARGE).unwrap();
    assert_eq!(large.len(), 1);
    assert_eq!(large[0].value.order_id, "o2");
    let store = d.store::<String, (i64, f64)>("totals");
    assert_eq!(store.get("ann"), Some(&(2, 15.5)));
}

#[test]
fn bad_orders_go_to_the_dead_letter_topic_with_the_reason() {
    let mut d = driver();
    d.pipe(None, &order("o1", "ann", -3.0), 1).unwrap();
    let mut odd = order("o2", "ann", 3.0);
    odd.currency = "XYZ".into();
    d.pipe(None, &odd, 2).unwrap();
    d.pipe_raw(0, None, Some(b"not avro"), 3).unwrap();
    let dead = d.dead_letters();
    let kinds: Vec<&str> = dead.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["validation", "validation", "bad_magic_byte"]);
    assert!(
        dead[0].message.contains("not a positive number"),
        "{}",
        dead[0].message
    );
    assert!(dead[1].message.contains("XYZ"));
    assert_eq!(dead[2].value.as_deref(), Some(&b"not avro"[..]));
    assert!(d.read::<CustomerTotal>(TOTALS).unwrap().is_empty());
}

#[test]
fn a_restart_restores_the_totals_from_their_changelog() {
    let mut d = driver();
    d.pipe(None, &order("o1", "ann", 10.0), 1).unwrap();
    d.pipe(None, &order("o2", "ann", 20.0), 2).unwrap();
    d.restart().unwrap();
    assert_eq!(
        d.store::<String, (i64, f64)>("totals").get("ann"),
        Some(&(2, 30.0))
    );
    d.pipe(None, &order("o3", "ann", 1.0), 3).unwrap();
    let last = d.read::<CustomerTotal>(TOTALS).unwrap().pop().unwrap();
    assert_eq!((last.value.orders, last.value.total), (3, 31.0));
}

#[test]
fn what_was_not_committed_is_processed_again_after_a_crash() {
    let mut d = TestDriver::new(orders::build().unwrap())
        .unwrap()
        .commit_each(false);
    d.pipe(None, &order("o1", "ann", 10.0), 1).unwrap();
    d.commit().unwrap();
    d.pipe(None, &order("o2", "ann", 20.0), 2).unwrap();
    // Crash before o2's unit commits: its total was never visible.
    d.restart().unwrap();
    d.commit().unwrap();
    let totals = d.read::<CustomerTotal>(TOTALS).unwrap();
    let seen: Vec<(i64, f64)> = totals
        .iter()
        .map(|t| (t.value.orders, t.value.total))
        .collect();
    assert_eq!(seen, [(1, 10.0), (2, 30.0)]);
    assert_eq!(
        d.transactions().1,
        0,
        "nothing was aborted: it was never committed"
    );
}
