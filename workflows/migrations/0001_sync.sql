-- The sync workflows' schema: where each stream of each source stands. The engine's and
-- the warehouse's schemas come first.

CREATE TABLE cairn.sync_cursors (
    source                text NOT NULL,
    stream                text NOT NULL,
    -- Where the next incremental run starts.
    watermark             text,
    pending_watermark     text,
    -- When the last backfill was launched: incremental runs start from here at once.
    backfill_launched_at  timestamptz,
    records               bigint NOT NULL DEFAULT 0,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    schema_name           text NOT NULL,
    -- When a full read last completed: until then the stream's history is incomplete.
    backfill_completed_at timestamptz,
    backfill_run          uuid,
    -- How far the landed batches of the running backfill reach, to resume from there.
    backfill_resume       jsonb,
    backfill_total        bigint,
    PRIMARY KEY (source, schema_name, stream)
);

-- `cairn sync status` finds a stream's latest runs without reading every run.
CREATE INDEX runs_by_sync_stream ON cairn.runs ((input->>'stream'), created_at DESC)
    WHERE workflow LIKE 'sync.%';
