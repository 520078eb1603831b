-- Data subject requests (privacy law's access and erasure): one row per request, its
-- deadline's extensions, the findings, and an append-only audit trail whose entries are
-- chained by keyed hashes.
CREATE TABLE cairn.dsr_requests (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('access', 'erasure')),
    regulation text NOT NULL,
    window_days integer NOT NULL CHECK (window_days > 0),
    received_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    phase text NOT NULL CHECK (phase IN ('received', 'discovering', 'compiled', 'fulfilling', 'done', 'failed')),
    -- Keyed hash of the subject's e-mail address: requests about one person are found
    -- without storing the address in the clear.
    subject_hash text NOT NULL,
    -- The subject's identifiers ({"email": ..., "ids": [...]}): sealed when keys are
    -- configured, and cleared once the request is closed and its report purged.
    subject text,
    subject_sealed bytea,
    run_id uuid,
    clock_run_id uuid,
    found integer NOT NULL DEFAULT 0,
    erased integer NOT NULL DEFAULT 0,
    unerased integer NOT NULL DEFAULT 0,
    outcome text CHECK (outcome IN ('fulfilled', 'partial', 'failed')),
    closed_at timestamptz,
    -- The access report (JSON), sealed when keys are configured; purged after retention.
    report text,
    report_sealed bytea,
    -- How long the report is kept once the request closes.
    retention_secs bigint NOT NULL,
    report_purge_after timestamptz,
    report_purged_at timestamptz,
    CONSTRAINT dsr_subject_once CHECK (subject IS NULL OR subject_sealed IS NULL),
    CONSTRAINT dsr_report_once CHECK (report IS NULL OR report_sealed IS NULL)
);
CREATE INDEX dsr_requests_open ON cairn.dsr_requests (deadline) WHERE closed_at IS NULL;

CREATE TABLE cairn.dsr_extensions (
    request_id text NOT NULL REFERENCES cairn.dsr_requests (id),
    extended_at timestamptz NOT NULL,
    days integer NOT NULL CHECK (days > 0),
    reason text NOT NULL CHECK (reason <> ''),
    PRIMARY KEY (request_id, extended_at)
);

-- One entry per state change and per external call of a request. `hash` is a keyed hash
-- over the previous entry's hash and this entry's fields: `cairn dsr audit verify`
-- recomputes the chain. No personal value is stored: identifiers appear only as keyed
-- hashes inside `detail`.
CREATE TABLE cairn.dsr_audit (
    seq bigint PRIMARY KEY,
    request_id text NOT NULL,
    at timestamptz NOT NULL,
    action text NOT NULL,
    source text NOT NULL DEFAULT '',
    outcome text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX dsr_audit_request ON cairn.dsr_audit (request_id, seq);

CREATE FUNCTION cairn.dsr_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cairn.dsr_audit is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER dsr_audit_append_only BEFORE UPDATE OR DELETE ON cairn.dsr_audit
    FOR EACH ROW EXECUTE FUNCTION cairn.dsr_audit_append_only();
CREATE TRIGGER dsr_audit_no_truncate BEFORE TRUNCATE ON cairn.dsr_audit
    FOR EACH STATEMENT EXECUTE FUNCTION cairn.dsr_audit_append_only();

-- Differential privacy: each period's budget and the epsilon its metric releases spent,
-- in millionths (exact arithmetic).
CREATE TABLE cairn.dsr_privacy_budget (
    period text PRIMARY KEY,
    budget_micro bigint NOT NULL CHECK (budget_micro > 0),
    spent_micro bigint NOT NULL DEFAULT 0 CHECK (spent_micro >= 0 AND spent_micro <= budget_micro),
    releases integer NOT NULL DEFAULT 0
);
