-- Airlift's schema, SQLite dialect. Added to, never edited.
--
-- Ids are UUID text, times BIGINT milliseconds since the Unix epoch, enums
-- their wire spelling, JSON values text. Maps that are filtered on (device
-- tags, attributes, installed software) are rows of their own. The
-- PostgreSQL migration of the same number has the same tables and columns;
-- only BLOB/BYTEA and the autoincrement syntax differ.

CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    secret_sha256 BLOB NOT NULL UNIQUE
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    details TEXT NOT NULL
);

CREATE TABLE packages (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    description TEXT,
    device_types TEXT NOT NULL,
    security_version BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    signed_by TEXT NOT NULL,
    manifest TEXT NOT NULL,
    provides TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    head BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX packages_created_at ON packages (created_at, id);

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    identity TEXT NOT NULL,
    public_key TEXT NOT NULL UNIQUE,
    device_type TEXT,
    hardware_revision TEXT,
    security_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_check_in BIGINT,
    -- SHA-256 of the last inventory reported; NULL until the first check-in.
    inventory_sha256 BLOB
);
CREATE INDEX devices_created_at ON devices (created_at, id);
CREATE INDEX devices_status ON devices (status, created_at, id);
CREATE INDEX devices_device_type ON devices (device_type, created_at, id);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags (tag);

CREATE TABLE device_attributes (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_attributes_key_value ON device_attributes (key, value);

CREATE TABLE device_installed (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (device_id, name)
);
CREATE INDEX device_installed_name_version ON device_installed (name, version);

CREATE TABLE auth_nonces (
    nonce TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_nonces_expires_at ON auth_nonces (expires_at);

-- No foreign key to packages: a finished or cancelled deployment outlives
-- its package (history is kept for ever). The store refuses to delete a
-- package an active deployment uses.
CREATE TABLE deployments (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    package_id TEXT NOT NULL,
    target TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX deployments_created_at ON deployments (created_at, id);
CREATE INDEX deployments_status ON deployments (status, created_at, id);
CREATE INDEX deployments_package ON deployments (package_id, status);

CREATE TABLE deployment_devices (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    message TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX deployment_devices_device ON deployment_devices (device_id);

CREATE TABLE update_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    applied BOOLEAN NOT NULL,
    message TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX update_events_device ON update_events (device_id, at, id);
