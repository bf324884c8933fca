-- The dashboard's device list and overview at 100 000 devices. The
-- PostgreSQL migration of the same number adds the same b-tree indexes
-- and a trigram index for the identity search (SQLite scans for it).

-- Filters by tag, attribute or installed version read which devices match
-- from the index alone (covering indexes): the device id is in the entry.
-- They replace the indexes of the same columns without the id.
CREATE INDEX device_tags_tag_device ON device_tags (tag, device_id);
DROP INDEX device_tags_tag;
CREATE INDEX device_attributes_match ON device_attributes (key, value, device_id);
DROP INDEX device_attributes_key_value;
CREATE INDEX device_installed_match ON device_installed (name, version, device_id);
DROP INDEX device_installed_name_version;

-- Devices per status with the offline ones, and the online/offline
-- filters, from the index alone.
CREATE INDEX devices_status_heard ON devices (status, last_check_in, created_at);

-- Device lists sorted by last check-in (never first: SQLite sorts NULL
-- first ascending), either way.
CREATE INDEX devices_last_check_in ON devices (last_check_in, created_at, id);
