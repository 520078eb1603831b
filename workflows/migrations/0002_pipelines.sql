-- Pipelines: a source's stream written to a destination's stream through its API.

-- Where each pipeline stands: the watermark its next run reads from.
CREATE TABLE cairn.pipeline_cursors (
    source      text NOT NULL,
    stream      text NOT NULL,
    destination text NOT NULL,
    dest_stream text NOT NULL,
    watermark   text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream, destination, dest_stream)
);

-- Writes the destination acknowledged for a step that has not committed yet: when the
-- step runs again (after a crash, a lost lease, a retry) it sends only the others. A
-- step's rows go when it commits.
CREATE TABLE cairn.pipeline_acks (
    run_id    uuid NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    position  integer NOT NULL,
    record_id text NOT NULL,
    outcome   jsonb NOT NULL,
    PRIMARY KEY (run_id, position, record_id)
);

-- Each record as last written to a destination: its id there (a POST's is the
-- destination's) and the ETag it answered, which the next PATCH sends in If-Match.
CREATE TABLE cairn.destination_records (
    destination text NOT NULL,
    stream      text NOT NULL,
    record_id   text NOT NULL,
    dest_id     text NOT NULL,
    etag        text,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, stream, record_id)
);

-- Records a destination refused (409, 422) or that a conflict left for a person.
CREATE TABLE cairn.destination_rejects (
    id          bigserial PRIMARY KEY,
    destination text NOT NULL,
    stream      text NOT NULL,
    record_id   text NOT NULL,
    run_id      uuid NOT NULL,
    status      integer,
    reason      text NOT NULL,
    record      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX destination_rejects_open ON cairn.destination_rejects (destination, stream)
    WHERE resolved_at IS NULL;
