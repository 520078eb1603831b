-- OAuth refresh-token credentials: the refresh token a person authorized (`cairn auth
-- set`), rotated by the vendor as it is used, and the access token it last bought,
-- shared by every worker. Tokens are sealed into the *_sealed columns when keys are
-- configured. The row is locked while a worker refreshes, so workers refresh once.
CREATE TABLE cairn.oauth_tokens (
    credential           text PRIMARY KEY,
    refresh_token        text,
    refresh_token_sealed bytea,
    access_token         text,
    access_token_sealed  bytea,
    access_expires_at    timestamptz,
    -- How many times the vendor rotated the refresh token since it was set.
    rotations            bigint NOT NULL DEFAULT 0,
    refreshes            bigint NOT NULL DEFAULT 0,
    set_at               timestamptz NOT NULL DEFAULT now(),
    refreshed_at         timestamptz,
    -- Set when the vendor refused the refresh token (revoked, expired): a person must
    -- authorize again.
    refused_at           timestamptz,
    refusal              text,
    CONSTRAINT oauth_refresh_once
        CHECK ((refresh_token IS NULL) <> (refresh_token_sealed IS NULL)),
    CONSTRAINT oauth_access_once CHECK (access_token IS NULL OR access_token_sealed IS NULL)
);
