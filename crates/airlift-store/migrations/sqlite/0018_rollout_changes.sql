-- The rollout engine reads, each second, only the rows of a deployment's
-- devices that changed since its last look (rollout/view.rs in the
-- server). `changed_at` is when a row last changed in what a rollout
-- decides on — it was inserted, or its state, `updated_at`, admitting
-- phase or download progress was written — in milliseconds on the
-- database's own clock, stamped by the triggers below: never by a server
-- instance's clock (instances' clocks may disagree; the rollout tests run
-- days of simulated time) and never forgotten by a write added later.
-- Rows from before this migration read 0: an engine loads a deployment
-- whole before it asks for changes.
ALTER TABLE deployment_devices ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX deployment_devices_changed ON deployment_devices (deployment_id, changed_at);

-- The database's clock, as the triggers stamp it: the engine reads it
-- before the rows, to know where to ask from next time.
CREATE VIEW database_clock AS
    SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) AS now_ms;

-- SQLite cannot change NEW in a BEFORE trigger, so the row is stamped
-- after the write (by rowid). The update trigger names the columns it
-- watches, so its own write of `changed_at` does not fire it again.
CREATE TRIGGER deployment_devices_inserted AFTER INSERT ON deployment_devices
BEGIN
    UPDATE deployment_devices
    SET changed_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER deployment_devices_changed
AFTER UPDATE OF state, updated_at, phase, progress_at ON deployment_devices
BEGIN
    UPDATE deployment_devices
    SET changed_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
    WHERE rowid = NEW.rowid;
END;
