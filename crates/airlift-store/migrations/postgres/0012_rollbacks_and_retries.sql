-- Fleet-wide automatic rollback: a rollback deployment a circuit breaker
-- started, and the deployment whose breaker started it (one original may
-- start several, one per release its devices go back to).
CREATE TABLE deployment_rollbacks (
    rollback_id TEXT PRIMARY KEY NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    original_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX deployment_rollbacks_original ON deployment_rollbacks (original_id, created_at);
-- How many times an operator offered the deployment again to the device
-- after it failed (`deployment retry`), against the per-device limit.
ALTER TABLE deployment_devices ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;
-- previous_releases looks up a device's committed releases.
CREATE INDEX deployment_devices_device_state ON deployment_devices (device_id, state);
