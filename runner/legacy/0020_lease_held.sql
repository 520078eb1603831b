-- One test of a held lease. Every write a worker makes under its lease (a checkpoint, a
-- park, an end, a heartbeat) asks cairn.lease_held, so what holding a lease means is
-- written once.
--
-- A plain SQL expression: the planner inlines it into every statement that uses it, so
-- it costs nothing over the test written out, and the clock is read when the row is
-- checked, after any lock wait.
CREATE FUNCTION cairn.lease_held(r cairn.runs, p_epoch bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT r.lease_epoch = p_epoch AND r.status = 'running'
       AND r.lease_expires_at > clock_timestamp()
$$;

-- The checkpoint function of migration 0014 (see 0008 for why it raises), fenced by
-- cairn.lease_held.
CREATE OR REPLACE FUNCTION cairn.write_step(
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

-- The 13-argument version of migration 0008, kept for workers from before branches,
-- writes through the one above instead of holding a copy of it.
CREATE OR REPLACE FUNCTION cairn.write_step(
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
