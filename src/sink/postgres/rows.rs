//! A row table in PostgreSQL: created from its `RowSpec` when missing, and
//! filled by one INSERT … SELECT FROM UNNEST per commit (one array per
//! column, so a commit of thousands of rows is one statement), in the
//! transaction that stores the positions; a keyed table's rows are
//! upserted (ON CONFLICT on its key), the unit's latest row per key.

use std::sync::Arc;

use sqlx::{Postgres, QueryBuilder};

use super::{PgUnit, Statement};
use crate::{
    operator::At,
    sink::{
        Sink, SinkError, SqlType, UnitWriter,
        rows::{
            INGESTED_AT, RowSpec, SOURCE_OFFSET, SOURCE_PARTITION, SourcedRow, UPDATED_AT,
            latest_per_key, sourced,
        },
    },
    topology::{Cell, Payload},
};

/// A row table's sink of one group member.
pub struct PgRowSink {
    spec: Arc<RowSpec>,
    rows: Vec<SourcedRow>,
}

impl PgRowSink {
    pub fn new(spec: Arc<RowSpec>) -> Self {
        Self {
            spec,
            rows: Vec::new(),
        }
    }
}

impl Sink for PgRowSink {
    fn write(
        &mut self,
        payload: &mut Payload,
        at: At,
        _: &mut UnitWriter<'_>,
    ) -> Result<(), SinkError> {
        if let Some(row) = sourced(payload, at) {
            self.rows.push(row);
        }
        Ok(())
    }

    fn flush(&mut self, unit: &mut UnitWriter<'_>) -> Result<u64, SinkError> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        let table = self.spec.table.as_str().to_string();
        let staged = unit.staged::<PgUnit>().ok_or_else(|| {
            SinkError::config(&table, "the unit does not commit in PostgreSQL".into())
        })?;
        let given = self.rows.len() as u64;
        if self.spec.is_keyed() {
            let rows = latest_per_key(&self.spec, std::mem::take(&mut self.rows));
            staged.stage(Statement::new(upsert(&self.spec, &rows)));
            return Ok(given);
        }
        staged.stage(Statement::new(insert(&self.spec, &self.rows)).expecting(table, given));
        self.rows.clear();
        Ok(given)
    }

    fn abort(&mut self) {
        self.rows.clear();
    }

    fn release(&mut self, partitions: &[i32]) {
        self.rows.retain(|r| !partitions.contains(&r.partition));
    }
}

/// CREATE TABLE, keyed by the source position (or the table's key), and
/// its indexes.
pub fn create_table(spec: &RowSpec) -> Vec<String> {
    let t = spec.table.as_str();
    let quoted = spec.table.quoted();
    let mut cols: Vec<String> = spec
        .columns
        .iter()
        .map(|c| {
            let null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{null}", c.name.quoted(), c.sql.sql())
        })
        .collect();
    if spec.is_keyed() {
        let key: Vec<String> = spec
            .key
            .iter()
            .map(|&i| spec.columns[i].name.quoted())
            .collect();
        cols.push(format!("{UPDATED_AT} TIMESTAMPTZ NOT NULL DEFAULT now()"));
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    } else {
        cols.push(format!("{SOURCE_PARTITION} INTEGER NOT NULL"));
        cols.push(format!("{SOURCE_OFFSET} BIGINT NOT NULL"));
        cols.push(format!("{INGESTED_AT} TIMESTAMPTZ NOT NULL DEFAULT now()"));
        cols.push(format!("PRIMARY KEY ({SOURCE_PARTITION}, {SOURCE_OFFSET})"));
    }
    let mut statements = vec![format!("CREATE TABLE {quoted} ({})", cols.join(", "))];
    if let Some((k, time)) = spec.index {
        let (k, time) = (
            spec.columns[k].name.quoted(),
            spec.columns[time].name.quoted(),
        );
        statements.push(format!(
            "CREATE INDEX \"{t}_by_key_time\" ON {quoted} ({k}, {time})"
        ));
        statements.push(format!("CREATE INDEX \"{t}_by_time\" ON {quoted} ({time})"));
    }
    statements
}

