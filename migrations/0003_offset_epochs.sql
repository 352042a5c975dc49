-- Ownership epochs: a worker claims a partition by bumping its epoch and
-- commits only while the epoch is still its own, so a worker that lost the
-- partition (a zombie) cannot write after its successor has read the offsets.
ALTER TABLE sluice_offsets ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
