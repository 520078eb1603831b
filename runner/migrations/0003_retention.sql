-- Retention: a finished run's step outputs (fetched pages, personal data) are purged
-- once its window has passed, keeping the run's and its steps' metadata for audit.
ALTER TABLE cairn.runs ADD COLUMN outputs_purged_at timestamptz;

-- Finished runs whose outputs are still kept, oldest first: what a purge scans.
CREATE INDEX runs_to_purge ON cairn.runs (finished_at)
    WHERE finished_at IS NOT NULL AND outputs_purged_at IS NULL;
