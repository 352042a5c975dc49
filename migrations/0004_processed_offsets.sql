-- How far each partition was processed, where reading resumes earlier than
-- that (from the first record still in an open window, for sinks that
-- store windows only once final): re-read records below it send no late
-- or dead-letter records again.
ALTER TABLE sluice_offsets ADD COLUMN IF NOT EXISTS processed_offset BIGINT NOT NULL DEFAULT -1;
