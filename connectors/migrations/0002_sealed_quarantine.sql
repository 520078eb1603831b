-- Encryption at rest: a quarantined record is sealed into record_sealed when keys are
-- configured, and kept in record otherwise.
ALTER TABLE cairn.quarantine ADD COLUMN record_sealed bytea,
    ALTER COLUMN record DROP NOT NULL,
    ADD CONSTRAINT quarantine_record_once CHECK ((record IS NULL) <> (record_sealed IS NULL));
