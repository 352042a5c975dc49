//! PostgreSQL as a database topologies commit in: window tables
//! (`windows`), row tables (`rows`: a row per record, or per key,
//! upserted), the key-value stores' changes (`stores`) and the input
//! positions (`offsets`: claimed per partition, fenced by epoch), all
//! written in one SQL transaction per unit. Sinks stage their statements in the unit
//! (`PgUnit`); the keeper runs them with the positions and commits.

pub mod offsets;
pub mod rows;
pub mod stores;
pub mod windows;

use std::{any::Any, sync::Arc, time::Instant};

use sqlx::{PgPool, Postgres as Pg, QueryBuilder};

use self::offsets::{PgOffsets, ensure_table};
use super::{Database, RowSpec, Sink, SinkError, TableSpec};
use crate::{
    commit::{Claim, CommitError, Group, Keeper, Outbox, Position},
    state::{Change, ChangeWriter, Changelogs, ReadError, StoreLog},
};

/// What went wrong in PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Unreachable, or it refused a statement; retrying may help.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Another worker has claimed the partition since.
    #[error("partition {partition} was claimed by another worker; nothing was written")]
    Fenced { partition: i32 },
}

impl From<PgError> for CommitError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Fenced { partition } => CommitError::Fenced { partition },
            other => CommitError::Database(Box::new(other)),
        }
    }
}

/// One statement of a unit, and the rows it should touch (a shortfall
/// is logged: rows stored before under positions since lost).
pub struct Statement {
    query: QueryBuilder<'static, Pg>,
    expect: Option<(String, u64)>,
}

impl Statement {
    pub fn new(query: QueryBuilder<'static, Pg>) -> Self {
        Statement {
            query,
            expect: None,
        }
    }

    pub fn expecting(mut self, table: String, rows: u64) -> Self {
        self.expect = Some((table, rows));
        self
    }
}

/// What the unit's sinks staged, run in its transaction at commit.
#[derive(Default)]
pub struct PgUnit {
    statements: Vec<Statement>,
}

impl PgUnit {
    pub fn stage(&mut self, s: Statement) {
        self.statements.push(s);
    }
}

/// A PostgreSQL database.
pub struct Postgres {
    pool: PgPool,
    /// Sinks and keepers run on the task thread, no runtime thread: their
    /// queries run on this runtime.
    handle: tokio::runtime::Handle,
}

impl Postgres {
    /// Must be called within a Tokio runtime.
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Postgres {
            pool,
            handle: tokio::runtime::Handle::current(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn ensure(&self, table: &str, statements: &[String]) -> Result<(), SinkError> {
        let created = crate::kafka::blocking(|| {
            self.handle
                .block_on(ensure_table(&self.pool, table, statements))
        })
        .map_err(|e| SinkError::new(table, true, e))?;
        if created {
            tracing::info!(table, "table created");
        }
        Ok(())
    }
}

impl Database for Postgres {
    fn keeper(&self, group: &str, topic: &str) -> Box<dyn Keeper> {
        Box::new(PgKeeper {
            offsets: PgOffsets::new(self.pool.clone(), group, topic),
            handle: self.handle.clone(),
            unit: PgUnit::default(),
        })
    }

    fn window_table(&self, spec: Arc<TableSpec>) -> Result<Box<dyn Sink>, SinkError> {
        self.ensure(spec.table.as_str(), &windows::create_table(&spec))?;
        Ok(Box::new(windows::PgWindowSink::new(spec)))
    }

    fn row_table(&self, spec: Arc<RowSpec>) -> Result<Box<dyn Sink>, SinkError> {
        self.ensure(spec.table.as_str(), &rows::create_table(&spec))?;
        Ok(Box::new(rows::PgRowSink::new(spec)))
    }

    fn describe(&self) -> String {
        "PostgreSQL".into()
    }

    fn ready_check(&self) -> Option<Arc<dyn crate::metrics::ReadyCheck>> {
        Some(crate::metrics::postgres_check(self.pool.clone()))
    }

    fn peek(&self) -> Option<&dyn crate::sink::peek::Peek> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The positions of one group member's partitions, kept in PostgreSQL.
pub struct PgKeeper {
    offsets: PgOffsets,
    handle: tokio::runtime::Handle,
    unit: PgUnit,
}

impl PgKeeper {
    async fn commit_async(
        &self,
        statements: Vec<Statement>,
        positions: &[Position],
    ) -> Result<(), PgError> {
        let mut tx = self.offsets.pool().begin().await?;
        for s in statements {
            let mut query = s.query;
            let touched = query.build().execute(&mut *tx).await?.rows_affected();
            if let Some((table, given)) = s.expect
                && touched < given
            {
                tracing::warn!(
                    table,
                    rows = given - touched,
                    "rows were stored already (their positions were reset or lost); kept the stored ones"
                );
            }
        }
        self.offsets.store(tx, positions).await?.commit().await?;
        Ok(())
    }
}

impl Keeper for PgKeeper {
    fn claims(&self) -> bool {
        true
    }

    fn claim(&mut self, partitions: &[i32], _: &dyn Group) -> Result<Vec<Claim>, CommitError> {
        Ok(self.handle.block_on(self.offsets.claim(partitions))?)
    }

    fn staged(&mut self) -> Option<&mut dyn Any> {
        Some(&mut self.unit)
    }

    fn stores(&mut self) -> Option<&mut dyn StoreLog> {
        Some(self)
    }

    fn commit(
        &mut self,
        positions: &[Position],
        out: &mut dyn Outbox,
        _: &dyn Group,
    ) -> Result<(), CommitError> {
        // Letters and topic outputs: acknowledged first, at least once.
        out.flush().map_err(CommitError::Letters)?;
        crate::failpoint::hit("before-store-commit");
        let statements = std::mem::take(&mut self.unit.statements);
        let started = Instant::now();
        self.handle
            .block_on(self.commit_async(statements, positions))?;
        tracing::trace!(took = ?started.elapsed(), "PostgreSQL commit");
        crate::failpoint::hit("after-store-commit");
        Ok(())
    }

    fn abort(&mut self, out: &mut dyn Outbox) {
        self.unit.statements.clear();
        out.abort();
    }

    fn owns_group_offsets(&self) -> bool {
        false
    }

    fn domain(&self) -> &'static str {
        "postgres"
    }
}

impl Changelogs for PgKeeper {
    fn read(&mut self, changelog: &str, partition: i32) -> Result<Vec<Change>, ReadError> {
        let pool = self.offsets.pool();
        crate::kafka::blocking(|| {
            self.handle
                .block_on(stores::read(pool, changelog, partition))
        })
    }
}

impl ChangeWriter for PgKeeper {
    fn write(
        &mut self,
        changelog: &str,
        partition: i32,
        changes: &[Change],
    ) -> Result<(), rdkafka::error::KafkaError> {
        stores::stage(&mut self.unit, changelog, partition, changes);
        Ok(())
    }
}
