//! A window table's shape: its key columns, then `window_start` and
//! `window_end`, its aggregate columns, `is_final` and `updated_at`. The
//! PostgreSQL sink, the in-memory store and `windows query` build their SQL
//! and their output from it, so a windowed topology declares its table once.

use crate::window::{Columns, ValueType};

/// A table identifier that is safe to quote into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(name: &str) -> Result<TableName, String> {
        let mut chars = name.chars();
        let ok = name.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(TableName(name.to_string()))
        } else {
            Err(format!(
                "{name:?} is not allowed: use 1–63 lower-case letters, digits and underscores, starting with a letter or underscore"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// The SQL types a table's columns take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Text,
    BigInt,
    Float8,
    /// TIMESTAMPTZ, from milliseconds since the epoch.
    Timestamp,
}

impl SqlType {
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Text => "TEXT",
            SqlType::BigInt => "BIGINT",
            SqlType::Float8 => "DOUBLE PRECISION",
            SqlType::Timestamp => "TIMESTAMPTZ",
        }
    }

    /// The array type UNNEST takes.
    pub fn array(self) -> &'static str {
        match self {
            SqlType::Text => "text[]",
            SqlType::BigInt => "bigint[]",
            SqlType::Float8 => "float8[]",
            SqlType::Timestamp => "timestamptz[]",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: TableName,
    pub sql: SqlType,
}

/// How a stored aggregate and a batch's partial one combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    Add,
    Min,
    Max,
    /// Not stored from the partial: the merged `numerator` over the merged
    /// `denominator` (both `Add` columns), e.g. avg = sum / count.
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// A user-defined aggregate's column: the window's whole value, written
    /// once the window is final (such tables take only final windows).
    Final,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateColumn {
    pub name: TableName,
    pub sql: SqlType,
    pub merge: Merge,
}

pub use crate::window::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: TableName,
    /// The database it lives in, by name (`DEFAULT_DATABASE` unless `in_database` says).
    pub database: String,
    pub keys: Vec<KeyColumn>,
    pub aggregates: Vec<AggregateColumn>,
}

impl TableSpec {
    /// A table named `table`, with no columns yet.
    pub fn new(table: &str) -> Result<TableSpec, String> {
        Ok(TableSpec {
            table: TableName::parse(table)?,
            database: super::DEFAULT_DATABASE.to_string(),
            keys: Vec::new(),
            aggregates: Vec::new(),
        })
    }

    /// Keeps the table in the database run under `name`.
    pub fn in_database(mut self, name: &str) -> TableSpec {
        self.database = name.to_string();
        self
    }

    /// Adds a key column.
    pub fn key(mut self, name: &str, sql: SqlType) -> Result<TableSpec, String> {
        if matches!(sql, SqlType::Float8 | SqlType::Timestamp) {
            return Err(format!(
                "key column {name}: use text or bigint (a float is no key, and windows have their own times)"
            ));
        }
        self.keys.push(KeyColumn {
            name: TableName::parse(name)?,
            sql,
        });
        Ok(self)
    }

    /// count, sum, min, max and avg: the columns of a `window::Stats`
    /// aggregate (avg derived from sum and count).
    pub fn stats(mut self) -> TableSpec {
        let col = |name: &str, sql, merge| AggregateColumn {
            name: TableName(name.to_string()),
            sql,
            merge,
        };
        self.aggregates = vec![
            col("count", SqlType::BigInt, Merge::Add),
            col("sum", SqlType::Float8, Merge::Add),
            col("min", SqlType::Float8, Merge::Min),
            col("max", SqlType::Float8, Merge::Max),
            col(
                "avg",
                SqlType::Float8,
                Merge::Ratio {
                    numerator: "sum".into(),
                    denominator: "count".into(),
                },
            ),
        ];
        self
    }

    /// Adds the columns of aggregate `A` after the others, written whole
    /// once the window is final (SQL cannot merge them).
    pub fn columns_of<A: Columns>(mut self) -> Result<TableSpec, String> {
        for (name, kind) in A::columns() {
            self.aggregates.push(AggregateColumn {
                name: TableName::parse(name)?,
                sql: match kind {
                    ValueType::Int => SqlType::BigInt,
                    ValueType::Float => SqlType::Float8,
                },
                merge: Merge::Final,
            });
        }
        Ok(self)
    }

    /// The names of the user-defined aggregate's columns.
    pub fn user_columns(&self) -> Vec<&str> {
        self.aggregates
            .iter()
            .filter(|a| a.merge == Merge::Final)
            .map(|a| a.name.as_str())
            .collect()
    }

    /// Whether its rows are written once, when final (a user-defined
    /// aggregate cannot be merged in SQL).
    pub fn finals_only(&self) -> bool {
        !self.user_columns().is_empty()
    }

    /// The aggregate columns written from a partial (not derived).
    pub fn stored(&self) -> impl Iterator<Item = &AggregateColumn> {
        self.aggregates
            .iter()
            .filter(|a| !matches!(a.merge, Merge::Ratio { .. }))
    }

