-- Live workers, each announcing itself while it runs: what it serves (queue and
-- workflows) and when it was last seen. `cairn start --wait` tells a user at once when
-- no live worker serves the run it waits for, instead of waiting silently.
CREATE TABLE cairn.workers (
    id         text PRIMARY KEY,
    queue      text NOT NULL,
    workflows  text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_by_queue ON cairn.workers (queue, seen_at);
