-- Sources never share tables: each source lands in a schema of its own (by default
-- derived from its name), a warehouse table records the source that writes it, and
-- cursors, quarantined records and alerts name their source.
--
-- Before this migration every source landed in one schema (`warehouse` by default), so
-- two sources with a stream of the same name shared a table. A table that one source
-- alone synced moves, rows and all, to that source's derived schema. A table that
-- several sources synced cannot be split (its rows do not say whose they are): it stays
-- where it is, untouched, those sources' cursors start over so their next syncs read
-- everything into schemas of their own, and an alert says so. No row is dropped.

ALTER TABLE cairn.warehouse_tables ADD COLUMN source text;
ALTER TABLE cairn.quarantine ADD COLUMN source text;
ALTER TABLE cairn.alerts ADD COLUMN source text NOT NULL DEFAULT '';
DROP INDEX cairn.alerts_open;
CREATE UNIQUE INDEX alerts_open ON cairn.alerts (kind, source, stream, detail)
    WHERE resolved_at IS NULL;

-- A cursor belongs to the table it advances: a source synced into two schemas (say, with
-- `cairn sync --schema`) has two independent watermarks.
ALTER TABLE cairn.sync_cursors ADD COLUMN schema_name text;

-- A table's registry rows follow it when it moves to another schema.
ALTER TABLE cairn.warehouse_columns
    DROP CONSTRAINT warehouse_columns_schema_name_stream_fkey,
    ADD FOREIGN KEY (schema_name, stream)
        REFERENCES cairn.warehouse_tables (schema_name, stream)
        ON DELETE CASCADE ON UPDATE CASCADE;

-- The schema a source's name derives (as `derived_schema_name` and `schema_name_problem`
-- in cairn-connectors do), or NULL when the name derives no usable one.
CREATE FUNCTION pg_temp.cairn_source_schema(source text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s ~ '^[a-z_][a-z0-9_]*$' AND octet_length(s) <= 63
                 AND s NOT LIKE 'pg\_%' AND s NOT IN ('public', 'information_schema', 'cairn')
                THEN s END
      FROM (SELECT regexp_replace(lower(source), '[^a-z0-9_]', '_', 'g') AS s) derived
$$;

DO $$
DECLARE
    t record;
    owners text[];
    target text;
BEGIN
    FOR t IN SELECT schema_name, stream, table_name FROM cairn.warehouse_tables
              ORDER BY schema_name, stream
    LOOP
        SELECT array_agg(DISTINCT source ORDER BY source) INTO owners
          FROM cairn.sync_cursors WHERE stream = t.stream AND schema_name IS NULL;
        IF owners IS NULL THEN
            -- No sync wrote it (the sink was used directly): the first source to land
            -- in it claims it.
            CONTINUE;
        ELSIF cardinality(owners) = 1 THEN
            target := pg_temp.cairn_source_schema(owners[1]);
            IF target IS NULL OR target = t.schema_name
               OR to_regclass(format('%I.%I', target, t.table_name)) IS NOT NULL THEN
                -- It stays where it is; the source keeps landing here once its file says
                -- `[warehouse] schema = "<this schema>"`.
                target := t.schema_name;
            ELSE
                EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target);
                EXECUTE format('ALTER TABLE %I.%I SET SCHEMA %I',
                               t.schema_name, t.table_name, target);
                UPDATE cairn.warehouse_tables SET schema_name = target, updated_at = now()
                 WHERE schema_name = t.schema_name AND stream = t.stream;
            END IF;
            UPDATE cairn.warehouse_tables SET source = owners[1]
             WHERE schema_name = target AND stream = t.stream;
            UPDATE cairn.quarantine SET schema_name = target, source = owners[1]
             WHERE schema_name = t.schema_name AND stream = t.stream;
            UPDATE cairn.alerts SET source = owners[1] WHERE stream = t.stream;
            UPDATE cairn.sync_cursors SET schema_name = target
             WHERE source = owners[1] AND stream = t.stream;
        ELSE
            UPDATE cairn.sync_cursors
               SET watermark = NULL, pending_watermark = NULL, backfill_launched_at = NULL,
                   schema_name = coalesce(pg_temp.cairn_source_schema(source), t.schema_name),
                   updated_at = now()
             WHERE stream = t.stream AND schema_name IS NULL;
            INSERT INTO cairn.alerts (kind, source, stream, detail, message)
            VALUES ('shared_table', '', t.stream,
                    format('table %I.%I held the rows of several sources', t.schema_name, t.table_name),
                    format('table %I.%I held the rows of sources %s, which cairn can no longer '
                           'tell apart; it is kept as it was, and each of those sources now lands '
                           'in a schema of its own, starting over with a full read',
                           t.schema_name, t.table_name, array_to_string(owners, ', ')));
        END IF;
    END LOOP;
    UPDATE cairn.sync_cursors
       SET schema_name = coalesce(pg_temp.cairn_source_schema(source), 'warehouse')
     WHERE schema_name IS NULL;
END
$$;

ALTER TABLE cairn.sync_cursors ALTER COLUMN schema_name SET NOT NULL;
ALTER TABLE cairn.sync_cursors DROP CONSTRAINT sync_cursors_pkey,
    ADD PRIMARY KEY (source, schema_name, stream);

-- Sync runs and schedules made before this named the old single schema explicitly; from
-- now on a run lands where its source says (or where `--schema` said).
UPDATE cairn.runs SET input = input - 'warehouse_schema'
 WHERE workflow LIKE 'sync.%' AND input->>'warehouse_schema' = 'warehouse'
   AND status NOT IN ('completed', 'failed', 'cancelled');
UPDATE cairn.schedules SET input = input - 'warehouse_schema'
 WHERE workflow LIKE 'sync.%' AND input->>'warehouse_schema' = 'warehouse';
