-- Step outputs are stored as `json`, the text the engine serialized, instead of `jsonb`.
-- A checkpoint is written once and read back only on replay, never queried inside, so
-- building a `jsonb` tree (parsing, sorting every object's keys) was pure cost: for a
-- fetched page of 1,000 records it was a fifth of the database's work in a sync. `json`
-- also keeps what `jsonb` refuses, such as a \u0000 escape in a vendor's string.
ALTER TABLE cairn.steps ALTER COLUMN output TYPE json USING output::json;

-- Large outputs (fetched pages) are compressed with lz4 where the server has it: pglz
-- took another tenth of the database's work. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE cairn.steps ALTER COLUMN output SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$$;
