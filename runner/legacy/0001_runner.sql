-- The durable engine's state: runs and their step checkpoints.
-- Applied with search_path set to the `cairn` schema (see cairn_runner::migrate).

CREATE TABLE cairn.runs (
    id               uuid PRIMARY KEY,
    workflow         text        NOT NULL,
    queue            text        NOT NULL DEFAULT 'default',
    input            jsonb       NOT NULL DEFAULT 'null',
    idempotency_key  text,
    -- pending: runnable at wake_at; sleeping: durable timer; parked: rate limited until
    -- wake_at; retrying: transient failure backing off until wake_at; running: leased.
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'sleeping', 'parked', 'retrying',
                          'completed', 'failed', 'cancelled')),
    wake_at          timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every claim: a checkpoint write carries the epoch it was claimed with,
    -- so a worker whose lease was taken over can never write again (fencing).
    lease_epoch      bigint      NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    claims           integer     NOT NULL DEFAULT 0,
    cancel_requested boolean     NOT NULL DEFAULT false,
    output           jsonb,
    error            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow, idempotency_key)
);

-- Runs waiting for their wake time, in claim order.
CREATE INDEX runs_ready ON cairn.runs (queue, wake_at)
    WHERE status IN ('pending', 'sleeping', 'parked', 'retrying');
-- Leased runs, so expired leases are found without a scan.
CREATE INDEX runs_leased ON cairn.runs (queue, lease_expires_at)
    WHERE status = 'running';
CREATE INDEX runs_by_status ON cairn.runs (status, created_at DESC);

CREATE TABLE cairn.steps (
    run_id      uuid        NOT NULL REFERENCES cairn.runs (id) ON DELETE CASCADE,
    position    integer     NOT NULL,
    name        text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('step', 'transaction', 'sleep')),
    -- completed: output stored, replayed without running; retrying: attempts made, not
    -- settled; failed: the final error was returned to the workflow (replayed as that error).
    status      text        NOT NULL CHECK (status IN ('completed', 'retrying', 'failed')),
    output      jsonb,
    attempts    integer     NOT NULL DEFAULT 0,
    throttled   integer     NOT NULL DEFAULT 0,
    last_error  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms double precision,
    PRIMARY KEY (run_id, position)
);
