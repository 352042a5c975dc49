//! A table of window aggregates as a sink: a row per key and window, in
//! the database the table names. Every commit merges what changed in each
//! window since the last one (partials merged by each column's rule:
//! counts and sums add, minima and maxima keep theirs) and marks windows
//! final, in the transaction that stores the input positions, so the
//! table shows windows filling up live and is itself the windows' state.
//! Session windows, and tables with columns SQL cannot merge, take each
//! window once, whole, when final.

use std::sync::Arc;

use super::{OpenSink, Sink, SinkEnv, SinkError, TableSpec};
use crate::{
    operator::window::Delta,
    topology::{
        BuildError, Domain, Ended, IntoKey, Item, Payload, SinkDesc, WindowKey, Windowed,
        WindowedTable, ops::Ops,
    },
    window::{Columns, Value, Window},
};

/// A change to one row of a window table: stored columns in the spec's order.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowRow {
    Changed {
        key: WindowKey,
        window: Window,
        values: Vec<Value>,
        is_final: bool,
    },
    Closed {
        key: WindowKey,
        window: Window,
    },
}

impl WindowRow {
    pub fn id(&self) -> (&WindowKey, Window) {
        match self {
            WindowRow::Changed { key, window, .. } | WindowRow::Closed { key, window } => {
                (key, *window)
            }
        }
    }
}

/// Ends a windowed aggregation in a window table.
pub trait ToPostgres {
    /// Merges the windows into `table` (created from it if missing) in the
    /// database it names, exactly once; its columns are the aggregate's
    /// (`Columns`) by name. Without PostgreSQL (`sluice demo`) the same
    /// table can live in memory.
    fn to_postgres(self, table: TableSpec) -> Ended;
}

impl<S, T, O, K, A> ToPostgres for WindowedTable<S, T, O, K, A>
where
    S: 'static,
    T: Send + 'static,
    O: Ops<S, T>,
    K: IntoKey + Clone + Eq + std::hash::Hash + Send + 'static,
    A: Columns + Send + 'static,
{
    fn to_postgres(self, table: TableSpec) -> Ended {
        let topology = self.stream.topology_name();
        let picks = match table.check(K::COLUMNS, &A::columns()) {
            Ok(p) => p,
            Err(reason) => {
                self.stream
                    .graph()
                    .borrow_mut()
                    .fail(BuildError::BadTable { topology, reason });
                Vec::new()
            }
        };
        let finals = self.spec.is_session() || table.finals_only();
        let table = Arc::new(table);
        let desc = SinkDesc {
            label: format!(
                "table {} (window aggregates{})",
                table.table.as_str(),
                if finals { ", once final" } else { ", merged" }
            ),
            topics: Vec::new(),
            domain: Domain::Database(table.database.clone()),
            guarantee: String::new(),
        };
        let open = Arc::new(WindowTableSpec {
            table: table.clone(),
        });
        if finals {
            self.finals()
                .into_sink(open, desc, move |item: Item<Windowed<K, A>>, _| {
                    let w = item.value;
                    Ok(Payload::Value(Box::new(WindowRow::Changed {
                        key: w.key.into_key(),
                        window: w.window,
                        values: TableSpec::pick(&picks, &w.value.values()),
                        is_final: true,
                    })))
                })
        } else {
            self.deltas()
                .into_sink(open, desc, move |item: Item<Delta<K, A>>, _| {
                    let row = match item.value {
                        Delta::Changed {
                            key,
                            window,
                            partial,
                            is_final,
                        } => WindowRow::Changed {
                            key: key.into_key(),
                            window,
                            values: TableSpec::pick(&picks, &partial.values()),
                            is_final,
                        },
                        Delta::Closed { key, window } => WindowRow::Closed {
                            key: key.into_key(),
                            window,
                        },
                    };
                    Ok(Payload::Value(Box::new(row)))
                })
        }
    }
}

/// A window table's declaration.
pub struct WindowTableSpec {
    pub table: Arc<TableSpec>,
}

impl OpenSink for WindowTableSpec {
    fn open(&self, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
        env.database(self.table.table.as_str())?
            .window_table(self.table.clone())
    }

    fn table(&self) -> Option<super::Table> {
        Some(super::Table::Windows(self.table.clone()))
    }
}

/// A unit's rows for one window table, each window once: later partials
/// merged into earlier ones by the columns' rules.
#[derive(Debug, Default)]
pub struct Batch {
    rows: Vec<WindowRow>,
    index: std::collections::HashMap<(WindowKey, Window), usize>,
}

impl Batch {
    pub fn add(&mut self, spec: &TableSpec, row: WindowRow) {
        let id = (row.id().0.clone(), row.id().1);
        match self.index.get(&id) {
            None => {
                self.index.insert(id, self.rows.len());
                self.rows.push(row);
            }
            Some(&i) => {
                let had = &mut self.rows[i];
                match (had, row) {
                    (
                        WindowRow::Changed {
                            values, is_final, ..
                        },
                        WindowRow::Changed {
                            values: more,
                            is_final: f,
                            ..
                        },
                    ) => {
                        spec.merge_into(values, &more);
                        *is_final |= f;
                    }
                    (WindowRow::Changed { is_final, .. }, WindowRow::Closed { .. }) => {
                        *is_final = true
                    }
                    (had @ WindowRow::Closed { .. }, more @ WindowRow::Changed { .. }) => {
                        *had = more;
                        if let WindowRow::Changed { is_final, .. } = had {
                            *is_final = true;
                        }
                    }
                    (WindowRow::Closed { .. }, WindowRow::Closed { .. }) => {}
                }
            }
        }
    }

    pub fn take(&mut self) -> Vec<WindowRow> {
        self.index.clear();
        std::mem::take(&mut self.rows)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.index.clear();
    }
}
