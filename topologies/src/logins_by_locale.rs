//! `logins-by-locale`: the valid logins of `user-login` (the rules of the
//! `user-login` topology; invalid ones go to its dead-letter topic), re-keyed
//! by locale through a repartition topic and counted in the changelogged
//! store `login-counts` → the compacted `login-counts-by-locale`: the
//! locale as the key (UTF-8), `LoginCount` as the value, one update per
//! login, exactly once.
//!
//! `logins-by-locale-pg`: the same counts upserted into the PostgreSQL
//! table `login_counts_by_locale` (a row per locale), the store's changes
//! and the input positions in the same SQL transaction.

use serde::{Deserialize, Serialize};

use sluice::{prelude::*, topology::ops::Source};

use super::user_login::{self, UserLogin};

pub const NAME: &str = "logins-by-locale";
pub const SOURCE: &str = user_login::SOURCE;
pub const SINK: &str = "login-counts-by-locale";
/// The store of the counts (queryable by this name).
pub const STORE: &str = "login-counts";
/// The re-keying step: its sub-topology is `logins-by-locale.locale`.
pub const REKEY: &str = "locale";

/// The counts in PostgreSQL.
pub mod pg {
    pub const NAME: &str = "logins-by-locale-pg";
    pub const TABLE: &str = "login_counts_by_locale";
    pub const STORE: &str = "login-counts-pg";
}

/// A locale's count of valid logins so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginCount {
    pub locale: String,
    pub count: i64,
}

impl AvroSchema for LoginCount {
    const SCHEMA: &'static str = include_str!("../../schemas/login-counts-by-locale.avsc");
}

pub fn build() -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, SINK)
}

/// The same topology on other topics (benchmarks, tests).
pub fn declare(name: &str, source: &str, sink: &str) -> Result<Topology, BuildError> {
    let t = topology(name);
    by_locale(&t, source)
        .count(STORE)
        .map("as record", |u| LoginCount {
            locale: u.key,
            count: u.value,
        })
        .to_compacted_topic(sink);
    t.build()
}

/// `logins-by-locale-pg`.
pub fn build_pg() -> Result<Topology, BuildError> {
    declare_pg(pg::NAME, SOURCE, pg::TABLE)
}

/// The counts upserted into `table` (`locale` its key, `count`).
pub fn declare_pg(name: &str, source: &str, table: &str) -> Result<Topology, BuildError> {
    let spec = table_spec(table).map_err(|reason| BuildError::BadTable {
        topology: name.to_string(),
        reason,
    })?;
    let t = topology(name);
    by_locale(&t, source).count(pg::STORE).to_table(spec, |u| {
        vec![Cell::Text(u.key.clone()), Cell::Int(u.value)]
    });
    t.build()
}

/// The counts' table: a row per locale.
pub fn table_spec(table: &str) -> Result<RowSpec, String> {
    RowSpec::new(table)
        .and_then(|s| s.column("locale", SqlType::Text))
        .and_then(|s| s.column("count", SqlType::BigInt))
        .and_then(|s| s.keyed_by(&["locale"]))
}

/// The valid logins of `source`, grouped by locale.
fn by_locale(t: &Builder, source: &str) -> Grouped<UserLogin, UserLogin, Source> {
    t.source::<UserLogin>(source)
        .validate("login-rules", |l| {
            user_login::validate(l, clock::processing_time_ms() / 1000)
        })
        .group_by(REKEY, |l| l.locale.clone())
}

#[cfg(test)]
mod tests {
    use sluice::testing::TestDriver;

    use super::*;

    fn login(user: &str, locale: &str) -> UserLogin {
        UserLogin {
            user_id: user.into(),
            app_version: "2.3.1".into(),
            ip: "10.0.0.1".into(),
            locale: locale.into(),
            device_id: "dev-1".into(),
            timestamp: clock::wall_clock_ms() / 1000,
            device_type: "android".into(),
        }
    }

    const USER: &str = "6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77";

    /// Valid logins are counted per locale from any partition; an invalid
    /// one is a dead letter and counts nowhere.
    #[test]
    fn valid_logins_are_counted_by_locale() {
        let mut driver = TestDriver::with_partitions(build().unwrap(), 3).unwrap();
        let logins = [(0, "en-GB"), (1, "de-DE"), (2, "en-GB"), (1, "en-GB")];
        for (p, locale) in logins {
            driver
                .pipe_to(p, Some(USER), &login(USER, locale), 1)
                .unwrap();
        }
        driver
            .pipe_to(0, Some("x"), &login("not-a-uuid", "en-GB"), 1)
            .unwrap();
        let counts: Vec<(Option<Vec<u8>>, LoginCount)> = (driver.read::<LoginCount>(SINK).unwrap())
            .into_iter()
            .map(|i| (i.key, i.value))
            .collect();
        let want = [("en-GB", 1), ("de-DE", 1), ("en-GB", 2), ("en-GB", 3)].map(|(l, n)| {
            let count = LoginCount {
                locale: l.into(),
                count: n,
            };
            (Some(l.as_bytes().to_vec()), count)
        });
        assert_eq!(counts, want);
        let letters = driver.dead_letters();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].message.contains("not a UUID"), "{letters:?}");
        assert_eq!(driver.store::<String, i64>(STORE).get("en-GB"), Some(&3));
    }

    /// The PostgreSQL variant upserts a row per locale (here into the
    /// driver's in-memory database), and its store comes back after a
    /// restart from the database, not a changelog topic.
    #[test]
    fn valid_logins_are_counted_into_a_row_per_locale() {
        let topology = build_pg().unwrap();
        assert!(
            topology
                .parts()
                .iter()
                .all(|t| t.description.changelogs().is_empty())
        );
        let mut driver = TestDriver::with_partitions(topology, 2).unwrap();
        for (p, locale) in [(0, "en-GB"), (1, "de-DE"), (1, "en-GB")] {
            driver
                .pipe_to(p, Some(USER), &login(USER, locale), 1)
                .unwrap();
        }
        driver.restart().unwrap();
        driver
            .pipe_to(0, Some(USER), &login(USER, "en-GB"), 1)
            .unwrap();
        let tables = driver.tables().row_tables(10);
        let (_, columns, _, rows) = tables.iter().find(|t| t.0 == pg::TABLE).unwrap();
        assert_eq!(columns, &["locale", "count"]);
        let mut counts: Vec<Vec<Cell>> = rows.iter().map(|r| r.cells.clone()).collect();
        counts.sort_by_key(|r| format!("{r:?}"));
        let row = |l: &str, n| vec![Cell::Text(l.into()), Cell::Int(n)];
        assert_eq!(counts, [row("de-DE", 1), row("en-GB", 3)]);
    }
}
