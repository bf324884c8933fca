-- A device with its maps in one row, so reading a device is one query.
-- Maps come as JSON text: tags an array, installed software and attributes
-- objects. The SQLite migration of the same number defines the same view.
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
    d.last_check_in,
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
FROM devices d;
