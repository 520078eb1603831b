-- The engine's schema: runs and their steps, schedules, events, published values,
-- workers, alerts, and the fenced checkpoint writer. A new database starts here; a
-- database made before the schema was split by crate (the legacy chain in
-- `runner/legacy/`) has all of this already and is only recorded as being here.

CREATE TABLE cairn.runs (
    id                       uuid PRIMARY KEY,
    workflow                 text NOT NULL,
    queue                    text NOT NULL DEFAULT 'default',
    input                    jsonb NOT NULL DEFAULT 'null',
    idempotency_key          text,
    status                   text NOT NULL DEFAULT 'pending' CHECK (status IN
                                 ('pending', 'running', 'sleeping', 'parked', 'retrying',
                                  'completed', 'failed', 'cancelled')),
    wake_at                  timestamptz NOT NULL DEFAULT now(),
    lease_epoch              bigint NOT NULL DEFAULT 0,
    lease_owner              text,
    lease_expires_at         timestamptz,
    claims                   integer NOT NULL DEFAULT 0,
    cancel_requested         boolean NOT NULL DEFAULT false,
    output                   jsonb,
    error                    jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    finished_at              timestamptz,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- The run's last progress report (records, pages, estimates), for people watching.
    progress                 jsonb,
    dead_letter_dismissed_at timestamptz,
    -- Whether a client waits for the run's end, which is then announced.
    awaited                  boolean NOT NULL DEFAULT false,
    events_sent              bigint NOT NULL DEFAULT 0,
    deadline                 timestamptz,
    parent_id                uuid REFERENCES cairn.runs (id),
    cancel_with_parent       boolean NOT NULL DEFAULT true,
    priority                 integer NOT NULL DEFAULT 0,
    concurrency_key          text,
    UNIQUE (workflow, idempotency_key)
);

CREATE INDEX runs_by_status ON cairn.runs (status, created_at DESC);
CREATE INDEX runs_children ON cairn.runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_leased ON cairn.runs (queue, lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_ready ON cairn.runs (queue, priority DESC, wake_at)
    WHERE status IN ('pending', 'sleeping', 'parked', 'retrying');

CREATE TABLE cairn.steps (
    run_id      uuid NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('step', 'transaction', 'sleep')),
    status      text NOT NULL CHECK (status IN ('completed', 'retrying', 'failed')),
    -- The output as the worker wrote it (JSON text, not reparsed): a fetched page keeps
    -- every digit and key as the vendor sent it.
    output      json,
    attempts    integer NOT NULL DEFAULT 0,
    throttled   integer NOT NULL DEFAULT 0,
    last_error  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms double precision,
    -- The branch of the run the step belongs to ('' is the main branch) and its place in
    -- it (NULL on the main branch, where the place is the position).
    branch      text NOT NULL DEFAULT '',
    seq         integer,
    PRIMARY KEY (run_id, position)
);

-- Pages are large and repetitive JSON.
ALTER TABLE cairn.steps ALTER COLUMN output SET COMPRESSION lz4;

CREATE TABLE cairn.schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    workflow      text NOT NULL,
    input         jsonb NOT NULL DEFAULT '{}',
    queue         text NOT NULL DEFAULT 'default',
    enabled       boolean NOT NULL DEFAULT true,
    overlap       text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    catch_up      text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'once', 'all')),
    catch_up_cap  integer NOT NULL DEFAULT 10 CHECK (catch_up_cap >= 1),
    last_fire_at  timestamptz,
    next_fire_at  timestamptz,
    last_run_id   uuid,
    runs_started  bigint NOT NULL DEFAULT 0,
    fires_skipped bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due ON cairn.schedules (next_fire_at) WHERE enabled;

