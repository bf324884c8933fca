-- Signed trust roots (docs/trust.md): one row per version, the envelope
-- kept as the exact text uploaded (its signatures cover those bytes). The
-- server checks the chain before it inserts; the store keeps versions
-- consecutive.
CREATE TABLE trust_roots (
    version BIGINT PRIMARY KEY,
    expires BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
