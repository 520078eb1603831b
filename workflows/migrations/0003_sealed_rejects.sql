-- Encryption at rest: a record a destination refused is sealed into record_sealed when
-- keys are configured.
ALTER TABLE cairn.destination_rejects ADD COLUMN record_sealed bytea,
    ADD CONSTRAINT destination_rejects_record_once
        CHECK (record IS NULL OR record_sealed IS NULL);
