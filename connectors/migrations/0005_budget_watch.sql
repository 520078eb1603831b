-- What the dashboard shows of a credential besides its rate: the vendor's daily quota as
-- its headers last reported it (`Sforce-Limit-Info`-style), and how many requests are
-- out at once. Both ride on the token request every call makes anyway, so watching costs
-- no write of its own.
ALTER TABLE cairn.rate_budgets
    ADD COLUMN quota_used  bigint,
    ADD COLUMN quota_total bigint,
    ADD COLUMN quota_at    timestamptz,
    -- Tokens taken whose answers have not been reported back; reset by a quiet spell, so
    -- a process that ended between two requests leaves no lasting count.
    ADD COLUMN in_flight   integer NOT NULL DEFAULT 0;
