-- Storage of the embedded Schema Registry (`sluice registry serve --storage postgres`).
CREATE TABLE schema_registry_schemas (
    id          BIGINT PRIMARY KEY,
    -- sha256 of schema_text: unique where the text itself is too long to index.
    fingerprint BYTEA  NOT NULL UNIQUE,
    schema_type TEXT   NOT NULL DEFAULT 'AVRO',
    schema_text TEXT   NOT NULL
);

CREATE TABLE schema_registry_versions (
    subject    TEXT        NOT NULL,
    version    INTEGER     NOT NULL CHECK (version > 0),
    schema_id  BIGINT      NOT NULL REFERENCES schema_registry_schemas (id),
    deleted    BOOLEAN     NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
CREATE INDEX schema_registry_versions_by_id ON schema_registry_versions (schema_id);

-- subject '' holds the global level.
CREATE TABLE schema_registry_config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
