//! Window aggregates into PostgreSQL: each commit merges the unit's rows
//! into the table (one UNNEST upsert, not row by row; a partial merges by
//! each column's rule) and marks windows final, in the transaction that
//! stores the input positions (`offsets`). The SQL is built from the
//! topology's `TableSpec`; a table that does not exist yet is created from it.

use std::sync::Arc;

use sqlx::{Postgres, QueryBuilder};

use super::{PgUnit, Statement};
use crate::{
    operator::At,
    sink::{
        Merge, Sink, SinkError, SqlType, TableSpec, UnitWriter,
        window_table::{Batch, WindowRow},
    },
    topology::{KeyValue, Payload},
    window::Window,
};

/// A window table's sink of one group member.
pub struct PgWindowSink {
    spec: Arc<TableSpec>,
    batch: Batch,
}

impl PgWindowSink {
    pub fn new(spec: Arc<TableSpec>) -> Self {
        Self {
            spec,
            batch: Batch::default(),
        }
    }
}

impl Sink for PgWindowSink {
    fn write(
        &mut self,
        payload: &mut Payload,
        _: At,
        _: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError> {
        if let Some(row) = payload.take::<WindowRow>() {
            self.batch.add(&self.spec, row);
        }
        Ok(())
    }

    fn flush(&mut self, unit: &mut UnitWriter<'_>) -> Result<u64, SinkError> {
        let rows = self.batch.take();
        if rows.is_empty() {
            return Ok(0);
        }
        let table = self.spec.table.as_str();
        let staged = unit.staged::<PgUnit>().ok_or_else(|| {
            SinkError::config(table, "the unit does not commit in PostgreSQL".into())
        })?;
        let (changed, closed): (Vec<WindowRow>, Vec<WindowRow>) = rows
            .into_iter()
            .partition(|r| matches!(r, WindowRow::Changed { .. }));
        let written = changed.len() as u64;
        if !changed.is_empty() {
            staged.stage(Statement::new(upsert(&self.spec, &changed)));
        }
        if !closed.is_empty() {
            let closed: Vec<(WindowKey, Window)> = closed
                .into_iter()
                .map(|r| (r.id().0.clone(), r.id().1))
                .collect();
            staged.stage(Statement::new(finalise(&self.spec, &closed)));
        }
        Ok(written)
    }

    fn abort(&mut self) {
        self.batch.clear();
    }
}

type WindowKey = Vec<KeyValue>;

/// CREATE TABLE and its indexes: "this key over this time range", and
/// "everything in this time range".
pub fn create_table(spec: &TableSpec) -> Vec<String> {
    let t = spec.table.as_str();
    let mut cols: Vec<String> = spec
        .keys
        .iter()
        .map(|k| format!("{} {} NOT NULL", k.name.quoted(), k.sql.sql()))
        .collect();
    cols.push("window_start TIMESTAMPTZ NOT NULL".into());
    cols.push("window_end TIMESTAMPTZ NOT NULL".into());
    cols.extend(
        spec.aggregates
            .iter()
            .map(|a| format!("{} {} NOT NULL", a.name.quoted(), a.sql.sql())),
    );
    cols.push("is_final BOOLEAN NOT NULL DEFAULT false".into());
    cols.push("updated_at TIMESTAMPTZ NOT NULL DEFAULT now()".into());
    let keys: Vec<String> = spec.keys.iter().map(|k| k.name.quoted()).collect();
    cols.push(format!(
        "PRIMARY KEY ({}, window_start, window_end)",
        keys.join(", ")
    ));
    vec![
        format!("CREATE TABLE {} ({})", spec.table.quoted(), cols.join(", ")),
        format!(
            "CREATE INDEX \"{t}_by_key_time\" ON {} ({}, window_start)",
            spec.table.quoted(),
            keys[0]
        ),
        format!(
            "CREATE INDEX \"{t}_by_time\" ON {} (window_start)",
            spec.table.quoted()
        ),
    ]
}

/// Binds one key column's values as an array of its type.
fn bind_key<'k>(
    s: &mut sqlx::query_builder::Separated<'_, 'static, Postgres, &'static str>,
    sql: SqlType,
    values: impl Iterator<Item = &'k KeyValue>,
) {
    match sql {
        SqlType::BigInt => {
            let v: Vec<i64> = values
                .map(|v| match v {
                    KeyValue::Int(n) => *n,
                    KeyValue::Text(s) => s.parse().unwrap_or_default(),
                })
                .collect();
            s.push_bind(v);
        }
        _ => {
            s.push_bind(values.map(|v| v.to_string()).collect::<Vec<String>>());
        }
    }
    s.push_unseparated(format!("::{}", sql.array()));
}

