-- Device shadows: per device a desired and a reported configuration
-- document (JSON objects as text, with per-key timestamps as a JSON object
-- of key → milliseconds), and desired documents for groups of devices — a
-- tag, or an attribute filter whose pairs are rows of their own so a
-- device's groups are found with the same indexes the device list uses.
-- A group's document is one row however many devices it reaches. The
-- SQLite and PostgreSQL migrations of this number are the same.

CREATE TABLE device_shadows (
    device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    desired TEXT NOT NULL DEFAULT '{}',
    desired_meta TEXT NOT NULL DEFAULT '{}',
    desired_version BIGINT NOT NULL DEFAULT 0,
    desired_at BIGINT,
    reported TEXT NOT NULL DEFAULT '{}',
    reported_meta TEXT NOT NULL DEFAULT '{}',
    reported_version BIGINT NOT NULL DEFAULT 0,
    reported_at BIGINT,
    -- The last failure the device reported, until it reports success.
    failure TEXT,
    failure_at BIGINT
);

CREATE TABLE group_shadows (
    -- `tag:<tag>` or `attributes:<canonical JSON object>`.
    id TEXT PRIMARY KEY NOT NULL,
    -- The tag of a tag group; NULL for an attribute group.
    tag TEXT,
    -- The attributes of an attribute group, as a JSON object; NULL for a tag group.
    attributes TEXT,
    desired TEXT NOT NULL,
    desired_meta TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX group_shadows_tag ON group_shadows (tag);

CREATE TABLE group_shadow_attributes (
    group_id TEXT NOT NULL REFERENCES group_shadows (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (group_id, key)
);
