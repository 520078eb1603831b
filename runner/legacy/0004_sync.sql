-- Incremental sync state per source stream, and progress reports on runs.

CREATE TABLE cairn.sync_cursors (
    source             text        NOT NULL,
    stream             text        NOT NULL,
    -- The vendor change marker (an updated_at high-water mark or a change token) the
    -- next incremental run starts from, inclusively.
    watermark          text,
    -- The highest marker seen by the traversal under way; promoted to `watermark`
    -- in the same transaction as the traversal's last page.
    pending_watermark  text,
    -- When the last backfill was launched: incremental runs start from here at once.
    backfill_launched_at timestamptz,
    records            bigint      NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream)
);

-- What a running workflow reports about its own progress (records, pages, estimates),
-- shown by `cairn runs show` and `cairn sync --wait`.
ALTER TABLE cairn.runs ADD COLUMN progress jsonb;
