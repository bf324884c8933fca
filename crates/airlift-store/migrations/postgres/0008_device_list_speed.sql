-- The dashboard's device list and overview at 100 000 devices.
-- The SQLite migration of the same number adds the same b-tree indexes;
-- the trigram index is PostgreSQL's alone.

-- Filters by tag, attribute or installed version read which devices match
-- from the index alone (index-only scans): the device id is in the entry.
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

-- Device lists sorted by last check-in (never first), either way.
CREATE INDEX devices_last_check_in ON devices (last_check_in NULLS FIRST, created_at, id);

-- The identity search (`LOWER(identity) LIKE '%…%'`) through a trigram
-- index, so that it costs what it finds rather than a scan of the fleet.
-- pg_trgm lives in one schema per database (`public` when this creates
-- it; wherever it already is otherwise), so the operator class is named
-- with its schema. Where the extension cannot be had (not installed, or
-- no right to create it) the search still works, by a scan: this only
-- notes it.
DO $$
DECLARE
    trgm_schema TEXT;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NULL THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
            trgm_schema := 'public';
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'pg_trgm is not available (%): the device search scans the devices', SQLERRM;
        END;
    END IF;
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX devices_identity_trgm ON devices USING gin (lower(identity) %I.gin_trgm_ops)',
            trgm_schema
        );
    END IF;
END
$$;
