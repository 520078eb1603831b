-- Events delivered to runs (`cairn runs send`, `Client::send_event`), kept until a wait
-- of the run consumes them, each by one step; and values runs publish for others to
-- read (`Context::set_event`, `Client::get_event`).
--
-- `events_sent` counts the events sent to a run: a run about to park on an event wait
-- compares it with the count it saw when it last looked, so an event that arrives in
-- between wakes it at once instead of waiting out the timeout.
ALTER TABLE cairn.runs ADD COLUMN events_sent bigint NOT NULL DEFAULT 0;

CREATE TABLE cairn.events (
    id                bigserial PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    name              text NOT NULL,
    data              jsonb NOT NULL,
    sent_at           timestamptz NOT NULL DEFAULT now(),
    -- The step that consumed it, once one has.
    consumed_position integer,
    consumed_at       timestamptz
);
CREATE INDEX events_waiting ON cairn.events (run_id, name, id) WHERE consumed_position IS NULL;

CREATE TABLE cairn.run_values (
    run_id     uuid NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    key        text NOT NULL,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, key)
);
