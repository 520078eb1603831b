-- Urgent traffic (a privacy request's lookups) goes ahead of the rest on a shared
-- budget: while urgent requests keep coming, other callers wait until this instant.
ALTER TABLE cairn.rate_budgets ADD COLUMN priority_until timestamptz NOT NULL DEFAULT '-infinity';