/// The insert of a commit's rows. A row whose position is stored already
/// is kept as it is: that only happens when positions were reset, and
/// re-reading must not fail for it.
fn insert(spec: &RowSpec, rows: &[SourcedRow]) -> QueryBuilder<'static, Postgres> {
    let mut q = unnest(spec, rows, true);
    q.push(format!(
        " ON CONFLICT ({SOURCE_PARTITION}, {SOURCE_OFFSET}) DO NOTHING"
    ));
    q
}

/// The upsert of each key's latest row of a commit.
fn upsert(spec: &RowSpec, rows: &[SourcedRow]) -> QueryBuilder<'static, Postgres> {
    let key: Vec<String> = spec
        .key
        .iter()
        .map(|&i| spec.columns[i].name.quoted())
        .collect();
    let set: Vec<String> = (spec.columns.iter().enumerate())
        .filter(|(i, _)| !spec.key.contains(i))
        .map(|(_, c)| format!("{0} = EXCLUDED.{0}", c.name.quoted()))
        .chain([format!("{UPDATED_AT} = now()")])
        .collect();
    let mut q = unnest(spec, rows, false);
    q.push(format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        key.join(", "),
        set.join(", ")
    ));
    q
}

/// INSERT INTO the table SELECT FROM UNNEST of one array per column (and
/// the source positions, if `sourced`).
fn unnest(spec: &RowSpec, rows: &[SourcedRow], sourced: bool) -> QueryBuilder<'static, Postgres> {
    let n = spec.columns.len();
    let mut cols: Vec<String> = spec.columns.iter().map(|c| c.name.quoted()).collect();
    let mut select: Vec<String> = (0..n)
        .map(|i| match spec.columns[i].sql {
            SqlType::Timestamp => {
                format!("'epoch'::timestamptz + u.c{i} * interval '1 millisecond'")
            }
            _ => format!("u.c{i}"),
        })
        .collect();
    let mut aliases: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    if sourced {
        cols.extend([SOURCE_PARTITION.to_string(), SOURCE_OFFSET.to_string()]);
        select.extend(["u.p".to_string(), "u.o".to_string()]);
        aliases.extend(["p".to_string(), "o".to_string()]);
    }
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST(",
        spec.table.quoted(),
        cols.join(", "),
        select.join(", ")
    ));
    {
        let mut s = q.separated(", ");
        for (i, c) in spec.columns.iter().enumerate() {
            let column = rows.iter().map(|r| &r.cells[i]);
            match c.sql {
                SqlType::Text => {
                    s.push_bind(column.map(as_text).collect::<Vec<Option<String>>>());
                    s.push_unseparated("::text[]");
                }
                SqlType::BigInt | SqlType::Timestamp => {
                    s.push_bind(column.map(as_int).collect::<Vec<Option<i64>>>());
                    s.push_unseparated("::bigint[]");
                }
                SqlType::Float8 => {
                    s.push_bind(column.map(as_float).collect::<Vec<Option<f64>>>());
                    s.push_unseparated("::float8[]");
                }
            }
        }
        if sourced {
            s.push_bind(rows.iter().map(|r| r.partition).collect::<Vec<i32>>());
            s.push_unseparated("::int[]");
            s.push_bind(rows.iter().map(|r| r.offset).collect::<Vec<i64>>());
            s.push_unseparated("::bigint[]");
        }
    }
    q.push(format!(") AS u({})", aliases.join(", ")));
    q
}

