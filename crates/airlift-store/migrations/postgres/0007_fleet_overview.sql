-- The dashboard's fleet views. The SQLite migration of the same number
-- is the same.
--
-- Check-ins per minute, counted by every server instance as it writes its
-- check-in times behind (so the count covers every instance); rows older
-- than two days are deleted by the same writes.
CREATE TABLE check_in_minutes (
    minute BIGINT PRIMARY KEY NOT NULL,
    check_ins BIGINT NOT NULL
);

-- Recent failures and installs per day read the history by state and time.
CREATE INDEX update_events_state_at ON update_events (state, at);

-- Device lists filtered by a state in any deployment (failures by reason).
CREATE INDEX deployment_devices_state ON deployment_devices (state, device_id);

-- Open deployments' devices per state and phase, counted from the index
-- alone.
CREATE INDEX deployment_devices_counts ON deployment_devices (deployment_id, state, phase);

-- Device lists sorted by identity: its first 128 characters (a whole
-- identity may be longer than an index entry may be).
CREATE INDEX devices_identity ON devices (substr(identity, 1, 128), id);