CREATE TABLE cairn.events (
    id                bigserial PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    name              text NOT NULL,
    data              jsonb NOT NULL,
    sent_at           timestamptz NOT NULL DEFAULT now(),
    -- The step that took the event, once one has.
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

CREATE TABLE cairn.workers (
    id         text PRIMARY KEY,
    queue      text NOT NULL,
    workflows  text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_by_queue ON cairn.workers (queue, seen_at);

-- What needs a person: raised by the engine (deadlines, dead letters), the warehouse
-- and the syncs; one open alert per kind, source, stream and detail, counted.
CREATE TABLE cairn.alerts (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    stream      text NOT NULL,
    detail      text NOT NULL,
    message     text NOT NULL,
    count       bigint NOT NULL DEFAULT 1,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    source      text NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX alerts_open ON cairn.alerts (kind, source, stream, detail)
    WHERE resolved_at IS NULL;

CREATE FUNCTION cairn.child_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cairn.events (run_id, name, data)
    SELECT NEW.parent_id, 'cairn.child ' || NEW.id,
           jsonb_build_object('status', NEW.status, 'workflow', NEW.workflow, 'output', NEW.output,
                              'error', NEW.error)
      FROM cairn.runs p
     WHERE p.id = NEW.parent_id AND p.status NOT IN ('completed', 'failed', 'cancelled');
    IF FOUND THEN
        UPDATE cairn.runs
           SET events_sent = events_sent + 1,
               wake_at = CASE WHEN status IN ('sleeping', 'parked', 'retrying')
                              THEN least(wake_at, now()) ELSE wake_at END
         WHERE id = NEW.parent_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER child_ended AFTER UPDATE OF status ON cairn.runs
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL
          AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cairn.child_ended();

CREATE FUNCTION cairn.parent_cancelled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cairn.runs c
       SET cancel_requested = true,
           status = CASE WHEN c.status = 'running' THEN 'running' ELSE 'cancelled' END,
           finished_at = CASE WHEN c.status = 'running' THEN NULL ELSE now() END,
           updated_at = now()
     WHERE c.parent_id = NEW.id AND c.cancel_with_parent
       AND c.status NOT IN ('completed', 'failed', 'cancelled');
    RETURN NULL;
END
$$;

CREATE TRIGGER parent_cancelled AFTER UPDATE OF cancel_requested ON cairn.runs
    FOR EACH ROW
    WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
    EXECUTE FUNCTION cairn.parent_cancelled();

-- Whether run row `r` is still leased at epoch `p_epoch`: the one test every write a
-- worker makes under its lease asks. A plain SQL expression, so the planner inlines it.
CREATE FUNCTION cairn.lease_held(r cairn.runs, p_epoch bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT r.lease_epoch = p_epoch AND r.status = 'running'
       AND r.lease_expires_at > clock_timestamp()
$$;

-- One checkpoint under its lease (see the legacy migration 0008 for why it raises):
-- the fence, the optional progress report and the step row.
CREATE FUNCTION cairn.write_step(
    p_run_id      uuid,
    p_epoch       bigint,
    p_position    integer,
    p_name        text,
    p_kind        text,
    p_status      text,
    p_output      json,
    p_attempts    integer,
    p_throttled   integer,
    p_last_error  text,
    p_started_at  timestamptz,
    p_duration_ms double precision,
    p_progress    jsonb,
    p_branch      text,
    p_seq         integer
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    cancel boolean;
BEGIN
    IF p_progress IS NULL THEN
        SELECT r.cancel_requested INTO cancel FROM cairn.runs r
         WHERE r.id = p_run_id AND cairn.lease_held(r, p_epoch)
           FOR SHARE;
    ELSE
        UPDATE cairn.runs r SET progress = p_progress
         WHERE r.id = p_run_id AND cairn.lease_held(r, p_epoch)
        RETURNING r.cancel_requested INTO cancel;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease on run % (epoch %) is no longer held', p_run_id, p_epoch
            USING ERRCODE = 'CN001';
    END IF;
    INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output, attempts,
                                  throttled, last_error, started_at, finished_at, duration_ms,
                                  branch, seq)
    VALUES (p_run_id, p_position, p_name, p_kind, p_status, p_output, p_attempts, p_throttled,
            p_last_error, p_started_at, now(), p_duration_ms, p_branch, p_seq)
    ON CONFLICT (run_id, position) DO UPDATE
       SET status = EXCLUDED.status, output = EXCLUDED.output, attempts = EXCLUDED.attempts,
           throttled = EXCLUDED.throttled, last_error = EXCLUDED.last_error,
           finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms
     WHERE s.status <> 'completed';
    IF NOT FOUND AND p_kind = 'transaction' AND p_status = 'completed' THEN
        RAISE EXCEPTION 'step % of run % was already completed by an earlier attempt',
            p_position, p_run_id
            USING ERRCODE = 'CN002';
    END IF;
    RETURN cancel;
END
$$;

-- The 13-argument form workers from before branches called.
CREATE FUNCTION cairn.write_step(
    p_run_id      uuid,
    p_epoch       bigint,
    p_position    integer,
    p_name        text,
    p_kind        text,
    p_status      text,
    p_output      json,
    p_attempts    integer,
    p_throttled   integer,
    p_last_error  text,
    p_started_at  timestamptz,
    p_duration_ms double precision,
    p_progress    jsonb
) RETURNS boolean
LANGUAGE sql AS $$
    SELECT cairn.write_step(p_run_id, p_epoch, p_position, p_name, p_kind, p_status, p_output,
                            p_attempts, p_throttled, p_last_error, p_started_at,
                            p_duration_ms, p_progress, '', NULL)
$$;
