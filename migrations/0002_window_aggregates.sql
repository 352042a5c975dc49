-- Event-time window aggregates of sensor readings, merged batch by batch.
CREATE TABLE sensor_window_aggregates (
    device_id    TEXT             NOT NULL,
    sensor_type  TEXT             NOT NULL,
    window_start TIMESTAMPTZ      NOT NULL,
    window_end   TIMESTAMPTZ      NOT NULL,
    count        BIGINT           NOT NULL,
    sum          DOUBLE PRECISION NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    avg          DOUBLE PRECISION NOT NULL,
    -- true once the watermark passed window_end plus the grace period
    is_final     BOOLEAN          NOT NULL DEFAULT false,
    updated_at   TIMESTAMPTZ      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, sensor_type, window_start, window_end)
);
-- "this device over this time range", and "everything in this time range"
CREATE INDEX sensor_window_aggregates_by_device_time
    ON sensor_window_aggregates (device_id, window_start);
CREATE INDEX sensor_window_aggregates_by_time
    ON sensor_window_aggregates (window_start);

-- Input positions committed in the same transaction as the rows they produced;
-- a worker seeks here on assignment. watermark_ms survives restarts so a
-- final window is never reopened.
CREATE TABLE sluice_offsets (
    consumer_group TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    partition      INTEGER     NOT NULL,
    next_offset    BIGINT      NOT NULL,
    watermark_ms   BIGINT      NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
