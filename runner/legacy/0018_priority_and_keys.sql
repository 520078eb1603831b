-- Priorities and concurrency keys. Higher priorities are claimed first (an urgent run
-- overtakes a long backfill waiting in the same queue); a concurrency key (a vendor
-- credential, a tenant) lets a worker cap how many runs sharing it it executes at once.
ALTER TABLE cairn.runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE cairn.runs ADD COLUMN concurrency_key text;

-- Runs waiting for their wake time, in claim order: by priority, then wake time.
DROP INDEX cairn.runs_ready;
CREATE INDEX runs_ready ON cairn.runs (queue, priority DESC, wake_at)
    WHERE status IN ('pending', 'sleeping', 'parked', 'retrying');
