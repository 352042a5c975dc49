-- The key-value stores of topologies that commit in PostgreSQL: each key's
-- latest value per changelog and partition, written in the transaction that
-- stores the positions (a Kafka changelog could not commit with them) and
-- read back when a worker claims the partition.
CREATE TABLE IF NOT EXISTS sluice_store_changes (
    changelog TEXT NOT NULL,
    partition INTEGER NOT NULL,
    key BYTEA NOT NULL,
    value BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (changelog, partition, key)
);
