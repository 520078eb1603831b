-- What the warehouse cannot hold is handled once.
--
-- `optional`: a field some records of a page carry and others omit (vendors often leave
-- out what is null). Its absence lands as NULL instead of counting as a removed field.
-- `raw_only`: a field past the table's column cap (PostgreSQL tables hold at most 1,600
-- columns, and rows of fixed-width columns far fewer): it stays in `_raw` only.
ALTER TABLE cairn.warehouse_columns
    ADD COLUMN optional boolean NOT NULL DEFAULT false,
    ADD COLUMN raw_only boolean NOT NULL DEFAULT false;

-- A quarantined record is kept once per source, stream, record and reason: by its
-- primary key, or, for a record without a usable one, by a hash of its content, so a
-- record sent again on every sync is counted (`times`), not stored again.
ALTER TABLE cairn.quarantine ADD COLUMN record_key text;
UPDATE cairn.quarantine SET record_key = coalesce(record_id, 'entry:' || id);
ALTER TABLE cairn.quarantine ALTER COLUMN record_key SET NOT NULL;
DROP INDEX cairn.quarantine_record;
CREATE UNIQUE INDEX quarantine_record
    ON cairn.quarantine (schema_name, stream, record_key, reason);
