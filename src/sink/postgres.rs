//! Window aggregates into PostgreSQL, exactly once: each commit merges the
//! batch's partial aggregates into the table's rows (one UNNEST upsert, not
//! row by row) and stores the input offsets, watermarks and ownership
//! epochs in `sluice_offsets`, in the same transaction. A crash before the
//! commit loses nothing (the batch is re-read from the stored offsets);
//! after it, nothing is counted twice (reading resumes there). The SQL is
//! built from the topology's `TableSpec`; a table that does not exist yet
//! is created from it.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{
    Claim, Group, Sink, SinkEnv, SinkError, SinkSpec, Stores, TableSpec, Topology,
    kafka::Txn,
    offsets::{PgOffsets, ensure_table},
    table::{Merge, SqlType},
    window::{ClosedRow, Position, Row, WindowStage, WindowTable},
};
use crate::{
    topology::{Aggregated, BuildError, KeyValue, MakeAggregate, Ops},
    window::WindowSpec,
};

/// Finishes a windowed declaration with a window table.
pub trait ToPostgres {
    /// Merges the aggregates into `table` (created from it if missing),
    /// exactly once, and finishes the declaration. Without a database
    /// (`sluice demo`) the same table is kept in memory.
    fn to_postgres(self, table: TableSpec) -> Result<Topology, BuildError>;
}

impl<S, T, O> ToPostgres for Aggregated<S, T, O>
where
    S: DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
    O: Ops<S, T>,
{
    fn to_postgres(self, table: TableSpec) -> Result<Topology, BuildError> {
        let names: Vec<&str> = table
            .aggregates
            .iter()
            .filter(|a| a.merge != Merge::Final)
            .map(|a| a.name.as_str())
            .collect();
        let w = self.readings(&names.join(", "))?;
        let bad = |reason| BuildError::BadTable {
            topology: w.declared.description.name.clone(),
            reason,
        };
        table.check(w.key_columns).map_err(bad)?;
        let declared: Vec<&str> = w.user_columns.iter().map(|(n, _)| *n).collect();
        if table.user_columns() != declared {
            return Err(bad(format!(
                "table {} has user-defined aggregate columns {:?} but the stream's aggregate gives {:?} \
                 (declare it with .with::<A>() and add its columns with TableSpec::columns_of::<A>())",
                table.table.as_str(),
                table.user_columns(),
                declared
            )));
        }
        Ok(Topology::new(
            w.declared,
            Arc::new(WindowSinkSpec {
                table: Arc::new(table),
                window: w.spec,
                make: w.make,
            }),
        ))
    }
}

/// The declaration of a window table sink.
pub struct WindowSinkSpec {
    pub table: Arc<TableSpec>,
    pub window: WindowSpec,
    pub make: MakeAggregate,
}

impl SinkSpec for WindowSinkSpec {
    fn describe(&self) -> String {
        format!("postgres:{}", self.table.table.as_str())
    }

    fn topics(&self) -> Vec<String> {
        Vec::new()
    }

    fn guarantee(&self) -> &'static str {
        "exactly-once (offsets in the same PostgreSQL transaction as the rows)"
    }

    fn needs_store(&self) -> bool {
        true
    }

    fn table(&self) -> Option<Arc<TableSpec>> {
        Some(self.table.clone())
    }

    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        let letters = Txn::new(env.kafka, None, env.topology, env.stats.clone())?;
        let late = env.late.unwrap_or(env.dead_letter);
        let names = (env.topology, late);
        let (stats, timings) = (env.stats.clone(), env.timings.clone());
        let (spec, window) = (self.table.clone(), self.window);
        Ok(match env.stores {
            Some(Stores::Postgres(pool)) => {
                let table = PgWindowTable::new(pool.clone(), spec, env.group, env.source);
                Box::new(
                    WindowStage::new(table, window, letters, names, stats, timings)
                        .with_aggregate(self.make.clone()),
                )
            }
            Some(Stores::Memory(m)) => {
                let table = m.scoped(spec, env.group, env.source);
                Box::new(
                    WindowStage::new(table, window, letters, names, stats, timings)
                        .with_aggregate(self.make.clone()),
                )
            }
            None => {
                return Err(SinkError::Config(format!(
                    "topology {} writes window aggregates to PostgreSQL: set DATABASE_URL (or --database-url)",
                    env.topology
                )));
            }
        })
    }
}

