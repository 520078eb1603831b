-- No silent gap after a failed or cancelled backfill: a stream's history is complete
-- only once a full read (a backfill, or a first incremental from no watermark) has
-- ended. Until then incrementals still run, but the stream is reported incomplete, and
-- a new backfill resumes where the last one's landed batches reach.
ALTER TABLE cairn.sync_cursors
    -- When a full read of the stream last completed.
    ADD COLUMN backfill_completed_at timestamptz,
    -- The backfill run under way (or the last one, which failed or was cancelled).
    ADD COLUMN backfill_run uuid,
    -- Where that backfill resumes: {"page": n, "cursor": PageCursor, "records": m}, the
    -- first page not known to have landed, and the records fetched before it.
    ADD COLUMN backfill_resume jsonb,
    -- The vendor's total for the stream, as the backfill last saw it (for progress).
    ADD COLUMN backfill_total bigint;

-- A stream synced before this, and never backfilled since, was read whole by its first
-- incremental: its history is complete. One whose backfill was launched is not known to
-- have finished unless a completed backfill run of that stream says so (and no other
-- source has a stream of that name, which the run's input could not tell apart); its
-- next backfill starts over (there is no resume point).
UPDATE cairn.sync_cursors SET backfill_completed_at = updated_at
 WHERE backfill_launched_at IS NULL AND watermark IS NOT NULL;
UPDATE cairn.sync_cursors c SET backfill_completed_at = r.finished_at
  FROM (SELECT input->>'stream' AS stream, max(finished_at) AS finished_at
          FROM cairn.runs WHERE workflow = 'sync.backfill' AND status = 'completed'
         GROUP BY 1) r
 WHERE c.stream = r.stream AND c.backfill_launched_at IS NOT NULL
   AND r.finished_at >= c.backfill_launched_at
   AND (SELECT count(*) FROM cairn.sync_cursors o WHERE o.stream = c.stream) = 1;

-- `cairn sync status` finds a stream's latest runs without reading every run.
CREATE INDEX runs_by_sync_stream ON cairn.runs ((input->>'stream'), created_at DESC)
    WHERE workflow LIKE 'sync.%';
