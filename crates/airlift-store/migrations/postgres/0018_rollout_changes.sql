-- The rollout engine reads, each second, only the rows of a deployment's
-- devices that changed since its last look (rollout/view.rs in the
-- server). `changed_at` is when a row last changed in what a rollout
-- decides on — it was inserted, or its state, `updated_at`, admitting
-- phase or download progress was written — in milliseconds on the
-- database's own clock: set by the column's default on insert and by the
-- trigger below on update, never by a server instance's clock (instances'
-- clocks may disagree; the rollout tests run days of simulated time) and
-- never forgotten by a write added later. `clock_timestamp()`, not
-- `now()`: the time of the write, not of its transaction's start, so a
-- long transaction's rows are not stamped long before they commit.
-- Rows from before this migration read 0 (a constant default: no table
-- rewrite): an engine loads a deployment whole before it asks for changes.
ALTER TABLE deployment_devices ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployment_devices
    ALTER COLUMN changed_at SET DEFAULT floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
CREATE INDEX deployment_devices_changed ON deployment_devices (deployment_id, changed_at);

-- The database's clock, as the default and the trigger stamp it: the
-- engine reads it before the rows, to know where to ask from next time.
CREATE VIEW database_clock AS
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS now_ms;

CREATE FUNCTION deployment_devices_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_at := floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    RETURN NEW;
END
$$;

CREATE TRIGGER deployment_devices_changed
BEFORE UPDATE OF state, updated_at, phase, progress_at ON deployment_devices
FOR EACH ROW EXECUTE FUNCTION deployment_devices_stamp();
