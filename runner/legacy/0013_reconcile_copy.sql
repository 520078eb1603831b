-- Reconciliation stages the vendor's id set with COPY, which a unique key would make
-- fail on the first id a listing repeats: the staging keeps repeats, and applying it
-- reads each id once. Applying needs no index on ids (it is a hash join), only a way to
-- find one reconciliation's rows.
ALTER TABLE cairn.reconcile_ids DROP CONSTRAINT reconcile_ids_pkey;
CREATE INDEX reconcile_ids_by_run ON cairn.reconcile_ids (reconcile_id, stream);
