-- Encryption at rest: a value cairn seals (when keys are configured) goes to a bytea
-- companion of its column instead of the column itself. A row holds its value in one of
-- the two; which key sealed it is in the value's first bytes.
ALTER TABLE cairn.steps ADD COLUMN output_sealed bytea,
    ADD CONSTRAINT steps_output_once CHECK (output IS NULL OR output_sealed IS NULL);

ALTER TABLE cairn.events ADD COLUMN data_sealed bytea,
    ALTER COLUMN data DROP NOT NULL,
    ADD CONSTRAINT events_data_once CHECK ((data IS NULL) <> (data_sealed IS NULL));
