-- Whether a client is waiting for the run to end (`Client::wait`, `cairn start --wait`).
-- Only then does the run's end send a notification: a NOTIFY holds a database-wide lock
-- from before its transaction's commit until after it, so notifying every end
-- serialized the commits of concurrent workers and cost a fifth of the throughput.
ALTER TABLE cairn.runs ADD COLUMN awaited boolean NOT NULL DEFAULT false;
