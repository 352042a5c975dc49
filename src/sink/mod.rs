//! Sinks other than Kafka topics: where window aggregates are merged, and
//! the input positions stored with them.

pub mod memory;
pub mod postgres;
pub mod query;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use sqlx::PgPool;

use postgres::{Claim, ClosedRow, Position, Row, SinkError, WindowSink};

/// Where a windowed topology merges its aggregates and keeps its positions.
/// `commit` is all or nothing: rows, finality and positions together.
#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// Takes over `partitions`, fencing their previous owner.
    async fn claim(&self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError>;

    async fn commit(
        &self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
    ) -> Result<(), SinkError>;
}

#[async_trait]
impl WindowStore for WindowSink {
    async fn claim(&self, partitions: &[i32]) -> Result<Vec<Claim>, SinkError> {
        WindowSink::claim(self, partitions).await
    }

    async fn commit(
        &self,
        rows: &[Row],
        closed: &[ClosedRow],
        positions: &[Position],
    ) -> Result<(), SinkError> {
        WindowSink::commit(self, rows, closed, positions).await
    }
}

/// The store windowed topologies of one process use.
#[derive(Clone)]
pub enum WindowStores {
    Postgres(PgPool),
    /// No database: aggregates live in this process (the demo without DATABASE_URL).
    Memory(Arc<memory::MemoryWindows>),
}

impl fmt::Debug for WindowStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowStores::Postgres(_) => "WindowStores::Postgres",
            WindowStores::Memory(_) => "WindowStores::Memory",
        })
    }
}

impl WindowStores {
    pub fn open(
        &self,
        table: &str,
        group: &str,
        topic: &str,
    ) -> Result<Arc<dyn WindowStore>, SinkError> {
        Ok(match self {
            WindowStores::Postgres(pool) => {
                Arc::new(WindowSink::new(pool.clone(), table, group, topic)?)
            }
            WindowStores::Memory(m) => Arc::new(m.scoped(group, topic)),
        })
    }
}