/// A window table in PostgreSQL, for one consumer group reading one topic.
pub struct PgWindowTable {
    offsets: PgOffsets,
    spec: Arc<TableSpec>,
    /// The sender thread is no runtime thread: queries run on this one.
    handle: tokio::runtime::Handle,
    ensured: bool,
}

impl PgWindowTable {
    /// Must be called within a Tokio runtime.
    pub fn new(pool: PgPool, spec: Arc<TableSpec>, group: &str, topic: &str) -> Self {
        Self {
            offsets: PgOffsets::new(pool, group, topic),
            spec,
            handle: tokio::runtime::Handle::current(),
            ensured: false,
        }
    }

    /// Creates the table from its spec if it does not exist.
    pub async fn ensure(&self) -> Result<(), SinkError> {
        let table = self.spec.table.as_str();
        if ensure_table(self.offsets.pool(), table, &create_table(&self.spec)).await? {
            tracing::info!(table, "window table created");
        }
        Ok(())
    }

    /// Takes over `partitions`, fencing their previous owner.
    pub async fn claim_async(&self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        self.offsets.claim(partitions).await
    }

    /// Merges `rows`, marks `closed` windows final and stores `positions`,
    /// all in one transaction; rolled back if another worker claimed a
    /// partition since.
    pub async fn commit_async(
        &self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
    ) -> Result<(), SinkError> {
        let mut tx = self.offsets.pool().begin().await?;
        if !rows.is_empty() {
            upsert(&self.spec, rows).build().execute(&mut *tx).await?;
        }
        if !closed.is_empty() {
            finalise(&self.spec, closed)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        self.offsets.store(tx, positions).await?.commit().await?;
        Ok(())
    }
}

impl WindowTable for PgWindowTable {
    fn claim(&mut self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        if !self.ensured {
            self.handle.block_on(self.ensure())?;
            self.ensured = true;
        }
        self.handle.block_on(self.claim_async(partitions))
    }

    fn commit(
        &mut self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
        letters: &mut Txn,
        _: &dyn Group,
    ) -> Result<(), SinkError> {
        letters.flush().map_err(SinkError::Letters)?;
        self.handle
            .block_on(self.commit_async(rows, closed, positions))
    }

    fn finals_only(&self) -> bool {
        self.spec.finals_only()
    }
}

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
fn upsert(spec: &TableSpec, rows: &[Row]) -> QueryBuilder<'static, Postgres> {
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
            bind_key(&mut s, k.sql, rows.iter().map(|r| &r.key[i]));
        }
        s.push_bind(rows.iter().map(|r| r.window.start_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
        s.push_bind(rows.iter().map(|r| r.window.end_ms).collect::<Vec<_>>());
        s.push_unseparated("::bigint[]");
        let values: Vec<Vec<super::table::Value>> =
            rows.iter().map(|r| spec.values(&r.partial)).collect();
        for (i, a) in stored.iter().enumerate() {
            let column = values.iter().map(|v| v[i]);
            match a.sql {
                SqlType::BigInt => {
                    s.push_bind(column.map(|v| v.as_f64() as i64).collect::<Vec<i64>>())
                }
                _ => s.push_bind(column.map(|v| v.as_f64()).collect::<Vec<f64>>()),
            };
            s.push_unseparated(format!("::{}", a.sql.array()));
        }
        s.push_bind(rows.iter().map(|r| r.is_final).collect::<Vec<_>>());
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
fn finalise(spec: &TableSpec, closed: &[ClosedRow]) -> QueryBuilder<'static, Postgres> {
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
