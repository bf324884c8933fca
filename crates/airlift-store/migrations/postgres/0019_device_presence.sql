-- When each device was last heard of moves out of `devices` into a narrow
-- table of its own. Every check-in moves that time, and a million devices
-- polling every five minutes move it 3 300 times a second. On `devices`
-- each move wrote a new version of a wide row and an entry in each of its
-- nine indexes (the trigram index among them). Measured on a million
-- devices, the write-behind's batches of 500 right after a checkpoint:
-- 245–259 µs and 40 KiB of WAL per device there; 58–72 µs and 9.3 KiB
-- here, where it writes a narrow row and three small index entries.
--
-- `status` and `created_at` are copies of the device's, kept by the store
-- in the statements that write them (a device's creation, its status
-- changes), so that the overview's counts of offline devices and the
-- device list's online/offline filters read this table's indexes alone.
-- The names are the device's own, so a filter reads the same on either
-- table. The SQLite migration of the same number does the same.
CREATE TABLE device_presence (
    id TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_check_in BIGINT
);
INSERT INTO device_presence (id, status, created_at, last_check_in)
SELECT id, status, created_at, last_check_in FROM devices;

-- Devices per status with the offline ones, and the online/offline
-- filters, from the index alone.
CREATE INDEX device_presence_status_heard ON device_presence (status, last_check_in, created_at);
-- Device lists sorted by last check-in (never first), either way.
CREATE INDEX device_presence_heard ON device_presence (last_check_in NULLS FIRST, created_at, id);

DROP VIEW device_records;
CREATE VIEW device_records AS
SELECT
    d.id,
    d.status,
    d.identity,
    d.public_key,
    d.device_type,
    d.hardware_revision,
    d.security_version,
    d.created_at,
    p.last_check_in,
    d.inventory_sha256,
    COALESCE(
        (SELECT json_agg(t.tag)::text FROM device_tags t WHERE t.device_id = d.id),
        '[]'
    ) AS tags,
    COALESCE(
        (SELECT json_object_agg(i.name, i.version)::text
         FROM device_installed i WHERE i.device_id = d.id),
        '{}'
    ) AS installed,
    COALESCE(
        (SELECT json_object_agg(a.key, a.value)::text
         FROM device_attributes a WHERE a.device_id = d.id),
        '{}'
    ) AS attributes
-- A LEFT JOIN on the key: a query that reads no check-in time does not
-- read this table at all (the planner drops the join).
FROM devices d LEFT JOIN device_presence p ON p.id = d.id;

DROP INDEX devices_status_heard;
DROP INDEX devices_last_check_in;
ALTER TABLE devices DROP COLUMN last_check_in;
