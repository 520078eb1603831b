-- A checkpoint as one function: the lease fence, the optional progress report and the
-- step row upsert. Plain steps call it as a prepared statement. A transactional step
-- calls it in the same message as its COMMIT (`SELECT cairn.write_step(...); COMMIT`), so
-- its checkpoint costs no round trip beyond the commit the transaction needs anyway.
--
-- A lost lease raises SQLSTATE CN001 instead of returning nothing: in a message that
-- ends with COMMIT, only an error keeps the step's writes from being committed. For the
-- same reason a transactional step that finds itself already completed raises CN002: an
-- earlier attempt committed (its answer was lost), so this attempt's writes must not.
--
-- Returns whether cancellation of the run was requested.
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
LANGUAGE plpgsql AS $$
DECLARE
    cancel boolean;
BEGIN
    -- The share lock holds off a takeover (which updates the row) until this
    -- transaction ends. A progress report updates the row instead, which locks it too.
    IF p_progress IS NULL THEN
        SELECT cancel_requested INTO cancel FROM cairn.runs
         WHERE id = p_run_id AND lease_epoch = p_epoch AND status = 'running'
           AND lease_expires_at > clock_timestamp()
           FOR SHARE;
    ELSE
        UPDATE cairn.runs SET progress = p_progress
         WHERE id = p_run_id AND lease_epoch = p_epoch AND status = 'running'
           AND lease_expires_at > clock_timestamp()
        RETURNING cancel_requested INTO cancel;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease on run % (epoch %) is no longer held', p_run_id, p_epoch
            USING ERRCODE = 'CN001';
    END IF;
    -- A repeated write is idempotent and never undoes a completion.
    INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output, attempts,
                                  throttled, last_error, started_at, finished_at, duration_ms)
    VALUES (p_run_id, p_position, p_name, p_kind, p_status, p_output, p_attempts, p_throttled,
            p_last_error, p_started_at, now(), p_duration_ms)
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
