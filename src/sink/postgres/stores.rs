//! The key-value stores of a unit that commits in PostgreSQL, kept in
//! `sluice_store_changes` (each key's latest value per changelog name and
//! partition): a flush stages one upsert and one delete per partition in
//! the unit, which the keeper runs in the transaction of the positions, so
//! a store never holds a record whose position was not stored with it; a
//! claim reads the partition's keys back.

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{PgUnit, Statement};
use crate::state::{Change, ReadError};

/// Every key of `changelog`'s `partition`, in key order.
pub async fn read(
    pool: &PgPool,
    changelog: &str,
    partition: i32,
) -> Result<Vec<Change>, ReadError> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key, value FROM sluice_store_changes
         WHERE changelog = $1 AND partition = $2 ORDER BY key",
    )
    .bind(changelog)
    .bind(partition)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, value)| Change {
            key,
            value: Some(value),
        })
        .collect())
}

/// Stages `changes` of `changelog`'s `partition` in the unit: values
/// upserted, tombstones deleted. A key changes once per flush (the store
/// gives its latest value), so one statement may touch each row once.
pub fn stage(unit: &mut PgUnit, changelog: &str, partition: i32, changes: &[Change]) {
    let (puts, deletes): (Vec<&Change>, Vec<&Change>) =
        changes.iter().partition(|c| c.value.is_some());
    if !puts.is_empty() {
        let mut q: QueryBuilder<'static, Postgres> = QueryBuilder::new(
            "INSERT INTO sluice_store_changes (changelog, partition, key, value) SELECT ",
        );
        q.push_bind(changelog.to_string())
            .push(", ")
            .push_bind(partition)
            .push(", u.k, u.v FROM UNNEST(")
            .push_bind(puts.iter().map(|c| c.key.clone()).collect::<Vec<_>>())
            .push("::bytea[], ")
            .push_bind(
                puts.iter()
                    .map(|c| c.value.clone().unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .push(
                "::bytea[]) AS u(k, v) ON CONFLICT (changelog, partition, key) \
                 DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            );
        unit.stage(Statement::new(q));
    }
    if !deletes.is_empty() {
        let mut q: QueryBuilder<'static, Postgres> =
            QueryBuilder::new("DELETE FROM sluice_store_changes WHERE changelog = ");
        q.push_bind(changelog.to_string())
            .push(" AND partition = ")
            .push_bind(partition)
            .push(" AND key = ANY(")
            .push_bind(deletes.iter().map(|c| c.key.clone()).collect::<Vec<_>>())
            .push("::bytea[])");
        unit.stage(Statement::new(q));
    }
}