// The rows fit the spec (`RowSpec::fits` ran in the processor), so a
// mismatch here is only ever a null.
fn as_text(c: &Cell) -> Option<String> {
    match c {
        Cell::Text(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_int(c: &Cell) -> Option<i64> {
    match c {
        Cell::Int(n) | Cell::TimeMs(n) => Some(*n),
        _ => None,
    }
}

fn as_float(c: &Cell) -> Option<f64> {
    match c {
        Cell::Float(x) => Some(*x),
        Cell::Int(n) => Some(*n as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RowSpec {
        RowSpec::new("readings")
            .unwrap()
            .column("device_id", SqlType::Text)
            .unwrap()
            .nullable("value", SqlType::Float8)
            .unwrap()
            .column("event_time", SqlType::Timestamp)
            .unwrap()
            .indexed("device_id", "event_time")
            .unwrap()
    }

    #[test]
    fn the_table_is_keyed_by_source_position_and_indexed_by_key_and_time() {
        let s = create_table(&spec());
        assert_eq!(s.len(), 3);
        assert!(s[0].contains("\"value\" DOUBLE PRECISION,"), "{}", s[0]);
        assert!(s[0].contains("\"event_time\" TIMESTAMPTZ NOT NULL"));
        assert!(s[0].contains("PRIMARY KEY (source_partition, source_offset)"));
        assert!(
            s[1].ends_with("(\"device_id\", \"event_time\")"),
            "{}",
            s[1]
        );
        assert!(s[2].ends_with("(\"event_time\")"));
    }

    #[test]
    fn a_keyed_table_is_keyed_by_its_columns_and_upserts_each_keys_last_row() {
        let s = spec().keyed_by(&["device_id"]).unwrap();
        let create = create_table(&s);
        assert!(
            create[0].contains("updated_at TIMESTAMPTZ"),
            "{}",
            create[0]
        );
        assert!(
            create[0].contains("PRIMARY KEY (\"device_id\")"),
            "{}",
            create[0]
        );
        assert!(!create[0].contains("source_offset"), "{}", create[0]);
        let row = |d: &str, v: f64, offset| SourcedRow {
            partition: 0,
            offset,
            cells: vec![Cell::Text(d.into()), Cell::Float(v), Cell::TimeMs(1)],
        };
        let rows = vec![row("a", 1.0, 0), row("b", 2.0, 1), row("a", 3.0, 2)];
        let latest = latest_per_key(&s, rows);
        assert_eq!(latest, vec![row("b", 2.0, 1), row("a", 3.0, 2)]);
        let sql = upsert(&s, &latest).into_sql();
        assert!(
            sql.ends_with(
                "ON CONFLICT (\"device_id\") DO UPDATE SET \"value\" = EXCLUDED.\"value\", \"event_time\" = EXCLUDED.\"event_time\", updated_at = now()"
            ),
            "{sql}"
        );
        assert!(!sql.contains("source_offset"), "{sql}");
        assert!(
            spec()
                .keyed_by(&["value"])
                .unwrap_err()
                .contains("may be null")
        );
        assert!(
            spec()
                .keyed_by(&["nope"])
                .unwrap_err()
                .contains("not a column")
        );
        assert!(spec().keyed_by(&[]).is_err());
    }

    #[test]
    fn rows_that_do_not_fit_say_which_column() {
        let s = spec();
        let ok = [Cell::Text("d".into()), Cell::Null, Cell::TimeMs(1)];
        assert_eq!(s.fits(&ok), Ok(()));
        let null = [Cell::Null, Cell::Float(1.0), Cell::TimeMs(1)];
        assert!(
            s.fits(&null)
                .unwrap_err()
                .contains("device_id takes no null")
        );
        let wrong = [
            Cell::Text("d".into()),
            Cell::Text("x".into()),
            Cell::TimeMs(1),
        ];
        assert!(
            s.fits(&wrong)
                .unwrap_err()
                .contains("value is DOUBLE PRECISION")
        );
        assert!(s.fits(&ok[..2]).unwrap_err().contains("2 value(s)"));
        assert!(spec().column("source_offset", SqlType::BigInt).is_err());
        assert!(spec().indexed("device_id", "value").is_err());
    }
}
