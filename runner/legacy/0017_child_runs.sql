-- Child runs (`Context::start_child`): a run started by another, which waits for it
-- durably. When a child ends, however it ends (completed, failed, cancelled, by its
-- worker or by an operator), the parent gets the event `cairn.child <child id>` with
-- the child's status, output and error, in the same transaction: the parent's wait for
-- it is an event wait, parked until then. Cancelling a parent cancels the children
-- started with `cancel_with_parent`.
ALTER TABLE cairn.runs ADD COLUMN parent_id uuid REFERENCES cairn.runs (id);
ALTER TABLE cairn.runs ADD COLUMN cancel_with_parent boolean NOT NULL DEFAULT true;
CREATE INDEX runs_children ON cairn.runs (parent_id) WHERE parent_id IS NOT NULL;

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