/// The upsert of a commit's rows: a partial merges into a stored row by
/// each column's rule.
fn upsert(spec: &TableSpec, rows: &[WindowRow]) -> QueryBuilder<'static, Postgres> {
    let rows: Vec<(&WindowKey, Window, &[crate::window::Value], bool)> = rows
        .iter()
        .filter_map(|r| match r {
            WindowRow::Changed {
                key,
                window,
                values,
                is_final,
            } => Some((key, *window, values.as_slice(), *is_final)),
            WindowRow::Closed { .. } => None,
        })
        .collect();
    let keys: Vec<String> = spec.keys.iter().map(|k| k.name.quoted()).collect();
    let stored: Vec<_> = spec.stored().collect();
    let mut cols = keys.clone();
    cols.extend(["window_start".into(), "window_end".into()]);
    cols.extend(spec.aggregates.iter().map(|a| a.name.quoted()));
    cols.extend(["is_final".into(), "updated_at".into()]);
    let u = |name: &str| format!("u.\"{name}\"");
    let mut select: Vec<String> = spec.keys.iter().map(|k| u(k.name.as_str())).collect();
    select.push("'epoch'::timestamptz + u.ws * interval '1 millisecond'".into());
    select.push("'epoch'::timestamptz + u.we * interval '1 millisecond'".into());
    for a in &spec.aggregates {
        select.push(match &a.merge {
            Merge::Ratio {
                numerator,
                denominator,
            } => format!("{} / {}", u(numerator), u(denominator)),
            _ => u(a.name.as_str()),
        });
    }
    select.extend(["u.f".into(), "now()".into()]);
    let mut aliases: Vec<String> = spec.keys.iter().map(|k| k.name.quoted()).collect();
    aliases.extend(["ws".into(), "we".into()]);
    aliases.extend(stored.iter().map(|a| a.name.quoted()));
    aliases.push("f".into());
    let t = |name: &str| format!("t.\"{name}\"");
    let x = |name: &str| format!("EXCLUDED.\"{name}\"");
    let mut updates: Vec<String> = spec
        .aggregates
        .iter()
        .map(|a| {
            let n = a.name.as_str();
            let merged = match &a.merge {
                Merge::Add => format!("{} + {}", t(n), x(n)),
                Merge::Final => x(n),
                Merge::Min => format!("LEAST({}, {})", t(n), x(n)),
                Merge::Max => format!("GREATEST({}, {})", t(n), x(n)),
                Merge::Ratio {
                    numerator,
                    denominator,
                } => format!(
                    "({} + {}) / ({} + {})",
                    t(numerator),
                    x(numerator),
                    t(denominator),
                    x(denominator)
                ),
            };
            format!("\"{n}\" = {merged}")
        })
        .collect();
    updates.push("is_final = t.is_final OR EXCLUDED.is_final".into());
    updates.push("updated_at = now()".into());

    let mut q = QueryBuilder::new(format!(
        "INSERT INTO {} AS t ({}) SELECT {} FROM UNNEST(",
        spec.table.quoted(),
        cols.join(", "),
        select.join(", ")
    ));
    {
        let mut s = q.separated(", ");
        for (i, k) in spec.keys.iter().enumerate() {
            bind_key(&mut s, k.sql, rows.iter().map(|r| &r.0[i]));
        }
        s.push_bind(rows.iter().map(|r| r.1.start_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
        s.push_bind(rows.iter().map(|r| r.1.end_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
        for (i, a) in stored.iter().enumerate() {
            let column = rows.iter().map(|r| r.2[i]);
            match a.sql {
                SqlType::BigInt => {
                    s.push_bind(column.map(|v| v.as_f64() as i64).collect::<Vec<i64>>())
                }
                _ => s.push_bind(column.map(|v| v.as_f64()).collect::<Vec<f64>>()),
            };
            s.push_unseparated(format!("::{}", a.sql.array()));
        }
        s.push_bind(rows.iter().map(|r| r.3).collect::<Vec<_>>());
        s.push_unseparated("::bool[]");
    }
    q.push(format!(
        ") AS u({}) ON CONFLICT ({}, window_start, window_end) DO UPDATE SET {}",
        aliases.join(", "),
        keys.join(", "),
        updates.join(", ")
    ));
    q
}

/// Marks windows final that had no new records since the last commit.
fn finalise(spec: &TableSpec, closed: &[(WindowKey, Window)]) -> QueryBuilder<'static, Postgres> {
    let mut aliases: Vec<String> = spec.keys.iter().map(|k| k.name.quoted()).collect();
    aliases.extend(["ws".into(), "we".into()]);
    let matches: Vec<String> = spec
        .keys
        .iter()
        .map(|k| format!("t.{0} = u.{0}", k.name.quoted()))
        .collect();
    let mut q = QueryBuilder::new(format!(
        "UPDATE {} AS t SET is_final = true, updated_at = now() FROM UNNEST(",
        spec.table.quoted()
    ));
    {
        let mut s = q.separated(", ");
        for (i, k) in spec.keys.iter().enumerate() {
            bind_key(&mut s, k.sql, closed.iter().map(|(key, _)| &key[i]));
        }
        s.push_bind(closed.iter().map(|(_, w)| w.start_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
        s.push_bind(closed.iter().map(|(_, w)| w.end_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
    }
    q.push(format!(
        ") AS u({}) WHERE {} AND t.window_start = 'epoch'::timestamptz + u.ws * interval '1 millisecond' AND t.window_end = 'epoch'::timestamptz + u.we * interval '1 millisecond' AND NOT t.is_final",
        aliases.join(", "),
        matches.join(" AND ")
    ));
    q
}
