-- When each device was last heard of moves out of `devices` into a narrow
-- table of its own, so that a check-in's write does not rewrite a wide
-- row and every one of its indexes. The PostgreSQL migration of the same
-- number says why and defines the same table, indexes and view.
--
-- `status` and `created_at` are copies of the device's, kept by the store
-- in the statements that write them, so that the overview's counts of
-- offline devices and the online/offline filters read this table alone.
CREATE TABLE device_presence (
    id TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_check_in BIGINT
);
INSERT INTO device_presence (id, status, created_at, last_check_in)
SELECT id, status, created_at, last_check_in FROM devices;

CREATE INDEX device_presence_status_heard ON device_presence (status, last_check_in, created_at);
-- Never first: SQLite sorts NULL first ascending.
CREATE INDEX device_presence_heard ON device_presence (last_check_in, created_at, id);

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
    (SELECT json_group_array(t.tag) FROM device_tags t WHERE t.device_id = d.id) AS tags,
    (SELECT json_group_object(i.name, i.version)
     FROM device_installed i WHERE i.device_id = d.id) AS installed,
    (SELECT json_group_object(a.key, a.value)
     FROM device_attributes a WHERE a.device_id = d.id) AS attributes
FROM devices d LEFT JOIN device_presence p ON p.id = d.id;

DROP INDEX devices_status_heard;
DROP INDEX devices_last_check_in;
ALTER TABLE devices DROP COLUMN last_check_in;
