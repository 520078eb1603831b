-- The warehouse sink's bookkeeping (cairn_connectors::warehouse). The warehouse tables
-- themselves live in their own schema (default `warehouse`) and are created on first use.

-- Shape versions: drawn from a sequence so a version is never reused, even by a
-- transaction that rolled back; a cached shape is current iff its version matches.
CREATE SEQUENCE cairn.warehouse_shape_version;

-- One row per warehouse table: the stream it holds and the version of its shape.
CREATE TABLE cairn.warehouse_tables (
    schema_name   text        NOT NULL,
    stream        text        NOT NULL,
    table_name    text        NOT NULL,
    primary_key   text        NOT NULL,
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, stream),
    UNIQUE (schema_name, table_name)
);

-- The schema registry: every vendor field seen on a stream, the column it maps to and
-- the column's type. A NULL type is a field seen only with null values so far: it has
-- no column yet, but its absence from a later record is still a removed field.
CREATE TABLE cairn.warehouse_columns (
    schema_name  text        NOT NULL,
    stream       text        NOT NULL,
    field        text        NOT NULL,
    column_name  text        NOT NULL,
    column_type  text        CHECK (column_type IN
                     ('text', 'bigint', 'numeric', 'boolean', 'timestamptz', 'jsonb')),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, stream, field),
    UNIQUE (schema_name, stream, column_name),
    FOREIGN KEY (schema_name, stream)
        REFERENCES cairn.warehouse_tables (schema_name, stream) ON DELETE CASCADE
);

-- Records that could not land as they are: schema drift (removed field, type change,
-- rename) or records the warehouse cannot hold. One row per record id and reason,
-- holding the latest version seen; `record` is `json`, not `jsonb`, because it must
-- also hold what `jsonb` refuses (a NUL character).
CREATE TABLE cairn.quarantine (
    id          bigserial   PRIMARY KEY,
    schema_name text        NOT NULL,
    stream      text        NOT NULL,
    record_id   text,
    kind        text        NOT NULL,
    reason      text        NOT NULL,
    record      json        NOT NULL,
    synced_at   timestamptz NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    times       bigint      NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX quarantine_record ON cairn.quarantine (schema_name, stream, record_id, reason);
CREATE INDEX quarantine_by_stream ON cairn.quarantine (stream, last_seen DESC);

-- Things a human must look at (`cairn alerts`). An open alert (resolved_at IS NULL) is
-- unique per kind, stream and detail: raising it again bumps `count` and `last_seen`.
CREATE TABLE cairn.alerts (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,
    stream      text        NOT NULL,
    detail      text        NOT NULL,
    message     text        NOT NULL,
    count       bigint      NOT NULL DEFAULT 1,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE UNIQUE INDEX alerts_open ON cairn.alerts (kind, stream, detail) WHERE resolved_at IS NULL;

-- A vendor's id set staged page by page for delete reconciliation, keyed by the
-- reconciliation it belongs to; removed once the reconciliation is applied.
CREATE TABLE cairn.reconcile_ids (
    reconcile_id text        NOT NULL,
    stream       text        NOT NULL,
    id           text        NOT NULL,
    PRIMARY KEY (reconcile_id, stream, id)
);
