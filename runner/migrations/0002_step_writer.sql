-- The engine writes its checkpoints with one statement of its own (runner/src/store/
-- checkpoints.rs), whatever way it sends it. That statement refuses a write with a
-- SQLSTATE of its own through this function, so that a refused checkpoint aborts the
-- statement and the transaction it travels with.
--
-- cairn.write_step (0001) stays only for workers of the versions before this one during
-- a rolling upgrade: it is frozen, and a column added to cairn.steps takes a default so
-- that it keeps working.
CREATE FUNCTION cairn.refuse(p_code text, p_message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION '%', p_message USING ERRCODE = p_code;
END
$$;
