//! A user's own topology: orders from `orders` are checked (a bad one goes
//! to the dead-letter topic with the reason), keyed by customer, and then
//! go two ways in one exactly-once unit: large orders to `orders-large`,
//! and every order into a running total per customer, kept in a key-value
//! store with a changelog, whose every new value goes to `customer-totals`.

use serde::{Deserialize, Serialize};
use sluice::prelude::*;

pub const NAME: &str = "orders";
pub const SOURCE: &str = "orders";
pub const LARGE: &str = "orders-large";
pub const TOTALS: &str = "customer-totals";
/// An order this large or larger is flagged.
pub const LARGE_AMOUNT: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer: String,
    pub amount: f64,
    pub currency: String,
    pub placed_at: i64,
}

impl AvroSchema for Order {
    const SCHEMA: &'static str = include_str!("../schemas/order.avsc");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerTotal {
    pub customer: String,
    pub orders: i64,
    pub total: f64,
    pub last_order_id: String,
}

impl AvroSchema for CustomerTotal {
    const SCHEMA: &'static str = include_str!("../schemas/customer_total.avsc");
}

/// Why an order is refused.
pub fn check(o: &Order) -> Result<(), String> {
    if !(o.amount.is_finite() && o.amount > 0.0) {
        return Err(format!("amount {} is not a positive number", o.amount));
    }
    if !["EUR", "USD", "GBP"].contains(&o.currency.as_str()) {
        return Err(format!(
            "currency {:?} is none of EUR, USD, GBP",
            o.currency
        ));
    }
    if o.customer.trim().is_empty() {
        return Err("customer is empty".into());
    }
    Ok(())
}

pub fn build() -> Result<Topology, BuildError> {
    let t = topology(NAME);
    let [large, all] = t
        .source::<Order>(SOURCE)
        .validate("order rules", check)
        .key_by("customer", |o| o.customer.clone())
        .event_time("placed_at", |o| o.placed_at)
        .fan_out();
    large
        .filter("large", |o| o.amount >= LARGE_AMOUNT)
        .to_topic(LARGE);
    all.stateful(
        "totals",
        |order: Item<Order>, totals: &mut KeyValueStore<String, (i64, f64)>, out| {
            let o = &order.value;
            let (n, sum) = totals.get(&o.customer).copied().unwrap_or((0, 0.0));
            let now = (n + 1, sum + o.amount);
            totals.put(o.customer.clone(), now);
            let total = CustomerTotal {
                customer: o.customer.clone(),
                orders: now.0,
                total: now.1,
                last_order_id: o.order_id.clone(),
            };
            out.push(order.with(total));
            Ok::<_, String>(())
        },
    )
    .to_topic(TOTALS);
    t.build()
}
