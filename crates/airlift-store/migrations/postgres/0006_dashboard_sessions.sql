-- Dashboard sign-ins: a browser's session cookie, kept only as a SHA-256
-- hash, stands for the API token it was exchanged for. Rows die with their
-- token (revoking a token signs its browsers out) and when they expire.
CREATE TABLE dashboard_sessions (
    secret_sha256 BYTEA PRIMARY KEY NOT NULL,
    token_id TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
