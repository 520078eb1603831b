-- The branch of a run a step belongs to, and its place in that branch. Branches run
-- side by side (`Context::fork`, `Context::parallel`); on replay each branch finds its
-- own steps by their place in it, so the order in which concurrent branches happened
-- to take steps cannot change what a replay finds. '' is a run's main branch, where
-- every step of a run from before this migration belongs; a main-branch step's place
-- is its position (`seq` stays NULL), as it always was.
ALTER TABLE cairn.steps ADD COLUMN branch text NOT NULL DEFAULT '';
ALTER TABLE cairn.steps ADD COLUMN seq integer;

-- `cairn.write_step` of migration 0008 with the branch and the place in it (the 13-argument version stays,
-- for workers of the version before, which write to the main branch).
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
