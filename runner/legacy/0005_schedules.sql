-- Cron schedules (cairn_runner::schedule). Every worker runs the scheduler; a due row is
-- handled by one worker at a time (FOR UPDATE SKIP LOCKED), and each fire time starts
-- its run with the idempotency key `schedule:<name>:<fire time>`, so a fire time starts
-- exactly one run however many workers are up.

CREATE TABLE cairn.schedules (
    name          text        PRIMARY KEY,
    -- As the user wrote it (5 fields, or 6-7 with seconds and year), validated on add.
    cron          text        NOT NULL,
    -- An IANA time zone the expression is read in.
    timezone      text        NOT NULL DEFAULT 'UTC',
    workflow      text        NOT NULL,
    input         jsonb       NOT NULL DEFAULT '{}',
    queue         text        NOT NULL DEFAULT 'default',
    enabled       boolean     NOT NULL DEFAULT true,
    -- skip: no new run while the previous run of the schedule is still going.
    overlap       text        NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    -- After downtime: skip missed fire times, run once for them, or run each (newest
    -- catch_up_cap of them).
    catch_up      text        NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'once', 'all')),
    catch_up_cap  integer     NOT NULL DEFAULT 10 CHECK (catch_up_cap >= 1),
    -- The latest fire time handled (started or skipped) and the next one due.
    last_fire_at  timestamptz,
    next_fire_at  timestamptz,
    last_run_id   uuid,
    runs_started  bigint      NOT NULL DEFAULT 0,
    fires_skipped bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due ON cairn.schedules (next_fire_at) WHERE enabled;
