-- The schema of talking to vendors and landing their records: the rate budgets every
-- worker shares, the warehouse's registry of tables and columns, quarantined records and
-- the id sets of delete reconciliation. The engine's schema comes first.

-- A token bucket per credential, shared through the database by every worker.
CREATE TABLE cairn.rate_budgets (
    key             text PRIMARY KEY,
    -- The configured rate, the most the adaptive rate may grow back to.
    ceiling         double precision NOT NULL CHECK (ceiling > 0),
    rate            double precision NOT NULL CHECK (rate > 0),
    burst           double precision NOT NULL CHECK (burst >= 1),
    tokens          double precision NOT NULL,
    refilled_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    paused_until    timestamptz NOT NULL DEFAULT '-infinity',
    throttle_streak integer NOT NULL DEFAULT 0,
    successes       bigint NOT NULL DEFAULT 0,
    granted         bigint NOT NULL DEFAULT 0,
    throttled       bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Each stream's warehouse table, and the source that owns it.
CREATE TABLE cairn.warehouse_tables (
    schema_name text NOT NULL,
    stream      text NOT NULL,
    table_name  text NOT NULL,
    primary_key text NOT NULL,
    -- The table's shape version (from warehouse_shape_version), bumped by every change.
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    source      text,
    PRIMARY KEY (schema_name, stream),
    UNIQUE (schema_name, table_name)
);

CREATE SEQUENCE cairn.warehouse_shape_version;

-- Each vendor field a table holds, and the column it lands in.
CREATE TABLE cairn.warehouse_columns (
    schema_name text NOT NULL,
    stream      text NOT NULL,
    field       text NOT NULL,
    column_name text NOT NULL,
    column_type text CHECK (column_type IN
                    ('text', 'bigint', 'numeric', 'boolean', 'timestamptz', 'jsonb')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    -- Whether records may leave the field out (it then lands as NULL).
    optional    boolean NOT NULL DEFAULT false,
    -- A field past the column limit: kept in `_raw` only.
    raw_only    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (schema_name, stream, field),
    UNIQUE (schema_name, stream, column_name),
    FOREIGN KEY (schema_name, stream) REFERENCES cairn.warehouse_tables (schema_name, stream)
        ON UPDATE CASCADE ON DELETE CASCADE
);

-- Records that could not land, with why; met again, counted once.
CREATE TABLE cairn.quarantine (
    id          bigserial PRIMARY KEY,
    schema_name text NOT NULL,
    stream      text NOT NULL,
    record_id   text,
    kind        text NOT NULL,
    reason      text NOT NULL,
    record      json NOT NULL,
    synced_at   timestamptz NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    times       bigint NOT NULL DEFAULT 1,
    source      text,
    record_key  text NOT NULL
);

CREATE INDEX quarantine_by_stream ON cairn.quarantine (stream, last_seen DESC);
CREATE UNIQUE INDEX quarantine_record ON cairn.quarantine (schema_name, stream, record_key, reason);

-- The vendor's id set of a reconciliation in progress, copied in as it is listed.
CREATE TABLE cairn.reconcile_ids (
    reconcile_id text NOT NULL,
    stream       text NOT NULL,
    id           text NOT NULL
);

CREATE INDEX reconcile_ids_by_run ON cairn.reconcile_ids (reconcile_id, stream);
