-- One rate budget per vendor credential, shared by every worker and run that uses it.
-- A token bucket whose tokens may go negative: a negative balance is a queue of
-- reservations, each told how long to wait, so callers are paced without polling.
CREATE TABLE cairn.rate_budgets (
    key             text PRIMARY KEY,
    -- The configured ceiling, requests per second.
    ceiling         double precision NOT NULL CHECK (ceiling > 0),
    -- The current rate: lowered on 429s, raised back by sustained success.
    rate            double precision NOT NULL CHECK (rate > 0),
    burst           double precision NOT NULL CHECK (burst >= 1),
    tokens          double precision NOT NULL,
    -- Refill starts from here; set into the future while the budget is paused.
    refilled_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    paused_until    timestamptz NOT NULL DEFAULT '-infinity',
    throttle_streak integer     NOT NULL DEFAULT 0,
    -- Successful responses since the rate last changed.
    successes       bigint      NOT NULL DEFAULT 0,
    granted         bigint      NOT NULL DEFAULT 0,
    throttled       bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