    /// Checks the spec is whole, for a key of `key_values` values and an
    /// aggregate with `columns`: gives, per stored column, where in the
    /// aggregate's values it is.
    pub fn check(
        &self,
        key_values: usize,
        columns: &[(&'static str, ValueType)],
    ) -> Result<Vec<usize>, String> {
        if self.keys.is_empty() {
            return Err(format!("table {} has no key columns", self.table.as_str()));
        }
        if self.keys.len() != key_values {
            return Err(format!(
                "table {} has {} key column(s) but the aggregate's key gives {key_values} value(s)",
                self.table.as_str(),
                self.keys.len()
            ));
        }
        let mut names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        names.extend(self.aggregates.iter().map(|a| a.name.as_str()));
        names.extend(["window_start", "window_end", "is_final", "updated_at"]);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("column {} appears twice", w[0]));
        }
        let offered: Vec<&str> = columns.iter().map(|c| c.0).collect();
        self.stored()
            .map(|a| {
                offered
                    .iter()
                    .position(|c| *c == a.name.as_str())
                    .ok_or_else(|| {
                        format!(
                            "column {} of table {} is none of the aggregate's columns ({})",
                            a.name.as_str(),
                            self.table.as_str(),
                            offered.join(", ")
                        )
                    })
            })
            .collect()
    }

    /// The stored columns' values, picked from an aggregate's by `check`'s positions.
    pub fn pick(picks: &[usize], values: &[Value]) -> Vec<Value> {
        picks
            .iter()
            .map(|&i| values.get(i).copied().unwrap_or(Value::Float(f64::NAN)))
            .collect()
    }

    /// Merges `more` (a later partial of the same window) into `into`,
    /// stored columns in order, by each column's rule.
    pub fn merge_into(&self, into: &mut [Value], more: &[Value]) {
        for ((a, x), y) in self.stored().zip(into.iter_mut()).zip(more) {
            *x = match (&a.merge, *x, *y) {
                (Merge::Add, Value::Int(p), Value::Int(q)) => Value::Int(p + q),
                (Merge::Add, p, q) => Value::Float(p.as_f64() + q.as_f64()),
                (Merge::Min, p, q) if q.as_f64() < p.as_f64() => q,
                (Merge::Max, p, q) if q.as_f64() > p.as_f64() => q,
                (Merge::Min | Merge::Max, p, _) => p,
                (_, _, q) => q,
            };
        }
    }

    /// Every aggregate column's value, derived ones included, from the
    /// stored ones (in `stored` order).
    pub fn all_values(&self, stored: &[Value]) -> Vec<(String, Value)> {
        let named: Vec<(&str, Value)> = self
            .stored()
            .map(|a| a.name.as_str())
            .zip(stored.iter().copied())
            .collect();
        let get = |n: &str| named.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
        self.aggregates
            .iter()
            .map(|a| {
                let v = match &a.merge {
                    Merge::Ratio {
                        numerator,
                        denominator,
                    } => {
                        let n = get(numerator).map_or(f64::NAN, Value::as_f64);
                        let d = get(denominator).map_or(f64::NAN, Value::as_f64);
                        Value::Float(n / d)
                    }
                    _ => get(a.name.as_str()).unwrap_or(Value::Float(f64::NAN)),
                };
                (a.name.as_str().to_string(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Stats;

    #[test]
    fn table_names_are_checked_not_spliced() {
        for ok in ["sensor_window_aggregates", "_t1", "a"] {
            assert!(TableName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "t; DROP TABLE x",
            "a\"b",
            &"x".repeat(64),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_checks_its_keys_and_columns() {
        let spec = TableSpec::new("t")
            .unwrap()
            .key("device_id", SqlType::Text)
            .unwrap()
            .stats();
        let cols = Stats::columns();
        assert_eq!(spec.check(1, &cols).unwrap(), vec![0, 1, 2, 3]);
        assert!(spec.check(2, &cols).unwrap_err().contains("1 key column"));
        assert!(
            spec.check(1, &[("count", ValueType::Int)])
                .unwrap_err()
                .contains("column sum")
        );
        assert!(
            TableSpec::new("t")
                .unwrap()
                .stats()
                .check(0, &cols)
                .is_err()
        );
        assert!(
            TableSpec::new("t")
                .unwrap()
                .key("count", SqlType::Text)
                .unwrap()
                .stats()
                .check(1, &cols)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            TableSpec::new("t")
                .unwrap()
                .key("x", SqlType::Float8)
                .is_err()
        );
        let mut s = Stats::default();
        crate::window::Aggregate::add(&mut s, &2.0);
        crate::window::Aggregate::add(&mut s, &4.0);
        let picks = spec.check(1, &cols).unwrap();
        let stored = TableSpec::pick(&picks, &s.values());
        assert_eq!(
            stored,
            vec![
                Value::Int(2),
                Value::Float(6.0),
                Value::Float(2.0),
                Value::Float(4.0)
            ]
        );
        assert_eq!(
            spec.all_values(&stored)[4],
            ("avg".to_string(), Value::Float(3.0))
        );
        let mut merged = stored.clone();
        spec.merge_into(
            &mut merged,
            &[
                Value::Int(1),
                Value::Float(1.0),
                Value::Float(1.0),
                Value::Float(1.0),
            ],
        );
        assert_eq!(
            merged,
            vec![
                Value::Int(3),
                Value::Float(7.0),
                Value::Float(1.0),
                Value::Float(4.0)
            ]
        );
    }
}
